#!/usr/bin/env python3
"""Phase 2 of the demo model (docs/demo-model.md): task-adaptive pretraining.

Continues a pretraining checkpoint (scripts/pretrain-demo-model.py) as a plain language model
on the demo's *training* sentences (task-adaptive pretraining, Gururangan et al. 2020: text
only, no labels) mixed with the pretraining stream, and writes a Hugging Face model directory
with pretraining.json (provenance, and the SHA-256 of the validation split that was held out,
which scripts/demo checks). The 300 validation sentences (read back from the demo's validation
HDF5 file) and every copy of them are left out. With --auc DIR..., it only measures, for each model directory,
the area under the ROC curve of logit(" great") - logit(" terrible") at the answer position of
the validation examples (frozen model, template only; 0.5 = no sentiment signal).

  python3 scripts/demo-model-tapt.py --run exp2 --steps 600 --review-frac 0.5 --lr 2e-3 --out M
  python3 scripts/demo-model-tapt.py --auc M

Needs /usr/bin/python3 with python3-torch, python3-numpy and python3-h5py, the demo's prepared
data (scripts/demo makes .cache/demo/reviews-{train,valid}.h5 and reviews.jsonl) and the corpus
of scripts/fetch-corpus.
"""
import argparse
import hashlib
import importlib.util
import json
import math
import os
import random
import sys
import time

import h5py
import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("pretrain", os.path.join(ROOT, "scripts/pretrain-demo-model.py"))
pt = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pt)


def decoder(tok):
    """ids -> text: the inverse vocabulary and byte map, built once."""
    byte_dec = {v: k for k, v in pt.bytes_to_unicode().items()}
    inv = {v: k for k, v in tok.encoder.items()}
    return lambda ids: bytes(byte_dec[c] for i in ids for c in inv[int(i)]).decode("utf-8", "replace")


def split_sha256(path):
    """SHA-256 of a prepared split's tokens and offsets (int32 / int64 little-endian); scripts/demo
    computes the same to check the split it prepared."""
    f = h5py.File(path, "r")
    return hashlib.sha256(f["tokens"][:].astype("<i4").tobytes() + f["offsets"][:].astype("<i8").tobytes()).hexdigest()


def valid_examples(path):
    """[(token ids without soft slots, label)] of the demo's validation file."""
    f = h5py.File(path, "r")
    toks, offs, labels = f["tokens"][:], f["offsets"][:], f["labels"][:]
    return [([int(t) for t in toks[offs[i]:offs[i + 1]] if t >= 0], int(labels[i])) for i in range(len(labels))]


def training_sentences(tok, demo_dir):
    """The demo's review sentences minus every one whose text is a validation sentence."""
    decode = decoder(tok)
    held = {decode(ids[:-2]).strip() for ids, _ in valid_examples(os.path.join(demo_dir, "reviews-valid.h5"))}
    rows = [json.loads(line) for line in open(os.path.join(demo_dir, "reviews.jsonl"), encoding="utf-8")]
    texts = [r["text"].strip() for r in rows if r["text"].strip()]
    kept = [t for t in texts if t not in held]
    print(f"reviews: {len(texts)} sentences, {len(texts) - len(kept)} are validation sentences (left out), "
          f"{len(kept)} used", flush=True)
    return kept


def load_model(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    m = pt.GPT(50257, cfg["n_positions"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"])
    pt.load_hf_state(m, pt.read_safetensors(os.path.join(d, "model.safetensors")))
    return m.eval()


def auc(model_dir, tok, demo_dir):
    m = load_model(model_dir)
    great, terrible = tok.encoder["\u0120great"], tok.encoder["\u0120terrible"]
    pos, neg = [], []
    with torch.no_grad():
        for ids, label in valid_examples(os.path.join(demo_dir, "reviews-valid.h5")):
            h = m.hidden(torch.tensor([ids]))[0, -1]
            diff = float(h @ (m.wte.weight[great] - m.wte.weight[terrible]))
            (pos if label == 1 else neg).append(diff)
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    print(f"{model_dir}: AUC {wins / (len(pos) * len(neg)):.3f} (mean logit difference: positive "
          f"{np.mean(pos):.3f}, negative {np.mean(neg):.3f})", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default=os.environ.get("SP_CACHE_DIR", os.path.join(ROOT, ".cache")))
    ap.add_argument("--run", default="exp2", help="pretraining run whose checkpoint is continued")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--review-frac", type=float, default=0.5, help="share of each batch's windows from the reviews")
    ap.add_argument("--lr", type=float, default=2e-3, help="peak LR (cosine to a tenth)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", help="model directory to write")
    ap.add_argument("--auc", nargs="+", metavar="DIR", help="only measure these model directories")
    args = ap.parse_args()
    torch.set_num_threads(2)
    tok = pt.GPT2Tokenizer(os.path.join(args.cache, "gpt2-tokenizer"))
    demo_dir = os.path.join(args.cache, "demo")
    if args.auc:
        for d in args.auc:
            auc(d, tok, demo_dir)
        return
    if not args.out:
        sys.exit("demo-model-tapt: --out DIR is needed (or --auc)")
    sentences = training_sentences(tok, demo_dir)
    ck = torch.load(os.path.join(args.cache, "pretrain", args.run, "checkpoint.pt"))
    a = ck["args"]
    model = pt.GPT(50257, a["n_positions"], a["d"], a["layers"], a["heads"])
    model.load_state_dict(ck["model"])
    print(f"continuing run {args.run} from step {ck['step']}", flush=True)
    data = pt.load_tokens(os.path.join(args.cache, "corpus"), os.path.join(args.cache, "gpt2-tokenizer"),
                          a["sources"].split(","))
    corpus = torch.from_numpy(np.concatenate([data[s][0] for s in data]).astype(np.int64))
    rng = random.Random(args.seed)
    encoded = [tok.encode(s) + [pt.EOT] for s in sentences]
    reviews = []
    while len(reviews) < args.steps * 32 * 129 + 129:  # a fresh shuffle per pass
        rng.shuffle(encoded)
        for ids in encoded:
            reviews.extend(ids)
    reviews = torch.tensor(reviews)
    counts = np.bincount(corpus.numpy(), minlength=50257)
    top = torch.from_numpy(np.argsort(-counts, kind="stable")[:8192].astype(np.int64))
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    g = torch.Generator().manual_seed(args.seed)
    B, T, n_rev = 32, 128, int(round(32 * args.review_frac))
    model.train()
    t0 = time.time()
    for step in range(args.steps):
        rows = []
        for j in range(B):
            src = reviews if j < n_rev else corpus
            i = int(torch.randint(0, len(src) - T - 1, (1,), generator=g))
            rows.append(src[i:i + T + 1])
        r = torch.stack(rows)
        x, y = r[:, :-1], r[:, 1:]
        cand = torch.unique(torch.cat([top, y.reshape(-1), torch.randint(0, 50257, (1024,), generator=g)]))
        for group in opt.param_groups:
            group["lr"] = args.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / args.steps)))
        loss = model.loss(x, y, cand)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 25 == 0 or step == args.steps - 1:
            print(f"step {step} loss {loss.item():.3f} {time.time() - t0:.0f} s", flush=True)
    os.makedirs(args.out, exist_ok=True)
    pt.write_safetensors(os.path.join(args.out, "model.safetensors"), pt.hf_state(model), {"format": "pt"})
    shape = argparse.Namespace(n_positions=a["n_positions"], d=a["d"], layers=a["layers"], heads=a["heads"])
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(pt.hf_config(shape), f, indent=2)
        f.write("\n")
    valid_h5 = os.path.join(demo_dir, "reviews-valid.h5")
    provenance = dict(
        base=dict(run=args.run, step=ck["step"], tokens_seen=ck["tokens_seen"], script="scripts/pretrain-demo-model.py"),
        tapt=dict(script="scripts/demo-model-tapt.py", steps=args.steps, review_frac=args.review_frac, lr=args.lr,
                  seed=args.seed, batch=B, ctx=T, review_sentences=len(sentences),
                  review_tokens_per_pass=sum(len(e) for e in encoded), minutes=round((time.time() - t0) / 60, 1)),
        heldout_valid=dict(file="reviews-valid.h5 of scripts/demo (prepare --split train=0.9,valid=0.1 --seed 42)",
                           examples=len(valid_examples(valid_h5)), sha256=split_sha256(valid_h5)))
    with open(os.path.join(args.out, "pretraining.json"), "w") as f:
        json.dump(provenance, f, indent=2)
        f.write("\n")
    print(f"wrote {args.out} in {time.time() - t0:.0f} s", flush=True)
    auc(args.out, tok, demo_dir)


if __name__ == "__main__":
    main()
