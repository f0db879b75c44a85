"""Full fine-tuning baseline of docs/methods.md: every weight of the demo model trained on the
demo task with the verbalizer objective the prompt methods use, in PyTorch.

The model is GPT-2 as transformers defines it (tests/ref/gpt2_reference.py's math: learned
positions, pre-LayerNorm blocks, gelu_new, tied head), in float32, loaded from the safetensors
file. The data are the datasets `softprompt prepare` wrote (bench/methods-study.sh) with their
soft slots removed: the template alone, as fine-tuning has no soft tokens. The loss is the
mean full-vocabulary cross-entropy of the target token (the class word after "It was"), as
softprompt's; accuracy is the argmax over the verbalizer words at the answer position.
AdamW (torch defaults but lr 3e-4, weight decay 0.01), batch 16, 2 epochs, no dropout.

Usage: python3 bench/finetune_baseline.py MODEL_DIR TRAIN.h5 VALID.h5 [--epochs 2] [--seed 42]
Prints one JSON line: validation accuracy after each epoch, majority-class rate, seconds.
Needs torch, numpy, h5py (Debian: python3-torch python3-h5py).
"""

import argparse
import json
import math
import os
import sys
import time

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "ref"))
import gpt2_reference as g2  # noqa: E402  (the safetensors reader and GPT-2 pieces)


def load(path):
    """Examples without soft tokens: (ids, answer position, target id, label)."""
    with h5py.File(path, "r") as f:
        tok, off = f["tokens"][()], f["offsets"][()]
        tpos, tids, labels = f["target_pos"][()], f["target_ids"][()], f["labels"][()]
        verbalizer = f["verbalizer"][()]
    out = []
    for i in range(len(off) - 1):
        seq = tok[off[i]:off[i + 1]]
        keep = seq >= 0
        pos = int(keep[:tpos[i] + 1].sum()) - 1  # the target position among the kept tokens
        out.append((seq[keep].astype(np.int64), pos, int(tids[i]), int(labels[i])))
    return out, verbalizer


class GPT2(torch.nn.Module):
    def __init__(self, model_dir):
        super().__init__()
        M = g2.read_model(model_dir)
        self.L, self.d, self.H, self.eps = M["L"], M["d"], M["H"], M["eps"]
        self.w = torch.nn.ParameterDict({k.replace(".", "_"): torch.nn.Parameter(
            torch.from_numpy(v.astype(np.float32))) for k, v in M["w"].items()
            if k.split(".")[-2:] not in (["attn", "bias"], ["attn", "masked_bias"])})

    def W(self, name):
        return self.w[name.replace(".", "_")]

    def forward(self, ids, lengths):
        """ids [B, T] right-padded; logits [B, T, V]."""
        B, T = ids.shape
        d, H = self.d, self.H
        hd = d // H
        h = self.W("wte.weight")[ids] + self.W("wpe.weight")[:T][None]
        causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
        for i in range(self.L):
            p = "h.%d." % i
            a = torch.nn.functional.layer_norm(h, (d,), self.W(p + "ln_1.weight"),
                                               self.W(p + "ln_1.bias"), self.eps)
            q, k, v = (a @ self.W(p + "attn.c_attn.weight") + self.W(p + "attn.c_attn.bias")).split(d, -1)
            q, k, v = (x.view(B, T, H, hd).transpose(1, 2) for x in (q, k, v))
            s = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~causal, float("-inf"))
            o = (torch.softmax(s, -1) @ v).transpose(1, 2).reshape(B, T, d)
            h = h + o @ self.W(p + "attn.c_proj.weight") + self.W(p + "attn.c_proj.bias")
            m = torch.nn.functional.layer_norm(h, (d,), self.W(p + "ln_2.weight"),
                                               self.W(p + "ln_2.bias"), self.eps)
            m = g2._gelu_new(m @ self.W(p + "mlp.c_fc.weight") + self.W(p + "mlp.c_fc.bias"))
            h = h + m @ self.W(p + "mlp.c_proj.weight") + self.W(p + "mlp.c_proj.bias")
        return torch.nn.functional.layer_norm(h, (d,), self.W("ln_f.weight"), self.W("ln_f.bias"),
                                              self.eps)

    def answer_logits(self, batch):
        T = max(len(x[0]) for x in batch)
        ids = torch.zeros(len(batch), T, dtype=torch.long)
        for b, x in enumerate(batch):
            ids[b, :len(x[0])] = torch.from_numpy(x[0])
        h = self.forward(ids, None)
        rows = h[torch.arange(len(batch)), torch.tensor([x[1] for x in batch])]
        return rows @ self.W("wte.weight").T  # tied head; padding sits after every answer


def accuracy(model, data, verbalizer):
    correct = 0
    with torch.no_grad():
        for i in range(0, len(data), 64):
            batch = data[i:i + 64]
            logits = model.answer_logits(batch)[:, torch.from_numpy(verbalizer.astype(np.int64))]
            correct += int((logits.argmax(-1) == torch.tensor([x[3] for x in batch])).sum())
    return correct / len(data)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model"), ap.add_argument("train"), ap.add_argument("valid")
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    train, verbalizer = load(a.train)
    valid, _ = load(a.valid)
    model = GPT2(a.model)
    opt = torch.optim.AdamW(model.parameters(), lr=a.lr, weight_decay=0.01)
    rng = np.random.default_rng(a.seed)
    labels = [x[3] for x in valid]
    result = {"method": "full fine-tuning", "seed": a.seed, "epochs": a.epochs, "batch": a.batch,
              "lr": a.lr, "zero_shot_accuracy": accuracy(model, valid, verbalizer),
              "majority_accuracy": max(labels.count(c) for c in set(labels)) / len(labels),
              "valid_accuracy_per_epoch": []}
    t0, steps = time.time(), 0
    for _ in range(a.epochs):
        order = rng.permutation(len(train))
        for i in range(0, len(order), a.batch):
            batch = [train[j] for j in order[i:i + a.batch]]
            logits = model.answer_logits(batch)
            loss = torch.nn.functional.cross_entropy(logits, torch.tensor([x[2] for x in batch]))
            opt.zero_grad()
            loss.backward()
            opt.step()
            steps += 1
        result["valid_accuracy_per_epoch"].append(accuracy(model, valid, verbalizer))
    result["steps"] = steps
    result["seconds_per_step"] = (time.time() - t0) / steps
    result["trainable_parameters"] = sum(p.numel() for p in model.parameters())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
