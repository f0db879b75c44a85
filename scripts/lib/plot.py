"""scripts/plot's work: reads the runs' metrics.jsonl (scripts/lib/metrics.py) into per-run data
files and writes the gnuplot script, both into TMP; scripts/plot checks the options and runs
gnuplot on TMP/plot.gp, which writes OUT.tmp.

  python3 scripts/lib/plot.py TMP OUT SMOOTH TITLE SIZE RUN_DIR...

SMOOTH is "auto" or the moving-average window in steps; SIZE is WIDTHxHEIGHT. A line cut short
at the end of a metrics.jsonl (a run still writing) is skipped; any other bad line is an error
(exit 1, "plot: " and the file and line on stderr).
"""
import math
import os
import sys

import metrics

tmp, out, smooth, title, size, runs = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5], sys.argv[6:]

def die(msg):
    sys.stderr.write(f"plot: {msg}\n")
    sys.exit(1)

def label_of(path, all_paths):
    parts = os.path.normpath(os.path.abspath(path)).split(os.sep)
    for k in range(1, len(parts) + 1):  # the shortest tail of the path that tells the runs apart
        tails = ["/".join(os.path.normpath(os.path.abspath(p)).split(os.sep)[-k:]) for p in all_paths]
        if tails.count("/".join(parts[-k:])) == 1:
            return "/".join(parts[-k:])
    return path

num = metrics.finite

data = []
for run in runs:
    path = os.path.join(run, "metrics.jsonl")
    if not os.path.isdir(run):
        die(f"{run}: no such run directory")
    if not os.path.isfile(path):
        die(f"{run}: no metrics.jsonl (not an output directory of `softprompt train`?)")
    try:
        rows = metrics.read(path, warn=lambda msg: sys.stderr.write(f"plot: {msg}\n"))
    except metrics.MetricsError as e:
        die(str(e))
    train, evals = {}, {}
    for j in rows:
        if metrics.is_eval(j):
            # Evaluations: one split per run, 'valid' when there is one.
            acc = j.get("accuracy")
            evals.setdefault(j["split"], {})[j["step"]] = (
                j["loss"] if num(j.get("loss")) else float("nan"),
                acc if num(acc) else float("nan"))
        elif num(j.get("loss")):
            train[j["step"]] = j["loss"]  # a resumed run may repeat steps: the last one counts
    if not train and not evals:
        die(f"{path}: no training or evaluation records (empty file: has the run done a step yet?)")
    split = "valid" if "valid" in evals else (sorted(evals)[0] if evals else None)
    data.append((run, train, split, evals.get(split, {})))

longest = max((max(t) if t else 0) for _, t, _, _ in data)
window = max(1, round(len([1 for _, t, _, _ in data for _ in t]) / len(data) / 25)) if smooth == "auto" else int(smooth)

colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b",
           "#e377c2", "#17becf", "#7f7f7f", "#bcbd22", "#393b79", "#637939"]
q = lambda s: '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
top, bottom = [], []
have_acc = False
splits = set()
for k, (run, train, split, ev) in enumerate(data):
    c, lab = colours[k], label_of(run, runs)
    if train:
        steps = sorted(train)
        with open(f"{tmp}/train{k}.dat", "w") as f:
            acc = []
            for s in steps:
                acc.append(train[s])
                w = acc[-window:]
                f.write(f"{s} {train[s]!r} {sum(w) / len(w)!r}\n")
        top.append(f"'{tmp}/train{k}.dat' using 1:2 with lines lw 1 lc rgb '#C0{c[1:]}' notitle")
        top.append(f"'{tmp}/train{k}.dat' using 1:3 with lines lw 2.5 lc rgb '{c}' title {q(lab + ' train')}")
    if ev:
        splits.add(split)
        with open(f"{tmp}/eval{k}.dat", "w") as f:
            for s in sorted(ev):
                f.write(f"{s} {ev[s][0]!r} {ev[s][1]!r}\n")
        top.append(f"'{tmp}/eval{k}.dat' using 1:2 with linespoints lw 2 dt 2 pt 7 ps 0.8 lc rgb '{c}' title {q(lab + ' ' + split)}")
        if any(not math.isnan(a) for _, a in ev.values()):
            have_acc = True
            bottom.append(f"'{tmp}/eval{k}.dat' using 1:($3*100) with linespoints lw 2.5 pt 7 ps 0.8 lc rgb '{c}' title {q(lab)}")

w, h = size.split("x")
# One right margin for both panels keeps their step axes aligned; it fits the longest key entry.
rmargin = max(16, max(len(label_of(r, runs)) for r in runs) + len(" " + max(["train"] + sorted(splits), key=len)) + 8)
how = f"moving average of {window} steps" if window > 1 else "every step"
split_name = "/".join(sorted(splits)) or "validation"
g = [f"set terminal pngcairo size {w},{h} font 'Sans,11' noenhanced",
     f"set output {q(out + '.tmp')}",
     "set datafile missing 'nan'",
     "set autoscale yfix", "set offsets 0, 0, graph 0.05, graph 0.05",
     "set grid lc rgb '#dddddd'",
     "set border lc rgb '#555555'",
     "set key outside right top vertical Left reverse samplen 2 spacing 1.1",
     "set lmargin 10", f"set rmargin {rmargin}",
     "set multiplot layout 2,1" + (" title " + q(title) + " font 'Sans,13'" if title else ""),
     f"set title {q('loss (training: ' + how + '; ' + split_name + ': dashed)')}",
     "set ylabel 'loss'", "set xlabel 'step'", f"set xrange [0:{max(longest, 1)}]",
     "plot " + ", \\\n  ".join(top)]
if have_acc:
    g += [f"set title {q(split_name + ' accuracy')}", "set ylabel 'accuracy (%)'",
          "set yrange [*:*]", "plot " + ", \\\n  ".join(bottom)]
else:
    g += ["set title 'accuracy'", "unset key", "set yrange [0:1]", "unset ytics",
          "set label 1 'no evaluations with accuracy in these runs (train with --valid)' at graph 0.5, graph 0.5 center",
          "plot 2 notitle"]
g += ["unset multiplot", "set output"]
with open(f"{tmp}/plot.gp", "w") as f:
    f.write("\n".join(g) + "\n")
