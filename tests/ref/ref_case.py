"""One case of a float64 reference generator (gpt2_reference.py, llama_reference.py, ...): the
harness every family shares. A family supplies its model writer, reader and two forwards; write()
draws, computes, self-checks and writes the case:

    cdir = OUT/<case name>/   config.json + weights (the family's writer), batch.json,
                              expected.safetensors: prompt, loss_mean, loss_sum, target_logits,
                              target_loss, grad_mean (+ kv_prefix, kv_prefix_grad_mean behind a
                              key/value prefix of case["n_kv"] rows)

Random draws, in this order from default_rng(case["seed"]): the model's parameters (the writer),
the prompt [n_prompt, d] (normal, 0.5), the batch (gpt2_reference.make_batch), the prefix
[n_layer, 2, n_kv, kv_dim] (normal, 0.5) when n_kv > 0. Changing the order changes every fixture.

Self-checks, all from the files as written (read back by the family's reader):
  - the second forward (numpy) gives the same target logits and mean loss (relative 1e-12);
  - the autograd prompt gradient equals central finite differences at three coordinates, and the
    prefix gradient at the largest coordinate of every layer (relative to the largest entry, 1e-6);
  - prompt rows no sequence uses get exactly zero gradient;
  - with max_len, no sequence (behind the prefix) is longer than max_len positions.
"""
import json
import math
import os
import shutil

import numpy as np
import torch

FD_STEP = 1e-6


def write_hf_model(dirpath, config, tensors, shards):
    """config.json and the weights in Hugging Face's layout: tensors [(name, dtype, array)] in one
    model.safetensors, or in `shards` files of equal tensor counts with model.safetensors.index.json.
    """
    from gpt2_reference import st_write, write_index  # here: gpt2_reference imports this module

    with open(os.path.join(dirpath, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
        f.write("\n")
    meta = {"format": "pt"}
    if shards == 1:
        st_write(os.path.join(dirpath, "model.safetensors"), tensors, meta)
        return
    per = math.ceil(len(tensors) / shards)
    weight_map, total = {}, 0
    for i in range(shards):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, shards)
        group = tensors[i * per:(i + 1) * per]
        total += st_write(os.path.join(dirpath, fname), group, meta)
        weight_map.update({name: fname for name, _, _ in group})
    write_index(dirpath, weight_map, total)


def write(outdir, case, generator, *, model, read, forward, second_way, d, kv_dim=None,
          max_len=None):
    """Writes case into outdir/case["name"] (replacing it) and prints one line about it.

    generator   the script's path as recorded in expected.safetensors ("tests/ref/x_reference.py")
    model       model(cdir, rng): writes config.json and the weights, drawing them from rng
    read        read(cdir) -> M, a dict whose "w" maps tensor names to float64 arrays as stored
    forward     forward(M, W, batch, prompt[, prefix]) -> (target logits, per-target loss), torch
                float64 with autograd (W: M["w"] as tensors); prefix only when n_kv > 0
    second_way  second_way(M, batch, prompt[, prefix]) -> target logits, numpy float64
    d           the prompt's width; kv_dim: a prefix row's width (default d)
    max_len     when given: n_kv + every sequence's length <= max_len (the positions there are)
    """
    from gpt2_reference import make_batch, st_write  # here: gpt2_reference imports this module

    rng = np.random.default_rng(case["seed"])
    P, n_kv = case["n_prompt"], case.get("n_kv", 0)
    cdir = os.path.join(outdir, case["name"])
    if os.path.isdir(cdir):
        shutil.rmtree(cdir)
    os.makedirs(cdir)
    model(cdir, rng)
    prompt32 = rng.normal(0.0, 0.5, size=(P, d)).astype(np.float32)
    batch = make_batch(rng, case)
    ss = batch["seq_start"]
    if max_len is not None:
        assert n_kv + max(b - a for a, b in zip(ss, ss[1:])) <= max_len, case["name"]
    with open(os.path.join(cdir, "batch.json"), "w") as f:
        json.dump(batch, f)
        f.write("\n")
    shape = (case["n_layer"], 2, n_kv, d if kv_dim is None else kv_dim)
    prefix32 = rng.normal(0.0, 0.5, size=shape).astype(np.float32) if n_kv else None

    M = read(cdir)
    W = {k: torch.from_numpy(v.copy()) for k, v in M["w"].items()}
    r = _autograd(M, W, batch, prompt32, prefix32, forward)
    e_logit, e_loss = _second_way(M, batch, prompt32, prefix32, r, second_way)
    worst = _finite_differences(case["name"], M, W, batch, prompt32, prefix32, r, forward)
    used = {-1 - t for t in batch["tokens"] if t < 0}
    assert all(np.all(r["grad"][k] == 0.0) for k in range(P) if k not in used)

    extra = ([("kv_prefix", "F32", prefix32), ("kv_prefix_grad_mean", "F64", r["kv_grad"])]
             if n_kv else [])
    st_write(os.path.join(cdir, "expected.safetensors"), [
        ("prompt", "F32", prompt32),
        ("loss_mean", "F64", np.array([r["loss_mean"]])),
        ("loss_sum", "F64", np.array([r["loss_sum"]])),
        ("target_logits", "F64", r["logits"]),
        ("target_loss", "F64", r["ce"]),
        ("grad_mean", "F64", r["grad"]),
    ] + extra, {"generator": generator})
    print("%-60s loss_mean=%.10f  second-way rel err logits %.1e loss %.1e  fd rel err %.1e  "
          "targets=%d" % (case["name"], r["loss_mean"], e_logit, e_loss, worst, r["n_t"]))


def _with_prefix(prompt, prefix):
    return (prompt,) if prefix is None else (prompt, prefix)


def _autograd(M, W, batch, prompt32, prefix32, forward):
    """Loss and gradients (of the mean loss) by autograd."""
    prompt = torch.from_numpy(prompt32.astype(np.float64)).requires_grad_(True)
    prefix = (None if prefix32 is None
              else torch.from_numpy(prefix32.astype(np.float64)).requires_grad_(True))
    logits, ce = forward(M, W, batch, *_with_prefix(prompt, prefix))
    n_t = len(batch["target_ids"])
    loss_sum = ce.sum()
    loss_mean = loss_sum / n_t
    grads = torch.autograd.grad(loss_mean, list(_with_prefix(prompt, prefix)))
    return {"logits": logits.detach().numpy(), "ce": ce.detach().numpy(), "n_t": n_t,
            "loss_sum": float(loss_sum), "loss_mean": float(loss_mean),
            "grad": grads[0].numpy(), "kv_grad": grads[1].numpy() if len(grads) > 1 else None}


def _second_way(M, batch, prompt32, prefix32, r, second_way):
    """The numpy forward's target logits and mean loss against autograd's (relative errors)."""
    kv64 = None if prefix32 is None else prefix32.astype(np.float64)
    logits2 = second_way(M, batch, *_with_prefix(prompt32.astype(np.float64), kv64))
    ce2 = np.array([np.log(np.sum(np.exp(row - row.max()))) + row.max() - row[t]
                    for row, t in zip(logits2, batch["target_ids"])])
    e_logit = np.max(np.abs(logits2 - r["logits"])) / np.max(np.abs(r["logits"]))
    e_loss = abs(ce2.mean() - r["loss_mean"]) / abs(r["loss_mean"])
    assert e_logit < 1e-12 and e_loss < 1e-12, (e_logit, e_loss)
    return e_logit, e_loss


def _finite_differences(name, M, W, batch, prompt32, prefix32, r, forward):
    """Central differences of the mean loss against the autograd gradients: three prompt
    coordinates, and the largest prefix coordinate of every layer. The worst relative error."""
    p64 = prompt32.astype(np.float64)
    kv64 = None if prefix32 is None else prefix32.astype(np.float64)

    def f(pr, kv):
        with torch.no_grad():
            kvt = None if kv is None else torch.from_numpy(kv)
            _, ce = forward(M, W, batch, *_with_prefix(torch.from_numpy(pr), kvt))
            return float(ce.sum()) / r["n_t"]

    def central(x, idx, loss):
        xp, xm = x.copy(), x.copy()
        xp[idx] += FD_STEP
        xm[idx] -= FD_STEP
        return (loss(xp) - loss(xm)) / (2 * FD_STEP)

    d, grad = p64.shape[1], r["grad"]
    used = sorted({-1 - t for t in batch["tokens"] if t < 0})
    worst, gscale = 0.0, np.max(np.abs(grad))
    for idx in [(used[0], 0), (used[-1], d - 1), (used[len(used) // 2], d // 2)]:
        fd = central(p64, idx, lambda x: f(x, kv64))
        worst = max(worst, abs(fd - grad[idx]) / gscale)
        print("  fd check %-60s prompt%s: autograd %+.12e  central-diff %+.12e"
              % (name, idx, grad[idx], fd))
    if kv64 is not None:
        kv_grad = r["kv_grad"]
        kscale = np.max(np.abs(kv_grad))
        for layer in range(kv_grad.shape[0]):
            at = np.unravel_index(np.argmax(np.abs(kv_grad[layer])), kv_grad[layer].shape)
            idx = (layer,) + tuple(int(a) for a in at)
            fd = central(kv64, idx, lambda x: f(p64, x))
            worst = max(worst, abs(fd - kv_grad[idx]) / kscale)
            print("  fd check %-60s prefix%s: autograd %+.12e  central-diff %+.12e"
                  % (name, idx, kv_grad[idx], fd))
    assert worst < 1e-6, worst
    return worst
