"""scripts/sweep-collect's work (see there for the usage): one table of a sweep's tasks.

  python3 scripts/lib/sweep_collect.py DIR [--csv FILE] [--sort COLUMN]
"""
import csv
import glob
import json
import math
import os
import sys

import metrics

args = sys.argv[1:]
root, csv_path, sort_key = args[0], None, None
i = 1
while i < len(args):
    if args[i] == "--csv" and i + 1 < len(args): csv_path = args[i + 1]; i += 2
    elif args[i] == "--sort" and i + 1 < len(args): sort_key = args[i + 1]; i += 2
    else: sys.exit(f"sweep-collect: unknown argument {args[i]}")
if not os.path.isdir(root):
    sys.exit(f"sweep-collect: {root} is not a directory")
csv_path = csv_path or os.path.join(root, "sweep-results.csv")

def load_json(p):
    try:
        with open(p) as f: return json.load(f)
    except (OSError, ValueError): return None

def blank_none(v): return "" if v is None else v

rows, param_cols = [], []
for d in sorted(glob.glob(os.path.join(root, "task-*"))):
    if not os.path.isdir(d): continue
    row = load_json(os.path.join(d, "sweep-row.json")) or {}
    cfg = load_json(os.path.join(d, "config.json")) or {}
    try: logged = metrics.read(os.path.join(d, "metrics.jsonl"), skip_bad=True)  # a line cut by a kill
    except OSError: logged = []
    train, valid = metrics.steps(logged), metrics.evals(logged, "valid")
    for k in row:
        if k not in ("task", "train", "valid") and k not in param_cols: param_cols.append(k)
    steps = cfg.get("steps")
    done = train[-1]["step"] if train else 0
    finished = bool(steps) and done >= steps and os.path.exists(os.path.join(d, "adapter", "adapter_model.safetensors"))
    log = os.path.join(d, "slurm-job.log")
    last = ""
    if os.path.exists(log):
        with open(log) as f:
            lines = [l for l in f if ": " in l]
        last = lines[-1].split(": ", 1)[1].strip() if lines else ""
    status = "done" if finished else ("failed" if last.startswith("FAILED") or last.startswith("error") else
                                      ("stopped" if train else "not started"))
    accs = [(v["accuracy"], v["step"]) for v in valid if v.get("accuracy") is not None]
    losses = [(v["loss"], v["step"]) for v in valid if v.get("loss") is not None]
    # Non-finite values are null in metrics.jsonl: a null loss in the tail makes it nan.
    tail = [t.get("loss") for t in train[-10:]]
    tail_nan = any(not isinstance(v, (int, float)) for v in tail)
    rec = {
        "task": row.get("task", os.path.basename(d)),
        **{k: row.get(k, "") for k in row if k not in ("task", "train", "valid")},
        "prompt_length": cfg.get("prompt_length", row.get("prompt_length", "")),
        "lr": cfg.get("optimizer", {}).get("lr", row.get("lr", "")),
        "init": cfg.get("init", row.get("init", "")),
        "status": status,
        "steps": f"{done}/{steps}" if steps else str(done),
        "train_loss": (float("nan") if tail_nan else sum(tail) / len(tail)) if tail else "",
        "valid_loss": blank_none(valid[-1].get("loss")) if valid else "",
        "valid_accuracy": blank_none(valid[-1].get("accuracy")) if valid else "",
        "best_accuracy": max(accs)[0] if accs else "",
        "best_accuracy_step": max(accs)[1] if accs else "",
        "best_valid_loss": min(losses)[0] if losses else "",
        "restarts": sum(1 for l in open(log) if "requeueing job" in l) if os.path.exists(log) else 0,
        "dir": os.path.relpath(d, root),
    }
    rows.append(rec)

if not rows:
    sys.exit(f"sweep-collect: no task-* directories in {root}")
cols = ["task"] + [c for c in param_cols if c not in ("prompt_length", "lr", "init")] + [
    "lr", "prompt_length", "init", "status", "steps", "train_loss", "valid_loss",
    "valid_accuracy", "best_accuracy", "best_accuracy_step", "best_valid_loss", "restarts", "dir"]
cols = list(dict.fromkeys(cols))
with open(csv_path, "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
    w.writeheader()
    for r in rows: w.writerow(r)

if sort_key is None:
    if any(r["best_accuracy"] != "" for r in rows): sort_key = "best_accuracy"
    elif any(r["best_valid_loss"] != "" for r in rows): sort_key = "best_valid_loss"
    else: sort_key = "train_loss"
if sort_key not in cols:
    sys.exit(f"sweep-collect: no column {sort_key} (columns: {', '.join(cols)})")
ascending = "loss" in sort_key
def key(r):
    v = r.get(sort_key, "")
    try: v = float(v)
    except (TypeError, ValueError): return (1, 0.0, str(v))
    if math.isnan(v): return (1, 0.0, "")
    return (0, v if ascending else -v, "")
rows.sort(key=key)

def fmt(c, v):
    if isinstance(v, float): return f"{v:.4g}" if c == "lr" else f"{v:.4f}"
    return str(v)
show = [c for c in cols if c != "dir"] + ["dir"]
table = [show] + [[fmt(c, r.get(c, "")) for c in show] for r in rows]
widths = [max(len(t[i]) for t in table) for i in range(len(show))]
print(f"{len(rows)} tasks in {root}, sorted by {sort_key} ({'ascending' if ascending else 'descending'}); CSV: {csv_path}")
for n, t in enumerate(table):
    print("  ".join(s.ljust(widths[i]) for i, s in enumerate(t)).rstrip())
    if n == 0: print("  ".join("-" * w for w in widths))
