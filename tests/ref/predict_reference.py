#!/usr/bin/env python3
"""Float64 reference of `softprompt predict`'s probabilities and logits.

    predict_reference.py MODEL_DIR DATA.h5 PREDICTIONS.jsonl PROMPT.h5 [PROMPT.h5 ...]

Reads the model with tests/ref's independent readers (gpt2_reference.py or
llama_reference.py by config.json's model_type), every example of the prepared set with h5py
(tokens, offsets, target positions, verbalizer, labels) and each prompt ("prompt" dataset of an
HDF5 file), computes in float64 the logits at each example's target position with that
prompt, the verbalizer words' logits and their softmax, and the ensemble's mean probability;
then checks predict's rows against them: logits within 1e-4 + 1e-4 |x|, probabilities within
1e-5 absolute, predicted classes equal wherever the top-2 margin exceeds 1e-4. Exit 1 on any
difference (printed), 0 with a summary line."""
import json
import os
import sys

import h5py
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_reference  # noqa: E402
import llama_reference  # noqa: E402

torch.set_num_threads(1)


def model(dirpath):
    with open(os.path.join(dirpath, "config.json")) as f:
        kind = json.load(f)["model_type"]
    ref = gpt2_reference if kind == "gpt2" else llama_reference
    M = ref.read_model(dirpath)
    W = {k: torch.from_numpy(np.asarray(v, dtype=np.float64)) for k, v in M["w"].items()}
    return ref, M, W


def main():
    mdir, data, preds, prompts = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    ref, M, W = model(mdir)
    P = [torch.from_numpy(np.asarray(h5py.File(p, "r")["prompt"], dtype=np.float64))
         for p in prompts]
    with h5py.File(data, "r") as f:
        tokens, offsets = f["tokens"][:], f["offsets"][:]
        tpos, toff = f["target_pos"][:], f["target_offsets"][:]
        verb = f["verbalizer"][:]
    rows = [json.loads(line) for line in open(preds)]
    assert len(rows) == len(offsets) - 1, f"{len(rows)} rows for {len(offsets) - 1} examples"
    worst_l = worst_p = 0.0
    bad = 0
    for i, row in enumerate(rows):
        seq = [int(t) for t in tokens[offsets[i]:offsets[i + 1]]]
        at = int(tpos[toff[i]])
        probs = []
        per = row["prompts"] if len(P) > 1 else [row]
        for k, p in enumerate(P):
            with torch.no_grad():
                lg = ref.torch_seq_logits(M, W, seq, p)[at][torch.from_numpy(verb.astype(np.int64))]
            pr = torch.softmax(lg, -1).numpy()
            probs.append(pr)
            got_l, got_p = np.array(per[k]["logits"]), np.array(per[k]["probabilities"])
            dl = np.abs(got_l - lg.numpy()) - 1e-4 * np.abs(lg.numpy())
            worst_l, worst_p = max(worst_l, np.abs(got_l - lg.numpy()).max()), max(worst_p, np.abs(got_p - pr).max())
            if dl.max() > 1e-4 or np.abs(got_p - pr).max() > 1e-5:
                bad += 1
                print(f"example {i}, prompt {k + 1}: logits {got_l} vs {lg.numpy()}, probabilities {got_p} vs {pr}")
            top = np.sort(lg.numpy())[::-1]
            names = row["classes"]
            if top[0] - top[1] > 1e-4 and per[k]["predicted"] != names[int(np.argmax(lg.numpy()))]:
                bad += 1
                print(f"example {i}, prompt {k + 1}: predicted {per[k]['predicted']}, reference {names[int(np.argmax(lg.numpy()))]}")
        mean = np.mean(probs, axis=0)
        if np.abs(np.array(row["probabilities"]) - mean).max() > 1e-5:
            bad += 1
            print(f"example {i}: mean probabilities {row['probabilities']} vs {mean}")
    if bad:
        print(f"FAIL: {bad} differences")
        return 1
    print(f"ok: {len(rows)} examples x {len(P)} prompts: logits within {worst_l:.2g}, "
          f"probabilities within {worst_p:.2g} of the float64 reference")
    return 0


if __name__ == "__main__":
    sys.exit(main())
