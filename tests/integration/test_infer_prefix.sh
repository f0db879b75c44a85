# Deep prompts in inference (docs/inference.md, "Prefix tuning in inference"): predict, generate
# and inspect read a prefix checkpoint (/prefix) or a PEFT PREFIX_TUNING adapter as they read a
# prompt, the method taken from the file (--method only checks it):
#  - predict with a prefix checkpoint (GPT-2, Llama with 2 key/value heads of 4) gives exactly
#    eval's accuracy, and the adapter softprompt exports from it predicts the same bytes; a
#    prompt+prefix checkpoint likewise; an ensemble of two prefixes gives each its own accuracy;
#  - generate with a prefix checkpoint and with its adapter writes the same bytes, a template's
#    soft slots are left out as eval leaves them out;
#  - --method that the file does not hold is refused; inspect shows a prefix (alone or beside a
#    prompt; its numbers are checked in test_inspect).
source "$(dirname "$0")/lib.sh"
cd "$WORK"

refused() { # expected-status pattern what command...
  local want=$1 pattern=$2 what=$3; shift 3
  set +e; "$@" > refused.out 2>&1; local rc=$?; set -e
  (( rc == want )) && grep -q -- "$pattern" refused.out || { cat refused.out; fail "$what (exit $rc)"; }
}

"$SP_CLI" init-model --arch gpt2 --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 \
  --random-norms --seed 1 model >/dev/null
"$SP_CLI" init-model --arch llama --kv-heads 2 --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 \
  --std 0.3 --random-norms --seed 1 llama >/dev/null
"$SP_SYNTH" train.h5 256 64 16 1
"$SP_SYNTH" valid.h5 96 64 16 2
common=(--train train.h5 --quiet --threads 1 --global-batch 16 --optimizer adamw --lr 0.2)
last() { local d=$1/checkpoints; echo "$d/$(ls "$d" | tail -1)"; } # a run's last checkpoint

# --- predict agrees with eval ------------------------------------------------------------------
same_accuracy() { # model prompt...: eval's accuracy of each prompt equals predict's
  local m=$1; shift
  local args=() i=0
  for p in "$@"; do
    "$SP_CLI" eval --model $m --data valid.h5 --prompt "$p" --threads 1 --json > eval-$i.json
    args+=(--prompt "$p"); i=$((i + 1))
  done
  rm -f p.jsonl m.json
  "$SP_CLI" predict --model $m --data valid.h5 "${args[@]}" --threads 1 --out p.jsonl \
    --metrics m.json --quiet
  python3 - m.json p.jsonl "$#" <<'PY' || fail "predict disagrees with eval ($m: $*)"
import json, sys
m, n = json.load(open(sys.argv[1])), int(sys.argv[3])
rows = [json.loads(l) for l in open(sys.argv[2])]
assert [r["index"] for r in rows] == list(range(96)), "rows not in input order"
for k in range(n):
    e = json.load(open("eval-%d.json" % k))
    right = sum((r["prompts"][k] if n > 1 else r)["predicted"] == r["label"] for r in rows)
    assert right == e["correct"] and m["predictors"][k]["accuracy"] == e["accuracy"], (k, right, e)
PY
}
for m in model llama; do
  "$SP_CLI" train --model $m "${common[@]}" --out pre-$m --steps 30 --method prefix \
    --prefix-length 6
  "$SP_CLI" export --model $m --prompt $(last pre-$m) --out adapter-$m >/dev/null
  same_accuracy $m $(last pre-$m)
  cp p.jsonl ckpt-$m.jsonl
  same_accuracy $m adapter-$m
  same_file ckpt-$m.jsonl p.jsonl "predict with the $m prefix checkpoint and its PEFT adapter"
  "$SP_CLI" predict --model $m --data valid.h5 --prompt adapter-$m --method ptuning-v2 \
    --threads 1 --out again-$m.jsonl --quiet
  same_file ckpt-$m.jsonl again-$m.jsonl "--method ptuning-v2 on a prefix adapter"
done
acc=$(python3 -c 'import json; print(json.load(open("eval-0.json"))["accuracy"])')
ok "predict with a prefix (GPT-2, Llama GQA) equals eval's accuracy ($acc); the exported PREFIX_TUNING adapter predicts the same bytes"

"$SP_CLI" train --model llama "${common[@]}" --out both --steps 20 --method prompt+prefix \
  --prefix-length 3
"$SP_CLI" train --model llama "${common[@]}" --out pre2 --steps 20 --method ptuning-v2 \
  --prefix-length 4 --seed 9
same_accuracy llama $(last both)
same_accuracy llama $(last pre-llama) $(last pre2)
ok "prompt+prefix equals eval's accuracy; an ensemble of two prefixes (6 and 4 rows) gives each its own"

# --- generate ----------------------------------------------------------------------------------
"$SP_CLI" init-model --arch llama --kv-heads 2 --layers 2 --d 32 --heads 4 --vocab 257 \
  --ctx 96 --std 0.3 --random-norms --seed 4 gen >/dev/null
"$SP_SYNTH" gtrain.h5 64 257 8 3
"$SP_CLI" train --model gen --train gtrain.h5 --quiet --threads 1 --global-batch 8 \
  --out gpre --steps 4 --method prefix --prefix-length 5
"$SP_CLI" export --model gen --prompt $(last gpre) --out gadapter >/dev/null
byte_tokenizer tok
printf '{"text": "Hello there"}\n{"text": "The cat"}\n{"text": "zz"}\n' > in.jsonl
gen() { "$SP_CLI" generate --model gen --tokenizer tok --input in.jsonl --max-new-tokens 12 --no-eos "$@"; }
gen --prompt $(last gpre) --out g-ckpt.jsonl
gen --prompt gadapter --method prefix --out g-adapter.jsonl
same_file g-ckpt.jsonl g-adapter.jsonl "generate with the prefix checkpoint and its adapter"
gen --prompt $(last gpre) --template '{soft:8}{text}' --batch 1 --out g-slots.jsonl
same_file g-ckpt.jsonl g-slots.jsonl "a template's soft slots with a prefix alone"
gen --out g-none.jsonl
cmp -s g-ckpt.jsonl g-none.jsonl && fail "the prefix changed nothing in generate"
ok "generate with a prefix checkpoint and its PREFIX_TUNING adapter: the same bytes; soft slots left out"

# --- refusals ----------------------------------------------------------------------------------
refused 1 "holds a key/value prefix" "--method prompt with a prefix checkpoint (predict)" \
  "$SP_CLI" predict --model llama --data valid.h5 --prompt $(last pre-llama) --method prompt \
  --out x.jsonl
[[ ! -e x.jsonl && ! -e x.jsonl.partial ]] || fail "a refused predict left output behind"
refused 1 "not what --method prompt+prefix trains" "--method prompt+prefix with a prefix (generate)" \
  "$SP_CLI" generate --model gen --tokenizer tok --text hi --prompt gadapter --method prompt+prefix
refused 2 "--method needs --prompt" "generate --method without --prompt" \
  "$SP_CLI" generate --model gen --tokenizer tok --text hi --method prefix
"$SP_CLI" inspect $(last pre-llama) --model llama --json > pre.json
"$SP_CLI" inspect $(last both) --model llama --json > both.json
python3 - pre.json both.json <<'PY' || fail "inspect of a prefix, of prompt+prefix"
import json, sys
pre, both = (json.load(open(f)) for f in sys.argv[1:])
assert "tokens" not in pre and pre["prefix"]["rows"] == 6 and pre["prefix"]["layers"] == 2, pre
assert len(pre["prefix"]["first_layer"]) == 6 and len(pre["prefix"]["per_layer"]) == 2
assert len(both["tokens"]) > 0 and both["prefix"]["rows"] > 0, both.keys()
PY
ok "a --method the file does not hold is refused; inspect shows a prefix alone and beside a prompt"
