# What a training run may not do (docs/reliability.md): share its output directory with another
# run, write into a directory it did not make (a model, a dataset, anyone's files), go on past a
# non-finite loss or persist non-finite state, rewrite a finished run, or start on input it
# could have refused at once. And `train --check`, which finds all of that without writing.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

"$SP_CLI" init-model --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 --seed 1 \
  model >/dev/null
"$SP_SYNTH" train.h5 256 64 16 1
"$SP_SYNTH" valid.h5 64 64 16 2
base=(train --model model --train train.h5 --threads 1 --quiet --global-batch 8)
tree_hash() { (cd "$1" && find . -type f ! -name .lock -print0 | sort -z | xargs -0 sha256sum); }
expect_fail() { # out-file pattern what: exit status 1 and the pattern in the output
  local rc=$1 out=$2 pattern=$3 what=$4
  (( rc == 1 )) || { cat "$out"; fail "$what: exit status $rc, expected 1"; }
  grep -q -- "$pattern" "$out" || { cat "$out"; fail "$what: no '$pattern' in the message"; }
}

# --- one run per directory --------------------------------------------------------------------
"$SP_CLI" "${base[@]}" --out run --steps 100000 --log-every 1 &
pid=$!
for _ in $(seq 1 600); do [[ -s run/metrics.jsonl ]] && break; sleep 0.05; done
[[ -s run/metrics.jsonl ]] || fail "the first run did not start"
set +e
t0=$(date +%s.%N)
"$SP_CLI" "${base[@]}" --out run --steps 100000 > second.out 2>&1; rc=$?
t1=$(date +%s.%N)
"$SP_CLI" "${base[@]}" --out run --steps 100000 --check > check.out 2>&1; rc2=$?
set -e
expect_fail $rc second.out "is in use by another training run (pid $pid on $(hostname)" \
  "a second trainer on the same --out"
python3 -c "import sys; assert float(sys.argv[2]) - float(sys.argv[1]) < 20" "$t0" "$t1" \
  || fail "the second trainer was not refused at once"
expect_fail $rc2 check.out "is in use by another training run" "train --check on a locked --out"
kill -TERM $pid
set +e; wait $pid; rc=$?; set -e
(( rc == 75 )) || fail "the first run, stopped by SIGTERM, exited $rc"
[[ ! -s run/.lock ]] || fail "a run that ended left its lock holder in run/.lock"
"$SP_CLI" "${base[@]}" --out run --steps 100000 --check > check2.out ||
  { cat check2.out; fail "train --check refused a directory whose run had stopped"; }
grep -q "continues the run in run at step" check2.out || { cat check2.out; fail "check: $(cat check2.out)"; }
ok "a second trainer (and --check) is refused at once, naming the holder; the directory is free after the run"

# A run killed with SIGKILL leaves its holder in .lock; the kernel dropped its flock, so the
# next run takes the directory over. Without flock (file systems that lack it: the lease),
# this host's dead pid is stale at once, another host's holder only when its heartbeat is old.
"$SP_CLI" "${base[@]}" --out killed --steps 100000 &
pid=$!
for _ in $(seq 1 600); do [[ -s killed/.lock ]] && break; sleep 0.05; done
kill -9 $pid; wait $pid 2>/dev/null || true
[[ -s killed/.lock ]] || fail "the killed run's lock names no holder"
"$SP_CLI" "${base[@]}" --out killed --steps 3 || fail "a killed run's stale lock was not taken over"
SP_LOCK_NO_FLOCK=1 "$SP_CLI" "${base[@]}" --out lease --steps 100000 &
pid=$!
for _ in $(seq 1 600); do [[ -s lease/.lock ]] && break; sleep 0.05; done
set +e
SP_LOCK_NO_FLOCK=1 "$SP_CLI" "${base[@]}" --out lease --steps 100000 > lease.out 2>&1; rc=$?
set -e
expect_fail $rc lease.out "pid $pid on $(hostname)" "lease: a live holder on this host"
kill -9 $pid; wait $pid 2>/dev/null || true
SP_LOCK_NO_FLOCK=1 "$SP_CLI" "${base[@]}" --out lease --steps 3 ||
  fail "lease: a dead holder on this host was not taken over"
mkdir other
echo '{"host":"node-elsewhere","pid":1,"job":"","started":"2026-01-01T00:00:00Z"}' > other/.lock
for mode in 0 1; do
  touch other/.lock
  set +e
  SP_LOCK_NO_FLOCK=$mode "$SP_CLI" "${base[@]}" --out other --steps 3 > other.out 2>&1; rc=$?
  set -e
  expect_fail $rc other.out "pid 1 on node-elsewhere" "a fresh holder on another host (no-flock $mode)"
done
touch -d '-10 minutes' other/.lock
"$SP_CLI" "${base[@]}" --out other --steps 3 || fail "a stale holder on another host was not taken over"
# A requeued Slurm job finds its previous incarnation's lock (same job id) and waits for it.
mkdir requeue
echo '{"host":"node-elsewhere","pid":1,"job":"4242","started":"2026-01-01T00:00:00Z"}' > requeue/.lock
SLURM_JOB_ID=4242 "$SP_CLI" train --model model --train train.h5 --threads 1 --global-batch 8 \
  --out requeue --steps 3 > requeue.out 2>&1 &
pid=$!
sleep 3
kill -0 $pid 2>/dev/null || { cat requeue.out; fail "the requeued job did not wait for its earlier run"; }
: > requeue/.lock   # the earlier run ends
wait $pid || { cat requeue.out; fail "the requeued job failed after its earlier run ended"; }
grep -q "still locked by this job's previous run" requeue.out || fail "no word of the wait"
ok "stale locks are taken over (SIGKILL; no flock: dead pid, old heartbeat); a requeued job waits for itself"

# --- a run never writes into a directory it did not make --------------------------------------
before=$(tree_hash model)
set +e
"$SP_CLI" "${base[@]}" --out model --steps 3 > model.out 2>&1; rc=$?
set -e
expect_fail $rc model.out "holds a model (config.json of model_type gpt2)" "--out MODEL_DIR"
[[ $(tree_hash model) == "$before" ]] || fail "--out MODEL_DIR changed the model"
[[ ! -e model/.lock && ! -e model/checkpoints ]] || fail "--out MODEL_DIR left files in the model"
mkdir mine && echo notes > mine/notes.txt && cp train.h5 mine/
set +e
"$SP_CLI" "${base[@]}" --out mine --steps 3 > mine.out 2>&1; rc=$?
set -e
expect_fail $rc mine.out "holds files softprompt did not write (" "--out with someone's files"
grep -q "a model or dataset among them" mine.out || { cat mine.out; fail "the dataset was not named"; }
[[ $(ls -A mine | sort | tr '\n' ' ') == "notes.txt train.h5 " ]] || fail "--out with foreign files was changed"
# a refused run leaves no trace, not even the directory it would have made
set +e
"$SP_CLI" train --model model --train train.h5 --out fresh --steps 3 --global-batch 1000 > big.out 2>&1; rc=$?
"$SP_CLI" "${base[@]}" --out fresh2 --steps 3 --valid train.h5 > same.out 2>&1; rc2=$?
set -e
expect_fail $rc big.out "global-batch 1000 is larger than the training set (256 examples" \
  "--global-batch over the set"
expect_fail $rc2 same.out "is the training set" "--valid equal to --train"
[[ ! -e fresh && ! -e fresh2 ]] || fail "a refused run left its output directory behind"
mkdir empty
set +e
"$SP_CLI" train --model model --train train.h5 --out empty --steps 3 --global-batch 1000 2>/dev/null
set -e
[[ -d empty && -z $(ls -A empty) ]] || fail "a refused run changed the empty directory it was given"
ok "--out holding a model or foreign files is refused untouched; refused runs leave nothing"

# --- non-finite values stop the run; nothing non-finite is saved ------------------------------
nan_position() { # MODEL ROW: position embedding ROW becomes NaN
  python3 - "$1/model.safetensors" "$2" <<'PY'
import json, struct, sys
path, row = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    n = struct.unpack("<Q", f.read(8))[0]
    t = json.loads(f.read(n))["wpe.weight"]
    d = t["shape"][1]
    f.seek(8 + n + t["data_offsets"][0] + row * d * 4)
    f.write(struct.pack("<f", float("nan")) * d)
PY
}
# position 26 is NaN: only the longest examples (16 soft + 10 filler + key) reach it
cp -r model nanmodel && nan_position nanmodel 26
nan=(train --model nanmodel --train train.h5 --threads 1 --quiet --global-batch 2 --steps 200
     --save-every 1 --keep 1000 --optimizer adamw --lr 0.01)
set +e
"$SP_CLI" "${nan[@]}" --out nan > nan.out 2>&1; rc=$?
set -e
expect_fail $rc nan.out "the loss or gradient is not finite on" "a NaN in the model's weights"
k=$(sed -n 's/.*step \([0-9]*\): the loss.*/\1/p' nan.out)
[[ -n $k ]] || fail "no step in: $(cat nan.out)"
ids=$(sed -n 's/.*of train.h5 (\([0-9, ]*\)).*/\1/p' nan.out)
/usr/bin/python3 - train.h5 "$ids" <<'PY' || fail "the examples named are not the ones that reach position 26"
import sys, h5py
f = h5py.File(sys.argv[1], "r")
off = f["offsets"][:]
named = [int(x) for x in sys.argv[2].split(",")]
assert named and all(off[i + 1] - off[i] == 27 for i in named), (named, [off[i+1]-off[i] for i in named])
PY
newest=$(ls nan/checkpoints | tail -1)
[[ -z $newest || $newest < $(printf 'step-%012d.h5' "$k") ]] || fail "a checkpoint at or after step $k"
[[ ! -e nan/adapter ]] || fail "the failed run exported an adapter"
set +e
"$SP_CLI" "${nan[@]}" --out nan > nan2.out 2>&1; rc=$?
mpi 2 "${nan[@]}" --deterministic --micro-batch 1 --out nan-det > nan3.out 2>&1; rc3=$?
set -e
expect_fail $rc nan2.out "step $k: the loss or gradient is not finite on" "the resumed NaN run"
grep -q "($ids)" nan3.out || { cat nan3.out; fail "2 ranks --deterministic named other examples"; }
(( rc3 == 1 )) || fail "2 ranks: exit $rc3"
(( $(grep -c "not finite" nan3.out) == 1 )) || { cat nan3.out; fail "2 ranks: the failure was not reported once"; }
set +e
cp -r model nanmodel5 && nan_position nanmodel5 5   # reached by the template alone
"$SP_CLI" eval --model nanmodel5 --data train.h5 > eval.out 2>&1; rc=$?
set -e
expect_fail $rc eval.out "is not finite" "eval on a model whose weights hold NaN"
ok "NaN in the weights: step $k stops the run (examples $ids named, the same with 2 ranks), no state saved; resume stops there too; eval refuses"

# --- a finished run stays as it is ------------------------------------------------------------
fin0=("${base[@]}" --valid valid.h5 --steps 12 --save-every 4)
fin=("${fin0[@]}" --eval-every 4)
"$SP_CLI" "${fin[@]}" --out done
h0=$(tree_hash done)
"$SP_CLI" "${fin[@]}" --out done 2> again.err || fail "re-running a finished run failed"
grep -q "finished at step 12; nothing to do" again.err || { cat again.err; fail "no word that it was finished"; }
[[ $(tree_hash done) == "$h0" ]] || fail "re-running a finished run changed its files"
[[ -e done/.lock && ! -s done/.lock ]] || fail "re-running a finished run removed or kept its lock"
"$SP_CLI" "${fin0[@]}" --out done --eval-every 2 --keep 5 2> again2.err || fail "other logging flags"
[[ $(tree_hash done) == "$h0" ]] || fail "re-running a finished run with other --eval-every changed it"
set +e
"$SP_CLI" "${fin[@]}" --out done --lr 0.1 > lr.out 2>&1; rc=$?
"$SP_CLI" "${base[@]}" --valid valid.h5 --steps 8 --out done > short.out 2>&1; rc2=$?
set -e
expect_fail $rc lr.out "optimizer.lr" "a finished run with another --lr"
expect_fail $rc2 short.out "the run is at step 12, past the 8 steps" "a finished run cut short"
[[ $(tree_hash done) == "$h0" ]] || fail "a refused re-run changed the finished run"
rm -r done/adapter
"$SP_CLI" "${fin[@]}" --out done 2>/dev/null || fail "re-run with the adapter missing"
[[ $(tree_hash done) == "$h0" ]] || fail "the adapter written again differs"
"$SP_CLI" "${fin[@]}" --out done --check | grep -q "is finished (step 12): nothing to do" ||
  fail "train --check on a finished run"
ok "a finished run re-run: nothing rewritten (other logging flags too), other --lr or fewer steps refused, a lost adapter restored"

# --- train --check writes nothing ---------------------------------------------------------------
"$SP_CLI" "${base[@]}" --valid valid.h5 --steps 30 --out checked --check > ok.out
grep -q "a new run of 30 steps in checked" ok.out || { cat ok.out; fail "check: $(cat ok.out)"; }
[[ ! -e checked ]] || fail "train --check created the output directory"
set +e
"$SP_CLI" train --model model --train valid.h5 --threads 1 --global-batch 8 --steps 30 --out run \
  --check > other-data.out 2>&1; rc=$?
set -e
expect_fail $rc other-data.out "trained on another dataset" "check: another dataset for an existing run"
ok "train --check: a one-line summary, or the problem; nothing written"

# --- what a checkpoint says is checked against the run, beyond its checksum -------------------
"$SP_CLI" "${base[@]}" --steps 6 --save-every 3 --out crafted
"$SP_CLI" "${base[@]}" --steps 6 --save-every 3 --out crafted2 2>/dev/null
for edit in "epoch_position 1000000000000" "epoch_position 257" "tokens_seen 5"; do
  cp crafted/checkpoints/step-000000000006.h5 c.h5
  "$SP_CKPT_EDIT" c.h5 $edit
  set +e
  "$SP_CLI" "${base[@]}" --steps 12 --out crafted2 --resume c.h5 > crafted.out 2>&1; rc=$?
  set -e
  expect_fail $rc crafted.out "c.h5: " "a checkpoint with $edit (valid checksum)"
done
# every checkpoint unusable: a new run would replace the old run's history, so it is refused
for f in crafted/checkpoints/step-*.h5; do truncate -s 100 "$f"; done
set +e
"$SP_CLI" "${base[@]}" --steps 12 --out crafted > unusable.out 2>&1; rc=$?
set -e
expect_fail $rc unusable.out "holds checkpoints of a run but none can be resumed" "no usable checkpoint"
ok "crafted checkpoint counters (valid checksums) are refused by name; a directory of unusable checkpoints is not restarted over"

# --- export keeps an adapter it finds unless --force; eval/export check the model -------------
mkdir theirs && cp done/adapter/* theirs/ && h=$(tree_hash theirs)
set +e
"$SP_CLI" export --model model --prompt crafted2/checkpoints/step-000000000006.h5 --out theirs \
  > exp.out 2>&1; rc=$?
set -e
expect_fail $rc exp.out "theirs/adapter_model.safetensors already exists (--force replaces it)" \
  "export over an adapter"
[[ $(tree_hash theirs) == "$h" ]] || fail "a refused export changed the adapter it found"
"$SP_CLI" export --model model --prompt crafted2/checkpoints/step-000000000006.h5 --out theirs \
  --force >/dev/null || fail "export --force"
"$SP_CLI" init-model --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 --seed 2 \
  model2 >/dev/null
set +e
"$SP_CLI" eval --model model2 --data valid.h5 --prompt done/best.h5 > mm.out 2>&1; rc=$?
set -e
expect_fail $rc mm.out "another model" "eval of a checkpoint of another model"
"$SP_CLI" eval --model model2 --data valid.h5 --prompt done/best.h5 --allow-model-mismatch \
  > mm2.out 2>&1 || { cat mm2.out; fail "--allow-model-mismatch"; }
grep -q "warning" mm2.out || fail "--allow-model-mismatch: no warning"
ok "export refuses to replace an adapter without --force; a checkpoint of another model needs --allow-model-mismatch"

# --- datasets are checked against the model before the first step ------------------------------
# Examples longer than the model's positions: refused at the start (before, the run failed at
# the step that drew one, and again at every resume), naming the example and the fix.
"$SP_CLI" init-model --layers 2 --d 32 --heads 4 --vocab 64 --ctx 24 --std 0.3 short >/dev/null
set +e
"$SP_CLI" train --model short --train train.h5 --global-batch 8 --steps 30 --out too-long \
  > long.out 2>&1; rc=$?
set -e
expect_fail $rc long.out "more than the model's 24 positions" "examples longer than n_positions"
grep -q "softprompt prepare --max-length 24" long.out || { cat long.out; fail "no --max-length hint"; }
[[ ! -e too-long ]] || fail "the refused run left its directory"
# A dataset prepared with another tokenizer than the model's: refused, unless overridden.
cp -r model tokmodel
cp "$SP_CACHE_DIR/gpt2-tokenizer/encoder.json" "$SP_CACHE_DIR/gpt2-tokenizer/vocab.bpe" tokmodel/
set +e
tok=(train --model tokmodel --train train.h5 --threads 1 --quiet --global-batch 8 --steps 3)
"$SP_CLI" "${tok[@]}" --out tok > tok.out 2>&1; rc=$?
"$SP_CLI" eval --model tokmodel --data valid.h5 > tok2.out 2>&1; rc2=$?
set -e
expect_fail $rc tok.out "was prepared with tokenizer synthetic, but the model's tokenizer" \
  "another tokenizer (train)"
grep -q -- "--allow-tokenizer-mismatch" tok.out || fail "the override is not named"
expect_fail $rc2 tok2.out "was prepared with tokenizer synthetic" "another tokenizer (eval)"
"$SP_CLI" "${tok[@]}" --out tok --allow-tokenizer-mismatch ||
  fail "--allow-tokenizer-mismatch"
ok "examples longer than the model's positions and data of another tokenizer are refused before the first step"

# --- the same run writes the same bytes -----------------------------------------------------------
# HDF5 would stamp object times into every dataset and group; softprompt's files record none, so
# a run repeated (a second later) writes byte-identical checkpoints and adapters.
"$SP_CLI" "${base[@]}" --steps 4 --save-every 2 --out same1
sleep 1
"$SP_CLI" "${base[@]}" --steps 4 --save-every 2 --out same2
for f in checkpoints/step-000000000002.h5 checkpoints/step-000000000004.h5 \
         adapter/adapter_model.safetensors; do
  same_file "same1/$f" "same2/$f" "a repeated run's $f"
done
ok "a repeated run writes byte-identical checkpoints and adapters"
