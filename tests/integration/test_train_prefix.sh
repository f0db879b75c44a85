# Prefix tuning end to end (--method prefix, ptuning-v2, prompt+prefix; docs/methods.md) on tiny
# random GPT-2 and Llama (grouped-query, 2 key/value heads of 4) models and a synthetic task:
# learning, PEFT PREFIX_TUNING adapters (GQA token_dim) read back by eval, --deterministic
# bitwise across 1, 2 and 3 ranks (also through the MLP and with dropout), a run continued
# from its checkpoint bitwise equal to one run, and refusals (another method or prefix shape
# on resume, an altered encoder output, P_TUNING adapters, flags of another method); --init
# from any prompt file (a PEFT adapter, a .npy) and its refusals.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

"$SP_CLI" init-model --arch gpt2 --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 \
  --random-norms --seed 1 model >/dev/null
"$SP_CLI" init-model --arch llama --kv-heads 2 --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 \
  --std 0.3 --random-norms --seed 1 llama >/dev/null
"$SP_SYNTH" train.h5 512 64 16 1
"$SP_SYNTH" valid.h5 128 64 16 2
common=(--train train.h5 --quiet --threads 1)
refused() { # expected-status pattern what command...
  local want=$1 pattern=$2 what=$3; shift 3
  set +e; "$@" > refused.out 2>&1; local rc=$?; set -e
  (( rc == want )) && grep -q -- "$pattern" refused.out || { cat refused.out; fail "$what (exit $rc)"; }
}
acc() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["accuracy"])' "$1"; }

# --- learning, adapters, eval ----------------------------------------------------------------
for m in model llama; do
  "$SP_CLI" train --model $m "${common[@]}" --valid valid.h5 --out learn-$m --steps 120 \
    --global-batch 16 --eval-every 40 --method prefix --prefix-length 8 --optimizer adamw --lr 0.2
  "$SP_CLI" eval --model $m --data valid.h5 --json > zero-$m.json
  "$SP_CLI" eval --model $m --data valid.h5 --prompt learn-$m/adapter --json > adapter-$m.json
  "$SP_CLI" eval --model $m --data valid.h5 --prompt learn-$m/best.h5 --method prefix --json > best-$m.json
  "$SP_CLI" export --model $m --prompt learn-$m/best.h5 --out best-adapter-$m >/dev/null
  "$SP_CLI" eval --model $m --data valid.h5 --prompt best-adapter-$m --json > best-adapter-$m.json
  python3 - zero-$m.json adapter-$m.json best-$m.json best-adapter-$m.json <<'PY'
import json, sys
z, a, b, ba = (json.load(open(p)) for p in sys.argv[1:])
assert a["accuracy"] >= 0.9 and z["accuracy"] < 0.8, (z, a)
assert b["loss"] == ba["loss"] and b["accuracy"] == ba["accuracy"], (b, ba)
PY
done
python3 - learn-model/adapter/adapter_config.json learn-llama/adapter/adapter_config.json <<'PY'
import json, sys
g, l = (json.load(open(p)) for p in sys.argv[1:])
for c, token_dim, heads in ((g, 32, 4), (l, 16, 2)):   # llama: head_dim 8 x 2 key/value heads
    assert c["peft_type"] == "PREFIX_TUNING" and c["num_virtual_tokens"] == 8, c
    assert c["token_dim"] == token_dim and c["num_attention_heads"] == heads, c
    assert c["num_layers"] == 2 and c["prefix_projection"] is False, c
PY
ok "prefix tuning learns (GPT-2, Llama GQA 2:1); PREFIX_TUNING adapters (token_dim = head_dim x kv heads) evaluate like their checkpoints"

# --- --deterministic: bitwise for 1, 2 and 3 ranks -------------------------------------------
det() { # name ranks micro-batch [extra...]
  local name=$1 n=$2 mb=$3; shift 3
  mpi "$n" train --model llama "${common[@]}" --out "$name" --steps 5 --global-batch 6 \
    --micro-batch "$mb" --optimizer adamw --lr 0.05 --deterministic "$@"
}
for variant in prefix mlp drop both; do
  case $variant in
    prefix) extra=(--method prefix) ;;
    mlp) extra=(--method prefix --prefix-hidden 12 --init random) ;;
    drop) extra=(--method ptuning-v2 --prefix-dropout 0.2) ;;
    both) extra=(--method prompt+prefix --prefix-length 3) ;;
  esac
  det $variant-1 1 6 "${extra[@]}"; det $variant-2 2 2 "${extra[@]}"; det $variant-3 3 1 "${extra[@]}"
  for n in 2 3; do
    /usr/bin/python3 - $variant-1/checkpoints $variant-$n/checkpoints <<'PY' || fail "--deterministic $variant: 1 vs more ranks"
import sys, h5py, glob
a, b = (sorted(glob.glob(d + "/step-*.h5"))[-1] for d in sys.argv[1:])
with h5py.File(a) as x, h5py.File(b) as y:
    names = []
    x.visit(names.append)
    for n in names:
        if isinstance(x[n], h5py.Dataset):
            assert (x[n][()] == y[n][()]).all(), n
PY
  done
done
ok "--deterministic: bitwise identical prefix, MLP, dropout and prompt+prefix runs for 1, 2 and 3 ranks"

# --- T5: the prefix in the decoder's self-attention (PEFT's SEQ_2_SEQ_LM PREFIX_TUNING) --------
# (its gradient is checked against the float64 reference in test_reference; here the run)
"$SP_CLI" init-model --arch t5 --untied --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 \
  --random-norms --seed 1 t5 >/dev/null
t5run=(train --model t5 "${common[@]}" --method ptuning-v2 --prefix-length 6 --init random)
"$SP_CLI" "${t5run[@]}" --valid valid.h5 --out t5-learn --steps 120 --global-batch 16 --lr 3e-2 \
  --eval-every 120
"$SP_CLI" eval --model t5 --data valid.h5 --prompt t5-learn/adapter --json > t5-adapter.json
"$SP_CLI" eval --model t5 --data valid.h5 --prompt t5-learn/best.h5 --json > t5-best.json
python3 - t5-learn/metrics.jsonl t5-adapter.json t5-best.json t5-learn/adapter/adapter_config.json <<'PY' \
  || fail "T5 prefix tuning"
import json, sys, metrics
train = [r["loss"] for r in metrics.steps(metrics.read(sys.argv[1]))]
first, last = sum(train[:10]) / 10, sum(train[-10:]) / 10
assert last < 0.5 * first, (first, last)  # the class words: ~4.4 -> < 1
a, b, c = (json.load(open(p)) for p in sys.argv[2:])
assert a["loss"] == b["loss"] and a["accuracy"] == b["accuracy"], (a, b)
assert c["task_type"] == "SEQ_2_SEQ_LM" and c["num_transformer_submodules"] == 2, c
assert c["peft_type"] == "PREFIX_TUNING" and c["token_dim"] == 32 and c["num_attention_heads"] == 4, c
print("ok: T5 prefix: training loss %.3f -> %.3f" % (first, last))
PY
"$SP_CLI" predict --model t5 --data valid.h5 --prompt t5-learn/adapter --threads 1 \
  --out t5-p.jsonl --metrics t5-m.json --quiet
python3 -c 'import json,sys; m=json.load(open("t5-m.json")); e=json.load(open("t5-adapter.json")); assert m["predictors"][0]["accuracy"] == e["accuracy"], (m, e)' \
  || fail "T5 prefix: predict's accuracy is not eval's"
for n in 1 2; do
  mpi $n "${t5run[@]}" --out t5-det-$n --steps 4 --global-batch 6 --micro-batch $((n == 1 ? 6 : 1)) \
    --deterministic
done
same_file t5-det-1/adapter/adapter_model.safetensors t5-det-2/adapter/adapter_model.safetensors \
  "T5 prefix --deterministic: 1 vs 2 ranks"
refused 1 "with --init random (PEFT's) or from a FILE" "a T5 prefix from tokens" \
  "$SP_CLI" train --model t5 "${common[@]}" --out x --method ptuning-v2 --init vocab
[ ! -e x ] || fail "a refused T5 run left its --out behind"
ok "T5 prefix: learns the class words, its SEQ_2_SEQ_LM adapter evaluates like its checkpoint, predict agrees, --deterministic bitwise on 1 and 2 ranks, --init from tokens refused"

# --- a run continued from its checkpoint equals one run ---------------------------------------
for variant in mlp drop; do
  case $variant in
    mlp) extra=(--method prefix --prefix-hidden 12 --init random --optimizer adafactor) ;;
    drop) extra=(--method ptuning-v2 --prefix-dropout 0.2) ;;
  esac
  "$SP_CLI" train --model llama "${common[@]}" --steps 12 --global-batch 8 --out grow-$variant "${extra[@]}"
  "$SP_CLI" train --model llama "${common[@]}" --steps 20 --global-batch 8 --out grow-$variant "${extra[@]}"
  "$SP_CLI" train --model llama "${common[@]}" --steps 20 --global-batch 8 --out ref-$variant "${extra[@]}"
  same_file grow-$variant/adapter/adapter_model.safetensors ref-$variant/adapter/adapter_model.safetensors \
    "$variant: 12 steps continued to 20 vs 20 at once"
  same_file grow-$variant/checkpoints/step-000000000020.h5 ref-$variant/checkpoints/step-000000000020.h5 \
    "$variant: the final checkpoints"
done
"$SP_CLI" info grow-mlp/checkpoints/step-000000000020.h5 > info.out
grep -q "^  prefix  *\[2, 2, 16, 16\]" info.out && grep -q "prefix_encoder/w2 \[64, 12\]" info.out \
  && ! grep -q "^  prompt " info.out || { cat info.out; fail "info does not show the prefix and the MLP"; }
ok "prefix runs (MLP with Adafactor, dropout) continue from a checkpoint bitwise"

# --- --init FILE: any prompt file ------------------------------------------------------------
# A run started from a PEFT PREFIX_TUNING adapter holds its prefix: after one step at a rate of
# 1e-12 the run's adapter is the one it started from (to 1e-9); likewise a prompt started from a
# .npy export. A random start would differ by ~1.
tiny=(--steps 1 --global-batch 8 --optimizer sgd --lr 1e-12)
"$SP_CLI" train --model llama "${common[@]}" "${tiny[@]}" --out from-adapter --method ptuning-v2 \
  --prefix-length 8 --init learn-llama/adapter
"$SP_CLI" train --model llama "${common[@]}" --steps 10 --global-batch 8 --out prompt-src
"$SP_CLI" export --model llama --prompt prompt-src/adapter --out prompt.npy --format npy >/dev/null
"$SP_CLI" train --model llama "${common[@]}" "${tiny[@]}" --out from-npy --init prompt.npy
"$SP_CLI" export --model llama --prompt from-npy/adapter --out again.npy --format npy >/dev/null
/usr/bin/python3 - "$SP_ROOT/tests/ref" <<'PY' || fail "--init FILE did not start from the file"
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import gpt2_reference as g
for a, b in (("learn-llama/adapter", "from-adapter/adapter"),):
    x, y = (g.st_read(d + "/adapter_model.safetensors")["prompt_embeddings"][1] for d in (a, b))
    assert x.shape == y.shape == (8, 64) and np.abs(x - y).max() <= 1e-9 * (1 + np.abs(x).max()), a
x, y = np.load("prompt.npy"), np.load("again.npy")
assert x.shape == y.shape and np.abs(x - y).max() <= 1e-9 * (1 + np.abs(x).max())
PY
ok "--init FILE reads any prompt file: a prefix from a PEFT adapter, a prompt from a .npy"

# --- refusals ----------------------------------------------------------------------------------
g=(train --model llama "${common[@]}" --steps 20 --global-batch 8 --out grow-drop)
refused 1 "made with --method ptuning-v2, this run has --method prompt" "resume with another method" "$SP_CLI" "${g[@]}"
refused 1 "prefix_length" "resume with another prefix length" "$SP_CLI" "${g[@]}" --method ptuning-v2 --prefix-dropout 0.2 --prefix-length 5
refused 1 "made with --method prefix" "a prefix checkpoint resumed as prompt+prefix" \
  "$SP_CLI" train --model llama "${common[@]}" --steps 20 --global-batch 8 --out grow-mlp --method prompt+prefix
cp -r grow-mlp altered
"$SP_CKPT_EDIT" altered/checkpoints/step-000000000020.h5 prefix 0.5
refused 1 "not the output of the stored prefix_encoder" "an altered encoder output" \
  "$SP_CLI" train --model llama "${common[@]}" --steps 30 --global-batch 8 --out altered \
  --method prefix --prefix-hidden 12 --init random --optimizer adafactor
refused 2 "prefix-hidden" "--prefix-hidden with ptuning-v2" "$SP_CLI" train --model llama "${common[@]}" --out x --method ptuning-v2 --prefix-hidden 8
refused 2 "prefix-dropout" "--prefix-dropout with prefix" "$SP_CLI" train --model llama "${common[@]}" --out x --method prefix --prefix-dropout 0.1
refused 2 "prefix-length" "--prefix-length with prompt" "$SP_CLI" train --model llama "${common[@]}" --out x --prefix-length 4
refused 1 "init random" "--init text with the MLP" "$SP_CLI" train --model llama "${common[@]}" --out x --method prefix --prefix-hidden 8 --init vocab
refused 1 "PEFT has no adapter type for both" "export of prompt+prefix" "$SP_CLI" export --model llama --prompt both-1/checkpoints/step-000000000005.h5 --out both-adapter
refused 1 "holds an input prompt only" "a prefix exported as .npy" "$SP_CLI" export --model llama --prompt learn-llama/best.h5 --out prefix.npy --format npy
[ ! -e prefix.npy ] || fail "a refused --format npy export left prefix.npy"
refused 1 "not what --method prompt trains" "eval --method prompt of a prefix" "$SP_CLI" eval --model llama --data valid.h5 --prompt learn-llama/best.h5 --method prompt
refused 1 "other model\|num_key_value_heads\|2 layers x 16" "a GPT-2 prefix on the Llama model" "$SP_CLI" eval --model llama --data valid.h5 --prompt learn-model/adapter
cp -r learn-llama/adapter ptuning
sed -i 's/"PREFIX_TUNING"/"P_TUNING"/' ptuning/adapter_config.json
refused 1 "weights PEFT does not save" "a P_TUNING adapter" "$SP_CLI" eval --model llama --data valid.h5 --prompt ptuning
refused 1 "holds no key/value prefix" "--init of a prefix from a prompt file" \
  "$SP_CLI" train --model llama "${common[@]}" --out x --method ptuning-v2 --init prompt.npy
refused 1 "holds a key/value prefix and no prompt" "--init of a prompt from a prefix file" \
  "$SP_CLI" train --model llama "${common[@]}" --out x --init learn-llama/adapter
refused 1 "prefix has shape \[2, 2, 8, 16\], this run needs \[2, 2, 4, 16\]" "--init of another prefix length" \
  "$SP_CLI" train --model llama "${common[@]}" --out x --method ptuning-v2 --prefix-length 4 --init learn-llama/adapter
refused 2 "a prompt FILE" "--init of an unknown kind" "$SP_CLI" train --model llama "${common[@]}" --out x --init vocabb
[ ! -e x ] || fail "a refused run left its --out behind"
ok "refused: another method or prefix length on resume, an altered encoder output, other methods' flags, exporting prompt+prefix, a prefix as .npy, a prefix for another model, P_TUNING adapters"
