#!/usr/bin/env bash
# Memory of ranks on one node: RSS and PSS (proportional set size: shared pages divided among
# the processes sharing them) of each softprompt rank while it trains, for 1 and 2 ranks, with
# an F32 model (used in place from the shared mapping) and a BF16 one (converted privately).
# usage: bench/memory.sh [BUILD_DIR]   (default build/; makes GPT-2 124M-shaped random models)
set -euo pipefail
source "$(dirname "$0")/../scripts/lib/common.sh"
root=$SP_ROOT
build=${1:-$root/build}
cli=$build/softprompt synth=$build/tests/sp_synth
sp_mpi_env
work=$(mktemp -d "${TMPDIR:-/tmp}/sp-mem.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$cli" init-model --dtype f32 "$work/f32" >/dev/null
"$cli" init-model --dtype bf16 "$work/bf16" >/dev/null
"$synth" "$work/train.h5" 64 50257 20 1

# peak KiB of a field of /proc/PID/smaps_rollup, per pid, while the job runs
watch_job() { # peak RSS and PSS of each rank of the running job (not mpirun)
  local peak_rss=() peak_pss=()
  while kill -0 "$job" 2>/dev/null; do
    local i=0
    for pid in $(pgrep -f "^$cli train --model $model_dir" || true); do
      local rss pss
      rss=$(awk '/^Rss:/{print $2}' /proc/$pid/smaps_rollup 2>/dev/null || echo 0)
      pss=$(awk '/^Pss:/{print $2}' /proc/$pid/smaps_rollup 2>/dev/null || echo 0)
      (( ${rss:-0} > ${peak_rss[i]:-0} )) && peak_rss[i]=$rss
      (( ${pss:-0} > ${peak_pss[i]:-0} )) && peak_pss[i]=$pss
      i=$((i + 1))
    done
    sleep 0.2
  done
  for i in "${!peak_rss[@]}"; do
    printf '  rank %d: peak RSS %4d MiB, peak PSS %4d MiB\n' "$i" $((peak_rss[i] / 1024)) $((peak_pss[i] / 1024))
  done
}

for dtype in f32 bf16; do
  for ranks in 1 2; do
    model_dir=$work/$dtype
    echo "$dtype model, $ranks rank(s), B=8 sequences of ~30 tokens:"
    mpirun -np "$ranks" --bind-to none "$cli" train --model "$model_dir" --train "$work/train.h5" \
      --out "$work/out-$dtype-$ranks" --steps 6 --global-batch 16 --micro-batch 8 --threads 1 \
      --quiet --resume never >/dev/null 2>&1 &
    job=$!
    watch_job
    wait "$job"
  done
done
