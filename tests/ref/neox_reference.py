"""Independent float64 reference for Hugging Face GPT-NeoX (Pythia) prompt tuning.

Same case layout as gpt2_reference.py and llama_reference.py (model directory in Hugging Face
format, batch.json, expected.safetensors with prompt, loss_mean, loss_sum, target_logits,
target_loss, grad_mean; behind a per-layer key/value prefix also kv_prefix and
kv_prefix_grad_mean), for GPTNeoXForCausalLM as transformers' modeling_gpt_neox.py defines it:

    h = embed_in[id] (or the soft prompt row; no position embedding)
    per layer:  a = LayerNorm(h) (input_layernorm, with bias)
                qkv = a W^T (+ b)               query_key_value, nn.Linear [3 d, d]
                qkv viewed [T, H, 3 hd]: q, k, v = [..., :hd], [..., hd:2hd], [..., 2hd:]
                q, k: the first rot = int(hd * rotary_pct) columns rotated (rotate-half within
                      them, inv_freq = base^(-2i / rot), base = rotary_emb_base, position = index
                      in sequence + P_kv behind a prefix), the rest passed through
                keys/values: the prefix's P_kv rows first (as given: PEFT's past_key_values), then
                      the sequence's; causal; scores times hd^-1/2
                o = attention W_dense^T (+ b)
                use_parallel_residual: h = h + o + mlp(LayerNorm2(h))
                otherwise:             h = h + o;  h = h + mlp(LayerNorm2(h))
                mlp(x) = act(x W_in^T + b_in) W_out^T + b_out,  act = hidden_act ("gelu": erf;
                      "gelu_new" / "gelu_pytorch_tanh": the tanh approximation)
    logits = LayerNorm_f(h) embed_out^T   (embed_out = embed_in when tie_word_embeddings)

Self-checks on every invocation: everything is computed from the files as written (read back),
the forward is recomputed a second way (numpy, padded batch, explicit per-head loops over the
[H, 3, hd] layout taken apart by index arithmetic, the rotation as a complex multiplication of
(x_j, x_{j+rot/2}) pairs, the erf GELU through math.erf, the tanh GELU as x sigmoid(2u)), and the
autograd gradients (prompt, prefix) are compared with central finite differences.

Usage: python3 tests/ref/neox_reference.py --out tests/fixtures/ref
Only torch and numpy are needed.
"""

import math
import os
import sys

import numpy as np
import ref_case
import ref_cli
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from gpt2_reference import read_weights  # noqa: E402  (same dir)

torch.set_num_threads(1)  # fixed summation order: identical bytes on every run

# --------------------------------------------------------------------------- model files


def neox_tensor_list(rng, c):
    """Random parameters (float64) under HF names, in HF's state-dict order."""
    L, d, V, F = c["n_layer"], c["d"], c["V"], c["F"]
    s = 0.2

    def n(*shape):
        return rng.normal(0.0, s, size=shape)

    t = [("gpt_neox.embed_in.weight", n(V, d))]
    for i in range(L):
        p = "gpt_neox.layers.%d." % i
        t += [(p + "input_layernorm.weight", 1.0 + n(d)), (p + "input_layernorm.bias", n(d)),
              (p + "post_attention_layernorm.weight", 1.0 + n(d)),
              (p + "post_attention_layernorm.bias", n(d)),
              (p + "attention.query_key_value.weight", n(3 * d, d))]
        if c["attention_bias"]:
            t += [(p + "attention.query_key_value.bias", n(3 * d))]
        t += [(p + "attention.dense.weight", n(d, d))]
        if c["attention_bias"]:
            t += [(p + "attention.dense.bias", n(d))]
        t += [(p + "mlp.dense_h_to_4h.weight", n(F, d)), (p + "mlp.dense_h_to_4h.bias", n(F)),
              (p + "mlp.dense_4h_to_h.weight", n(d, F)), (p + "mlp.dense_4h_to_h.bias", n(d))]
        if c.get("buffers"):  # what older checkpoints store beside the weights
            t += [(p + "attention.rotary_emb.inv_freq",
                   1.0 / 10000 ** (np.arange(0, c["rot"], 2) / c["rot"]))]
    t += [("gpt_neox.final_layer_norm.weight", 1.0 + n(d)),
          ("gpt_neox.final_layer_norm.bias", n(d))]
    if not c["tied"]:
        t += [("embed_out.weight", n(V, d))]
    return t


def hf_config(c):
    """config.json as transformers writes it for GPTNeoXForCausalLM (Pythia's keys)."""
    return {
        "architectures": ["GPTNeoXForCausalLM"],
        "attention_bias": c["attention_bias"],
        "attention_dropout": 0.0,
        "bos_token_id": 0,
        "classifier_dropout": 0.1,
        "eos_token_id": 0,
        "hidden_act": c["act"],
        "hidden_dropout": 0.0,
        "hidden_size": c["d"],
        "initializer_range": 0.02,
        "intermediate_size": c["F"],
        "layer_norm_eps": c["eps"],
        "max_position_embeddings": c["npos"],
        "model_type": "gpt_neox",
        "num_attention_heads": c["H"],
        "num_hidden_layers": c["n_layer"],
        "rope_scaling": None,
        "rotary_emb_base": c["base"],
        "rotary_pct": c["rotary_pct"],
        "tie_word_embeddings": c["tied"],
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[c["dtype"]],
        "use_cache": True,
        "use_parallel_residual": c["parallel"],
        "vocab_size": c["V"],
    }


def write_model(dirpath, c, params):
    tensors = [(name, "F32" if name.endswith("inv_freq") else c["dtype"], arr) for name, arr in params]
    ref_case.write_hf_model(dirpath, hf_config(c), tensors, c["shards"])


def read_model(dirpath):
    """Independent read-back: config + float64 weights as stored."""
    cfg, w = read_weights(dirpath)
    H, d = cfg["num_attention_heads"], cfg["hidden_size"]
    hd = d // H
    rot = int(hd * cfg.get("rotary_pct", 0.25))  # GPTNeoXAttention.rotary_ndims
    if cfg.get("tie_word_embeddings", False):
        w["embed_out.weight"] = w["gpt_neox.embed_in.weight"]
    base = cfg.get("rotary_emb_base", 10000)
    return {"L": cfg["num_hidden_layers"], "d": d, "H": H, "hd": hd, "rot": rot,
            "eps": cfg.get("layer_norm_eps", 1e-5), "w": w,
            "inv_freq": 1.0 / base ** (np.arange(0, rot, 2, dtype=np.float64) / rot),
            "parallel": cfg.get("use_parallel_residual", True),
            "erf": cfg.get("hidden_act", "gelu") == "gelu"}


# --------------------------------------------------------------------------- forward, way 1 (torch)


def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def torch_seq_logits(M, W, tokens, prompt, prefix=None):
    """Logits [T, V] of one sequence; tokens: ids (>= 0) or soft tokens (-1-k); prefix: None or
    [L, 2, Pkv, d] keys and values every position attends to first."""
    H, hd, rot, eps = M["H"], M["hd"], M["rot"], M["eps"]
    T = len(tokens)
    Pkv = 0 if prefix is None else prefix.shape[2]
    h = torch.stack([prompt[-1 - t] if t < 0 else W["gpt_neox.embed_in.weight"][t]
                     for t in tokens])
    freqs = torch.outer(torch.arange(Pkv, Pkv + T, dtype=torch.float64),
                        torch.from_numpy(M["inv_freq"]))
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()  # [T, rot]

    def lin(x, name):
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    def mlp(x, p):
        f = lin(x, p + "mlp.dense_h_to_4h")
        act = (torch.nn.functional.gelu(f) if M["erf"]
               else torch.nn.functional.gelu(f, approximate="tanh"))
        return lin(act, p + "mlp.dense_4h_to_h")

    for i in range(M["L"]):
        p = "gpt_neox.layers.%d." % i
        a = _ln(h, W[p + "input_layernorm.weight"], W[p + "input_layernorm.bias"], eps)
        qkv = lin(a, p + "attention.query_key_value").view(T, H, 3 * hd)
        q = qkv[..., :hd].transpose(0, 1)
        k = qkv[..., hd:2 * hd].transpose(0, 1)
        v = qkv[..., 2 * hd:].transpose(0, 1)
        q = torch.cat([q[..., :rot] * cos + _rotate_half(q[..., :rot]) * sin, q[..., rot:]], -1)
        k = torch.cat([k[..., :rot] * cos + _rotate_half(k[..., :rot]) * sin, k[..., rot:]], -1)
        if Pkv:  # the prefix's keys and values, as given (not rotated)
            k = torch.cat([prefix[i, 0].view(Pkv, H, hd).transpose(0, 1), k], dim=1)
            v = torch.cat([prefix[i, 1].view(Pkv, H, hd).transpose(0, 1), v], dim=1)
        s = q @ k.transpose(-1, -2) * hd ** -0.5
        causal = torch.arange(Pkv + T)[None, :] <= torch.arange(T)[:, None] + Pkv
        s = s.masked_fill(~causal, float("-inf"))
        o = lin((torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(T, H * hd),
                p + "attention.dense")
        g2, b2 = W[p + "post_attention_layernorm.weight"], W[p + "post_attention_layernorm.bias"]
        if M["parallel"]:
            h = h + o + mlp(_ln(h, g2, b2, eps), p)
        else:
            h = h + o
            h = h + mlp(_ln(h, g2, b2, eps), p)
    hf = _ln(h, W["gpt_neox.final_layer_norm.weight"], W["gpt_neox.final_layer_norm.bias"], eps)
    return hf @ W["embed_out.weight"].T


def torch_batch(M, W, batch, prompt, prefix=None):
    ss, toks = batch["seq_start"], batch["tokens"]
    logits = torch.cat([torch_seq_logits(M, W, toks[ss[s]:ss[s + 1]], prompt, prefix)
                        for s in range(len(ss) - 1)])[torch.tensor(batch["target_pos"])]
    tids = batch["target_ids"]
    ce = torch.logsumexp(logits, -1) - logits[torch.arange(len(tids)), torch.tensor(tids)]
    return logits, ce


# --------------------------------------------------------------------------- forward, way 2 (numpy)

_erf = np.vectorize(math.erf)


def numpy_batch_logits(M, batch, prompt, prefix=None):
    """Padded batch [n_seq, Tmax] with a key mask, per-head loops, the fused projection taken
    apart by index, rotary as complex products, causality tested pair by pair on positions."""
    w, H, hd, rot, eps = M["w"], M["H"], M["hd"], M["rot"], M["eps"]
    Pkv = 0 if prefix is None else prefix.shape[2]
    ss, toks = batch["seq_start"], batch["tokens"]
    n_seq = len(ss) - 1
    lens = [ss[s + 1] - ss[s] for s in range(n_seq)]
    Tm, d = max(lens), M["d"]
    x = np.zeros((n_seq, Tm, d))
    for s in range(n_seq):
        for t in range(lens[s]):
            tok = toks[ss[s] + t]
            x[s, t] = prompt[-1 - tok] if tok < 0 else w["gpt_neox.embed_in.weight"][tok]
    allowed = np.zeros((n_seq, Tm, Pkv + Tm), dtype=bool)
    for s in range(n_seq):
        for i in range(lens[s]):
            for j in range(Pkv + lens[s]):
                allowed[s, i, j] = (Pkv + i) - j >= 0
        allowed[s, lens[s]:, 0] = True  # padding rows: finite, never read
    rotc = np.exp(1j * np.outer(np.arange(Pkv, Pkv + Tm), M["inv_freq"]))  # [Tm, rot/2]

    def ln(z, name):
        mu = z.mean(-1, keepdims=True)
        sd = np.sqrt(((z - mu) ** 2).mean(-1, keepdims=True) + eps)
        return (z - mu) / sd * w[name + ".weight"] + w[name + ".bias"]

    def linear(z, name):
        y = np.einsum("sti,oi->sto", z, w[name + ".weight"])
        return y + w[name + ".bias"] if name + ".bias" in w else y

    def rotary(z):  # z [n_seq, Tm, hd]: pairs (j, j + rot/2), j < rot/2, as complex numbers
        c = (z[..., :rot // 2] + 1j * z[..., rot // 2:rot]) * rotc[None]
        return np.concatenate([c.real, c.imag, z[..., rot:]], axis=-1)

    def act(f):
        if M["erf"]:
            return f * 0.5 * (1 + _erf(f / np.sqrt(2)))
        u = np.sqrt(2 / np.pi) * (f + 0.044715 * f ** 3)
        return f / (1 + np.exp(-2 * u))

    def mlp(z, p):
        return linear(act(linear(z, p + "mlp.dense_h_to_4h")), p + "mlp.dense_4h_to_h")

    def with_prefix(z, i, kv, hh):  # the prefix's rows of head hh first
        if not Pkv:
            return z
        rows = np.broadcast_to(prefix[i, kv][:, hh * hd:(hh + 1) * hd], (n_seq, Pkv, hd))
        return np.concatenate([rows, z], axis=1)

    h = x
    for i in range(M["L"]):
        p = "gpt_neox.layers.%d." % i
        qkv = linear(ln(h, p + "input_layernorm"), p + "attention.query_key_value")
        heads = []
        for hh in range(H):
            col = 3 * hd * hh  # head hh's q, k, v sit side by side at 3 hd hh
            qh = rotary(qkv[..., col:col + hd])
            kh = with_prefix(rotary(qkv[..., col + hd:col + 2 * hd]), i, 0, hh)
            vh = with_prefix(qkv[..., col + 2 * hd:col + 3 * hd], i, 1, hh)
            sc = np.where(allowed, np.einsum("sie,sje->sij", qh, kh) / np.sqrt(hd), -np.inf)
            pr = np.exp(sc - sc.max(-1, keepdims=True))
            heads.append(np.einsum("sij,sje->sie", pr / pr.sum(-1, keepdims=True), vh))
        o = linear(np.concatenate(heads, -1), p + "attention.dense")
        if M["parallel"]:
            h = h + o + mlp(ln(h, p + "post_attention_layernorm"), p)
        else:
            h = h + o
            h = h + mlp(ln(h, p + "post_attention_layernorm"), p)
    h = ln(h, "gpt_neox.final_layer_norm")
    out = []
    for tp in batch["target_pos"]:
        s = max(i for i in range(n_seq) if ss[i] <= tp)
        out.append(w["embed_out.weight"] @ h[s, tp - ss[s]])
    return np.stack(out)


# --------------------------------------------------------------------------- cases

CASES = [
    # Pythia's block: parallel residual, erf GELU, rotary_pct 0.25 (4 of 16 columns), biases,
    # untied embed_out, the buffers older checkpoints store; F32
    dict(name="neox_l2_h4_d64_rot25_parallel_f32", seed=3101, n_layer=2, H=4, d=64, F=96,
         vocab_size=70, npos=64, dtype="F32", shards=1, tied=False, attention_bias=True,
         act="gelu", rotary_pct=0.25, base=10000.0, parallel=True, buffers=True, n_prompt=4,
         seqs=[("soft_front", 14, "gen"), ("soft_mid", 9, "cls"), ("hard", 6, "gen")]),
    # use_parallel_residual false, the tanh GELU, rotary_pct 0.5, tied, behind a key/value
    # prefix of 3; BF16, 2 shards
    dict(name="neox_l3_h2_d32_rot50_sequential_kvprefix3_tied_sharded2_bf16", seed=3202,
         n_layer=3, H=2, d=32, F=64, vocab_size=60, npos=48, dtype="BF16", shards=2, tied=True,
         attention_bias=True, act="gelu_new", rotary_pct=0.5, base=10000.0, parallel=False,
         n_prompt=3, n_kv=3, seqs=[("soft_front", 12, "gen"), ("soft_mid_repeat", 15, "gen")]),
    # parallel behind a prefix of 2, rotary over every column, no attention biases, base 100
    # (the angles turn fast); F16
    dict(name="neox_l2_h4_d32_rot100_parallel_nobias_kvprefix2_f16", seed=3303, n_layer=2, H=4,
         d=32, F=80, vocab_size=50, npos=40, dtype="F16", shards=1, tied=False,
         attention_bias=False, act="gelu", rotary_pct=1.0, base=100.0, parallel=True,
         n_prompt=3, n_kv=2, n_unused=1,
         seqs=[("soft_front", 11, "gen"), ("soft_mid", 13, "cls")]),
]


def generate_case(outdir, case):
    c = dict(case, V=case["vocab_size"], eps=1e-5)
    c["rot"] = int(c["d"] // c["H"] * c["rotary_pct"])

    def read(cdir):  # the inv_freq buffers are checked against rot, then not weights
        M = read_model(cdir)
        assert M["rot"] == c["rot"]
        M["w"] = {k: v for k, v in M["w"].items() if not k.endswith("inv_freq")}
        return M

    ref_case.write(outdir, case, "tests/ref/neox_reference.py",
                   model=lambda cdir, rng: write_model(cdir, c, neox_tensor_list(rng, c)),
                   read=read, forward=torch_batch, second_way=numpy_batch_logits, d=c["d"])


def main():
    return ref_cli.run(__doc__, CASES, generate_case)


if __name__ == "__main__":
    sys.exit(main())
