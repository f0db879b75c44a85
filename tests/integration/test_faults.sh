# Fault injection around checkpointing and training runs. In every case the newest good
# checkpoint survives, the error says what happened, and resuming ends bitwise equal to the
# uninterrupted run:
#   - SIGKILL at random moments of a run that checkpoints every step (many trials, most of them
#     during a checkpoint write);
#   - a full disk (a small tmpfs) for training and for prepare, and a read-only output file
#     system;
#   - one rank of a 2-rank job killed mid-step (the whole job ends, then resumes);
#   - a bit flip in the newest checkpoint (its checksum fails; the previous one is used).
# Needs root for the tmpfs mounts (CI runs as root); fails loudly rather than skipping.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
mounts=()
cleanup_mounts() { for m in "${mounts[@]}"; do umount -l "$m" 2>/dev/null || true; done; }
trap 'cleanup_mounts; rm -rf "$WORK"' EXIT

"$SP_CLI" init-model --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 --random-norms \
  --seed 1 model >/dev/null
"$SP_SYNTH" train.h5 256 64 16 1
# The reference run's length: past the step where the 160 KiB disk below fills up (12: one
# checkpoint of ~9 KiB per step) and the bit-flip run's step 42, with margin.
steps=60
base=(train --model "$WORK/model" --train "$WORK/train.h5" --threads 1 --quiet
      --global-batch 8 --micro-batch 4 --save-every 1 --optimizer adafactor)
run=("${base[@]}" --steps $steps)
"$SP_CLI" "${run[@]}" --out ref
[[ -s ref/adapter/adapter_model.safetensors ]] || fail "reference run wrote no adapter"

# --- SIGKILL at random moments, repeatedly, then a resume to the end ------------------------
# The killed run is long (3000 steps) so that no trial completes however fast the machine is;
# after the trials it resumes with a nearer end (the schedule is constant, so the first steps
# of any length of run are the same) and is compared with an uninterrupted run of that length:
# the steps the trials never reached are not run at all.
# Each kill lands a random 0-200 ms after the time a run takes to start and write its first
# checkpoint (measured: the sanitizer build starts far slower than 200 ms).
long=("${base[@]}" --steps 3000)
t=$(date +%s%N)
"$SP_CLI" "${base[@]}" --steps 1 --out first
start_ms=$(( ($(date +%s%N) - t) / 1000000 ))
kills=0 mid_write=0 rc=1
for trial in $(seq 1 40); do
  "$SP_CLI" "${long[@]}" --out "$WORK/killed" 2>>killed.err &
  pid=$!
  ms=$(( start_ms + RANDOM % 200 ))
  sleep "$((ms / 1000)).$(printf "%03d" $((ms % 1000)))"
  if kill -9 $pid 2>/dev/null; then
    wait $pid 2>/dev/null || true
    kills=$((kills + 1))
    compgen -G "killed/checkpoints/*.tmp.*" >/dev/null && mid_write=$((mid_write + 1))
    rm -f killed/checkpoints/*.tmp.* # what an operator may or may not do: both must work
  else
    wait $pid && rc=0 && break
  fi
done
(( kills >= 10 )) || fail "only $kills kills landed: the run is too short to test anything"
end=3000
if (( rc != 0 )); then
  newest=$(ls killed/checkpoints/step-*.h5 2>/dev/null | tail -1 || true)
  reached=0
  [[ -n $newest ]] && reached=$((10#$(basename "$newest" .h5 | sed 's/^step-//')))
  end=$((reached + 20))
  set +e; "$SP_CLI" "${base[@]}" --steps $end --out killed 2>>killed.err; rc=$?; set -e
fi
(( rc == 0 )) || { tail killed.err; fail "the run never completed after $kills kills"; }
"$SP_CLI" "${base[@]}" --steps $end --out ref-long
same_file killed/adapter/adapter_model.safetensors ref-long/adapter/adapter_model.safetensors \
  "killed $kills times, then completed at step $end"
ok "SIGKILL $kills times at random moments ($mid_write during a checkpoint write; started in $start_ms ms): completed bitwise at step $end"

# --- a full disk ----------------------------------------------------------------------------
mkdir full
mount -t tmpfs -o size=160k tmpfs full || fail "cannot mount a tmpfs (the test needs root)"
mounts+=("$WORK/full")
set +e
"$SP_CLI" "${run[@]}" --out "$WORK/full/run" --keep 100000 2> full.err; rc=$?
set -e
(( rc != 0 && rc != 75 )) || fail "training on a full disk exited with $rc"
grep -q "No space left on device" full.err || { cat full.err; fail "no 'No space left' in the message"; }
grep -q "full/run" full.err || { cat full.err; fail "the message does not name the output"; }
cp -a full/run disk-run
latest=$(ls disk-run/checkpoints/step-*.h5 | tail -1)
"$SP_CLI" info "$latest" >/dev/null || fail "the newest checkpoint left by a full disk does not verify"
"$SP_CLI" "${run[@]}" --out disk-run 2> resume.err || { cat resume.err; fail "resume after a full disk failed"; }
same_file disk-run/adapter/adapter_model.safetensors ref/adapter/adapter_model.safetensors \
  "disk full at $(basename "$latest"), resumed elsewhere"
ok "full disk: exit $rc with 'No space left on device', newest checkpoint valid, resumed bitwise"

# --- prepare onto a full disk -----------------------------------------------------------------
# HDF5 writes most of a dataset when the file is closed, so a disk with a little room left fills
# up at H5Fclose (HDF5 1.10's exit handler then crashed with SIGSEGV after the message); a disk
# with no room fails at H5Fcreate. Both must exit 1 naming the output and the reason, leaving
# no file behind.
mkdir fullprep
mount -t tmpfs -o size=64k tmpfs fullprep || fail "cannot mount a tmpfs"
mounts+=("$WORK/fullprep")
prepare_full() { # $1: 4 KiB blocks of filler; $2: the failing step expected in the message
  rm -f fullprep/*
  dd if=/dev/zero of=fullprep/filler bs=4k count="$1" 2>/dev/null || true
  set +e
  "$SP_CLI" prepare --tokenizer "$SP_FIXTURES_DIR/tokenizer/hf/smollm" \
    --input "$SP_FIXTURES_DIR/prepare/reviews.jsonl" --out "$WORK/fullprep/ds" 2> prep.err
  local rc=$?
  set -e
  (( rc == 1 )) || { cat prep.err; fail "prepare onto a full disk exited with $rc, expected 1"; }
  grep -q "fullprep/ds-train.h5: $2.*No space left on device" prep.err ||
    { cat prep.err; fail "no '$2 ... No space left on device' naming the output"; }
  [[ "$(ls fullprep)" == filler ]] || fail "prepare left files on the full disk: $(ls fullprep)"
}
prepare_full 16 "cannot create HDF5 file"
prepare_full 14 "cannot close (flush) the HDF5 file"
ok "prepare onto a full disk: exit 1 with 'No space left on device' at create and at close, no files left"

# --- a read-only output file system ---------------------------------------------------------
mkdir ro
mount -t tmpfs -o size=4m tmpfs ro || fail "cannot mount a tmpfs"
mounts+=("$WORK/ro")
cp -a disk-run ro/run
rm -rf ro/run/adapter ro/run/best.h5
mount -o remount,ro "$WORK/ro" || fail "cannot remount read-only"
before=$(cd ro/run && find . -type f -exec sha256sum {} + | sort)
set +e
"$SP_CLI" "${base[@]}" --out "$WORK/ro/run" --steps $((steps + 20)) 2> ro.err; rc=$?
set -e
(( rc != 0 && rc != 75 )) || fail "training into a read-only file system exited with $rc"
grep -q "Read-only file system" ro.err || { cat ro.err; fail "no 'Read-only file system' in the message"; }
[[ "$(cd ro/run && find . -type f -exec sha256sum {} + | sort)" == "$before" ]] ||
  fail "files changed on a read-only file system"
ok "read-only output: exit $rc with 'Read-only file system', nothing changed"

# --- one rank of two killed mid-step --------------------------------------------------------
# As above: a long run is killed, resumed to a nearer end and compared with a 2-rank run of it.
mpi_bg 2 "${long[@]}" --out "$WORK/rank"
pid=$MPI_PID
for _ in $(seq 1 2400); do
  (( $(ls rank/checkpoints/step-*.h5 2>/dev/null | wc -l) >= 2 )) && break
  sleep 0.05
done
victim=$(pgrep -f -- "--out $WORK/rank" | while read -r p; do
  [[ $(cat /proc/$p/comm 2>/dev/null) == softprompt ]] && echo "$p"; done | tail -1)
[[ -n $victim ]] || fail "no rank process found"
t0=$SECONDS
kill -9 "$victim"
set +e; wait $pid; rc=$?; set -e
(( rc != 0 )) || fail "the job survived a killed rank"
(( SECONDS - t0 < 60 )) || fail "the job took $((SECONDS - t0)) s to end after a rank died"
newest=$(ls rank/checkpoints/step-*.h5 | tail -1)
end=$((10#$(basename "$newest" .h5 | sed 's/^step-//') + 20))
mpi 2 "${base[@]}" --steps $end --out rank 2> rank.err || { cat rank.err; fail "resume after a killed rank failed"; }
mpi 2 "${base[@]}" --steps $end --out ref2
same_file rank/adapter/adapter_model.safetensors ref2/adapter/adapter_model.safetensors \
  "a rank killed mid-run, resumed to step $end"
ok "a rank killed: the job ended (exit $rc) in $((SECONDS - t0)) s, resumed bitwise to step $end"

# --- a bit flip in the newest checkpoint -----------------------------------------------------
# a run stopped at step 42 (a finished shorter run: same schedule, constant learning rate)
"$SP_CLI" "${base[@]}" --out flip-src --steps 42 >/dev/null 2>&1
mkdir flip && cp -a flip-src/checkpoints flip/
newest=$(ls flip/checkpoints/step-*.h5 | tail -1)
# one bit of the stored prompt values (a flip in unused bytes of the file would change nothing)
/usr/bin/python3 - "$newest" <<'PY'
import sys, h5py
path = sys.argv[1]
with h5py.File(path, "r") as f:
    off = f["prompt"].id.get_offset()
assert off is not None, "prompt is not stored contiguously"
with open(path, "r+b") as f:
    f.seek(off + 5); b = f.read(1); f.seek(off + 5); f.write(bytes([b[0] ^ 0x10]))
PY
"$SP_CLI" "${run[@]}" --out flip 2> flip.err || { cat flip.err; fail "resume past a flipped checkpoint failed"; }
grep -q "skipping .*$(basename "$newest")" flip.err || { cat flip.err; fail "the flipped checkpoint was not reported"; }
same_file flip/adapter/adapter_model.safetensors ref/adapter/adapter_model.safetensors \
  "bit flip in the newest checkpoint"
ok "a bit flip in the newest checkpoint: skipped with '$(grep -m1 skipping flip.err | cut -c1-80)…', resumed bitwise"

# --- a run that cannot fit in memory is refused before it starts ----------------------------
"$SP_CLI" init-model --layers 4 --d 256 --heads 4 --vocab 1000 --ctx 128 big >/dev/null
"$SP_SYNTH" big.h5 512 1000 16 1
set +e
SP_MAX_MEMORY=200M "$SP_CLI" train --model big --train big.h5 --micro-batch 256 --global-batch 256 \
  --steps 1 --threads 1 --quiet --out "$WORK/big-run" 2> big.err; rc=$?
set -e
(( rc == 1 )) || fail "an over-large run exited with $rc"
grep -Eq "needs about [0-9.]+ GiB per rank .* but only 0.20 GiB is available \(SP_MAX_MEMORY\)" big.err ||
  { cat big.err; fail "no estimate and limit in the message"; }
[[ ! -e big-run ]] || fail "a refused run wrote into its output directory"
SP_MAX_MEMORY=200M "$SP_CLI" train --model big --train big.h5 --micro-batch 4 --global-batch 8 \
  --steps 1 --threads 1 --quiet --out "$WORK/small" || fail "a run that fits was refused"
ok "memory: an over-large micro-batch is refused up front ($(grep -o 'needs about [0-9.]* GiB' big.err)), a small one runs"
