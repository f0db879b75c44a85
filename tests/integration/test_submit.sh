# scripts/submit and the Slurm job scripts without a cluster (test_slurm.sh runs them on a real
# one). Slurm's commands are replaced by recording doubles in a directory put first on PATH
# (sbatch: --test-only accepts or refuses as told, a submission prints a job id; squeue lists
# what it is told; sinfo reports the nodes' memory it is told; scontrol records requeues); the
# job scripts run the real trainer directly (SP_LAUNCHER=env instead of srun). Checks:
#   submit refuses, exit 2 and naming the numbers, a --time that leaves no time to train after
#   the warning signal, and trainer options the job sets itself (--out, --resume never);
#   submit runs the trainer's own checks (softprompt train --check) before it writes anything:
#   a misspelt or bad flag, a directory that is not a model, an output directory that holds a
#   model or is locked by a running trainer, a run that does not fit a rank's share of the
#   partition's nodes, a bad option in one sweep row;
#   submit writes nothing when Slurm refuses the request (sbatch --test-only), when another
#   job of the output directory is in the queue, or when sbatch fails after all (an earlier
#   job.sbatch stays as it was, a new OUT is removed again);
#   one rule finds the executable (SP_BIN, PATH, SP_HOME/build/softprompt) for submit and the
#   job scripts run from a source tree, and the job script submit writes runs from anywhere;
#   a sweep row's options replace the common ones (SP_TRAIN_ARGS) instead of being given twice,
#   and a row's wrong prompt_length is refused by submit;
#   the job script: a finished run run again ends "finished"; a run signalled before it trained
#   is not requeued; the log of a requeue by hand does not say "restart 1 of at most 0".
source "$(dirname "$0")/lib.sh"
: "${SP_SYNTH:?}" "${SP_REPO:?}"
cd "$WORK"

# --- a source tree whose build/softprompt is the binary under test, and Slurm doubles ----------
mkdir -p tree/scripts tree/build fakebin
cp -r "$SP_REPO/slurm" tree/slurm
cp "$SP_REPO/scripts/submit" tree/scripts/submit
ln -s "$SP_CLI" tree/build/softprompt
cat > fakebin/sbatch <<'EOF'
#!/bin/bash
echo "sbatch $*" >> "$FAKE_LOG"
if [[ $1 == --test-only ]]; then
  if [[ -n ${FAKE_REFUSE:-} ]]; then echo "allocation failure: $FAKE_REFUSE" >&2; exit 1; fi
  echo "sbatch: Job 99 to start at 2030-01-01T00:00:00 using 1 processors on nodes n1 in partition debug" >&2
  exit 0
fi
if [[ -n ${FAKE_FAIL:-} ]]; then echo "sbatch: error: $FAKE_FAIL" >&2; exit 1; fi
echo 42
EOF
cat > fakebin/squeue <<'EOF'
#!/bin/bash
echo "squeue $*" >> "$FAKE_LOG"
[[ -n ${FAKE_QUEUE:-} ]] && echo "$FAKE_QUEUE"
exit 0
EOF
cat > fakebin/sinfo <<'EOF'
#!/bin/bash
echo "sinfo $*" >> "$FAKE_LOG"
case "$*" in
  *%P*) echo "debug*" ;;
  *%m*) echo "${FAKE_NODE_MB:-16000}" ;;
esac
exit 0
EOF
cat > fakebin/scontrol <<'EOF'
#!/bin/bash
echo "scontrol $*" >> "$FAKE_LOG"
exit 0
EOF
chmod +x fakebin/*
export FAKE_LOG=$WORK/fake.log
: > "$FAKE_LOG"
# PATH: the doubles first, and no directory that holds a softprompt executable.
path="$WORK/fakebin"
IFS=: read -ra dirs <<< "$PATH"
for d in "${dirs[@]}"; do [[ -n $d && ! -x $d/softprompt ]] && path+=":$d"; done
export PATH=$path
unset SP_BIN SP_HOME SP_LAUNCHER SLURM_JOB_ID SLURM_RESTART_COUNT SLURM_ARRAY_TASK_ID SP_CONFIG
[[ -z $(type -P softprompt) ]] || fail "softprompt is still on PATH"

"$SP_CLI" init-model --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 --random-norms \
  --seed 1 model >/dev/null
"$SP_SYNTH" train.h5 128 64 16 1
"$SP_SYNTH" valid.h5 32 64 16 2
"$SP_SYNTH" p4-train.h5 128 64 4 3
submit=(tree/scripts/submit --model model --train train.h5 --out)

# expect_refused STATUS PATTERN DESC CMD...: CMD exits STATUS and its stderr matches PATTERN.
expect_refused() {
  local want=$1 pat=$2 desc=$3 rc=0; shift 3
  "$@" > out.txt 2> err.txt || rc=$?
  [[ $rc == "$want" ]] || { cat out.txt err.txt; fail "$desc: exit $rc, expected $want"; }
  grep -q -- "$pat" err.txt || { cat err.txt; fail "$desc: the message does not say '$pat'"; }
  ok "$desc: exit $rc: $(head -c 300 err.txt)"
}

# --- the time limit against the warning signal ---------------------------------------------
expect_refused 2 "--time 2 (120 s) is too short for --signal-seconds 180" "a 2-minute job with the default 180 s warning" \
  "${submit[@]}" runs/short --time 2 -- --steps 5
expect_refused 2 "at least 300 s" "the message names the shortest time limit" \
  "${submit[@]}" runs/short --time 4:59 -- --steps 5
expect_refused 2 "--signal-seconds of at most 240" "the message names the longest warning" \
  "${submit[@]}" runs/short --time 00:06:00 --signal-seconds 300 -- --steps 5
expect_refused 2 "not a Slurm time limit" "a time limit sbatch would not take" \
  "${submit[@]}" runs/short --time 2h -- --steps 5
[[ ! -e runs ]] || fail "a refused submit created its output directory"

# --- trainer options the job sets itself ------------------------------------------------------
expect_refused 2 "--resume never in the trainer options: every run of the job uses --resume auto" \
  "--resume never after --" "${submit[@]}" runs/r -- --steps 5 --resume never
expect_refused 2 "--out in the trainer options" "--out after --" "${submit[@]}" runs/r -- --out elsewhere
[[ ! -e runs ]] || fail "a refused submit created its output directory"

# --- accepted: the job script records SP_HOME and SP_BIN of this tree ----------------------
"${submit[@]}" runs/one --time 5 -- --steps 6 --resume auto > submit.out || { cat submit.out; fail "submit refused a good run"; }
grep -q "^submitted job 42" submit.out || { cat submit.out; fail "submit did not report the job id"; }
grep -q "^check       ok: .*a new run of 6 steps in $WORK/runs/one" submit.out || { cat submit.out; fail "submit did not show the trainer's check"; }
grep -qx "export SP_HOME=\"$WORK/tree\"" runs/one/job.sbatch || fail "job.sbatch does not record SP_HOME"
grep -qx "export SP_BIN=\"$WORK/tree/build/softprompt\"" runs/one/job.sbatch \
  || { grep SP_BIN runs/one/job.sbatch; fail "without SP_BIN or softprompt on PATH, submit did not take the tree's build/softprompt"; }
grep -qx 'export SP_TRAIN_ARGS="--steps 6"' runs/one/job.sbatch || fail "--resume auto was not dropped from the trainer options"
grep -q "^sbatch --test-only " "$FAKE_LOG" || fail "submit did not ask sbatch --test-only"
ok "submit: SP_HOME and SP_BIN recorded as absolute paths; --test-only asked first"

# --- nothing written when Slurm refuses, another job is queued, or sbatch fails ------------
cp runs/one/job.sbatch before.sbatch
snapshot() { (cd runs/one && find . -printf '%p %s %T@\n' | sort); }
snapshot > before.lst
expect_refused 1 "Slurm would not run this job (sbatch --test-only): allocation failure: Requested node configuration is not available" \
  "a request the cluster cannot run" \
  env FAKE_REFUSE="Requested node configuration is not available" "${submit[@]}" runs/one --time 5 --nodes 3 -- --steps 6
snapshot | cmp -s - before.lst || fail "a refused submit changed the existing output directory"
expect_refused 1 "job 7 (PENDING) of $WORK/runs/one is still in the queue" "another job of the directory in the queue" \
  env FAKE_QUEUE="7|PENDING|$WORK/runs/one/job.sbatch" "${submit[@]}" runs/one --time 5 -- --steps 8
expect_refused 1 "job 42 (RUNNING)" "the job submit recorded last, still running" \
  env FAKE_QUEUE="42|RUNNING|/elsewhere/x.sbatch" "${submit[@]}" runs/one --time 5 -- --steps 8
snapshot | cmp -s - before.lst || fail "a refused submit changed the existing output directory"
expect_refused 1 "sbatch failed: sbatch: error: Batch job submission failed" "sbatch failing after the checks" \
  env FAKE_FAIL="Batch job submission failed: Socket timed out" "${submit[@]}" runs/one --time 5 -- --steps 8
cmp -s runs/one/job.sbatch before.sbatch || fail "a failed sbatch left a changed job.sbatch"
[[ ! -e runs/one/job.sbatch.~1~ && ! -e runs/one/logs/job.sbatch.~1~ ]] || fail "a failed sbatch left job.sbatch.~1~"
expect_refused 1 "sbatch failed" "sbatch failing for a new directory" \
  env FAKE_FAIL="Batch job submission failed" "${submit[@]}" runs/new --time 5 -- --steps 8
[[ ! -e runs/new ]] || fail "a failed sbatch left its new output directory"
ok "nothing written or renamed by a refused or failed submit"

# --- the trainer's own checks (softprompt train --check), before anything is written --------
expect_refused 2 "unknown option '--stpes' (did you mean --steps?)" "a misspelt trainer flag" \
  "${submit[@]}" runs/check --time 5 -- --stpes 50
expect_refused 2 "--lr 'abc': expected a number" "a trainer flag with a bad value" \
  "${submit[@]}" runs/check --time 5 -- --lr abc
expect_refused 2 "--check in the trainer options" "--check after --" "${submit[@]}" runs/check --time 5 -- --check
expect_refused 1 "$WORK/tree/config.json: cannot open" "a directory that is not a model" \
  tree/scripts/submit --model tree --train train.h5 --out runs/check --time 5
expect_refused 1 "holds a model" "an output directory holding a model" "${submit[@]}" model --time 5
expect_refused 1 "softprompt train --check refused the run" "the refusal names the check" "${submit[@]}" model --time 5
[[ ! -e runs/check ]] || fail "a refused submit created its output directory"
# A rank's share of the partition's smallest node (sinfo: 100 MB) cannot hold the run.
expect_refused 1 "SP_MAX_MEMORY" "a run that does not fit a rank's share of the nodes' memory" \
  env FAKE_NODE_MB=100 "${submit[@]}" runs/check --time 5 -- --steps 5
env FAKE_NODE_MB=100 "${submit[@]}" runs/check --time 5 --mem 4G --dry-run -- --steps 5 > mem.out \
  || { cat mem.out; fail "--mem 4G did not lift the nodes' memory"; }
rm -rf runs/check
# An output directory locked by a running trainer: the holder is named.
"$SP_CLI" train --model model --train train.h5 --out runs/locked --steps 100000 --save-every 100000 \
  --quiet 2> locked.err &
holder=$!
for (( i = 0; i < 100; i++ )); do [[ -s runs/locked/.lock ]] && break; sleep 0.1; done
expect_refused 1 "pid $holder" "an output directory locked by a running trainer" \
  "${submit[@]}" runs/locked --time 5 -- --steps 100000 --save-every 100000
kill -TERM "$holder"; wait "$holder" || true
[[ ! -e runs/locked/job.sbatch && ! -e runs/locked/logs ]] || fail "a refused submit wrote into the locked directory"
# An earlier, different job script is kept in OUT/logs, where the trainer expects nothing of
# its own: the directory stays acceptable to the next check.
"${submit[@]}" runs/one --time 5 -- --steps 7 > resubmit.out || { cat resubmit.out; fail "a resubmission with other settings was refused"; }
"${submit[@]}" runs/one --time 5 -- --steps 8 > resubmit2.out || { cat resubmit2.out; fail "a second resubmission was refused"; }
[[ -f runs/one/logs/job.sbatch.~1~ && -f runs/one/logs/job.sbatch.~2~ ]] && cmp -s runs/one/logs/job.sbatch.~1~ before.sbatch \
  || fail "the earlier job scripts were not kept as logs/job.sbatch.~N~"
grep -q "the earlier one kept as $WORK/runs/one/logs/job.sbatch.~2~" resubmit2.out || { cat resubmit2.out; fail "submit did not say where the earlier job script went"; }
ok "softprompt train --check refusals; earlier job scripts kept in logs/"

# --- the binary rule in the job scripts of a source tree --------------------------------------
export SP_LAUNCHER=env SP_MODEL=$WORK/model SP_TRAIN=$WORK/train.h5 SP_VALID=$WORK/valid.h5
SP_OUT=$WORK/runs/tree SP_TRAIN_ARGS="--steps 4 --quiet" bash tree/slurm/train.sbatch > tree.log 2>&1 \
  || { cat tree.log; fail "slurm/train.sbatch without SP_BIN and softprompt on PATH"; }
grep -q "running: env $WORK/tree/build/softprompt train" tree.log || { cat tree.log; fail "the job did not take SP_HOME/build/softprompt"; }
ok "slurm/train.sbatch: SP_BIN unset, softprompt not on PATH: runs SP_HOME/build/softprompt"
rm tree/build/softprompt
expect_refused 2 "softprompt is not on PATH, and $WORK/tree/build/softprompt does not exist" "no executable anywhere" \
  env SP_OUT="$WORK/runs/none" bash tree/slurm/train.sbatch
expect_refused 2 "SP_BIN=$WORK/nothing: not an executable file" "SP_BIN naming no file" \
  env SP_BIN="$WORK/nothing" SP_OUT="$WORK/runs/none" bash tree/slurm/train.sbatch
ln -s "$SP_CLI" tree/build/softprompt
# A job script copied out of the tree finds library and executable through SP_HOME.
mkdir -p elsewhere
cp tree/slurm/train.sbatch elsewhere/train.sbatch
(cd / && SP_HOME=$WORK/tree SP_OUT=$WORK/runs/copied SP_TRAIN_ARGS="--steps 4 --quiet" \
   bash "$WORK/elsewhere/train.sbatch") > copied.log 2>&1 || { cat copied.log; fail "a copied slurm/train.sbatch with SP_HOME failed"; }
grep -q "running: env $WORK/tree/build/softprompt train" copied.log || { cat copied.log; fail "a copied slurm/train.sbatch did not take SP_HOME/build/softprompt"; }
# The job script written by submit, copied elsewhere and run from elsewhere.
sed 's/--steps 6/--steps 4 --quiet/' runs/one/job.sbatch > elsewhere/job.sbatch
(cd / && bash "$WORK/elsewhere/job.sbatch") > elsewhere.log 2>&1 || { cat elsewhere.log; fail "a copied job.sbatch failed"; }
grep -q "finished: softprompt train exited 0" elsewhere.log || { cat elsewhere.log; fail "a copied job.sbatch did not finish"; }
ok "job scripts copied out of the tree: slurm/train.sbatch with SP_HOME, and OUT/job.sbatch, run from /"

# --- a finished run, run again; a requeue by hand ----------------------------------------------
# (SP_BIN set from here on: these checks do not depend on the rule above)
export SP_BIN=$SP_CLI
SLURM_JOB_ID=5 SLURM_RESTART_COUNT=1 SP_MAX_RESTARTS=0 SP_OUT=$WORK/runs/tree SP_TRAIN_ARGS="--steps 4 --quiet" \
  bash tree/slurm/train.sbatch > again.log 2>&1 || { cat again.log; fail "a finished run run again failed"; }
grep -q "finished: softprompt train exited 0; the run had already reached its last step (4) before this job step" again.log \
  || { cat again.log; fail "a finished run run again did not end 'finished'"; }
grep -q "restart 1 of at most 0" again.log && { cat again.log; fail "the log says 'restart 1 of at most 0'"; }
grep -q "restart 1 of the job: 0 by this script after a time-limit signal (at most 0, SP_MAX_RESTARTS), 1 by hand" again.log \
  || { cat again.log; fail "the log does not explain the restart count"; }
! grep -q "scontrol requeue" "$FAKE_LOG" || fail "a finished run was requeued"
ok "a finished run run again (restart 1 by hand, SP_MAX_RESTARTS=0): finished, not requeued; $(grep -o 'restart 1 of the job.*' again.log | head -n 1)"

# --- SIGUSR1 before the trainer trained a step: not requeued ---------------------------------
# The config file sends the signal while the job is setting up (the trap is already set).
echo 'kill -USR1 $$' > early.conf
SLURM_JOB_ID=6 SP_OUT=$WORK/runs/tree SP_TRAIN_ARGS="--steps 8 --quiet" bash tree/slurm/train.sbatch \
  "$WORK/early.conf" > early.log 2>&1 && { cat early.log; fail "a job signalled before it trained exited 0"; }
grep -q "SIGUSR1 came before this run trained a single step" early.log || { cat early.log; fail "the log does not say why it was not requeued"; }
! grep -q "scontrol requeue 6" "$FAKE_LOG" || { cat early.log; fail "a job signalled before it trained requeued itself"; }
ok "SIGUSR1 before the first step: not requeued ($(grep -o 'newest checkpoint still [^)]*' early.log))"

# --- sweeps: a row's options replace the common ones ------------------------------------------
printf 'lr\tinit\targs\n0.7\trandom\t--seed 3\n-\tvocab\t-\n' > sweep.tsv
for t in 0 1; do
  SP_SWEEP=$WORK/sweep.tsv SP_SWEEP_TASK=$t SP_OUT=$WORK/runs/sweep \
    SP_TRAIN_ARGS="--steps 3 --lr 0.05 --init vocab-top --seed 9 --quiet" \
    bash tree/slurm/sweep.sbatch > "sweep-$t.log" 2>&1 || { cat "sweep-$t.log"; fail "sweep task $t failed"; }
done
python3 - runs/sweep <<'PY' || fail "the sweep rows' options did not win"
import json, sys, glob
cfg = {int(p.split("task-")[1][:3]): json.load(open(p)) for p in glob.glob(sys.argv[1] + "/task-*/config.json")}
lr = {t: c["optimizer"]["lr"] for t, c in cfg.items()}
assert abs(lr[0] - 0.7) < 1e-9 and cfg[0]["init"] == "random" and cfg[0]["seed"] == 3, cfg[0]
# "-": the trainer's default (adafactor: 0.3), not the common 0.05
assert abs(lr[1] - 0.3) < 1e-9 and cfg[1]["init"] == "vocab" and cfg[1]["seed"] == 9, cfg[1]
print(f"ok: sweep: row values win over SP_TRAIN_ARGS (lr {lr[0]}, {lr[1]}; init random, vocab; seed 3, 9)")
PY
printf 'prompt_length\tdata\n8\t%s\n' "$WORK/p4" > bad-sweep.tsv
expect_refused 1 "row 0 asks for prompt_length 8 but $WORK/p4-train.h5 has 4 soft tokens" "a sweep row with the wrong prompt length" \
  tree/scripts/submit --model model --sweep bad-sweep.tsv --out runs/bad-sweep --time 5
[[ ! -e runs/bad-sweep ]] || fail "a refused sweep created its directory"
printf 'lr\targs\n0.5\t-\n0.6\t--stpes 3\n' > typo-sweep.tsv
expect_refused 2 "row 1 (exit 2, above)" "a bad option in one sweep row" \
  tree/scripts/submit --model model --sweep typo-sweep.tsv --train train.h5 --out runs/typo-sweep --time 5 -- --steps 3
grep -q "unknown option '--stpes'" err.txt || fail "the sweep row's refusal does not show the trainer's message"
[[ ! -e runs/typo-sweep ]] || fail "a refused sweep created its directory"
expect_refused 2 "--array-limit is for sweeps" "--array-limit without --sweep" \
  "${submit[@]}" runs/x --array-limit 2 -- --steps 5

# --- bulk prediction: submit --predict checks with predict --check; the job requeues itself
# after SIGUSR1 at a completed chunk and the requeued run finishes the same bytes ---------------
"$SP_CLI" train --model model --train train.h5 --quiet --threads 1 --out runs/p --steps 4 >/dev/null
"$SP_SYNTH" bulk.h5 2000 64 16 7
psub=(tree/scripts/submit --predict --model model --prompt runs/p/adapter --data bulk.h5 --time 5)
expect_refused 2 "--out in the predict options" "--out after -- with --predict" "${psub[@]}" --out runs/pred -- --out x.jsonl
expect_refused 2 "--predict needs --data FILE.h5 or --input FILE" "--predict without input" \
  tree/scripts/submit --predict --model model --prompt runs/p/adapter --out runs/pred --time 5
expect_refused 1 "softprompt predict --check refused the run" "a prompt of another length" \
  tree/scripts/submit --predict --model model --prompt runs/p/adapter --data p4-train.h5 --out runs/pred --time 5
grep -q "have 4 soft slots" err.txt || { cat err.txt; fail "the check's message is not shown"; }
[[ ! -e runs/pred ]] || fail "a refused submit --predict created its directory"
"${psub[@]}" --out runs/pred -- --threads 1 --chunk 4 --micro-batch 2 --quiet > psub.out || { cat psub.out; fail "submit --predict refused a good run"; }
grep -q "^check       ok: 2000 inputs (2000 labelled)" psub.out || { cat psub.out; fail "submit --predict did not show predict --check"; }
grep -q "^predictions $WORK/runs/pred/predictions.jsonl" psub.out || { cat psub.out; fail "no predictions path"; }
grep -qx "sp_job_predict" runs/pred/job.sbatch || fail "job.sbatch does not run sp_job_predict"
ok "submit --predict: predict's options and --check refusals; job script written"
"$SP_CLI" predict --model model --prompt runs/p/adapter --data bulk.h5 --threads 1 --chunk 4 --micro-batch 2 --quiet --out ref-pred.jsonl
: > "$FAKE_LOG"
SLURM_JOB_ID=77 bash runs/pred/job.sbatch > pjob.log 2>&1 &
pid=$!
python3 -c '
import json, sys, time
end = time.time() + 120
while time.time() < end:
    try:
        if json.load(open("runs/pred/predictions.jsonl.progress.json"))["chunks_done"] >= 3: sys.exit(0)
    except (OSError, ValueError): pass
    time.sleep(0.02)
sys.exit(1)' || { cat pjob.log; fail "the prediction job never reached 3 chunks"; }
kill -USR1 $pid
wait $pid || true
grep -q "checkpointed after SIGUSR1: requeueing job 77" pjob.log || { cat pjob.log; fail "the prediction job did not requeue itself"; }
grep -q "scontrol requeue 77" "$FAKE_LOG" || fail "scontrol requeue was not called"
[[ ! -e runs/pred/predictions.jsonl ]] || fail "a stopped job published its predictions"
SLURM_JOB_ID=77 SLURM_RESTART_COUNT=1 bash runs/pred/job.sbatch > pjob2.log 2>&1 || { cat pjob2.log; fail "the requeued prediction job failed"; }
grep -q "finished: softprompt predict exited 0" pjob2.log || { cat pjob2.log; fail "the requeued job did not finish"; }
grep -q "continued after chunk" pjob2.log || { cat pjob2.log; fail "the requeued job started over"; }
same_file runs/pred/predictions.jsonl ref-pred.jsonl "requeued prediction job vs one uninterrupted run"
SLURM_JOB_ID=78 bash runs/pred/job.sbatch > pjob3.log 2>&1 || { cat pjob3.log; fail "a finished prediction job run again failed"; }
grep -q "exists already" pjob3.log || { cat pjob3.log; fail "a finished prediction job ran again"; }
ok "prediction job: SIGUSR1 at a chunk, requeued, continued: byte-identical; run again: nothing to do"
