# softprompt train / eval end to end on a tiny random model and a synthetic task (tests/tools/
# sp_synth.c): learning, rank-count and micro-batch independence, bitwise --deterministic runs,
# stop/resume (SIGTERM, SIGUSR1 through mpirun, SIGKILL) ending bitwise equal to an
# uninterrupted run, corrupt and foreign checkpoints, and a failing rank ending the whole job.
# SP_TRAIN_ARCH=llama runs all of it on a Llama-family model (test_train_llama.sh);
# SP_TRAIN_TOKEN_DIM is the prompt's width when it is not d (OPT's word_embed_proj_dim);
# SP_TRAIN_INIT adds init-model options (a family's own: --sliding-window); SP_TRAIN_QUICK=1 stops
# after learning, evaluation and the rank-count / --deterministic runs (test_train_mistral.sh);
# SP_TRAIN_BF16_BOUND loosens the sanity bound between BF16- and float32-weight losses (T5);
# SP_TRAIN_MIN_ACC is the validation accuracy the learning run must reach (0.9; OPT-350m: lower),
# SP_TRAIN_STEPS its steps (120; T5: more);
# SP_TRAIN_SYNTH=mask writes the masked-LM form of the task (a mask token after the key, the
# answer scored there: test_train_bert.sh, test_train_roberta.sh).
source "$(dirname "$0")/lib.sh"
cd "$WORK"

arch=(--arch "${SP_TRAIN_ARCH:-gpt2}")
case ${SP_TRAIN_ARCH:-gpt2} in gpt2 | gpt_neox | bert | roberta | t5 | bloom | opt) ;; *) arch+=(--kv-heads 2) ;; esac
read -r -a init_extra <<< "${SP_TRAIN_INIT:-}"
arch+=("${init_extra[@]}")
"$SP_CLI" init-model "${arch[@]}" --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 \
  --random-norms --seed 1 model >/dev/null
"$SP_CLI" init-model "${arch[@]}" --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 \
  --random-norms --seed 2 other-model >/dev/null
"$SP_CLI" info model | grep -q "model_type ${SP_TRAIN_ARCH:-gpt2}" || fail "init-model made the wrong architecture"
"$SP_SYNTH" train.h5 512 64 16 1 ${SP_TRAIN_SYNTH:-}
"$SP_SYNTH" valid.h5 128 64 16 2 ${SP_TRAIN_SYNTH:-}
"$SP_SYNTH" other.h5 96 64 16 3 ${SP_TRAIN_SYNTH:-}
common=(--model model --train train.h5 --quiet)

# --- learning: zero-shot is at chance, the trained prompt is far above it -------------------
"$SP_CLI" eval --model model --data valid.h5 --json > zero.json
"$SP_CLI" train "${common[@]}" --threads 1 --valid valid.h5 --out learn --steps "${SP_TRAIN_STEPS:-120}" --global-batch 16 \
  --eval-every 40
python3 - learn/metrics.jsonl zero.json "${SP_TRAIN_MIN_ACC:-0.9}" <<'PY'
import json, sys, metrics
rows = metrics.read(sys.argv[1])
train = [r["loss"] for r in metrics.steps(rows)]
acc = [r["accuracy"] for r in metrics.evals(rows, "valid")]
zero = json.load(open(sys.argv[2]))["accuracy"]
first, last = sum(train[:10]) / 10, sum(train[-10:]) / 10
assert last < 0.5 * first, f"training loss did not fall: {first:.3f} -> {last:.3f}"
assert acc[-1] >= float(sys.argv[3]), f"validation accuracy {acc[-1]:.3f} (zero-shot {zero:.3f}) is not well above chance"
print(f"ok: learning: loss {first:.3f} -> {last:.3f}, accuracy zero-shot {zero:.3f} -> {acc[-1]:.3f}")
PY
[[ -f learn/best.h5 && -f learn/adapter/adapter_model.safetensors && -f learn/adapter/adapter_config.json ]] \
  || fail "learning run is missing best.h5 or the PEFT adapter"
"$SP_CLI" eval --model model --data valid.h5 --prompt learn/adapter --json > adapter.json
"$SP_CLI" eval --model model --data valid.h5 --prompt learn/best.h5 --json > best.json
python3 - learn/metrics.jsonl adapter.json <<'PY' || fail "eval of the exported PEFT adapter does not reproduce the accuracy"
import json, sys, metrics
last = metrics.evals(metrics.read(sys.argv[1]), "valid")[-1]["accuracy"]
a = json.load(open(sys.argv[2]))
assert a["accuracy"] == last, (a, last)
PY
"$SP_CLI" export --model model --prompt learn/best.h5 --out best-adapter >/dev/null
"$SP_CLI" eval --model model --data valid.h5 --prompt best-adapter --json > best-adapter.json
python3 -c 'import json; a=json.load(open("best.json")); b=json.load(open("best-adapter.json")); assert a["accuracy"]==b["accuracy"] and a["loss"]==b["loss"], (a, b)' \
  || fail "the exported adapter of best.h5 does not evaluate like best.h5"
grep -q '"peft_type": "PROMPT_TUNING"' best-adapter/adapter_config.json || fail "adapter_config.json is not PEFT's"
grep -Eq "\"token_dim\": ${SP_TRAIN_TOKEN_DIM:-32}([^0-9]|$)" best-adapter/adapter_config.json ||
  fail "adapter token_dim is not the prompt's width ${SP_TRAIN_TOKEN_DIM:-32}"
# PEFT's task type: a masked LM's prompt goes through PeftModelForFeatureExtraction
task=CAUSAL_LM; [[ -z ${SP_TRAIN_SYNTH:-} ]] || task=FEATURE_EXTRACTION
[[ ${SP_TRAIN_ARCH:-} != t5 ]] || task=SEQ_2_SEQ_LM
grep -q "\"task_type\": \"$task\"" best-adapter/adapter_config.json || fail "adapter task_type is not $task"
if [[ $task == SEQ_2_SEQ_LM ]]; then # PEFT's [num_virtual_tokens x 2, d]: the encoder's rows, then zeros
  python3 - best-adapter <<'PY' || fail "the T5 adapter is not PEFT's two-stack prompt"
import json, struct, sys
d = sys.argv[1]
cfg = json.load(open(d + "/adapter_config.json"))
assert cfg["num_transformer_submodules"] == 2, cfg
raw = open(d + "/adapter_model.safetensors", "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
t = json.loads(raw[8:8 + n])["prompt_embeddings"]
P, dim = cfg["num_virtual_tokens"], cfg["token_dim"]
assert t["shape"] == [2 * P, dim], t
a, b = t["data_offsets"]
vals = struct.unpack("<%df" % (2 * P * dim), raw[8 + n + a:8 + n + b])
assert any(vals[:P * dim]) and not any(vals[P * dim:]), "encoder rows trained, decoder rows zero"
print("ok: T5 adapter: prompt_embeddings [%d, %d], num_transformer_submodules 2" % (2 * P, dim))
PY
fi
ok "eval reads checkpoints and PEFT adapters; export writes best.h5 as an adapter"

# --- predict labels the set as eval scores it (T5: the decoder's first position; a masked LM:
# the mask position) -------------------------------------------------------------------------
"$SP_CLI" eval --model model --data valid.h5 --prompt learn/best.h5 --threads 1 --json > eval1.json
"$SP_CLI" predict --model model --data valid.h5 --prompt learn/best.h5 --threads 1 --out pred.jsonl \
  --metrics pred.json --quiet
python3 - eval1.json pred.json pred.jsonl <<'PY' || fail "predict's accuracy differs from eval's"
import json, sys
e, m = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rows = [json.loads(l) for l in open(sys.argv[3])]
right = sum(r["predicted"] == r["label"] for r in rows)
assert len(rows) == e["examples"] and right == e["correct"], (len(rows), right, e)
assert m["predictors"][0]["accuracy"] == e["accuracy"], (m, e)
PY
ok "predict's accuracy equals eval's: $(python3 -c 'import json; print(json.load(open("eval1.json"))["accuracy"])')"

# --- rank counts and micro-batches: same losses; --deterministic: bitwise same prompt ---------
run() { # name ranks micro-batch [extra...]
  local name=$1 n=$2 mb=$3; shift 3
  mpi "$n" train "${common[@]}" --threads "${threads:-1}" --out "$name" --steps 6 --global-batch 6 --micro-batch "$mb" \
    --optimizer adamw --lr 0.05 --log-every 1 "$@"
}
run r1 1 6; run r2 2 2; run r3 3 1
close_losses r2/metrics.jsonl r1/metrics.jsonl 2e-5 "2 ranks x micro-batch 2 vs 1 rank x 6"
close_losses r3/metrics.jsonl r1/metrics.jsonl 2e-5 "3 ranks x micro-batch 1 vs 1 rank x 6"
# 2 threads in one rank split each micro-batch of 6 into two parts of 3 sequences
threads=2 run t2 1 6
close_losses t2/metrics.jsonl r1/metrics.jsonl 2e-5 "1 rank x 2 threads vs 1 rank x 1 thread"
run d1 1 6 --deterministic; run d2 2 2 --deterministic; run d3 3 1 --deterministic
threads=2 run dt 1 6 --deterministic
same_file d1/adapter/adapter_model.safetensors d2/adapter/adapter_model.safetensors "--deterministic 1 vs 2 ranks"
same_file d1/adapter/adapter_model.safetensors d3/adapter/adapter_model.safetensors "--deterministic 1 vs 3 ranks"
same_file d1/adapter/adapter_model.safetensors dt/adapter/adapter_model.safetensors "--deterministic 1 vs 2 threads"
[[ "$(losses d1/metrics.jsonl)" == "$(losses d3/metrics.jsonl)" ]] || fail "--deterministic losses differ"
ok "--deterministic: bitwise identical prompts and losses for 1, 2 and 3 ranks and 2 threads"
# the same with BF16 weights (the F32 model rounded once at load; BF16 products where the CPU has
# them): bitwise across ranks and threads, and not the float32 run
run b1 1 6 --deterministic --weights bf16; run b2 2 2 --deterministic --weights bf16
run b3 3 1 --deterministic --weights bf16; threads=2 run bt 1 6 --deterministic --weights bf16
grep -q '"weights": "bf16"' b1/config.json || fail "config.json does not say --weights bf16"
same_file b1/adapter/adapter_model.safetensors b2/adapter/adapter_model.safetensors "bf16 --deterministic 1 vs 2 ranks"
same_file b1/adapter/adapter_model.safetensors b3/adapter/adapter_model.safetensors "bf16 --deterministic 1 vs 3 ranks"
same_file b1/adapter/adapter_model.safetensors bt/adapter/adapter_model.safetensors "bf16 --deterministic 1 vs 2 threads"
[[ "$(losses b1/metrics.jsonl)" == "$(losses b3/metrics.jsonl)" ]] || fail "bf16 --deterministic losses differ"
! cmp -s b1/adapter/adapter_model.safetensors d1/adapter/adapter_model.safetensors ||
  fail "--weights bf16 trained the same prompt as float32 weights: BF16 did not run"
close_losses b1/metrics.jsonl d1/metrics.jsonl "${SP_TRAIN_BF16_BOUND:-0.1}" \
  "bf16 vs f32 weights (the model rounded: a sanity bound)"
ok "--weights bf16 --deterministic: bitwise identical for 1, 2 and 3 ranks and 2 threads"
[[ -z ${SP_TRAIN_QUICK:-} ]] || exit 0

# --- stop and resume ------------------------------------------------------------------------
# The stopped runs are endless (--steps 100000), so a signal always lands mid-run however long
# the machine keeps the waiting script from running; each resumes to 20 steps past the step it
# reached and is compared with an uninterrupted run of that length (the schedule is constant).
base=(train "${common[@]}" --threads 1 --global-batch 8 --save-every 3 --optimizer adafactor
      --log-every 1)
endless=(--steps 100000)
long=("${base[@]}" --micro-batch 4)
# stop PID SIGNAL DIR STEP WHAT: sp_stop_at, waiting up to 120 s (a loaded machine is slow).
stop() {
  local rc=0
  sp_stop_at "$1" "$2" "$3" "$4" 120 || rc=$?
  (( rc != 2 )) || fail "run in $3 never reached step $4"
  (( rc == 0 )) || fail "$5: exit status $SP_STOP_STATUS, expected $SP_EXIT_STOPPED"
}
# end_of DIR: 20 steps past DIR's newest checkpoint
end_of() {
  local newest
  newest=$(ls "$1"/checkpoints/step-*.h5 | tail -1)
  echo $(( 10#$(basename "$newest" .h5 | sed 's/^step-//') + 20 ))
}
# SIGTERM to a plain process at a random step: checkpoint, exit 75, resume bitwise.
k=$(( RANDOM % 60 + 2 ))
"$SP_CLI" "${base[@]}" "${endless[@]}" --out term --micro-batch 8 &
stop $! TERM term $k SIGTERM
end=$(end_of term)
"$SP_CLI" "${base[@]}" --steps $end --out term --micro-batch 8 >/dev/null 2>&1 || fail "resume after SIGTERM failed"
"$SP_CLI" "${base[@]}" --steps $end --out term-ref --micro-batch 8
same_file term/adapter/adapter_model.safetensors term-ref/adapter/adapter_model.safetensors \
  "stopped by SIGTERM near step $k and resumed to $end vs uninterrupted"
ok "SIGTERM near step $k: exit 75, resumed to step $end bitwise equal to the uninterrupted run"

# SIGUSR1 through mpirun (what Slurm's --signal sends) with 2 ranks.
k=$(( RANDOM % 60 + 2 ))
mpi_bg 2 "${long[@]}" "${endless[@]}" --out usr1
stop "$MPI_PID" USR1 usr1 $k "SIGUSR1 via mpirun"
end=$(end_of usr1)
mpi 2 "${long[@]}" --steps $end --out usr1
mpi 2 "${long[@]}" --steps $end --out usr1-ref
same_file usr1/adapter/adapter_model.safetensors usr1-ref/adapter/adapter_model.safetensors \
  "stopped by SIGUSR1 near step $k and resumed to $end vs uninterrupted"
ok "SIGUSR1 via mpirun near step $k: exit 75, resumed to step $end bitwise"

# SIGKILL at a random step: resume from the last checkpoint, still bitwise. From step 7 on, so
# that two checkpoints (every 3 steps, the newest 2 kept) are complete when the newest is
# truncated below: killed at steps 4-6 only step 3's could be, and truncating it left nothing
# to resume (a CI run drew k = 4 or 5).
k=$(( RANDOM % 60 + 7 ))
mpi_bg 2 "${long[@]}" "${endless[@]}" --out "$WORK/kill"
# The ranks are matched by their absolute output directory: test_train_llama runs this same
# script at the same time, and a pattern without $WORK would kill its ranks too.
pid=$MPI_PID
sp_python metrics.py wait kill/metrics.jsonl $k --pid $pid --timeout 120 || fail "run in kill never reached step $k"
pkill -9 -f -- "--out $WORK/kill" || true; kill -9 $pid 2>/dev/null || true
wait $pid 2>/dev/null || true
end=$(end_of kill)
# A truncated newest checkpoint (as a crash mid-copy would leave) is skipped with a warning.
newest=$(ls kill/checkpoints/step-*.h5 | tail -1)
truncate -s 1000 "$newest"
mpi 2 "${long[@]}" --steps $end --out kill 2> kill.err || { cat kill.err; fail "resume after SIGKILL failed"; }
grep -q "skipping .*$(basename "$newest")" kill.err || { cat kill.err; fail "corrupt newest checkpoint not reported"; }
mpi 2 "${long[@]}" --steps $end --out kill-ref
same_file kill/adapter/adapter_model.safetensors kill-ref/adapter/adapter_model.safetensors \
  "killed near step $k, newest checkpoint truncated, resumed to $end vs uninterrupted"
ok "SIGKILL near step $k + truncated newest checkpoint: skipped with a warning, resumed to step $end bitwise"

# A checkpoint of another model or dataset is refused: resuming a finished 2-rank run (its
# length does not matter, the fingerprints are compared before any step).
steps=6
mpi 2 "${long[@]}" --steps $steps --out full
flags=(--threads 1 --quiet --steps $steps --global-batch 8 --micro-batch 4 --save-every 3 --optimizer adafactor)
set +e
"$SP_CLI" train --model other-model --train train.h5 "${flags[@]}" --out full > foreign.out 2>&1; rc1=$?
"$SP_CLI" train --model model --train other.h5 "${flags[@]}" --out full > foreign2.out 2>&1; rc2=$?
set -e
[[ $rc1 -ne 0 ]] && grep -q "trained with another model" foreign.out || { cat foreign.out; fail "foreign model accepted"; }
[[ $rc2 -ne 0 ]] && grep -q "trained on another dataset" foreign2.out || { cat foreign2.out; fail "foreign dataset accepted"; }
ok "checkpoints of another model or dataset are refused"

# --- continuing a finished run for more steps (constant schedule) equals one longer run --------
"$SP_CLI" train "${common[@]}" --threads 1 --steps 20 --global-batch 8 --optimizer adafactor --out grow
"$SP_CLI" train --model model --train train.h5 --threads 1 --log-every 100 --steps 35 \
  --global-batch 8 --optimizer adafactor --out grow 2> grow.err
grep -q "resuming from .*step-000000000020.h5" grow.err && grep -q "(15 in this run)" grow.err \
  || { cat grow.err; fail "a longer --steps did not continue the run"; }
"$SP_CLI" train "${common[@]}" --threads 1 --steps 35 --global-batch 8 --optimizer adafactor --out grow-ref
same_file grow/adapter/adapter_model.safetensors grow-ref/adapter/adapter_model.safetensors \
  "20 steps then continued to 35 vs 35 steps at once"
ok "a finished run continues for more steps (constant schedule), bitwise equal to one longer run"
set +e
"$SP_CLI" train "${common[@]}" --threads 1 --steps 35 --global-batch 8 --schedule cosine --out grow > cos.out 2>&1; rc=$?
"$SP_CLI" train "${common[@]}" --threads 1 --steps 5 --global-batch 8 --resume never --out grow > never.out 2>&1; rc2=$?
set -e
[[ $rc -ne 0 ]] && grep -q "optimizer.schedule" cos.out || { cat cos.out; fail "changed schedule accepted on resume"; }
[[ $rc2 -ne 0 ]] && grep -q "already holds a run" never.out || { cat never.out; fail "--resume never overwrote a run"; }
ok "a changed schedule and --resume never into an existing run are refused"

# --- a damaged dataset is refused before the first step; a failing rank ends the whole job ------
# Example 5's soft index is corrupted in the file: opening reads only the offsets, the check of
# the datasets against the model (rank 0, before training) reads every token and names it.
cp train.h5 bad.h5
/usr/bin/python3 - bad.h5 <<'PY'
import sys, h5py
with h5py.File(sys.argv[1], "r+") as f:
    off = f["offsets"][5]
    f["tokens"][off] = -1000
PY
set +e
mpi 2 train --model model --train bad.h5 --out bad --steps 50 --global-batch 512 --threads 1 \
  --quiet > bad.out 2>&1; rc=$?
set -e
(( rc == 1 )) || { cat bad.out; fail "a damaged dataset: exit $rc"; }
grep -q "bad.h5.*example 5" bad.out || { cat bad.out; fail "the damaged example was not named"; }
[[ ! -e bad ]] || fail "a run refused at the start left its output directory"
ok "a damaged dataset is refused before the first step, naming the example"
# One rank fails alone mid-run (fault injection): its message reaches the user, the job ends.
start=$(date +%s)
set +e
SP_FAULT_RANK=1:3 mpi 2 train --model model --train train.h5 --out failing --steps 50 \
  --global-batch 8 --threads 1 --quiet > fault.out 2>&1; rc=$?
set -e
elapsed=$(( $(date +%s) - start ))
[[ $rc -ne 0 ]] || fail "a failing rank did not fail the job"
grep -q "rank 1: step 3: injected failure" fault.out || { cat fault.out; fail "the failing rank's message did not reach the user"; }
(( elapsed < 30 )) || fail "the job took ${elapsed}s to end after a rank failed"
ok "a rank failing alone ends the job (exit $rc) in ${elapsed}s with its message"
