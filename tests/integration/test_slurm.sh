# The Slurm job scripts (slurm/, scripts/submit, scripts/sweep-collect) against a real
# single-node Slurm cluster started here (tests/cluster/up --nodes 1: munged and slurmctld on one
# host, slurmd on another, each a network namespace; the node has 2 CPUs):
#   A. a 2-rank job (written and submitted by scripts/submit) completes with checkpoints and
#      metrics;
#   B. a job that gets its time-limit signal (--time=1 --signal=B:USR1@55) checkpoints,
#      requeues itself, resumes, and ends with bitwise the same prompt as an uninterrupted job
#      of the same settings that runs beside it;
#   C. a job with a bad dataset path fails, is not requeued, and its log says why;
#   D. a 4-task array sweep (slurm/sweep.sbatch: lr x prompt length x init) completes, each task
#      with its row's lr and init although SP_TRAIN_ARGS sets both too (a row's options replace
#      the common ones), and scripts/sweep-collect lists all four tasks with their metrics;
#   E. scripts/submit refuses, before queueing and writing nothing, a misspelt trainer flag
#      (softprompt train --check), what the cluster cannot run (sbatch --test-only: --nodes 3 on
#      this one node; 4 ranks x 4 CPUs on 2 CPUs) and a second job for an output directory whose
#      job is still queued;
#   F. B's uninterrupted twin, finished, requeued by hand (SP_MAX_RESTARTS=0): ends COMPLETED
#      again ("already reached its last step"), not requeued by the script, its prompt and
#      metrics unchanged, and its log explains the restart count (not "restart 1 of at most 0").
# Needs root, network namespaces and the Debian packages slurm-wlm, munge and iproute2 (installed
# through scripts/setup when missing); without them the test fails, loudly. The cluster is torn
# down by PID and namespace name at the end, also when a check fails. Runs beside test_multinode
# (own namespaces, addresses and directories). Wall time ~1.5 min on 2 idle cores, most of it
# check B, whose job must still be training when slurmctld's periodic time-limit check (every
# 30 s) sends the signal: its length is calibrated in CPU seconds, so a loaded machine only makes
# it longer. Each resumed run of B gets a new 1-minute limit and is signalled again if still
# training, so on a loaded machine B goes through several requeues (all must resume bitwise).
source "$(dirname "$0")/lib.sh"
: "${SP_SYNTH:?}" "${SP_REPO:?}"
t_start=$(date +%s)
slurm_test
mkdir -p logs runs

# --- model, data, and the length of check B's run --------------------------------------------
"$SP_CLI" init-model --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 --random-norms \
  --seed 1 model >/dev/null
"$SP_SYNTH" train.h5 512 64 16 1
"$SP_SYNTH" valid.h5 128 64 16 2
for p in 4 8; do
  "$SP_SYNTH" "data-p$p-train.h5" 256 64 "$p" 3
  "$SP_SYNTH" "data-p$p-valid.h5" 64 64 "$p" 4
done
# Check B's job must outlast the signal. Slurm may send it up to 60 s earlier than asked
# (sbatch(1)), so with a 60 s limit and @55 it is due from the start and comes at slurmctld's
# first periodic look at the job: at most ~35 s into it. Calibrate the steps for >= 40 s of CPU.
TIMEFORMAT='%U %S'
cal=$( { time "$SP_CLI" train --model model --train train.h5 --out calib --steps 100 \
           --global-batch 64 --threads 1 --quiet >/dev/null 2>&1; } 2>&1 )
steps=$(python3 -c 'import sys, math; u, s = map(float, sys.argv[1:3])
print(max(500, math.ceil(40.0 / max((u + s) / 100, 1e-4))))' $cal)
echo "check B: $steps steps (calibration: 100 steps took $cal s user/sys CPU)"
rm -rf calib

# --- the cluster --------------------------------------------------------------------------------
spc_start "$WORK/cluster" --nodes 1 || fail "COULD NOT START THE SLURM CLUSTER (namespaces, bridge or daemons; messages above)"
# wait_done ID SECONDS: until job (or every task of an array) has left the queue.
wait_done() {
  local id=$1 t=$2 i
  for (( i = 0; i < t * 2; i++ )); do
    [[ -z $(squeue -h -j "$id" -o %i 2>/dev/null) ]] && return 0
    sleep 0.5
  done
  echo "--- squeue"; squeue; scontrol show job "$id"; spc_logs
  fail "job $id did not finish within $t s"
}

common=(--global-batch 64 --micro-batch 8 --threads 1 --log-every 1000 --save-every 1000
        --optimizer adafactor)

# --- A: 2-rank job through scripts/submit -----------------------------------------------------
"$SP_REPO/scripts/submit" --model model --train train.h5 --valid valid.h5 --out runs/two-ranks \
  --ntasks-per-node 2 --cpus-per-task 1 --time 5 --softprompt "$SP_CLI" \
  -- --steps 60 --global-batch 16 --micro-batch 4 --save-every 20 --eval-every 30 > submit-a.out \
  || { cat submit-a.out; fail "scripts/submit failed"; }
cat submit-a.out
job_a=$(awk '/^submitted job/ {print $3}' submit-a.out); job_a=${job_a%:}
[[ $job_a =~ ^[0-9]+$ ]] || fail "scripts/submit printed no job id"
grep -q "^log  *$WORK/runs/two-ranks/logs/slurm-$job_a.out" submit-a.out || fail "scripts/submit did not say where the log goes"
grep -qx "#SBATCH --ntasks-per-node=2" runs/two-ranks/job.sbatch || fail "job script not written into the output directory"
grep -qx "export SP_HOME=\"$SP_REPO\"" runs/two-ranks/job.sbatch || fail "the job script does not record SP_HOME"

# --- B: the time-limit job and its uninterrupted twin (1 rank each, side by side) ------------
long="--steps $steps ${common[*]}"
job_b=$(SP_MODEL=$WORK/model SP_TRAIN=$WORK/train.h5 SP_VALID=$WORK/valid.h5 SP_OUT=$WORK/runs/timelimit \
        SP_TRAIN_ARGS=$long SP_MAX_RESTARTS=20 \
        sbatch --parsable --job-name=timelimit --ntasks-per-node=1 --cpus-per-task=1 --time=1 \
        --signal=B:USR1@55 --output="$WORK/logs/timelimit-%j.out" "$SP_REPO/slurm/train.sbatch") \
  || fail "sbatch of slurm/train.sbatch failed"
job_ref=$(SP_MODEL=$WORK/model SP_TRAIN=$WORK/train.h5 SP_VALID=$WORK/valid.h5 SP_OUT=$WORK/runs/uninterrupted \
          SP_TRAIN_ARGS=$long SP_MAX_RESTARTS=0 \
          sbatch --parsable --job-name=uninterrupted --ntasks-per-node=1 --cpus-per-task=1 \
          --time=30 --output="$WORK/logs/uninterrupted-%j.out" "$SP_REPO/slurm/train.sbatch") \
  || fail "sbatch of slurm/train.sbatch failed"

# --- C: a bad dataset path, settings from a config file, the multi-node script on one node ---
cat > bad.conf <<EOF
SP_MODEL=$WORK/model
SP_TRAIN=$WORK/no-such-dataset.h5
SP_OUT=$WORK/runs/bad-path
SP_TRAIN_ARGS="--steps 10"
EOF
job_c=$(sbatch --parsable --nodes=1 --ntasks-per-node=1 --cpus-per-task=1 --time=5 \
        --output="$WORK/logs/bad-%j.out" "$SP_REPO/slurm/train-multinode.sbatch" "$WORK/bad.conf") \
  || fail "sbatch of slurm/train-multinode.sbatch failed"

# --- D: a 4-task sweep ------------------------------------------------------------------------
printf '# test sweep\nlr\tprompt_length\tinit\tdata\n' > sweep.tsv
printf '%s\t%s\t%s\t%s\n' 0.3 4 vocab-top "$WORK/data-p{prompt_length}" 0.3 8 random "$WORK/data-p{prompt_length}" \
  1.0 4 random "$WORK/data-p{prompt_length}" 1.0 8 vocab-top "$WORK/data-p{prompt_length}" >> sweep.tsv
"$SP_REPO/scripts/submit" --model model --sweep sweep.tsv --out runs/sweep-dry --dry-run \
  --softprompt "$SP_CLI" -- --steps 40 > submit-d.out || { cat submit-d.out; fail "scripts/submit --sweep failed"; }
grep -qx "#SBATCH --array=0-3" runs/sweep-dry/job.sbatch || fail "scripts/submit --sweep: wrong --array"
job_d=$(SP_MODEL=$WORK/model SP_SWEEP=$WORK/sweep.tsv SP_OUT=$WORK/runs/sweep \
        SP_TRAIN_ARGS="--steps 40 --lr 0.05 --init vocab --global-batch 16 --micro-batch 8 --eval-every 20 --log-every 20" \
        sbatch --parsable --array=0-3 --cpus-per-task=1 --time=5 \
        --output="$WORK/logs/sweep-%A_%a.out" "$SP_REPO/slurm/sweep.sbatch") \
  || fail "sbatch of slurm/sweep.sbatch failed"
echo "submitted: A=$job_a B=$job_b (twin $job_ref) C=$job_c D=$job_d"
squeue

# --- E: what scripts/submit must refuse before queueing, writing nothing ----------------------
# refused DESC PATTERN SUBMIT-ARGS...: submit exits 1 and says PATTERN.
refused() {
  local desc=$1 pat=$2 rc=0; shift 2
  "$SP_REPO/scripts/submit" --model model --train train.h5 --softprompt "$SP_CLI" "$@" \
    > submit-e.out 2>&1 || rc=$?
  [[ $rc == 1 ]] && grep -q -- "$pat" submit-e.out || { cat submit-e.out; fail "E: $desc: exit $rc, expected 1 and '$pat'"; }
  ok "E: $desc: $(cat submit-e.out)"
}
rc=0; "$SP_REPO/scripts/submit" --model model --train train.h5 --softprompt "$SP_CLI" --out runs/typo \
  --time 5 -- --stpes 50 > submit-e.out 2>&1 || rc=$?
[[ $rc == 2 && ! -e runs/typo ]] && grep -q "unknown option '--stpes' (did you mean --steps?)" submit-e.out \
  || { cat submit-e.out; fail "E: a misspelt trainer flag: exit $rc, expected 2 and the trainer's message"; }
ok "E: a misspelt trainer flag, refused by softprompt train --check: $(tr '\n' ' ' < submit-e.out)"
refused "3 nodes on a 1-node cluster" \
  "Slurm would not run this job (sbatch --test-only): allocation failure: Requested node configuration is not available" \
  --out runs/three-nodes --nodes 3 --time 5 -- --steps 10
[[ ! -e runs/three-nodes ]] || fail "E: a refused submit created its output directory"
"$SP_REPO/scripts/submit" --model model --train train.h5 --softprompt "$SP_CLI" --out runs/held --time 5 \
  --sbatch-option=--hold -- --steps 10 > submit-held.out || { cat submit-held.out; fail "E: submit of a held job failed"; }
job_held=$(awk '/^submitted job/ {print $3}' submit-held.out); job_held=${job_held%:}
cp runs/held/job.sbatch held.sbatch
refused "a second job while the first is queued" "job $job_held (PENDING) of $WORK/runs/held is still in the queue" \
  --out runs/held --time 5 -- --steps 20
scancel "$job_held"
wait_done "$job_held" 30
refused "4 ranks x 4 CPUs on a 2-CPU node" "Requested node configuration is not available" \
  --out runs/held --ntasks-per-node 4 --cpus-per-task 4 --time 5 -- --steps 20
cmp -s runs/held/job.sbatch held.sbatch && [[ ! -e runs/held/job.sbatch.~1~ ]] \
  || fail "E: a refused submit changed or renamed the existing runs/held/job.sbatch"
ok "E: refused submits left the existing job script as it was"

# --- check A ----------------------------------------------------------------------------------
wait_done "$job_a" 120
log_a=runs/two-ranks/logs/slurm-$job_a.out
[[ $(spc_job_field "$job_a" JobState) == COMPLETED ]] || { show_log "$log_a"; fail "A: 2-rank job ended $(spc_job_field "$job_a" JobState)"; }
python3 - runs/two-ranks <<'PY' || { show_log "$log_a"; fail "A: outputs of the 2-rank job are incomplete"; }
import json, os, sys, metrics
d = sys.argv[1]
cfg = json.load(open(os.path.join(d, "config.json")))
rows = metrics.read(os.path.join(d, "metrics.jsonl"))
train, valid = metrics.steps(rows), metrics.evals(rows, "valid")
ckpts = sorted(os.listdir(os.path.join(d, "checkpoints")))
assert cfg["ranks"] == 2, f"ranks {cfg['ranks']}"
assert train[-1]["step"] == 60 and valid and valid[-1]["step"] == 60, "metrics do not reach step 60"
assert "step-000000000060.h5" in ckpts, f"checkpoints: {ckpts}"
assert os.path.exists(os.path.join(d, "adapter", "adapter_model.safetensors"))
print(f"ok: A: 2-rank job: 60 steps, checkpoints {', '.join(ckpts)}, valid accuracy {valid[-1]['accuracy']:.3f}")
PY
grep -q "2 ranks on 1 node(s), 1 threads per rank" runs/two-ranks/slurm-job.log || fail "A: job log lacks the layout line"

# --- check C ----------------------------------------------------------------------------------
wait_done "$job_c" 120
log_c=$(ls logs/bad-"$job_c".out)
state=$(spc_job_field "$job_c" JobState); restarts=$(spc_job_field "$job_c" Restarts)
[[ $state == FAILED && $restarts == 0 ]] || { show_log "$log_c"; fail "C: bad path: state $state, restarts $restarts (expected FAILED, 0)"; }
grep -q "no-such-dataset.h5: cannot open" "$log_c" || { show_log "$log_c"; fail "C: the trainer's error is not in the log"; }
grep -q "FAILED: softprompt train exited with status 1, .*not requeued" "$log_c" \
  || { show_log "$log_c"; fail "C: the log does not say why the job was not requeued"; }
ok "C: bad dataset path: FAILED, not requeued; the log says: $(grep -o 'FAILED: .*not requeued' "$log_c")"

# --- check B ----------------------------------------------------------------------------------
wait_done "$job_b" 600
wait_done "$job_ref" 600
log_b=logs/timelimit-$job_b.out
state=$(spc_job_field "$job_b" JobState); restarts=$(spc_job_field "$job_b" Restarts)
[[ $state == COMPLETED && $(spc_job_field "$job_ref" JobState) == COMPLETED ]] \
  || { show_log "$log_b"; show_log "logs/uninterrupted-$job_ref.out"; fail "B: time-limit job $state, twin $(spc_job_field "$job_ref" JobState)"; }
(( restarts >= 1 )) || { show_log "$log_b"; fail "B: the job was never requeued (it finished before its time-limit signal?)"; }
grep -q "SIGUSR1 (time limit near" "$log_b" && grep -q "requeueing job $job_b" "$log_b" \
  && grep -q "finished: softprompt train exited 0" "$log_b" \
  || { show_log "$log_b"; fail "B: the log does not show signal, requeue and finish"; }
[[ $(grep -c "requeueing job" runs/timelimit/slurm-job.log) == "$restarts" ]] \
  || fail "B: $restarts restarts but the job log records $(grep -c 'requeueing job' runs/timelimit/slurm-job.log) requeues"
same_file runs/timelimit/adapter/adapter_model.safetensors runs/uninterrupted/adapter/adapter_model.safetensors \
  "B: requeued and resumed vs uninterrupted"
stops=$(grep -c "SIGUSR1 (time limit near" runs/timelimit/slurm-job.log)
ok "B: time-limit signal -> checkpoint -> requeue ($restarts restarts, $stops signals) -> resumed; prompt bitwise equal to the uninterrupted job"

# --- F: the finished twin, requeued by hand -----------------------------------------------------
cp runs/uninterrupted/adapter/adapter_model.safetensors ref-adapter.safetensors
cp runs/uninterrupted/metrics.jsonl ref-metrics.jsonl
scontrol requeue "$job_ref" || fail "F: scontrol requeue of the finished job $job_ref failed"
scontrol update JobId="$job_ref" StartTime=now || true
for (( i = 0; i < 240; i++ )); do
  [[ $(spc_job_field "$job_ref" Restarts) == 1 && $(spc_job_field "$job_ref" JobState) == COMPLETED ]] && break
  [[ $(spc_job_field "$job_ref" JobState) =~ ^(FAILED|CANCELLED|TIMEOUT)$ ]] && break
  sleep 0.5
done
log_ref=logs/uninterrupted-$job_ref.out
[[ $(spc_job_field "$job_ref" JobState) == COMPLETED && $(spc_job_field "$job_ref" Restarts) == 1 ]] \
  || { show_log "$log_ref"; fail "F: requeued finished job: $(spc_job_field "$job_ref" JobState), restarts $(spc_job_field "$job_ref" Restarts)"; }
grep -q "restart 1 of at most 0" "$log_ref" && { show_log "$log_ref"; fail "F: the log says 'restart 1 of at most 0'"; }
grep -q "restart 1 of the job: 0 by this script after a time-limit signal (at most 0, SP_MAX_RESTARTS), 1 by hand" "$log_ref" \
  && [[ $(grep -c "finished: softprompt train exited 0" "$log_ref") == 2 ]] && ! grep -q "requeueing job" "$log_ref" \
  && grep -q "finished: softprompt train exited 0; the run had already reached its last step ($steps) before this job step" "$log_ref" \
  || { show_log "$log_ref"; fail "F: the log of the requeued finished job does not say restart 1 by hand and finished"; }
same_file runs/uninterrupted/adapter/adapter_model.safetensors ref-adapter.safetensors "F: a finished run run again"
same_file runs/uninterrupted/metrics.jsonl ref-metrics.jsonl "F: a finished run run again (no second final evaluation)"
ok "F: finished job requeued by hand: COMPLETED again, not requeued, prompt and metrics unchanged; the log says: $(grep -o 'restart 1 of the job: .*' "$log_ref" | head -n 1)"

# --- check D ----------------------------------------------------------------------------------
wait_done "$job_d" 300
for t in 0 1 2 3; do
  s=$(spc_job_field "${job_d}_$t" JobState)
  [[ $s == COMPLETED ]] || { show_log "logs/sweep-${job_d}_$t.out"; fail "D: sweep task $t ended $s"; }
done
"$SP_REPO/scripts/sweep-collect" runs/sweep > collect.out || { cat collect.out; fail "D: sweep-collect failed"; }
cat collect.out
python3 - runs/sweep/sweep-results.csv <<'PY' || fail "D: the collected table is incomplete"
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert len(rows) == 4, f"{len(rows)} rows"
want = {("0.3", "4", "vocab-top"), ("0.3", "8", "random"), ("1.0", "4", "random"), ("1.0", "8", "vocab-top")}
got = {(r["lr"] if r["lr"] not in ("1", "1.0") else "1.0", r["prompt_length"], r["init"]) for r in rows}
assert got == want, f"{got}"
for r in rows:
    assert r["status"] == "done" and r["steps"] == "40/40", r
    cfg = json.load(open(f"{sys.argv[1].rsplit('/', 1)[0]}/{r['dir']}/config.json"))
    assert abs(cfg["optimizer"]["lr"] - float(r["lr"])) < 1e-9 and cfg["init"] == r["init"], \
        f"task {r['task']}: lr {cfg['optimizer']['lr']}, init {cfg['init']}: not the row's (SP_TRAIN_ARGS: --lr 0.05 --init vocab)"
    float(r["train_loss"]); float(r["valid_loss"]); float(r["valid_accuracy"])
print("ok: D: 4-task sweep: all done, the table lists lr, prompt length, init and their metrics")
PY
[[ $(grep -c '^ *[0-3] ' collect.out) == 4 ]] || fail "D: the terminal summary does not list four tasks"

# --- teardown -----------------------------------------------------------------------------------
spc_stop || fail "the cluster was not torn down cleanly (above)"
ok "cluster down: daemons (pids $SPC_STOPPED_PIDS) stopped, namespaces and bridge removed; test took $(( $(date +%s) - t_start )) s"
