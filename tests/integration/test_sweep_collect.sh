# scripts/sweep-collect on hand-made task directories: a finished task, a diverged one whose
# metrics.jsonl holds null (non-finite) losses and accuracies, and one not started; the table
# and the CSV list all three, the diverged one's losses as nan or empty, never a crash.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
mkdir -p sweep/task-000/adapter sweep/task-001 sweep/task-002
for t in 000 001 002; do
  printf '{"task": "%s", "lr": 0.%s}\n' "$t" "${t: -1}5" >sweep/task-$t/sweep-row.json
  printf '{"steps": 2, "prompt_length": 4, "init": "random", "optimizer": {"lr": 0.5}}\n' \
    >sweep/task-$t/config.json
done
: >sweep/task-000/adapter/adapter_model.safetensors
cat >sweep/task-000/metrics.jsonl <<'J'
{"step":1,"loss":2.0,"lr":0.5,"grad_norm":1.0,"tokens":10,"tokens_per_s":5.0,"elapsed_s":1.0}
{"step":2,"loss":1.0,"lr":0.5,"grad_norm":1.0,"tokens":10,"tokens_per_s":5.0,"elapsed_s":2.0}
{"step":2,"split":"valid","loss":0.75,"examples":8,"accuracy":0.625}
J
cat >sweep/task-001/metrics.jsonl <<'J'
{"step":1,"loss":2.0,"lr":0.5,"grad_norm":1.0,"tokens":10,"tokens_per_s":5.0,"elapsed_s":1.0}
{"step":2,"loss":null,"lr":0.5,"grad_norm":null,"tokens":10,"tokens_per_s":5.0,"elapsed_s":2.0}
{"step":2,"split":"valid","loss":null,"examples":8,"accuracy":null}
J
"$SP_REPO/scripts/sweep-collect" sweep >out.txt 2>&1 || { cat out.txt; fail "sweep-collect failed on null values"; }
python3 - sweep/sweep-results.csv <<'PY' || { cat out.txt; fail "sweep-results.csv"; }
import csv, sys
rows = {r["task"]: r for r in csv.DictReader(open(sys.argv[1]))}
assert set(rows) == {"000", "001", "002"}, rows
assert rows["000"]["status"] == "done" and float(rows["000"]["best_accuracy"]) == 0.625, rows["000"]
d = rows["001"]
assert d["train_loss"] == "nan" and d["valid_loss"] == "" and d["valid_accuracy"] == "", d
assert d["best_accuracy"] == "" and d["status"] == "stopped", d
assert rows["002"]["status"] == "not started", rows["002"]
print("ok: the CSV lists all tasks; the diverged one has nan/empty losses")
PY
head -n 1 out.txt | grep -q "3 tasks in sweep, sorted by best_accuracy" || { cat out.txt; fail "summary line"; }
ok "sweep-collect copes with null values in metrics.jsonl"
