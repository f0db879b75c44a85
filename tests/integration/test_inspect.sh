# softprompt inspect: nearest vocabulary tokens by cosine and norms against the embedding table,
# checked against NumPy on a model with the GPT-2 tokenizer; a prompt made of scaled embeddings
# must name those tokens.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
PY=/usr/bin/python3

"$SP_CLI" init-model --layers 1 --d 16 --heads 2 --vocab 50257 --ctx 64 --seed 4 gpt >/dev/null
cp "$SP_CACHE_DIR/gpt2-tokenizer/encoder.json" "$SP_CACHE_DIR/gpt2-tokenizer/vocab.bpe" gpt/
# Soft token 0 is 3 x the embedding of " great" (id 1049), 1 is that of " terrible" (id 7818)
# plus a little noise, 2 is random.
$PY - "$SP_ROOT/tests/ref" <<'PY'
import sys, numpy as np
sys.path.insert(0, sys.argv[1])
import gpt2_reference as g
wte = g.st_read("gpt/model.safetensors")["wte.weight"][1].astype(np.float32)
rng = np.random.default_rng(0)
p = np.stack([3 * wte[1049], wte[7818] + 0.01 * rng.normal(size=16), rng.normal(size=16)])
np.save("p.npy", p.astype(np.float32))
np.save("wte.npy", wte)
PY
"$SP_CLI" inspect p.npy --model gpt --top 4 --json > view.json
"$SP_CLI" inspect p.npy --model gpt --top 2 > view.txt
$PY - <<'PY' || fail "inspect disagrees with NumPy"
import json, numpy as np
v = json.load(open("view.json"))
wte, p = np.load("wte.npy").astype(np.float64), np.load("p.npy").astype(np.float64)
norms = np.linalg.norm(wte, axis=1)
s = v["embedding_norms"]
for k, q in (("p1", 1), ("p5", 5), ("p25", 25), ("p50", 50), ("p75", 75), ("p95", 95), ("p99", 99)):
    assert abs(s[k] - np.percentile(norms, q)) < 1e-9, (k, s[k], np.percentile(norms, q))
assert abs(s["mean"] - norms.mean()) < 1e-9 and abs(s["std"] - norms.std()) < 1e-9
assert s["min"] == norms.min() and s["max"] == norms.max()
for t, row in zip(v["tokens"], p):
    cos = wte @ row / (norms * np.linalg.norm(row))
    want = np.argsort(-cos, kind="stable")[:4]
    assert [n["id"] for n in t["nearest"]] == list(want), (t["index"], t["nearest"], want)
    assert all(abs(n["cosine"] - cos[n["id"]]) < 1e-9 for n in t["nearest"])
    assert abs(t["norm"] - np.linalg.norm(row)) < 1e-9
    assert abs(t["norm_rank"] - 100 * (norms < np.linalg.norm(row)).mean()) < 1e-9
tok = v["tokens"]
assert tok[0]["nearest"][0]["token"] == " great" and tok[0]["nearest"][0]["cosine"] > 0.999999
assert tok[1]["nearest"][0]["token"] == " terrible", tok[1]["nearest"][0]
assert tok[0]["norm_rank"] == 100.0
print("ok: inspect: neighbours, cosines, norms and percentiles equal NumPy's")
PY
grep -q '" great" 1.000' view.txt || { cat view.txt; fail "text output lacks the decoded neighbour"; }
rc=0; "$SP_CLI" inspect p.npy --model gpt --top 0 > bad.log 2>&1 || rc=$?
(( rc == 2 )) || fail "--top 0 accepted"
ok "inspect prints decoded neighbours; --top 0 is a usage error"

# A key/value prefix: each row against the layer-0 keys and values of every token at the row's
# position, checked against NumPy's GPT-2 layer 0 (LayerNorm of wte + wpe, c_attn). Row 0 holds
# " great"'s key and value at position 0 exactly, row 1 " terrible"'s at position 1 plus noise,
# row 2 is random; layer 1's rows are random. A PEFT PREFIX_TUNING adapter made here.
"$SP_CLI" init-model --layers 2 --d 16 --heads 2 --vocab 50257 --ctx 64 --seed 5 gpt2l >/dev/null
cp gpt/encoder.json gpt/vocab.bpe gpt2l/
$PY - "$SP_ROOT/tests/ref" <<'PY'
import json, os, sys, numpy as np
sys.path.insert(0, sys.argv[1])
import gpt2_reference as g, prefix_reference as pr
M = g.read_model("gpt2l")
w, d, eps = M["w"], M["d"], M["eps"]
def first_kv(tokens, pos):  # layer-0 key and value of tokens at positions pos, float64
    x = w["wte.weight"][tokens] + w["wpe.weight"][pos]
    mu = x.mean(-1, keepdims=True)
    a = (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps)
    a = a * w["h.0.ln_1.weight"] + w["h.0.ln_1.bias"]
    qkv = a @ w["h.0.attn.c_attn.weight"] + w["h.0.attn.c_attn.bias"]
    return qkv[..., d:2 * d], qkv[..., 2 * d:]
rng = np.random.default_rng(1)
P, L = 3, 2
pre = rng.normal(size=(L, 2, P, d))
k, v = first_kv(np.array([1049, 7818]), np.array([0, 1]))
pre[0, 0, :2], pre[0, 1, :2] = k, v
pre[0, :, 1] += 0.01 * rng.normal(size=(2, d))
pre = pre.astype(np.float32)
np.save("prefix.npy", pre)
pr.write_peft_adapter("pfx", pr.peft_rows(pre), P, L, 2, d)
V = w["wte.weight"].shape[0]
K, Vv = first_kv(np.arange(V)[:, None], np.arange(P)[None, :])  # [V, P, d]
np.save("vocab_k.npy", K), np.save("vocab_v.npy", Vv)
PY
"$SP_CLI" inspect pfx --model gpt2l --top 4 --json > pview.json
"$SP_CLI" inspect pfx --model gpt2l --top 2 --method prefix > pview.txt
$PY "$SP_ROOT/tests/tools/check_prefix_view.py" pview.json prefix.npy vocab_k.npy vocab_v.npy 4 \
  || fail "inspect of a prefix disagrees with NumPy"
$PY - <<'PY' || fail "inspect of a prefix: the rows captured from tokens"
import json
rows = json.load(open("pview.json"))["prefix"]["first_layer"]
assert rows[0]["nearest"][0]["token"] == " great" and rows[0]["nearest"][0]["score"] > 0.99999
assert rows[1]["nearest"][0]["token"] == " terrible", rows[1]["nearest"][0]
PY
grep -q '" great" 1.000' pview.txt || { cat pview.txt; fail "prefix text output lacks the neighbour"; }
rc=0; "$SP_CLI" inspect pfx --model gpt2l --method prompt > bad.log 2>&1 || rc=$?
(( rc == 1 )) && grep -q 'prefix' bad.log || { cat bad.log; fail "--method prompt on a prefix accepted"; }
ok "inspect reads a prefix through the first layer's keys and values"

# The same on a rotary model (Llama, 2 key/value heads of 4, RMSNorm): the vocabulary runs once
# at position 0 and the prefix's keys are turned back (sp_engine_first_keys_unturn); NumPy
# computes every token at every row's position (rotate-half, HF's frequencies). Row 2 holds a
# token's key at position 2 exactly: read as that token only if the turn is right.
"$SP_CLI" init-model --arch llama --kv-heads 2 --layers 2 --d 32 --heads 4 --vocab 3000 --ctx 64 \
  --std 0.3 --random-norms --seed 6 llama >/dev/null
$PY - "$SP_ROOT/tests/ref" <<'PY'
import json, os, sys, numpy as np
sys.path.insert(0, sys.argv[1])
import llama_reference as lr, prefix_reference as pr
M = lr.read_model("llama")
w, hd, Hkv = M["w"], M["hd"], M["Hkv"]
P, L, kvd = 3, 2, M["hd"] * M["Hkv"]
def first_kv(tokens, pos):  # layer-0 key (rotated at pos) and value, float64: [..., kvd]
    x = w["model.embed_tokens.weight"][tokens]
    a = w["model.layers.0.input_layernorm.weight"] * x / np.sqrt((x * x).mean(-1, keepdims=True) + M["eps"])
    k, v = a @ w["model.layers.0.self_attn.k_proj.weight"].T, a @ w["model.layers.0.self_attn.v_proj.weight"].T
    ang = np.asarray(pos)[..., None] * M["inv_freq"]            # [..., hd/2]
    cos, sin = np.cos(np.concatenate([ang, ang], -1)), np.sin(np.concatenate([ang, ang], -1))
    k = k.reshape(*k.shape[:-1], Hkv, hd)
    rot = np.concatenate([-k[..., hd // 2:], k[..., :hd // 2]], -1)
    k = k * cos[..., None, :] + rot * sin[..., None, :]
    return k.reshape(*k.shape[:-2], kvd), v
rng = np.random.default_rng(2)
pre = rng.normal(size=(L, 2, P, kvd))
k, v = first_kv(np.array([123, 456, 789]), np.array([0, 1, 2]))
pre[0, 0], pre[0, 1] = k, v
pre[0, :, 1] += 0.01 * rng.normal(size=(2, kvd))
pre = pre.astype(np.float32)
np.save("lprefix.npy", pre)
pr.write_peft_adapter("lpfx", pr.peft_rows(pre), P, L, Hkv, kvd, "CAUSAL_LM")
V = w["model.embed_tokens.weight"].shape[0]
t, j = np.meshgrid(np.arange(V), np.arange(P), indexing="ij")
K, Vv = first_kv(t, j)  # [V, P, kvd]
np.save("lvocab_k.npy", K), np.save("lvocab_v.npy", Vv)
PY
"$SP_CLI" inspect lpfx --model llama --top 4 --json > lview.json 2> lview.err
$PY "$SP_ROOT/tests/tools/check_prefix_view.py" lview.json lprefix.npy lvocab_k.npy lvocab_v.npy 4 \
  || fail "inspect of a rotary model's prefix disagrees with NumPy"
$PY - <<'PY' || fail "inspect of a rotary model's prefix: the rows captured from tokens"
import json
rows = json.load(open("lview.json"))["prefix"]["first_layer"]
for j, t in ((0, 123), (1, 456), (2, 789)):  # row 1 with noise; row 2 exact at position 2
    n = rows[j]["nearest"][0]
    assert n["id"] == t and (j == 1 or n["score"] > 0.99999), (j, n)
PY
ok "inspect reads a rotary model's prefix (keys turned back to position 0)"

# T5: the prefix is in the decoder's self-attention (PEFT's SEQ_2_SEQ_LM PREFIX_TUNING): rows
# against the first decoder block's keys and values of every token (RMS norm, k, v; T5's
# positions are a bias on the scores, so none in them), NumPy from t5_reference's definitions.
"$SP_CLI" init-model --arch t5 --untied --layers 2 --d 32 --heads 4 --vocab 300 --ctx 64 \
  --std 0.3 --random-norms --seed 7 t5 >/dev/null
$PY - "$SP_ROOT/tests/ref" <<'PY'
import json, os, sys, numpy as np
sys.path.insert(0, sys.argv[1])
import prefix_reference as pr, t5_reference as t5
M = t5.read_model("t5")
w, P, L, kvd = M["w"], 3, M["L"], M["H"] * M["kv"]
def first_kv(tokens):  # [..., kvd] each, float64
    x = w["shared.weight"][tokens]
    a = x / np.sqrt((x * x).mean(-1, keepdims=True) + M["eps"]) * w["decoder.block.0.layer.0.layer_norm.weight"]
    b = "decoder.block.0.layer.0.SelfAttention."
    return a @ w[b + "k.weight"].T, a @ w[b + "v.weight"].T
rng = np.random.default_rng(3)
pre = rng.normal(size=(L, 2, P, kvd))
pre[0, 0, 0], pre[0, 1, 0] = first_kv(np.array(77))
pre = pre.astype(np.float32)
np.save("tprefix.npy", pre)
pr.write_peft_adapter("tpfx", pr.peft_rows(pre), P, L, M["H"], kvd, "SEQ_2_SEQ_LM")
t = np.repeat(np.arange(w["shared.weight"].shape[0])[:, None], P, axis=1)
K, Vv = first_kv(t)
np.save("tvocab_k.npy", K), np.save("tvocab_v.npy", Vv)
PY
"$SP_CLI" inspect tpfx --model t5 --top 3 --json > tview.json 2> tview.err
$PY "$SP_ROOT/tests/tools/check_prefix_view.py" tview.json tprefix.npy tvocab_k.npy tvocab_v.npy 3 \
  || fail "inspect of a T5 prefix disagrees with NumPy"
$PY -c 'import json,sys; n=json.load(open("tview.json"))["prefix"]["first_layer"][0]["nearest"][0]; assert n["id"] == 77 and n["score"] > 0.99999, n' \
  || fail "inspect of a T5 prefix: row 0 was captured from token 77"
ok "inspect reads a T5 prefix through the decoder's first self-attention"
