# softprompt predict end to end on tiny random models: agreement with eval, ensembles, the
# float64 reference (tests/ref/predict_reference.py) for GPT-2 and Llama, raw records rendered
# as prepare renders them (labelled and not), CSV/TSV, bad input refused with nothing written,
# and bulk inference over 2 ranks stopped by SIGUSR1 and resumed, byte-identical to 1 rank.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
PY=/usr/bin/python3

"$SP_CLI" init-model --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 --random-norms \
  --seed 1 model >/dev/null
"$SP_CLI" init-model --arch llama --kv-heads 2 --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 \
  --std 0.3 --random-norms --seed 3 llama >/dev/null
"$SP_CLI" init-model --layers 2 --d 24 --heads 4 --vocab 64 --ctx 64 --seed 2 narrow >/dev/null
"$SP_SYNTH" train.h5 256 64 16 1
"$SP_SYNTH" valid.h5 96 64 16 2
"$SP_SYNTH" slots8.h5 16 64 8 2
"$SP_CLI" train --model model --train train.h5 --quiet --threads 1 --out run --steps 40 \
  --global-batch 16 >/dev/null
"$SP_CLI" train --model model --train train.h5 --quiet --threads 1 --out run2 --steps 20 \
  --global-batch 16 --seed 5 >/dev/null

# --- predict's accuracy is eval's, exactly ---------------------------------------------------
for p in run/adapter run/checkpoints/$(ls run/checkpoints | tail -1); do
  "$SP_CLI" eval --model model --data valid.h5 --prompt "$p" --threads 1 --json > eval.json
  rm -f p.jsonl m.json
  "$SP_CLI" predict --model model --data valid.h5 --prompt "$p" --threads 1 --out p.jsonl \
    --metrics m.json --quiet
  python3 - eval.json m.json p.jsonl <<'PY' || fail "predict disagrees with eval for $p"
import json, sys
e, m = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
rows = [json.loads(l) for l in open(sys.argv[3])]
assert [r["index"] for r in rows] == list(range(96)), "rows not in input order"
right = sum(r["predicted"] == r["label"] for r in rows)
assert right == e["correct"] and m["predictors"][0]["accuracy"] == e["accuracy"], (right, e, m)
assert m["labelled"] == 96 and sum(map(sum, m["predictors"][0]["confusion"])) == 96
assert m["majority_baseline"]["accuracy"] == 0.5, m["majority_baseline"]
PY
done
ok "predict's accuracy equals eval's (adapter and checkpoint): $(python3 -c 'import json; print(json.load(open("eval.json"))["accuracy"])')"

# --- an ensemble of two prompts in one micro-batch, against float64 references ----------------
$PY - <<'PY'
import h5py, numpy as np
rng = np.random.default_rng(0)
for n in ("p1", "p2"):
    with h5py.File(n + ".h5", "w") as f:
        f["prompt"] = rng.normal(size=(16, 32)).astype(np.float32)
with h5py.File("p8.h5", "w") as f:
    f["prompt"] = rng.normal(size=(8, 32)).astype(np.float32)
PY
for m in model llama; do
  "$SP_CLI" predict --model $m --data valid.h5 --prompt p1.h5 --prompt p2.h5 --threads 1 \
    --out ens-$m.jsonl --quiet
  $PY "$SP_ROOT/tests/ref/predict_reference.py" $m valid.h5 ens-$m.jsonl p1.h5 p2.h5 \
    || fail "predict ($m) differs from the float64 reference"
done
python3 - ens-model.jsonl <<'PY' || fail "ensemble rows"
import json, sys
for r in map(json.loads, open(sys.argv[1])):
    p = [q["probabilities"] for q in r["prompts"]]
    mean = [(a + b) / 2 for a, b in zip(*p)]
    assert all(abs(x - y) < 1e-8 for x, y in zip(mean, r["probabilities"])), r
    best = max(range(2), key=lambda c: (mean[c], -c))
    assert r["predicted"] == r["classes"][best], r
    votes = [q["predicted"] for q in r["prompts"]]
    if votes[0] == votes[1]:
        assert r["vote"] == votes[0], r
    else:  # a tie: the larger mean probability
        assert r["vote"] == r["predicted"], r
PY
ok "ensembles: each prompt and the mean within 1e-5 of float64 references (GPT-2, Llama GQA); mean and vote"

# --- CSV and TSV carry the same numbers as JSONL ----------------------------------------------
"$SP_CLI" predict --model model --data valid.h5 --prompt p1.h5 --threads 1 --out one.jsonl --quiet
"$SP_CLI" predict --model model --data valid.h5 --prompt p1.h5 --threads 1 --out one.csv --format csv --quiet
"$SP_CLI" predict --model model --data valid.h5 --prompt p1.h5 --threads 1 --out one.tsv --format tsv --quiet
python3 - <<'PY' || fail "CSV/TSV differ from JSONL"
import csv, json
j = [json.loads(l) for l in open("one.jsonl")]
for name, delim in (("one.csv", ","), ("one.tsv", "\t")):
    rows = list(csv.DictReader(open(name, newline=""), delimiter=delim))
    assert len(rows) == len(j)
    for a, b in zip(j, rows):
        assert b["predicted"] == a["predicted"] and b["label"] == a["label"]
        assert [float(b["p_" + c]) for c in a["classes"]] == a["probabilities"]
        assert [float(b["logit_" + c]) for c in a["classes"]] == a["logits"]
PY
ok "CSV and TSV rows equal the JSONL rows"

# --- bad input: clear message, exit 1, nothing written -----------------------------------------
expect_refused() { # what needle args...
  local what=$1 needle=$2 rc=0; shift 2
  rm -f bad.out bad.out.partial bad.out.progress.json
  "$SP_CLI" predict "$@" --out bad.out --threads 1 > bad.log 2>&1 || rc=$?
  (( rc == 1 )) || { cat bad.log; fail "$what: exit $rc, expected 1"; }
  grep -qF -- "$needle" bad.log || { cat bad.log; fail "$what: message lacks '$needle'"; }
  [[ ! -e bad.out && ! -e bad.out.partial ]] || fail "$what: left output behind"
  ok "refused: $what: $(head -1 bad.log)"
}
expect_refused "a prompt of another model" "narrow has d_model 24" \
  --model narrow --data valid.h5 --prompt run/adapter
expect_refused "a prompt of another length" "soft slots" \
  --model model --data slots8.h5 --prompt run/adapter
expect_refused "ensemble prompts of different lengths" "an ensemble's prompts" \
  --model model --data valid.h5 --prompt run/adapter --prompt p8.h5
touch bad.out
rc=0; "$SP_CLI" predict --model model --data valid.h5 --prompt run/adapter --out bad.out > bad.log 2>&1 || rc=$?
(( rc == 1 )) && grep -q "already exists (use --force" bad.log && [[ ! -s bad.out ]] || { cat bad.log; fail "existing output"; }
"$SP_CLI" predict --model model --data valid.h5 --prompt run/adapter --out bad.out --force --quiet --threads 1
[[ $(wc -l < bad.out) == 96 ]] || fail "--force did not replace the output"
ok "an existing output is refused without --force and replaced with it"

# --- raw records: prepare's rendering, labels optional, bad lines named ------------------------
"$SP_CLI" init-model --layers 1 --d 16 --heads 2 --vocab 50257 --ctx 128 --seed 4 gpt >/dev/null
cp "$SP_CACHE_DIR/gpt2-tokenizer/encoder.json" "$SP_CACHE_DIR/gpt2-tokenizer/vocab.bpe" gpt/
recs=$SP_FIXTURES_DIR/prepare/reviews.jsonl
tpl=(--template '{soft:4}Review: {text} Sentiment:' --verbalizer 'negative= bad,positive= good')
"$SP_CLI" prepare --tokenizer gpt --input "$recs" "${tpl[@]}" --split all --out rev >/dev/null
$PY -c 'import h5py, numpy as np; h5py.File("g4.h5", "w")["prompt"] = np.random.default_rng(1).normal(size=(4, 16)).astype(np.float32)'
"$SP_CLI" predict --model gpt --data rev-all.h5 --prompt g4.h5 --threads 1 --out from-set.jsonl --quiet
"$SP_CLI" predict --model gpt --input "$recs" "${tpl[@]}" --prompt g4.h5 --threads 1 --out from-records.jsonl --quiet
same_file from-set.jsonl from-records.jsonl "records vs the set prepare made of them"
python3 -c 'import json,sys; [print(json.dumps({k: v for k, v in json.loads(l).items() if k != "label"})) for l in open(sys.argv[1])]' "$recs" > unlabelled.jsonl
"$SP_CLI" predict --model gpt --input unlabelled.jsonl "${tpl[@]}" --prompt g4.h5 --threads 1 --out unl.jsonl --metrics unl-m.json > unl.log
python3 - from-records.jsonl unl.jsonl unl-m.json <<'PY' || fail "unlabelled records"
import json, sys
a = [json.loads(l) for l in open(sys.argv[1])]
b = [json.loads(l) for l in open(sys.argv[2])]
assert all(y["label"] is None for y in b)
for x, y in zip(a, b):
    x["label"] = None
    assert x == y, (x, y)
m = json.load(open(sys.argv[3]))
assert m["labelled"] == 0 and m["predictors"][0]["accuracy"] is None, m
PY
ok "raw records (labelled or not) give the rows of the set prepare makes of them"
expect_refused "a template whose soft slots differ from the prompt's" "have 8 soft slots" \
  --model gpt --input "$recs" --template '{soft:8}{text}' --verbalizer 'negative= bad,positive= good' --prompt g4.h5
{ head -3 "$recs"; echo '{"text": "broken'; } > broken.jsonl
expect_refused "an unreadable input line" "broken.jsonl:4" \
  --model gpt --input broken.jsonl "${tpl[@]}" --prompt g4.h5
{ head -2 "$recs"; echo '{"text": "fine", "label": "maybe"}'; } > unknown.jsonl
expect_refused "a label outside the verbalizer" "unknown.jsonl:3: field \"label\": unknown label" \
  --model gpt --input unknown.jsonl "${tpl[@]}" --prompt g4.h5

# A set prepared with another tokenizer than the model's is refused (as eval refuses it).
expect_refused "a set of another tokenizer" "was prepared with tokenizer synthetic" \
  --model gpt --data valid.h5 --prompt g4.h5
# Records longer than the model's 128 positions are cut to fit (--max-length defaults to them).
python3 -c 'import json; print(json.dumps({"text": "long " * 400, "label": "positive"}))' > long.jsonl
"$SP_CLI" predict --model gpt --input long.jsonl "${tpl[@]}" --prompt g4.h5 --threads 1 --out long.out --quiet \
  || fail "a record longer than the model's positions was not truncated to fit"
ok "records longer than the model's positions are truncated to fit"

# --- bulk: 2 ranks stopped by SIGUSR1 and resumed = 1 rank uninterrupted, byte for byte ---------
"$SP_SYNTH" bulk.h5 3000 64 16 9
bulk=(predict --model model --data bulk.h5 --prompt run/adapter --prompt p1.h5 --threads 1 --chunk 8 --micro-batch 4 --quiet)
"$SP_CLI" "${bulk[@]}" --out ref.jsonl
mpi_bg 2 "${bulk[@]}" --out bulk.jsonl
python3 - "$MPI_PID" <<'PY' || fail "bulk run never reached 5 chunks"
import json, os, sys, time
pid, end = int(sys.argv[1]), time.time() + 120
while time.time() < end:
    try:
        if json.load(open("bulk.jsonl.progress.json"))["chunks_done"] >= 5: sys.exit(0)
    except (OSError, ValueError): pass
    time.sleep(0.02)
sys.exit(1)
PY
kill -USR1 "$MPI_PID"
rc=0; wait "$MPI_PID" || rc=$?
(( rc == SP_EXIT_STOPPED )) || fail "stopped bulk run: exit $rc, expected $SP_EXIT_STOPPED"
[[ ! -e bulk.jsonl && -s bulk.jsonl.partial ]] || fail "a stopped run published its output or left no partial one"
done_at=$(python3 -c 'import json; print(json.load(open("bulk.jsonl.progress.json"))["chunks_done"])')
(( done_at < 375 )) || fail "the run finished before the signal: nothing was resumed"
mpi 2 "${bulk[@]}" --out bulk.jsonl 2> resume.log
grep -q "continued after chunk $done_at of 375" resume.log || { cat resume.log; fail "the resumed run did not continue from chunk $done_at"; }
same_file bulk.jsonl ref.jsonl "2 ranks stopped by SIGUSR1 at chunk $done_at and resumed vs 1 rank"
[[ ! -e bulk.jsonl.partial && ! -e bulk.jsonl.progress.json ]] || fail "leftovers after publishing"
ok "bulk: 2 ranks stopped by SIGUSR1 after $done_at of 375 chunks, resumed: byte-identical to 1 rank"


# A killed run (SIGKILL mid-chunk: the partial output longer than its progress record) resumes;
# a progress record of another run is refused, and --force starts over.
"$SP_CLI" "${bulk[@]}" --out kill.jsonl &
pid=$!
python3 -c '
import json, sys, time
end = time.time() + 120
while time.time() < end:
    try:
        if json.load(open("kill.jsonl.progress.json"))["chunks_done"] >= 3: sys.exit(0)
    except (OSError, ValueError): pass
    time.sleep(0.02)
sys.exit(1)' || fail "run never reached 3 chunks"
kill -KILL $pid; wait $pid 2>/dev/null || true
echo '{"half a row' >> kill.jsonl.partial
rc=0; "$SP_CLI" predict --model model --data bulk.h5 --prompt p1.h5 --threads 1 --chunk 8 --micro-batch 4 --out kill.jsonl > other.log 2>&1 || rc=$?
(( rc == 1 )) && grep -q "the progress of another run" other.log || { cat other.log; fail "foreign progress accepted"; }
"$SP_CLI" "${bulk[@]}" --out kill.jsonl 2> kill.log
grep -q "continued after chunk" kill.log || { cat kill.log; fail "the killed run was not continued"; }
same_file kill.jsonl ref.jsonl "killed (SIGKILL, a torn row appended) and resumed vs uninterrupted"
ok "SIGKILL mid-run with a torn row: resumed byte-identical; another run's progress refused"
