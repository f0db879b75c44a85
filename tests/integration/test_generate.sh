# softprompt generate end to end on a tiny random GPT-2 with a byte-level tokenizer (the 256
# bytes and <|endoftext|>): the JSON lines (one per record, in input order, ids from
# --id-field), greedy and seeded sampling reproducible and independent of --batch, a trained
# prompt (checkpoint and PEFT adapter give the same output), stop strings spanning tokens, EOS,
# and the refusals (an existing --out, bad records naming file:line, a prompt of another model
# width or another length than the template's soft slots, memory that does not fit, usage
# errors), with nothing written; one --text request streamed on a pseudo-terminal.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

"$SP_CLI" init-model --arch gpt2 --layers 2 --d 32 --heads 4 --vocab 257 --ctx 128 --std 0.3 \
  --random-norms --seed 1 model >/dev/null
"$SP_CLI" init-model --arch gpt2 --layers 2 --d 48 --heads 4 --vocab 257 --ctx 128 --std 0.3 \
  --seed 2 wide >/dev/null
byte_tokenizer tok
gen() { "$SP_CLI" generate --model "${model:-model}" --tokenizer tok "$@"; }

cat > in.jsonl <<'EOF'
{"text": "Hello there", "key": "a"}
{"text": "The cat", "key": "b"}
{"text": "zz", "key": "c"}
EOF

# --- shape and order -------------------------------------------------------------------------
gen --input in.jsonl --id-field key --max-new-tokens 7 > greedy.jsonl
python3 - greedy.jsonl <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["id"] for r in rows] == ["a", "b", "c"], rows
for r in rows:
    assert set(r) == {"id", "text", "token_ids", "finish_reason"}, r
    assert r["finish_reason"] == "length" and len(r["token_ids"]) == 7, r
    assert all(isinstance(t, int) and 0 <= t < 257 for t in r["token_ids"]), r
PY
ok "one JSON line per record in input order: id, text, token_ids, finish_reason"

# --- determinism: greedy and seeded sampling, whatever the batch ------------------------------
gen --input in.jsonl --id-field key --max-new-tokens 7 --batch 1 > greedy-b1.jsonl
same_file greedy.jsonl greedy-b1.jsonl "greedy, --batch 8 vs --batch 1"
sample=(--input in.jsonl --max-new-tokens 12 --sample --temperature 1.3 --top-k 40 --top-p 0.9 --seed 7)
gen "${sample[@]}" > s1.jsonl
gen "${sample[@]}" --batch 2 > s2.jsonl
same_file s1.jsonl s2.jsonl "sampling with --seed 7, --batch 8 vs --batch 2"
gen "${sample[@]/7/8}" > s3.jsonl
cmp -s s1.jsonl s3.jsonl && fail "--seed 8 sampled the same tokens as --seed 7"
ok "greedy and seeded sampling reproducible and independent of --batch; another seed differs"

# --- a trained prompt: checkpoint and adapter --------------------------------------------------
"$SP_SYNTH" train.h5 32 257 4 1
"$SP_CLI" train --model model --train train.h5 --out run --steps 3 --global-batch 4 --threads 1 \
  --quiet >/dev/null
ckpt=$(ls run/checkpoints/step-*.h5 | tail -1)
gen --prompt "$ckpt" --template '{soft:4}{text}' --input in.jsonl --max-new-tokens 6 > p-ckpt.jsonl
gen --prompt run/adapter --input in.jsonl --max-new-tokens 6 > p-adapter.jsonl
same_file p-ckpt.jsonl p-adapter.jsonl "the checkpoint vs its adapter (soft tokens prepended by default)"
cmp -s p-ckpt.jsonl <(head -c 0 /dev/null) && fail "no output with a prompt"
python3 - p-ckpt.jsonl greedy.jsonl <<'PY'
import json, sys
a = [json.loads(l)["token_ids"] for l in open(sys.argv[1])]
b = [json.loads(l)["token_ids"][:6] for l in open(sys.argv[2])]
assert a != b, "the prompt changed nothing"
PY
gen --prompt run/adapter --template '{text} and {soft:4} then' --input in.jsonl --max-new-tokens 4 >/dev/null \
  || fail "soft tokens in the middle of the template"
ok "a prompt from a checkpoint and from its PEFT adapter generate the same; soft tokens anywhere"

# --- stop strings spanning tokens, EOS -----------------------------------------------------------
gen --text "The cat" --max-new-tokens 40 > free.jsonl
# two consecutive generated tokens that are ASCII letters or digits (one character each)
stop=$(python3 -c '
import json
ids = json.load(open("free.jsonl"))["token_ids"]
k = next(k for k in range(2, len(ids) - 1) if all(chr(t).isalnum() and t < 127 for t in ids[k:k + 2]))
print(chr(ids[k]) + chr(ids[k + 1]))')
gen --text "The cat" --max-new-tokens 40 --stop "$stop" > stopped.jsonl
python3 - free.jsonl stopped.jsonl "$stop" <<'PY'
import json, sys
free, got, stop = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
assert len(stop) == 2 and got["finish_reason"] == "stop", got
assert got["text"] == free["text"][:free["text"].index(stop)], (got, free)
assert got["token_ids"] == free["token_ids"][:len(got["token_ids"])], (got, free)
PY
first=$(python3 -c 'import json; print(json.load(open("free.jsonl"))["token_ids"][0])')
mkdir tok-eos && cp tok/* tok-eos/
python3 - "$first" <<'PY'
import json, sys
# <|endoftext|> takes the id of the first token the free run generated (that byte takes 256)
vocab = json.load(open("tok-eos/vocab.json"))
byte = [k for k, v in vocab.items() if v == int(sys.argv[1])][0]
vocab[byte], vocab["<|endoftext|>"] = 256, int(sys.argv[1])
json.dump(vocab, open("tok-eos/vocab.json", "w"))
PY
"$SP_CLI" generate --model model --tokenizer tok-eos --text "The cat" --max-new-tokens 40 > eos.jsonl
python3 -c 'import json; r=json.load(open("eos.jsonl")); assert r["finish_reason"]=="eos" and len(r["token_ids"])==1 and r["text"]=="", r' \
  || fail "EOS did not end the request: $(cat eos.jsonl)"
"$SP_CLI" generate --model model --tokenizer tok-eos --text "The cat" --max-new-tokens 40 --no-eos > noeos.jsonl
python3 -c 'import json; a,b=(json.load(open(f)) for f in ("noeos.jsonl","free.jsonl")); assert a["token_ids"]==b["token_ids"] and a["finish_reason"]=="length", (a,b)' \
  || fail "--no-eos did not generate past EOS"
ok "stop strings end the request with the text cut before them; EOS ends it; --no-eos ignores it"

# --- streaming: one --text request on a terminal prints its text as it decodes ------------------
if command -v script >/dev/null; then
  gen --text "The cat" --max-new-tokens 12 > plain.jsonl
  script -qec "stty -onlcr; $SP_CLI generate --model model --tokenizer tok --text 'The cat' --max-new-tokens 12" \
    /dev/null > stream.out
  gen --text "The cat" --max-new-tokens 40 --stop "$stop" > stop-plain.jsonl
  script -qec "stty -onlcr; $SP_CLI generate --model model --tokenizer tok --text 'The cat' --max-new-tokens 40 --stop '$stop'" \
    /dev/null > stream-stop.out
  python3 - "$stop" <<'PY' || fail "the streamed text is not the generated text"
import json, sys
stop = sys.argv[1].encode()
for out, plain, why in (("stream.out", "plain.jsonl", "length"),
                        ("stream-stop.out", "stop-plain.jsonl", "stop")):
    ids = json.load(open(plain))["token_ids"]
    text = bytes(ids)  # the tokenizer's id b is byte b (no EOS among them)
    if why == "stop":
        text = text[:text.index(stop)]
    got = open(out, "rb").read()
    tail = b"\n[%s, %d tokens]\n" % (why.encode(), len(ids))
    assert got == text + tail, (out, got, text + tail)
PY
  ok "one --text request on a terminal streams its text (held back only while a stop string may follow)"
fi

# --- refusals ------------------------------------------------------------------------------------
expect_fail() { # status message-part args...
  local want=$1 msg=$2; shift 2
  set +e; gen "$@" > out.txt 2> err.txt; local rc=$?; set -e
  [[ $rc == "$want" ]] || fail "generate $* exited $rc, expected $want: $(cat err.txt)"
  grep -qF -- "$msg" err.txt || fail "generate $*: message without '$msg': $(cat err.txt)"
}
echo keep > exists.jsonl
expect_fail 1 "exists.jsonl exists: use --force" --input in.jsonl --out exists.jsonl
[[ $(cat exists.jsonl) == keep ]] || fail "an existing --out was changed"
gen --input in.jsonl --max-new-tokens 3 --out exists.jsonl --force
[[ $(wc -l < exists.jsonl) == 3 ]] || fail "--force did not write the results"
printf '{"text": "fine"}\n{"text": broken\n' > bad.jsonl
expect_fail 1 "bad.jsonl:2" --input bad.jsonl --out new.jsonl
printf '{"text": "fine"}\n{"other": "x"}\n' > missing.jsonl
expect_fail 1 'missing.jsonl:2: field "text"' --input missing.jsonl --out new.jsonl
[[ ! -e new.jsonl ]] || fail "a refused run left new.jsonl"
ls new.jsonl.tmp.* 2>/dev/null && fail "a refused run left a temporary"
model=wide expect_fail 1 "d_model" --prompt run/adapter --input in.jsonl
expect_fail 1 "the prompt has 4 rows but --template '{soft:3}{text}' has 3 soft slots" \
  --prompt run/adapter --template '{soft:3}{text}' --input in.jsonl
expect_fail 1 "no --prompt" --template '{soft:2}{text}' --input in.jsonl
SP_MAX_MEMORY=1M expect_fail 1 "generating needs about" --input in.jsonl --out new.jsonl
[[ ! -e new.jsonl ]] || fail "a run refused for memory left new.jsonl"
expect_fail 2 "--top-k applies to sampling: add --sample" --input in.jsonl --top-k 3
expect_fail 2 "give one of --input FILE and --text STRING" --input in.jsonl --text hi
expect_fail 2 "--stop" --input in.jsonl --stop ''
ok "refusals: existing --out, bad records (file:line, field), foreign or mismatched prompts, memory, usage"
