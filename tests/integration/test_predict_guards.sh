# predict's guards, shared with train: the run lock (OUT.lock beside OUT, train's OUT/.lock
# implementation) keeps a second predict run off an output another one is writing and names
# the holder, also for --check; a finished run leaves no lock; the memory check (train's
# estimate, with the prompts' key/value prefixes) refuses a run that would not fit before any
# output exists, also for --check.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

"$SP_CLI" init-model --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 --random-norms \
  --seed 1 model >/dev/null
"$SP_SYNTH" big.h5 4000 64 16 2
/usr/bin/python3 - <<'PY'
import h5py, numpy as np
with h5py.File("p.h5", "w") as f:
    f["prompt"] = np.random.default_rng(0).normal(size=(16, 32)).astype(np.float32)
PY
run=(predict --model model --data big.h5 --prompt p.h5 --threads 1 --quiet)
expect_refused() { # status-file output-file pattern what
  (( $(cat "$1") == 1 )) || { cat "$2"; fail "$4: exit status $(cat "$1"), expected 1"; }
  grep -q -- "$3" "$2" || { cat "$2"; fail "$4: no '$3' in the message"; }
}

# --- one run per output ----------------------------------------------------------------------
"$SP_CLI" "${run[@]}" --out out.jsonl --micro-batch 1 --chunk 1 &
pid=$!
for _ in $(seq 1 600); do [[ -s out.jsonl.lock && -s out.jsonl.partial ]] && break; sleep 0.02; done
kill -STOP $pid 2>/dev/null || fail "the first run ended before it could be held"
[[ -s out.jsonl.lock ]] || { kill -CONT $pid; fail "the first run holds no out.jsonl.lock"; }
set +e
"$SP_CLI" "${run[@]}" --out out.jsonl --force > second.out 2>&1; echo $? > second.rc
"$SP_CLI" "${run[@]}" --out out.jsonl --check > check.out 2>&1; echo $? > check.rc
set -e
kill -CONT $pid
expect_refused second.rc second.out "is in use by another predict run (pid $pid on $(hostname)" \
  "a second predict run on the same --out (even with --force)"
expect_refused check.rc check.out "is in use by another predict run" "predict --check on it"
kill -TERM $pid
set +e; wait $pid; rc=$?; set -e
(( rc == 75 )) || fail "the first run, stopped by SIGTERM, exited $rc"
[[ ! -e out.jsonl.lock ]] || fail "a stopped run left its lock file"
"$SP_CLI" "${run[@]}" --out out.jsonl --force
[[ -s out.jsonl && ! -e out.jsonl.lock && ! -e out.jsonl.partial ]] \
  || fail "the next run did not finish cleanly"
ok "a second predict on an output being written is refused naming the holder (also --check); the lock goes with the run"

# --- the memory check --------------------------------------------------------------------------
for check in "" --check; do
  set +e
  SP_MAX_MEMORY=64M "$SP_CLI" "${run[@]}" --out small.jsonl $check > mem.out 2>&1; echo $? > mem.rc
  set -e
  expect_refused mem.rc mem.out "predicting needs about .* GiB per rank .* only 0.06 GiB is available (SP_MAX_MEMORY)" \
    "predict $check that does not fit"
  [[ ! -e small.jsonl && ! -e small.jsonl.partial && ! -e small.jsonl.lock ]] \
    || fail "a refused predict left files behind"
done
SP_MAX_MEMORY=2G "$SP_CLI" "${run[@]}" --out fits.jsonl --check > fits.out \
  || fail "a run that fits was refused"
ok "predict refuses what does not fit (SP_MAX_MEMORY), before writing anything, also --check"
