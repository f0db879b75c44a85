"""Derived metrics and the summary table of scripts/bench.

usage: python3 bench/summarize.py METRICS_TXT OUT_DIR THREADS

Reads the "metric NAME VALUE UNIT" lines scripts/bench collected, prints the derived metrics in
the same format (MFU, speed-up over PyTorch, loss agreement, scaling efficiency, memory ratio),
then a Markdown summary table, which it also writes to OUT_DIR/summary.md; the sequence-length
sweep goes to OUT_DIR/t-sweep.dat for bench/t-sweep.gp. Standard library only.
"""
import os
import re
import sys


def main():
    path, out, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
    m = {}
    for line in open(path):
        f = line.split()
        if len(f) >= 3 and f[0] == "metric":
            m[f[1]] = float(f[2])
    derived = []

    def add(name, value, unit):
        m[name] = value
        derived.append(f"metric {name} {value:.4g} {unit}")

    peak = m.get("sgemm_peak_gflops")
    for mode in ("cls", "gen", "llama_cls"):
        sp = f"softprompt_{mode}"
        if peak and f"{sp}_gflops" in m:
            add(f"mfu_{mode}", m[f"{sp}_gflops"] / peak, "fraction")
        for peer in ("pytorch", "pytorch_dropout", "pytorch_default"):
            if f"{peer}_{mode}_tokens_per_s" in m:
                add(f"speedup_vs_{peer}_{mode}",
                    m[f"{sp}_tokens_per_s"] / m[f"{peer}_{mode}_tokens_per_s"], "x")
        if f"softprompt_ranks_{mode}_tokens_per_s" in m and f"pytorch_{mode}_tokens_per_s" in m:
            add(f"speedup_ranks_vs_pytorch_{mode}",
                m[f"softprompt_ranks_{mode}_tokens_per_s"] / m[f"pytorch_{mode}_tokens_per_s"], "x")
        if f"pytorch_{mode}_loss_first" in m:
            a, b = m[f"{sp}_loss_first"], m[f"pytorch_{mode}_loss_first"]
            add(f"loss_rel_diff_{mode}", abs(a - b) / abs(b), "fraction")
    n = threads
    if f"scale_{n}x1_tokens_per_s" in m and "scale_1x1_tokens_per_s" in m:
        add("scaling_efficiency", m[f"scale_{n}x1_tokens_per_s"] / (n * m["scale_1x1_tokens_per_s"]),
            "fraction")
    if f"scale_{n}x1_tokens_per_s" in m and f"scale_1x{n}_tokens_per_s" in m:
        add("ranks_vs_threads", m[f"scale_{n}x1_tokens_per_s"] / m[f"scale_1x{n}_tokens_per_s"], "x")
    if f"scale_{n}x1_node_pss_mib" in m and f"scale_1x{n}_node_pss_mib" in m:
        add("memory_ratio_ranks", m[f"scale_{n}x1_node_pss_mib"] / m[f"scale_1x{n}_node_pss_mib"], "x")

    sweep = sorted(int(x.group(1)) for x in (re.match(r"sweep_softprompt_s(\d+)_step_s$", k) for k in m)
                   if x)
    rows = []
    for s in sweep:
        sp, pt = m[f"sweep_softprompt_s{s}_step_s"], m.get(f"sweep_pytorch_s{s}_step_s", float("nan"))
        rows.append((s, sp, pt, m[f"sweep_softprompt_s{s}_attention_flop_share"],
                     m[f"sweep_softprompt_s{s}_activation_kib_per_token"]))
    if len(rows) > 1:
        add("sweep_time_per_position_growth", rows[-1][1] / rows[0][1], "x")
    with open(os.path.join(out, "t-sweep.dat"), "w") as f:
        f.write("# positions softprompt_step_s pytorch_step_s attention_flop_share activation_kib_per_token\n")
        for r in rows:
            f.write(" ".join(f"{v:.6g}" for v in r) + "\n")
    print("\n".join(derived))

    def g(k, fmt="{:.3g}"):
        return fmt.format(m[k]) if k in m else "-"

    lines = ["| metric | GPT-2: classification (1 target/seq) | GPT-2: generation (16 targets/seq) "
             "| Llama family: classification |",
             "|---|---|---|---|"]
    for label, key, fmt in (("softprompt step (s)", "softprompt_{}_step_s", "{:.3f}"),
                            ("softprompt tokens/s", "softprompt_{}_tokens_per_s", "{:.0f}"),
                            ("softprompt GFLOP/s (required work)", "softprompt_{}_gflops", "{:.1f}"),
                            ("MFU vs sgemm peak", "mfu_{}", "{:.2f}"),
                            ("softprompt peak RSS (MiB)", "softprompt_{}_peak_rss_mib", "{:.0f}"),
                            ("PyTorch step (s), dropout off (tuned threads)", "pytorch_{}_step_s", "{:.3f}"),
                            ("PyTorch tokens/s, dropout off", "pytorch_{}_tokens_per_s", "{:.0f}"),
                            ("PyTorch peak RSS (MiB)", "pytorch_{}_peak_rss_mib", "{:.0f}"),
                            ("softprompt N ranks x 1 thread, tokens/s", "softprompt_ranks_{}_tokens_per_s", "{:.0f}"),
                            ("PyTorch step (s), default threads", "pytorch_default_{}_step_s", "{:.3f}"),
                            ("speed-up vs PyTorch, dropout off", "speedup_vs_pytorch_{}", "{:.2f}x"),
                            ("speed-up, N ranks vs PyTorch", "speedup_ranks_vs_pytorch_{}", "{:.2f}x"),
                            ("speed-up vs PyTorch default threads", "speedup_vs_pytorch_default_{}", "{:.2f}x"),
                            ("speed-up vs PyTorch, config dropout", "speedup_vs_pytorch_dropout_{}", "{:.2f}x"),
                            ("loss: relative difference", "loss_rel_diff_{}", "{:.1e}")):
        lines.append(f"| {label} | {g(key.format('cls'), fmt)} | {g(key.format('gen'), fmt)} | "
                     f"{g(key.format('llama_cls'), fmt)} |")
    lines += ["", f"sgemm peak: {g('sgemm_peak_gflops', '{:.1f}')} GFLOP/s ({n} threads)", "",
              "| layout (same global batch) | tokens/s | node PSS (MiB) |", "|---|---|---|"]
    for lay in ("1x1", f"1x{n}", f"{n}x1"):
        lines.append(f"| {lay[0]} rank(s) x {lay[2:]} thread(s) | {g(f'scale_{lay}_tokens_per_s', '{:.0f}')} | "
                     f"{g(f'scale_{lay}_node_pss_mib', '{:.0f}')} |")
    lines += ["", f"scaling efficiency 1 -> {n} ranks: {g('scaling_efficiency', '{:.2f}')}; "
              f"{n} ranks x 1 thread vs 1 rank x {n} threads: {g('ranks_vs_threads', '{:.2f}')}x; "
              f"memory {n} ranks / 1 rank: {g('memory_ratio_ranks', '{:.2f}')}x", ""]
    fams = [x.group(1) for x in (re.match(r"softprompt_fam_([a-z0-9]+)_step_s$", k) for k in m) if x]
    if fams:
        lines += ["| family (model) | softprompt step (s) | PyTorch step (s) | speed-up | "
                  "loss softprompt / PyTorch (relative difference) | peak RSS softprompt / PyTorch (MiB) |",
                  "|---|---|---|---|---|---|"]
        for t in fams:
            sp, pt = f"softprompt_fam_{t}", f"pytorch_fam_{t}"
            lines.append(f"| {t} | {g(sp + '_step_s', '{:.3f}')} | {g(pt + '_step_s', '{:.3f}')} | "
                         f"{g(f'fam_{t}_speedup_vs_pytorch', '{:.2f}x')} | "
                         f"{g(sp + '_loss_first', '{:.7f}')} / {g(pt + '_loss_first', '{:.7f}')} "
                         f"({g(f'fam_{t}_loss_rel_diff', '{:.1e}')}) | "
                         f"{g(sp + '_peak_rss_mib', '{:.0f}')} / {g(pt + '_peak_rss_mib', '{:.0f}')} |")
        lines.append("")
    if rows:
        lines += ["| positions (B x S = const) | softprompt step (s) | PyTorch step (s) | attention share of FLOPs | activations KiB/token |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r[0]} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.2f} | {r[4]:.0f} |" for r in rows]
    text = "\n".join(lines) + "\n"
    with open(os.path.join(out, "summary.md"), "w") as f:
        f.write(text)
    print(text, end="")


if __name__ == "__main__":
    main()
