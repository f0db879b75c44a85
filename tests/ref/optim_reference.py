"""Reference trajectories for the soft-prompt optimizers and learning-rate schedules.

For a small [P=3, d=5] parameter and a fixed sequence of 6 gradients (fixed seeds), this script
writes one JSON file per case with the parameter after every update, computed twice: in float32
and in float64, from the same float32 initial parameter and gradients.

    SGD       torch.optim.SGD (momentum as torch: buf = momentum * buf + g, p -= lr * buf) with
              weight_decay=0; the decoupled weight decay of softprompt (p *= 1 - lr * wd, before
              the update) is applied to the parameter just before torch's step.
    AdamW     torch.optim.AdamW (torch 1.13, single-tensor implementation, amsgrad off).
    Adafactor Hugging Face transformers' Adafactor.step with relative_step=False,
              warmup_init=False, written out below from its published definition (the transformers
              package is not needed), run in both dtypes; it is cross-checked against a second,
              independent plain-Python float64 transcription of the algorithm.
    clipping  torch.nn.utils.clip_grad_norm_ on the gradient before the update.

The learning rate of update s (1-based) is softprompt's (include/softprompt/optim.h):
    s <= W (warm-up):  lr * s / W
    s >  W:            lr * lambda(s - 1), lambda = Hugging Face's lr_lambda of
                       get_constant_schedule_with_warmup / get_linear_schedule_with_warmup /
                       get_cosine_schedule_with_warmup (cosine progress clamped to 1)
i.e. Hugging Face's LambdaLR schedule except that warm-up update s uses s/W instead of (s-1)/W
(HF's first update has lr 0). schedules.json records both, HF's read from a real
torch.optim.lr_scheduler.LambdaLR, at steps 1..T+3 for several (schedule, W, T).

Usage: python3 tests/ref/optim_reference.py --out tests/fixtures/optim
Only torch is needed. Deterministic: fixed seeds, one thread; the bytes are identical every run.
"""

import argparse
import json
import math
import os

import torch

torch.set_num_threads(1)

ROWS, COLS, STEPS = 3, 5, 6
# Gradient scale of each update: steps 3 and 6 exceed clip_norm, step 4 is far below it.
GRAD_SCALES = [1.0, 0.5, 2.0, 0.05, 1.0, 3.0]


# ----------------------------------------------------------------------------------- schedules

def hf_lambda(kind, k, warmup, total):
    """Hugging Face's lr_lambda(current_step=k) (transformers.optimization)."""
    if k < warmup:
        return float(k) / float(max(1, warmup))
    if kind == "constant":
        return 1.0
    if kind == "linear":
        return max(0.0, float(total - k) / float(max(1, total - warmup)))
    if kind == "cosine":
        progress = float(k - warmup) / float(max(1, total - warmup))
        return max(0.0, 0.5 * (1.0 + math.cos(math.pi * float(0.5) * 2.0 * progress)))
    raise ValueError(kind)


def sp_lr(lr, kind, s, warmup, total):
    """softprompt's lr of update s (1-based), see the module docstring."""
    if warmup > 0 and s <= warmup:
        return lr * (float(s) / float(warmup))
    k = s - 1
    if kind == "cosine" and k > total:
        k = total  # progress clamped to 1: stays 0 after total_steps (HF would rise again)
    return lr * hf_lambda(kind, k, warmup, total)


def hf_lambdalr_rates(lr, kind, warmup, total, n):
    """The lr torch's LambdaLR gives updates 1..n in the usual loop
    (optimizer.step(); scheduler.step())."""
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.SGD([p], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: hf_lambda(kind, k, warmup, total))
    out = []
    for _ in range(n):
        out.append(opt.param_groups[0]["lr"])
        p.grad = torch.zeros_like(p)
        opt.step()
        sched.step()
    return out


# ----------------------------------------------------------------------------------- Adafactor

def _rms(t):
    return t.norm(2) / (t.numel() ** 0.5)


def hf_adafactor_step(p, g, st, lr, cfg):
    """One step of transformers.Adafactor (relative_step=False, warmup_init=False) on a 2-D
    parameter, in p's dtype, with the same tensor operations in the same order."""
    eps1, eps2 = cfg["eps1"], cfg["eps2"]
    beta1 = cfg["beta1"] if cfg["beta1"] > 0 else None
    st["step"] += 1
    rms_p = _rms(p)  # state["RMS"]: a 0-dim tensor of p's dtype
    param_scale = max(eps2, rms_p) if cfg["scale_parameter"] else 1.0
    lr_t = param_scale * lr  # a 0-dim tensor when the parameter scale applies (as in HF)
    beta2t = 1.0 - math.pow(st["step"], cfg["decay_rate"])
    update = (g ** 2) + eps1
    st["vr"].mul_(beta2t).add_(update.mean(dim=-1), alpha=(1.0 - beta2t))
    st["vc"].mul_(beta2t).add_(update.mean(dim=-2), alpha=(1.0 - beta2t))
    r = (st["vr"] / st["vr"].mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
    c = st["vc"].unsqueeze(-2).rsqrt()
    update = torch.mul(r, c)
    update.mul_(g)
    update.div_((_rms(update) / cfg["clip_threshold"]).clamp_(min=1.0))
    update.mul_(lr_t)
    if beta1 is not None:
        st["m"].mul_(beta1).add_(update, alpha=(1 - beta1))
        update = st["m"]
    if cfg["weight_decay"] != 0:
        p.add_(p, alpha=float(-cfg["weight_decay"] * lr_t))
    p.add_(-update)


def plain_adafactor(p0, grads, lrs, cfg):
    """Second, independent float64 transcription (plain Python lists), for self-checking."""
    p = [list(row) for row in p0]
    vr = [0.0] * ROWS
    vc = [0.0] * COLS
    m = [[0.0] * COLS for _ in range(ROWS)]
    out = []
    for t, (g, lr) in enumerate(zip(grads, lrs), start=1):
        n = ROWS * COLS
        lr_t = lr
        if cfg["scale_parameter"]:
            lr_t *= max(cfg["eps2"], math.sqrt(sum(x * x for row in p for x in row) / n))
        b2 = 1.0 - t ** cfg["decay_rate"]
        sq = [[g[i][j] ** 2 + cfg["eps1"] for j in range(COLS)] for i in range(ROWS)]
        vr = [b2 * vr[i] + (1 - b2) * sum(sq[i]) / COLS for i in range(ROWS)]
        vc = [b2 * vc[j] + (1 - b2) * sum(sq[i][j] for i in range(ROWS)) / ROWS
              for j in range(COLS)]
        mean_vr = sum(vr) / ROWS
        u = [[g[i][j] / math.sqrt(vr[i] / mean_vr) / math.sqrt(vc[j]) for j in range(COLS)]
             for i in range(ROWS)]
        rms_u = math.sqrt(sum(x * x for row in u for x in row) / n)
        scale = lr_t / max(1.0, rms_u / cfg["clip_threshold"])
        u = [[x * scale for x in row] for row in u]
        if cfg["beta1"] > 0:
            m = [[cfg["beta1"] * m[i][j] + (1 - cfg["beta1"]) * u[i][j] for j in range(COLS)]
                 for i in range(ROWS)]
            u = m
        p = [[p[i][j] - cfg["weight_decay"] * lr_t * p[i][j] - u[i][j] for j in range(COLS)]
             for i in range(ROWS)]
        out.append([x for row in p for x in row])
    return out


# ----------------------------------------------------------------------------------- runner

def run(cfg, p0, grads, lrs, dtype):
    """Parameter after each update, and the gradient norm before clipping, in dtype."""
    p = torch.nn.Parameter(p0.to(dtype).clone())
    kind = cfg["kind"]
    if kind == "sgd":
        opt = torch.optim.SGD([p], lr=cfg["lr"], momentum=cfg["beta1"], weight_decay=0.0)
    elif kind == "adamw":
        opt = torch.optim.AdamW([p], lr=cfg["lr"], betas=(cfg["beta1"], cfg["beta2"]),
                                eps=cfg["eps"], weight_decay=cfg["weight_decay"], foreach=False)
    else:
        st = {"step": 0, "vr": torch.zeros(ROWS, dtype=dtype),
              "vc": torch.zeros(COLS, dtype=dtype), "m": torch.zeros(ROWS, COLS, dtype=dtype)}
    params, norms = [], []
    for g, lr in zip(grads, lrs):
        p.grad = g.to(dtype).clone()
        norms.append(float(p.grad.double().norm()))
        if cfg["clip_norm"] > 0:
            torch.nn.utils.clip_grad_norm_([p], cfg["clip_norm"])
        with torch.no_grad():
            if kind == "adafactor":
                hf_adafactor_step(p.data, p.grad, st, lr, cfg)
            else:
                opt.param_groups[0]["lr"] = lr
                if kind == "sgd" and cfg["weight_decay"] != 0:
                    p.mul_(1 - lr * cfg["weight_decay"])  # softprompt's decoupled decay
                opt.step()
        params.append([float(x) for x in p.detach().reshape(-1)])
    return params, norms


def base_config(kind):
    c = {"kind": kind, "lr": 0.1, "weight_decay": 0.0, "beta1": 0.0, "beta2": 0.999, "eps": 1e-8,
         "decay_rate": -0.8, "eps1": 1e-30, "eps2": 1e-3, "clip_threshold": 1.0,
         "scale_parameter": 0, "clip_norm": 0.0, "schedule": "constant", "warmup_steps": 0,
         "total_steps": 0}
    if kind == "adamw":
        c.update(lr=0.05, beta1=0.9, weight_decay=0.01)
    if kind == "adafactor":
        c.update(lr=0.3, weight_decay=1e-5)  # Lester et al. 2021
    return c


def cases():
    variants = [
        ("sgd_wd", base_config("sgd"), {"weight_decay": 0.05}),
        ("sgd_momentum_wd", base_config("sgd"), {"beta1": 0.9, "weight_decay": 0.05}),
        ("adamw_wd", base_config("adamw"), {}),
        ("adafactor_lester", base_config("adafactor"), {}),
        ("adafactor_scale", base_config("adafactor"), {"scale_parameter": 1}),
        ("adafactor_beta1", base_config("adafactor"), {"beta1": 0.9}),
    ]
    out = []
    for name, cfg, over in variants:
        cfg = dict(cfg, **over)
        out.append((name + "_constant", dict(cfg), {}))
        out.append((name + "_cosine", dict(cfg, schedule="cosine", warmup_steps=2,
                                             total_steps=8), {}))
    out.append(("sgd_momentum_clip", dict(base_config("sgd"), beta1=0.9, clip_norm=1.0), {}))
    out.append(("adamw_clip_linear", dict(base_config("adamw"), clip_norm=1.0, schedule="linear",
                                          warmup_steps=1, total_steps=6), {}))
    out.append(("adafactor_lester_clip", dict(base_config("adafactor"), clip_norm=1.0), {}))
    # Everything at once, with a weight decay large enough for its placement to matter.
    out.append(("adafactor_all_linear", dict(base_config("adafactor"), weight_decay=0.1, beta1=0.9,
                                             scale_parameter=1, clip_norm=2.0, schedule="linear",
                                             warmup_steps=1, total_steps=6), {}))
    # Prompt row 1 never receives gradient (a soft token absent from every sequence).
    out.append(("adafactor_lester_zero_row", base_config("adafactor"), {"zero_row": 1}))
    out.append(("adamw_zero_row", base_config("adamw"), {"zero_row": 1}))
    return out


def max_rel(a, b):
    """max |a - b| / max |b| over all steps (normwise relative, max norm)."""
    num = max(abs(x - y) for ra, rb in zip(a, b) for x, y in zip(ra, rb))
    den = max(abs(y) for rb in b for y in rb)
    return num / den


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    gen = torch.Generator().manual_seed(20240601)
    p0 = (0.5 * torch.randn(ROWS, COLS, generator=gen, dtype=torch.float64)).float()
    base_grads = [(s * torch.randn(ROWS, COLS, generator=gen, dtype=torch.float64)).float()
                  for s in GRAD_SCALES]

    for name, cfg, extra in cases():
        grads = [g.clone() for g in base_grads]
        if "zero_row" in extra:
            for g in grads:
                g[extra["zero_row"]] = 0.0
        lrs = [sp_lr(cfg["lr"], cfg["schedule"], s, cfg["warmup_steps"], cfg["total_steps"])
               for s in range(1, STEPS + 1)]
        p32, n32 = run(cfg, p0, grads, lrs, torch.float32)
        p64, n64 = run(cfg, p0, grads, lrs, torch.float64)
        if cfg["kind"] == "adafactor" and cfg["clip_norm"] == 0:
            plain = plain_adafactor(p0.double().tolist(), [g.double().tolist() for g in grads],
                                    lrs, cfg)
            err = max_rel(plain, p64)
            assert err < 1e-12, (name, err)
        doc = {
            "name": name,
            "config": cfg,
            "rows": ROWS,
            "cols": COLS,
            "param0": [float(x) for x in p0.reshape(-1)],
            "grads": [[float(x) for x in g.reshape(-1)] for g in grads],
            "lr": lrs,
            "grad_norm": n64,
            "expected_f32": p32,
            "expected_f64": p64,
        }
        with open(os.path.join(args.out, name + ".json"), "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        print(f"{name:32s} f32 vs f64: {max_rel(p32, p64):.2e}  final |p| max "
              f"{max(abs(x) for x in p64[-1]):.3f}")

    scheds = []
    for kind, warmup, total in [("constant", 0, 0), ("constant", 4, 0), ("linear", 0, 10),
                                ("linear", 3, 10), ("cosine", 0, 10), ("cosine", 3, 10),
                                ("cosine", 1, 7), ("linear", 5, 5)]:
        lr = 0.3
        n = max(total, warmup) + 3
        steps = list(range(1, n + 1))
        scheds.append({
            "schedule": kind, "lr": lr, "warmup_steps": warmup, "total_steps": total,
            "steps": steps,
            "expected": [sp_lr(lr, kind, s, warmup, total) for s in steps],
            "hf_lambdalr": hf_lambdalr_rates(lr, kind, warmup, total, n),
        })
    with open(os.path.join(args.out, "schedules.json"), "w") as f:
        json.dump({"schedules": scheds}, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
