"""Checks `softprompt inspect --json`'s "prefix" against NumPy (tests/integration/test_inspect.sh).

Usage: check_prefix_view.py VIEW.json PREFIX.npy KEYS.npy VALUES.npy TOP

PREFIX.npy [L, 2, P, kv_dim] is the prefix the adapter holds; KEYS.npy and VALUES.npy [V, P, kv_dim]
are every token's layer-0 key and value at each prefix row's position, computed independently
(float64). Neighbours (ids, score = mean of key and value cosines, both cosines), each row's
norms and ranks, the per-layer norms and the vocabulary's norm statistics must agree. Where
every position's norms are position 0's (rotary, ALiBi), statistics and ranks are over the
vocabulary once; otherwise over every token at every position, as inspect states.
"""
import json
import sys

import numpy as np


def main():
    view, pre, K, V = sys.argv[1], np.load(sys.argv[2]).astype(np.float64), np.load(sys.argv[3]), \
        np.load(sys.argv[4])
    top = int(sys.argv[5])
    v = json.load(open(view))["prefix"]
    L, _, P, kvd = pre.shape
    assert (v["layers"], v["rows"], v["kv_dim"]) == (L, P, kvd), v
    kn, vn = np.linalg.norm(K, axis=-1), np.linalg.norm(V, axis=-1)
    once = np.allclose(kn, kn[:, :1], rtol=1e-12) and np.allclose(vn, vn[:, :1], rtol=1e-12)
    pool_k, pool_v = (kn[:, 0], vn[:, 0]) if once else (kn.ravel(), vn.ravel())
    for name, n in (("vocab_key_norms", pool_k), ("vocab_value_norms", pool_v)):
        s = v[name]
        for key, q in (("p1", 1), ("p50", 50), ("p99", 99)):
            assert abs(s[key] - np.percentile(n, q)) < 1e-5 * s[key], (name, key, s[key])
        assert abs(s["mean"] - n.mean()) < 1e-5 * s["mean"], (name, s["mean"], n.mean())
        assert abs(s["max"] - n.max()) < 1e-5 * s["max"], (name, s["max"], n.max())
    for j, row in enumerate(v["first_layer"]):
        pk, pv = pre[0, 0, j], pre[0, 1, j]
        ck = K[:, j] @ pk / (kn[:, j] * np.linalg.norm(pk))
        cv = V[:, j] @ pv / (vn[:, j] * np.linalg.norm(pv))
        score = (ck + cv) / 2
        want = np.argsort(-score, kind="stable")[:top]
        assert [n["id"] for n in row["nearest"]] == list(want), (j, row["nearest"], want)
        for n in row["nearest"]:
            i = n["id"]
            assert abs(n["score"] - score[i]) < 1e-5, (j, n, score[i])
            assert abs(n["key_cosine"] - ck[i]) < 1e-5 and abs(n["value_cosine"] - cv[i]) < 1e-5, (j, n)
        assert abs(row["key_norm"] - np.linalg.norm(pk)) < 1e-9 * np.linalg.norm(pk)
        assert abs(row["key_rank"] - 100 * (pool_k < np.linalg.norm(pk)).mean()) < 0.05, row
        assert abs(row["value_rank"] - 100 * (pool_v < np.linalg.norm(pv)).mean()) < 0.05, row
    for l, layer in enumerate(v["per_layer"]):
        assert np.allclose(layer["key_norms"], np.linalg.norm(pre[l, 0], axis=-1), rtol=1e-9)
        assert np.allclose(layer["value_norms"], np.linalg.norm(pre[l, 1], axis=-1), rtol=1e-9)
    print("ok: %s: neighbours, cosines, norms and ranks equal NumPy's (%s)"
          % (view, "vocabulary once" if once else "every token at every position"))


if __name__ == "__main__":
    main()
