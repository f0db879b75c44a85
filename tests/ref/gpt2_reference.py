"""Independent float64 reference for Hugging Face GPT-2 prompt tuning, and its fixtures.

For a handful of tiny random GPT-2 models this script writes, per case, a model directory in
Hugging Face layout (config.json, model.safetensors or shards + model.safetensors.index.json),
a packed batch (batch.json, layout of sp_batch in include/softprompt/engine.h) and the expected
outputs (expected.safetensors):

    prompt         F32 [P, d]          soft-prompt vectors fed to the engine
    loss_mean      F64 [1]             mean cross-entropy over all targets of the batch
    loss_sum       F64 [1]             summed cross-entropy
    target_logits  F64 [n_targets, V]  logits at every target position
    target_loss    F64 [n_targets]     cross-entropy of each target
    grad_mean      F64 [P, d]          d loss_mean / d prompt

The math follows GPT2LMHeadModel (pre-LayerNorm blocks, Conv1D y = x W + b with W [in, out],
gelu_new, causal softmax(QK^T / sqrt(head_dim)), final ln_f, logits = h wte^T) and is done in
float64 from the weights as stored (F16/BF16 rounded first) and the float32 prompt. Each
sequence of the batch is processed on its own, positions restart at 0 in every sequence.

Self-checks run on every invocation: the model files are read back with an independent reader,
the forward is recomputed a second way (numpy, padded batch with an attention mask, explicit
per-head loops), and the autograd gradient is compared with central finite differences.

Usage: python3 tests/ref/gpt2_reference.py --out tests/fixtures/ref
Only torch and numpy are needed; the safetensors reader/writer is implemented here.
"""

import json
import math
import os
import struct
import sys

import numpy as np
import ref_case
import ref_cli
import torch

torch.set_num_threads(1)  # fixed summation order: identical bytes on every run

# --------------------------------------------------------------------------- safetensors I/O

_NP_DTYPE = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64,
             "I32": np.int32, "BF16": np.uint16}
_ESIZE = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4}


def _to_bytes(arr, dtype):
    """Returns the little-endian bytes of arr (float values) in a safetensors dtype."""
    arr = np.asarray(arr)
    if dtype == "BF16":
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return t.to(torch.bfloat16).view(torch.int16).numpy().astype("<i2").tobytes()
    if dtype == "F16":
        # via float32, round to nearest even exactly as torch's .half()
        t = torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))
        return t.half().view(torch.int16).numpy().astype("<i2").tobytes()
    np_dt = np.dtype(_NP_DTYPE[dtype]).newbyteorder("<")
    return np.ascontiguousarray(arr).astype(np_dt).tobytes()


def st_write(path, tensors, metadata=None):
    """tensors: list of (name, dtype, np array). Header padded with spaces to a multiple of 8."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    blobs = []
    off = 0
    for name, dtype, arr in tensors:
        b = _to_bytes(arr, dtype)
        shape = list(np.asarray(arr).shape)
        assert len(b) == int(np.prod(shape, dtype=np.int64)) * _ESIZE[dtype]
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    hj = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hj += b" " * ((-len(hj)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hj)))
        f.write(hj)
        for b in blobs:
            f.write(b)
    return off


def st_read(path):
    """Returns {name: (dtype, float64 or int ndarray of the stored values)} with full checks."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert 8 + n <= len(raw), path
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    data = raw[8 + n:]
    out = {}
    spans = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt, shape, (b, e) = info["dtype"], info["shape"], info["data_offsets"]
        numel = int(np.prod(shape, dtype=np.int64))
        assert 0 <= b <= e <= len(data) and e - b == numel * _ESIZE[dt], (path, name)
        spans.append((b, e))
        buf = data[b:e]
        if dt == "BF16":
            u = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            vals = u.view(np.float32).astype(np.float64)
        elif dt in ("F16", "F32", "F64"):
            vals = np.frombuffer(buf, dtype=np.dtype(_NP_DTYPE[dt]).newbyteorder("<"))
            vals = vals.astype(np.float64)
        else:
            vals = np.frombuffer(buf, dtype=np.dtype(_NP_DTYPE[dt]).newbyteorder("<")).copy()
        out[name] = (dt, vals.reshape(shape))
    spans.sort()
    for (b0, e0), (b1, _) in zip(spans, spans[1:]):
        assert e0 <= b1, (path, "overlap")
    return out


# --------------------------------------------------------------------------- model definition

def gpt2_tensor_list(rng, cfg):
    """Random GPT-2 parameters (float64) in HF names without prefix, HF order."""
    L, d, V, npos, dff = cfg["n_layer"], cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], \
        cfg["d_ff"]
    s = 0.2

    def n(*shape):
        return rng.normal(0.0, s, size=shape)

    def gain(k):
        return 1.0 + rng.normal(0.0, s, size=(k,))

    t = [("wte.weight", n(V, d)), ("wpe.weight", n(npos, d))]
    for i in range(L):
        p = "h.%d." % i
        t += [(p + "ln_1.weight", gain(d)), (p + "ln_1.bias", n(d)),
              (p + "attn.c_attn.weight", n(d, 3 * d)), (p + "attn.c_attn.bias", n(3 * d)),
              (p + "attn.c_proj.weight", n(d, d)), (p + "attn.c_proj.bias", n(d)),
              (p + "ln_2.weight", gain(d)), (p + "ln_2.bias", n(d)),
              (p + "mlp.c_fc.weight", n(d, dff)), (p + "mlp.c_fc.bias", n(dff)),
              (p + "mlp.c_proj.weight", n(dff, d)), (p + "mlp.c_proj.bias", n(d))]
    t += [("ln_f.weight", gain(d)), ("ln_f.bias", n(d))]
    return t


def hf_config(cfg):
    return {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": cfg["vocab_size"] - 1,
        "embd_pdrop": 0.1,
        "eos_token_id": cfg["vocab_size"] - 1,
        "initializer_range": 0.02,
        "layer_norm_epsilon": cfg["eps"],
        "model_type": "gpt2",
        "n_ctx": cfg["n_positions"],
        "n_embd": cfg["n_embd"],
        "n_head": cfg["n_head"],
        "n_inner": cfg["n_inner"],
        "n_layer": cfg["n_layer"],
        "n_positions": cfg["n_positions"],
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[cfg["dtype"]],
        "use_cache": True,
        "vocab_size": cfg["vocab_size"],
    }


def write_model(dirpath, cfg, params):
    """Writes config.json and the safetensors file(s); returns nothing (read back later)."""
    with open(os.path.join(dirpath, "config.json"), "w") as f:
        json.dump(hf_config(cfg), f, indent=2)
        f.write("\n")
    dt = cfg["dtype"]
    prefix = "transformer." if cfg["prefix"] else ""
    tensors = [(prefix + name, dt, arr) for name, arr in params]
    if cfg["mask_buffers"]:
        # HF checkpoints of GPT-2 carry the causal-mask buffer h.N.attn.bias [1,1,n_pos,n_pos];
        # a loader must ignore it.
        npos = cfg["n_positions"]
        mask = np.tril(np.ones((npos, npos)))[None, None]
        for i in range(cfg["n_layer"]):
            tensors.append((prefix + "h.%d.attn.bias" % i, dt, mask))
    meta = {"format": "pt"}
    nshards = cfg["shards"]
    if nshards == 1:
        st_write(os.path.join(dirpath, "model.safetensors"), tensors, meta)
        return
    # contiguous groups, roughly equal element counts, in HF shard naming
    total = sum(a.size for _, _, a in tensors)
    groups = [[] for _ in range(nshards)]
    acc = 0
    for t in tensors:
        g = min(nshards - 1, acc * nshards // total)
        groups[g].append(t)
        acc += t[2].size
    assert all(groups), "empty shard"
    weight_map = {}
    total_size = 0
    for i, g in enumerate(groups):
        fname = "model-%05d-of-%05d.safetensors" % (i + 1, nshards)
        total_size += st_write(os.path.join(dirpath, fname), g, meta)
        for name, _, _ in g:
            weight_map[name] = fname
    write_index(dirpath, weight_map, total_size)


def write_index(dirpath, weight_map, total_size):
    """model.safetensors.index.json as transformers writes it for sharded checkpoints."""
    with open(os.path.join(dirpath, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total_size}, "weight_map": weight_map}, f, indent=2)
        f.write("\n")


def read_weights(dirpath):
    """config.json and every stored tensor (float64, names as stored) of a model directory,
    single file or sharded through the index."""
    with open(os.path.join(dirpath, "config.json")) as f:
        config = json.load(f)
    idx = os.path.join(dirpath, "model.safetensors.index.json")
    files = ["model.safetensors"]
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    w = {}
    for fn in files:
        for name, (_, arr) in st_read(os.path.join(dirpath, fn)).items():
            w[name] = arr
    return config, w


def read_model(dirpath):
    """Independent read-back of the model directory: config + float64 weights as stored."""
    c, stored = read_weights(dirpath)
    w = {(k[len("transformer."):] if k.startswith("transformer.") else k): v
         for k, v in stored.items()}
    d = c["n_embd"]
    return {
        "L": c["n_layer"], "d": d, "H": c["n_head"], "V": c["vocab_size"],
        "npos": c["n_positions"], "eps": c["layer_norm_epsilon"],
        "dff": c["n_inner"] if c["n_inner"] is not None else 4 * d,
        "w": w,
    }


# --------------------------------------------------------------------------- forward, way 1 (torch)

def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)  # biased, as torch.nn.LayerNorm
    return (x - mu) / torch.sqrt(var + eps) * g + b


def _gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def torch_seq_logits(M, W, tokens, prompt):
    """Logits [T, V] of one sequence; tokens: list of ids (>= 0) or soft tokens (-1-k)."""
    d, H, eps = M["d"], M["H"], M["eps"]
    hd = d // H
    T = len(tokens)
    rows = [prompt[-1 - t] if t < 0 else W["wte.weight"][t] for t in tokens]
    h = torch.stack(rows) + W["wpe.weight"][:T]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(M["L"]):
        p = "h.%d." % i
        a = _ln(h, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        qkv = a @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]
        q, k, v = qkv.split(d, dim=-1)
        q = q.view(T, H, hd).transpose(0, 1)
        k = k.view(T, H, hd).transpose(0, 1)
        v = v.view(T, H, hd).transpose(0, 1)
        s = q @ k.transpose(-1, -2) / math.sqrt(hd)
        s = s.masked_fill(~causal, float("-inf"))
        o = torch.softmax(s, dim=-1) @ v  # [H, T, hd]
        o = o.transpose(0, 1).reshape(T, d)
        h = h + o @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
        m = _ln(h, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        m = _gelu_new(m @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
        h = h + m @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
    h = _ln(h, W["ln_f.weight"], W["ln_f.bias"], eps)
    return h @ W["wte.weight"].T  # tied head


def torch_batch(M, W, batch, prompt):
    """Returns (target_logits [n_t, V], per-target CE [n_t]) for a packed batch."""
    ss, toks = batch["seq_start"], batch["tokens"]
    tpos, tids = batch["target_pos"], batch["target_ids"]
    all_logits = []
    for s in range(len(ss) - 1):
        all_logits.append(torch_seq_logits(M, W, toks[ss[s]:ss[s + 1]], prompt))
    logits = torch.cat(all_logits)[torch.tensor(tpos)]
    ce = torch.logsumexp(logits, -1) - logits[torch.arange(len(tids)), torch.tensor(tids)]
    return logits, ce


# --------------------------------------------------------------------------- forward, way 2 (numpy)

def numpy_batch_logits(M, batch, prompt):
    """Same math written differently: one padded batch [n_seq, Tmax] with a key mask that
    blocks both future and padding positions, explicit per-head loops with q/k/v column slices,
    einsum contractions, LayerNorm via np.var. Returns target logits [n_t, V]."""
    w, d, H, eps = M["w"], M["d"], M["H"], M["eps"]
    hd = d // H
    ss, toks = batch["seq_start"], batch["tokens"]
    n_seq = len(ss) - 1
    lens = [ss[s + 1] - ss[s] for s in range(n_seq)]
    Tm = max(lens)
    x = np.zeros((n_seq, Tm, d))
    valid = np.zeros((n_seq, Tm), dtype=bool)
    for s in range(n_seq):
        for t in range(lens[s]):
            tok = toks[ss[s] + t]
            e = prompt[-1 - tok] if tok < 0 else w["wte.weight"][tok]
            x[s, t] = e + w["wpe.weight"][t]
            valid[s, t] = True
    # allowed[s, i, j]: query i may attend key j
    allowed = np.tril(np.ones((Tm, Tm), dtype=bool))[None] & valid[:, None, :]

    def ln(z, g, b):
        return (z - z.mean(-1, keepdims=True)) / np.sqrt(z.var(-1, keepdims=True) + eps) * g + b

    def gelu(z):
        c = np.sqrt(2.0 / np.pi)
        return 0.5 * z * (1.0 + np.tanh(c * (z + 0.044715 * z * z * z)))

    h = x
    for i in range(M["L"]):
        p = "h.%d." % i
        a = ln(h, w[p + "ln_1.weight"], w[p + "ln_1.bias"])
        Wqkv, bqkv = w[p + "attn.c_attn.weight"], w[p + "attn.c_attn.bias"]
        heads = []
        for hh in range(H):
            cq = slice(hh * hd, (hh + 1) * hd)
            ck = slice(d + hh * hd, d + (hh + 1) * hd)
            cv = slice(2 * d + hh * hd, 2 * d + (hh + 1) * hd)
            q = np.einsum("stc,ce->ste", a, Wqkv[:, cq]) + bqkv[cq]
            k = np.einsum("stc,ce->ste", a, Wqkv[:, ck]) + bqkv[ck]
            v = np.einsum("stc,ce->ste", a, Wqkv[:, cv]) + bqkv[cv]
            sc = np.einsum("sie,sje->sij", q, k) / np.sqrt(hd)
            sc = np.where(allowed, sc, -np.inf)
            sc = sc - np.max(sc, axis=-1, keepdims=True)
            pr = np.exp(sc)
            pr = pr / pr.sum(-1, keepdims=True)
            heads.append(np.einsum("sij,sje->sie", pr, v))
        o = np.concatenate(heads, axis=-1)
        h = h + np.einsum("stc,ce->ste", o, w[p + "attn.c_proj.weight"]) + w[p + "attn.c_proj.bias"]
        m = ln(h, w[p + "ln_2.weight"], w[p + "ln_2.bias"])
        m = gelu(np.einsum("stc,cf->stf", m, w[p + "mlp.c_fc.weight"]) + w[p + "mlp.c_fc.bias"])
        h = h + np.einsum("stf,fc->stc", m, w[p + "mlp.c_proj.weight"]) + w[p + "mlp.c_proj.bias"]
    h = ln(h, w["ln_f.weight"], w["ln_f.bias"])
    out = []
    for tp in batch["target_pos"]:
        s = max(i for i in range(n_seq) if ss[i] <= tp)
        out.append(w["wte.weight"] @ h[s, tp - ss[s]])
    return np.stack(out)


# --------------------------------------------------------------------------- cases

# Each sequence: (list of items, target offsets within the sequence). Items are vocabulary ids
# (>= 0) or ("P", k) for soft token k. Ids are drawn at random; structure is fixed here.
CASES = [
    # name, model config, n_prompt, sequence specs
    dict(name="l1_h1_d16_f32", seed=101, n_layer=1, n_head=1, n_embd=16, n_inner=None,
         vocab_size=50, n_positions=32, dtype="F32", shards=1, prefix=False, mask_buffers=True,
         n_prompt=3,
         seqs=[("soft_front", 9, "gen"), ("soft_mid", 7, "cls"), ("soft_front", 4, "cls")]),
    dict(name="l2_h2_d24_ninner40_f32", seed=202, n_layer=2, n_head=2, n_embd=24, n_inner=40,
         vocab_size=64, n_positions=48, dtype="F32", shards=1, prefix=False, mask_buffers=False,
         n_prompt=4,
         seqs=[("soft_mid_repeat", 14, "gen"), ("soft_front", 5, "cls"),
               ("soft_front", 20, "gen"), ("soft_mid", 3, "cls")]),
    dict(name="l2_h4_d32_f16", seed=303, n_layer=2, n_head=4, n_embd=32, n_inner=128,
         vocab_size=80, n_positions=64, dtype="F16", shards=1, prefix=False, mask_buffers=False,
         n_prompt=5,
         seqs=[("soft_front", 12, "gen"), ("soft_mid", 18, "cls"), ("soft_mid_repeat", 11, "gen")]),
    dict(name="l3_h2_d16_bf16", seed=404, n_layer=3, n_head=2, n_embd=16, n_inner=None,
         vocab_size=72, n_positions=40, dtype="BF16", shards=1, prefix=False, mask_buffers=False,
         n_prompt=2,
         seqs=[("soft_front", 6, "cls"), ("soft_mid_repeat", 16, "gen"), ("soft_front", 10, "gen"),
               ("soft_mid", 8, "cls")]),
    dict(name="l3_h4_d32_sharded3_prefix_f32", seed=505, n_layer=3, n_head=4, n_embd=32,
         n_inner=None, vocab_size=96, n_positions=64, dtype="F32", shards=3, prefix=True,
         mask_buffers=False, n_prompt=6,
         # the last sequence has no soft token, another sequence has no target
         seqs=[("soft_front", 15, "gen"), ("soft_mid_repeat", 9, "none"), ("soft_mid", 19, "cls"),
               ("hard", 7, "gen")]),
    dict(name="l2_h2_d24_sharded2_bf16", seed=606, n_layer=2, n_head=2, n_embd=24, n_inner=None,
         vocab_size=100, n_positions=32, dtype="BF16", shards=2, prefix=True, mask_buffers=True,
         n_prompt=5, n_unused=1,  # soft index 4 never occurs: its gradient row must be 0
         seqs=[("soft_mid", 13, "gen"), ("soft_front", 20, "cls"), ("soft_mid_repeat", 17, "cls")]),
]


def make_batch(rng, case):
    """Builds the packed batch of a case. Soft tokens use indices < P; some indices may stay
    unused in a case (their gradient row must be exactly zero)."""
    P, V = case["n_prompt"] - case.get("n_unused", 0), case["vocab_size"]
    tokens, seq_start, tpos, tids = [], [0], [], []
    for kind, T, tk in case["seqs"]:
        seq = [int(x) for x in rng.integers(0, V, size=T)]
        soft_at = []
        if kind == "soft_front":
            n = min(P, T - 2)
            soft_at = [(i, i) for i in range(n)]  # soft 0..n-1 at positions 0..n-1
        elif kind == "soft_mid":
            n = min(P, T - 3)
            start = max(1, (T - n) // 2)
            soft_at = [(start + i, (i + 1) % P) for i in range(n)]
        elif kind == "soft_mid_repeat":
            # soft tokens in two places, index 1 twice and index 0 twice
            soft_at = [(1, 1), (2, 0), (T // 2, 1), (T // 2 + 1, 0)]
        for pos, k in soft_at:
            seq[pos] = -1 - k
        off = len(tokens)
        tokens += seq
        seq_start.append(len(tokens))
        if tk == "cls":
            pos = [T - 1]  # one answer position at the end
        elif tk == "gen":
            # every position from the first one after the last leading soft token onwards,
            # including the last soft position (its logits predict the first text token)
            first = 0
            while first < T and seq[first] < 0:
                first += 1
            pos = list(range(max(first - 1, 0), T - 1))
            # drop a few so targets are not all consecutive
            pos = [p for j, p in enumerate(pos) if j % 4 != 3]
        else:
            pos = []
        for p in pos:
            tpos.append(off + p)
            # generation-like targets: the next token when it is a real token, random otherwise
            nxt = seq[p + 1] if p + 1 < T and seq[p + 1] >= 0 else int(rng.integers(0, V))
            tids.append(nxt if tk == "gen" else int(rng.integers(0, V)))
    assert all(a < b for a, b in zip(tpos, tpos[1:]))
    return {"n_prompt": case["n_prompt"], "seq_start": seq_start, "tokens": tokens, "target_pos": tpos,
            "target_ids": tids}


def generate_case(outdir, case):
    cfg = dict(case)
    cfg["eps"] = 1e-5
    cfg["d_ff"] = case["n_inner"] if case["n_inner"] is not None else 4 * case["n_embd"]

    def read(cdir):
        M = read_model(cdir)
        assert M["dff"] == cfg["d_ff"]
        return M

    ref_case.write(outdir, case, "tests/ref/gpt2_reference.py",
                   model=lambda cdir, rng: write_model(cdir, cfg, gpt2_tensor_list(rng, cfg)),
                   read=read, forward=torch_batch, second_way=numpy_batch_logits,
                   d=case["n_embd"], max_len=case["n_positions"])


def main():
    return ref_cli.run(__doc__, CASES, generate_case)


if __name__ == "__main__":
    sys.exit(main())
