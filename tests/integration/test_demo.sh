# scripts/demo --quick on the test build: prepares the review data (or, offline, the small
# fixtures), evaluates zero-shot, trains a prompt with 2 ranks, is stopped by SIGUSR1 and
# resumes, trains P-tuning v2's prefix, and reports both (the PEFT adapter of the prefix is a
# PREFIX_TUNING one); a second run reuses everything and reports the same accuracies.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
# The shipped demo model, copied so that the test writes nothing into the source tree.
cp -r "$SP_REPO/models/demo-gpt2" demo-model
export SP_DEMO_MODEL=$WORK/demo-model SP_DEMO_DIR=$WORK/demo SP_DEMO_CLI=$SP_CLI
# mpirun-launched ranks: see lib.sh on leak checking in the sanitizer build
export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0"
"$SP_REPO/scripts/demo" --quick > report.txt 2> demo.log || { tail -30 demo.log; fail "scripts/demo --quick failed"; }
cat report.txt
grep -q "softprompt demo report" report.txt || fail "no report"
grep -qE "validation accuracy +[0-9.]+ zero-shot  ->  [0-9.]+ tuned" report.txt || fail "no accuracies in the report"
grep -q "stopped once by SIGUSR1 and resumed" report.txt || fail "the report does not mention the interruption"
grep -qE "P-tuning v2 +[0-9.]+ zero-shot  ->  [0-9.]+ tuned .*a prefix in every layer" report.txt ||
  fail "no P-tuning v2 accuracy in the report"
grep -q "exited with status 75; resuming" demo.log || fail "the demo did not stop with status 75 and resume"
grep -q "resuming from .*step-" demo.log || fail "the trainer did not resume from a checkpoint"
for f in run/best.h5 run/metrics.jsonl run/adapter/adapter_model.safetensors demo.png \
  run-ptuning-v2/best.h5 run-ptuning-v2/adapter/adapter_model.safetensors; do
  [[ -s $SP_DEMO_DIR/$f ]] || fail "the demo did not produce $f"
done
python3 -c 'import sys; d=open(sys.argv[1],"rb").read(8); sys.exit(d != b"\x89PNG\r\n\x1a\n")' "$SP_DEMO_DIR/demo.png" \
  || fail "demo.png is not a PNG"
if grep -q "validation split: the one held out" demo.log; then
  ok "the validation split is the one held out of the demo model's pretraining"
else
  grep -q "small review fixtures" demo.log || fail "the demo did not check its validation split"
fi
grep -q '"peft_type": "PREFIX_TUNING"' "$SP_DEMO_DIR/run-ptuning-v2/adapter/adapter_config.json" ||
  fail "the P-tuning v2 adapter is not a PREFIX_TUNING one"
first=$(grep -E "validation accuracy|P-tuning v2" report.txt)
"$SP_REPO/scripts/demo" --quick > report2.txt 2> demo2.log || fail "second run failed"
[[ "$(grep -E "validation accuracy|P-tuning v2" report2.txt)" == "$first" ]] || fail "second run reports other accuracies"
! grep -q "resuming" demo2.log || fail "the second run trained again instead of reusing the finished run"
! grep -q "step .*loss" demo2.log || fail "the second run trained P-tuning v2 again"
ok "scripts/demo --quick: report, interruption and resume, outputs, idempotent second run"

# A validation split other than the one the model's pretraining held out is refused.
if grep -q "validation split: the one held out" demo.log; then
  sed -i 's/"sha256": "[0-9a-f]*"/"sha256": "00000000"/' demo-model/pretraining.json
  if SP_DEMO_DIR=$WORK/demo-other "$SP_REPO/scripts/demo" --quick > /dev/null 2> other.log; then
    fail "the demo ran on a validation split its model was not held out of"
  fi
  grep -q "is not the validation split held out of the demo model's pretraining" other.log ||
    { tail -5 other.log; fail "no message about the validation split"; }
  ok "a validation split the model's pretraining did not hold out is refused"
fi
