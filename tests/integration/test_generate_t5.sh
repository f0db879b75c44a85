# softprompt generate on a T5 encoder-decoder (tiny random T5 1.1: gated-GELU, untied head; the
# synthetic SentencePiece Unigram tokenizer of tests/fixtures/tokenizer/hf/t5-unigram): the
# encoder input is rendered as prepare renders it (soft tokens where the template puts them,
# ending with </s>), the greedy ids equal a float64 reference decoding without a cache
# (tests/ref/t5_reference.py's forward, stopping at </s> as transformers' generate() does) for
# the prompt first and in the middle of the template, greedy and seeded sampling do not depend on
# --batch, the decoder's n_positions ends a request ("length"), and an encoder input longer than
# n_positions is refused with nothing written; a PEFT prefix-tuning adapter (the decoder's
# self-attention) generates the reference's greedy ids too.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
PY=/usr/bin/python3

"$SP_CLI" init-model --arch t5 --gated-gelu --untied --layers 2 --d 32 --heads 4 --vocab 366 --ctx 40 \
  --std 0.5 --random-norms --seed 4 model >/dev/null
cp "$SP_FIXTURES_DIR/tokenizer/hf/t5-unigram/tokenizer.json" \
  "$SP_FIXTURES_DIR/tokenizer/hf/t5-unigram/tokenizer_config.json" model/
$PY -c "import numpy as np; np.save('p.npy', np.random.default_rng(1).normal(0, 1, (4, 32)).astype(np.float32))"
cat > in.jsonl <<'EOF'
{"text": "the cat sat", "label": "x", "key": "a"}
{"text": "hello world", "label": "y", "key": "b"}
{"text": "a", "label": "z", "key": "c"}
EOF
gen() { "$SP_CLI" generate --model model --prompt p.npy --input in.jsonl --id-field key "$@"; }

# --- greedy ids against the float64 reference, the encoder input as prepare renders it --------
# check.py GREEDY.jsonl ENC.h5 MODEL PROMPT.npy REF_DIR [PREFIX.npy]
cat > check.py <<'PY'
import json, sys
import h5py, numpy as np, torch
sys.path.insert(0, sys.argv[5])
import t5_reference as t5
rows = [json.loads(l) for l in open(sys.argv[1])]
assert [r["id"] for r in rows] == ["a", "b", "c"], rows
f = h5py.File(sys.argv[2], "r")
off, tpos, toff = f["offsets"][:], f["target_pos"][:], f["target_offsets"][:]
tokens = [int(t) for t in f["tokens"][:]]
# the encoder input of each example: its tokens up to its first target (prepare's layout)
encs = [tokens[off[i]:off[i] + int(tpos[toff[i]]) + 1] for i in range(len(off) - 1)]
assert all(e[-1] == 1 for e in encs), "the encoder input does not end with </s>"
M = t5.read_model(sys.argv[3])
W = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in M["w"].items()}
prompt = torch.from_numpy(np.load(sys.argv[4]).astype(np.float64))
# a key/value prefix [L, 2, P, qd] (prefix tuning: the decoder's self-attention), optional
prefix = torch.from_numpy(np.load(sys.argv[6]).astype(np.float64)) if len(sys.argv) > 6 else None
want, compared = [], 0
for enc in encs:
    dec, ids, margins = [M["start"]], [], []
    with torch.no_grad():
        while len(ids) < 10:
            row = t5.torch_seq_logits(M, W, enc, dec, prompt, prefix)[-1]
            top = torch.topk(row, 2).values
            ids.append(int(torch.argmax(row)))
            margins.append(float(top[0] - top[1]))
            dec.append(ids[-1])
            if ids[-1] == 1:  # </s>: generate() stops
                break
    want.append((ids, margins))
# prepare's split may reorder the examples: match each output row to a reference decoding
for r in rows:
    def agree(w):
        ids, margins = w
        for j, (a, m) in enumerate(zip(ids, margins)):
            if m <= 1e-3:
                return j
            if j >= len(r["token_ids"]) or r["token_ids"][j] != a:
                return -1
        return len(ids) if r["token_ids"] == ids else -1
    best = max(agree(w) for w in want)
    assert best >= 3, ("no reference decoding agrees with", r, want)
    compared += best
    assert r["finish_reason"] == ("eos" if r["token_ids"][-1] == 1 else "length"), r
print("ok: %d greedy ids compared" % compared)
PY
for tpl in '{soft:4}Question: {text}' 'Q: {text}{soft:4} A:'; do
  gen --template "$tpl" --max-new-tokens 10 --batch 2 --out greedy.jsonl --force
  rm -f enc-all.h5
  "$SP_CLI" prepare --tokenizer model --input in.jsonl --template "$tpl" --split all=1 \
    --out enc >/dev/null
  $PY check.py greedy.jsonl enc-all.h5 model p.npy "$SP_REPO/tests/ref" \
    || fail "T5 greedy ids differ from the float64 reference ($tpl)"
done
ok "T5 greedy ids equal the float64 reference, the prompt first and in the middle of the template"

# --- prefix tuning: a PEFT SEQ_2_SEQ_LM PREFIX_TUNING adapter, its rows before every decoder
# layer's self-attention (t5_reference.py's forward with the prefix as past_key_values) --------
$PY - "$SP_REPO/tests/ref" <<'PY'
import json, os, sys, numpy as np
sys.path.insert(0, sys.argv[1])
import prefix_reference as pr
L, P, qd = 2, 3, 32
pre = np.random.default_rng(2).normal(0, 1, (L, 2, P, qd)).astype(np.float32)
np.save("prefix.npy", pre)
pr.write_peft_adapter("pfx", pr.peft_rows(pre), P, L, 4, qd, "SEQ_2_SEQ_LM")
PY
"$SP_CLI" generate --model model --prompt pfx --input in.jsonl --id-field key --template 'Q: {text} A:' \
  --max-new-tokens 10 --batch 2 --out greedy.jsonl --force
rm -f enc-all.h5
"$SP_CLI" prepare --tokenizer model --input in.jsonl --template 'Q: {text} A:' --split all=1 \
  --prompt-length 0 --out enc >/dev/null
$PY check.py greedy.jsonl enc-all.h5 model p.npy "$SP_REPO/tests/ref" prefix.npy \
  || fail "T5 greedy ids behind a prefix differ from the float64 reference"
"$SP_CLI" generate --model model --input in.jsonl --id-field key --template 'Q: {text} A:' \
  --max-new-tokens 10 --out plain.jsonl --force
! cmp -s plain.jsonl greedy.jsonl || fail "the prefix changed nothing"
ok "T5 greedy ids behind a prefix-tuning adapter equal the float64 reference"

# --- batches: greedy and seeded sampling, whatever --batch ------------------------------------
tpl=(--template 'Q: {text}{soft:4} A:')
gen "${tpl[@]}" --max-new-tokens 10 --batch 1 > g1.jsonl
gen "${tpl[@]}" --max-new-tokens 10 --batch 3 > g3.jsonl
same_file g1.jsonl g3.jsonl "T5 greedy, --batch 1 vs 3"
sample=(--max-new-tokens 12 --sample --temperature 1.3 --top-k 40 --top-p 0.9 --seed 7 --repetition-penalty 1.2)
gen "${tpl[@]}" "${sample[@]}" --batch 1 > s1.jsonl
gen "${tpl[@]}" "${sample[@]}" --batch 2 > s2.jsonl
same_file s1.jsonl s2.jsonl "T5 sampling, --batch 1 vs 2"
ok "T5 greedy and seeded sampling do not depend on --batch"

# --- the decoder's n_positions (40) ends a request --------------------------------------------
gen --no-eos --max-new-tokens 100 > long.jsonl
$PY - long.jsonl <<'PY' || fail "T5 generation past the decoder's n_positions"
import json, sys
for l in open(sys.argv[1]):
    r = json.loads(l)
    assert r["finish_reason"] == "length" and len(r["token_ids"]) == 40, r
PY
ok "the decoder's n_positions ends a request (finish_reason length after 40 tokens)"

# --- refusals, nothing written ---------------------------------------------------------------
$PY -c "import json; print(json.dumps({'text': 'w ' * 60}))" > long-in.jsonl
set +e
"$SP_CLI" generate --model model --prompt p.npy --input long-in.jsonl --out x.jsonl 2> err.txt
rc=$?
set -e
[[ $rc == 1 && ! -e x.jsonl ]] || fail "an encoder input beyond n_positions: exit $rc"
grep -q "more than the encoder's 40 positions (n_positions)" err.txt || fail "$(cat err.txt)"
ok "T5: an encoder input beyond n_positions is refused, nothing written"

# --- mT5 (model_type mt5): init-model's mt5-small shape, narrowed; info names it; it generates --
"$SP_CLI" init-model --shape mt5-small --layers 1 --d 32 --heads 2 --kv-heads 2 --vocab 366 \
  --seed 5 mt5 >/dev/null
cp model/tokenizer.json model/tokenizer_config.json mt5/
$PY - mt5/config.json <<'PY' || fail "init-model --shape mt5-small does not write an mT5 config"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["model_type"] == "mt5" and c["architectures"] == ["MT5ForConditionalGeneration"], c
assert c["feed_forward_proj"] == "gated-gelu" and c["tie_word_embeddings"] is False, c
PY
"$SP_CLI" info mt5 | grep -q "MT5ForConditionalGeneration (model_type mt5)" || fail "info on mT5"
"$SP_CLI" generate --model mt5 --text 'hello' --max-new-tokens 5 --no-eos > mt5.jsonl
$PY -c "import json; r = json.loads(open('mt5.jsonl').read()); assert len(r['token_ids']) == 5, r"
ok "mT5: init-model --shape mt5-small writes model_type mt5, info names it, generate runs it"
