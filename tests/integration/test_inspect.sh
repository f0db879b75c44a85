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
