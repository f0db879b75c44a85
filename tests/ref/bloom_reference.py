"""Independent float64 reference for Hugging Face BLOOM prompt tuning.

Same case layout as gpt2_reference.py (model directory in Hugging Face format, batch.json,
expected.safetensors with prompt, loss_mean, loss_sum, target_logits, target_loss, grad_mean;
behind a per-layer key/value prefix also kv_prefix and kv_prefix_grad_mean), for BloomForCausalLM
as transformers' modeling_bloom.py defines it:

    h = LayerNorm_emb(word_embeddings[id] (or the soft prompt row))   (word_embeddings_layernorm)
    alibi[head, key] = slope[head] * position(key)
        slopes: build_alibi_tensor's, in float32 (2^(-8/p)^k for the largest power of 2 p <= heads,
        then the odd powers of 2^(-4/p)); position: cumsum(attention_mask) - 1 over the prefix's
        rows and the text's (PEFT passes ones for both), so prepended soft tokens are positions
        0..P-1 and a soft token in the middle of a template has its place's position
    per layer:  a = LayerNorm(h) (input_layernorm)
                q, k, v = (a W_qkv^T + b_qkv) viewed [T, heads, 3, hd]   (query_key_value)
                keys/values: the prefix's rows first (as given), then the sequence's; causal
                scores = alibi + q k^T / sqrt(hd)     (baddbmm, beta 1, alpha hd^-1/2)
                r = a if apply_residual_connection_post_layernorm else h
                m = attention W_dense^T + b_dense + r
                b2 = LayerNorm(m) (post_attention_layernorm)
                r = b2 if apply_residual_connection_post_layernorm else m
                h = gelu(b2 W_4h^T + b_4h) W_h^T + b_h + r    (bloom_gelu_forward: tanh, 0.79788456)
    logits = LayerNorm_f(h) lm_head^T   (lm_head = word_embeddings when tied, the default)

The alibi products are taken in float64 from the float32 slopes (transformers multiplies in the
slopes' float32; the difference is a rounding of the bias, and softmax does not depend on a
constant added to a row).

Self-checks on every invocation: computed from the files as written (read back), the forward
recomputed a second way (numpy, padded batch, positions from an explicit attention mask's
cumulative sum, the bias as slope (key position - query position), q/k/v columns picked per
head, GELU as x sigmoid(2u)), autograd gradients against central finite differences.

Usage: python3 tests/ref/bloom_reference.py --out tests/fixtures/ref
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


def bloom_tensor_list(rng, c):
    """Random parameters (float64) under HF names, in HF's state-dict order."""
    L, d, V = c["n_layer"], c["d"], c["V"]
    s, pre = 0.2, c["prefix"]

    def n(*shape):
        return rng.normal(0.0, s, size=shape)

    t = [(pre + "word_embeddings.weight", n(V, d)),
         (pre + "word_embeddings_layernorm.weight", 1.0 + n(d)),
         (pre + "word_embeddings_layernorm.bias", n(d))]
    for i in range(L):
        p = pre + "h.%d." % i
        t += [(p + "input_layernorm.weight", 1.0 + n(d)), (p + "input_layernorm.bias", n(d)),
              (p + "self_attention.query_key_value.weight", n(3 * d, d)),
              (p + "self_attention.query_key_value.bias", n(3 * d)),
              (p + "self_attention.dense.weight", n(d, d)),
              (p + "self_attention.dense.bias", n(d)),
              (p + "post_attention_layernorm.weight", 1.0 + n(d)),
              (p + "post_attention_layernorm.bias", n(d)),
              (p + "mlp.dense_h_to_4h.weight", n(4 * d, d)), (p + "mlp.dense_h_to_4h.bias", n(4 * d)),
              (p + "mlp.dense_4h_to_h.weight", n(d, 4 * d)), (p + "mlp.dense_4h_to_h.bias", n(d))]
    t += [(pre + "ln_f.weight", 1.0 + n(d)), (pre + "ln_f.bias", n(d))]
    if not c["tied"]:
        t += [("lm_head.weight", n(V, d))]
    return t


def hf_config(c):
    """config.json as transformers writes it for BloomForCausalLM (bloom-560m's keys)."""
    return {
        "apply_residual_connection_post_layernorm": c["norm_residual"],
        "architectures": ["BloomForCausalLM"],
        "attention_dropout": 0.0,
        "attention_softmax_in_fp32": True,
        "bias_dropout_fusion": True,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_dropout": 0.0,
        "hidden_size": c["d"],
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "masked_softmax_fusion": True,
        "model_type": "bloom",
        "n_head": c["H"],
        "n_inner": None,
        "n_layer": c["n_layer"],
        "offset_alibi": 100,
        "pad_token_id": 3,
        "pretraining_tp": 1,
        "seq_length": c["npos"],
        "skip_bias_add": True,
        "skip_bias_add_qkv": False,
        "slow_but_exact": False,
        "tie_word_embeddings": c["tied"],
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[c["dtype"]],
        "unk_token_id": 0,
        "use_cache": True,
        "vocab_size": c["V"],
    }


def write_model(dirpath, c, params):
    tensors = [(name, c["dtype"], arr) for name, arr in params]
    ref_case.write_hf_model(dirpath, hf_config(c), tensors, c["shards"])


def read_model(dirpath):
    """Independent read-back: config + float64 weights as stored ("transformer." removed)."""
    cfg, w = read_weights(dirpath)
    pre = "transformer."
    w = {k[len(pre):] if k.startswith(pre) else k: v for k, v in w.items()}
    if cfg.get("tie_word_embeddings", True):
        w["lm_head.weight"] = w["word_embeddings.weight"]
    H, d = cfg["n_head"], cfg["hidden_size"]
    return {"L": cfg["n_layer"], "d": d, "H": H, "hd": d // H, "eps": cfg["layer_norm_epsilon"],
            "post": cfg["apply_residual_connection_post_layernorm"], "w": w}


def alibi_slopes(n_head):
    """build_alibi_tensor's slopes, float32 as torch computes them."""
    closest = 2 ** math.floor(math.log2(n_head))
    base = torch.tensor(2 ** (-(2 ** -(math.log2(closest) - 3))), dtype=torch.float32)
    slopes = torch.pow(base, torch.arange(1, 1 + closest, dtype=torch.int32))
    if closest != n_head:
        extra = torch.tensor(2 ** (-(2 ** -(math.log2(2 * closest) - 3))), dtype=torch.float32)
        rest = min(closest, n_head - closest)
        slopes = torch.cat([slopes, torch.pow(extra, torch.arange(1, 1 + 2 * rest, 2,
                                                                  dtype=torch.int32))])
    return slopes


# --------------------------------------------------------------------------- forward, way 1 (torch)


def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def bloom_gelu(x):
    return x * 0.5 * (1.0 + torch.tanh(0.79788456 * x * (1 + 0.044715 * x * x)))


def torch_seq_logits(M, W, tokens, prompt, prefix=None):
    """Logits [T, V] of one sequence; tokens: ids (>= 0) or soft tokens (-1-k); prefix: None or
    [L, 2, Pkv, d] keys and values every position attends to first."""
    H, hd, eps = M["H"], M["hd"], M["eps"]
    T = len(tokens)
    Pkv = 0 if prefix is None else prefix.shape[2]
    x = torch.stack([prompt[-1 - t] if t < 0 else W["word_embeddings.weight"][t] for t in tokens])

    def lin(z, name):
        return z @ W[name + ".weight"].T + W[name + ".bias"]

    def ln(z, name):
        return _ln(z, W[name + ".weight"], W[name + ".bias"], eps)

    h = ln(x, "word_embeddings_layernorm")
    mask = torch.ones(Pkv + T, dtype=torch.int64)  # PEFT: the prefix's ones, then the text's
    positions = (mask.cumsum(-1) - 1) * mask
    alibi = alibi_slopes(H).double()[:, None] * positions.double()[None, :]  # [H, Pkv + T]
    causal = torch.arange(Pkv + T)[None, :] <= torch.arange(T)[:, None] + Pkv
    for i in range(M["L"]):
        p = "h.%d." % i
        a = ln(h, p + "input_layernorm")
        fused = lin(a, p + "self_attention.query_key_value").view(T, H, 3, hd)
        q, k, v = (fused[:, :, j].transpose(0, 1) for j in range(3))  # [H, T, hd]
        if Pkv:
            k = torch.cat([prefix[i, 0].view(Pkv, H, hd).transpose(0, 1), k], dim=1)
            v = torch.cat([prefix[i, 1].view(Pkv, H, hd).transpose(0, 1), v], dim=1)
        s = alibi[:, None, :] + (q @ k.transpose(-1, -2)) * hd ** -0.5
        s = s.masked_fill(~causal, float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(T, H * hd)
        m = lin(o, p + "self_attention.dense") + (a if M["post"] else h)
        b2 = ln(m, p + "post_attention_layernorm")
        f = bloom_gelu(lin(b2, p + "mlp.dense_h_to_4h"))
        h = lin(f, p + "mlp.dense_4h_to_h") + (b2 if M["post"] else m)
    return ln(h, "ln_f") @ W["lm_head.weight"].T


def torch_batch(M, W, batch, prompt, prefix=None):
    ss, toks = batch["seq_start"], batch["tokens"]
    logits = torch.cat([torch_seq_logits(M, W, toks[ss[s]:ss[s + 1]], prompt, prefix)
                        for s in range(len(ss) - 1)])[torch.tensor(batch["target_pos"])]
    tids = batch["target_ids"]
    ce = torch.logsumexp(logits, -1) - logits[torch.arange(len(tids)), torch.tensor(tids)]
    return logits, ce


# --------------------------------------------------------------------------- forward, way 2 (numpy)


def numpy_batch_logits(M, batch, prompt, prefix=None):
    """Padded batch [n_seq, Tmax] with a key mask, positions from the mask's cumulative sum, the
    bias slope (key position - query position), per-head loops over q/k/v columns picked from
    each head's [q | k | v] run, GELU as x sigmoid(2u)."""
    w, H, hd, eps = M["w"], M["H"], M["hd"], M["eps"]
    Pkv = 0 if prefix is None else prefix.shape[2]
    ss, toks = batch["seq_start"], batch["tokens"]
    n_seq = len(ss) - 1
    lens = [ss[s + 1] - ss[s] for s in range(n_seq)]
    Tm, d = max(lens), M["d"]
    slopes = alibi_slopes(H).numpy().astype(np.float64)
    mask = np.zeros((n_seq, Pkv + Tm), dtype=np.int64)
    for s in range(n_seq):
        mask[s, :Pkv + lens[s]] = 1
    pos = np.cumsum(mask, axis=1) * mask - 1  # key positions; the text's are pos[:, Pkv:]
    x = np.zeros((n_seq, Tm, d))
    for s in range(n_seq):
        for t in range(lens[s]):
            tok = toks[ss[s] + t]
            x[s, t] = prompt[-1 - tok] if tok < 0 else w["word_embeddings.weight"][tok]
    allowed = np.zeros((n_seq, Tm, Pkv + Tm), dtype=bool)
    for s in range(n_seq):
        for i in range(lens[s]):
            for j in range(Pkv + lens[s]):
                allowed[s, i, j] = (Pkv + i) - j >= 0
        allowed[s, lens[s]:, 0] = True
    rel = pos[:, None, :] - pos[:, Pkv:, None]  # [n_seq, Tm, Pkv + Tm]: key - query

    def ln(z, name):
        mu = z.mean(-1, keepdims=True)
        sd = np.sqrt(((z - mu) ** 2).mean(-1, keepdims=True) + eps)
        return (z - mu) / sd * w[name + ".weight"] + w[name + ".bias"]

    def linear(z, name):
        return np.einsum("sti,oi->sto", z, w[name + ".weight"]) + w[name + ".bias"]

    def with_prefix(z, i, kv, hh):
        if not Pkv:
            return z
        rows = np.broadcast_to(prefix[i, kv][:, hh * hd:(hh + 1) * hd], (n_seq, Pkv, hd))
        return np.concatenate([rows, z], axis=1)

    h = ln(x, "word_embeddings_layernorm")
    for i in range(M["L"]):
        p = "h.%d." % i
        a = ln(h, p + "input_layernorm")
        fused = linear(a, p + "self_attention.query_key_value")
        heads = []
        for hh in range(H):
            base = hh * 3 * hd
            q = fused[..., base:base + hd]
            kh = with_prefix(fused[..., base + hd:base + 2 * hd], i, 0, hh)
            vh = with_prefix(fused[..., base + 2 * hd:base + 3 * hd], i, 1, hh)
            sc = np.einsum("sie,sje->sij", q, kh) / np.sqrt(hd) + slopes[hh] * rel
            sc = np.where(allowed, sc, -np.inf)
            pr = np.exp(sc - sc.max(-1, keepdims=True))
            heads.append(np.einsum("sij,sje->sie", pr / pr.sum(-1, keepdims=True), vh))
        m = linear(np.concatenate(heads, -1), p + "self_attention.dense") + (a if M["post"] else h)
        b2 = ln(m, p + "post_attention_layernorm")
        u = linear(b2, p + "mlp.dense_h_to_4h")
        g = u / (1.0 + np.exp(-2.0 * 0.79788456 * u * (1 + 0.044715 * u * u)))
        h = linear(g, p + "mlp.dense_4h_to_h") + (b2 if M["post"] else m)
    h = ln(h, "ln_f")
    out = []
    for tp in batch["target_pos"]:
        s = max(i for i in range(n_seq) if ss[i] <= tp)
        out.append(w["lm_head.weight"] @ h[s, tp - ss[s]])
    return np.stack(out)


# --------------------------------------------------------------------------- cases

CASES = [
    # bloom-560m's block (residual from the norm's input), 6 heads (not a power of 2: slopes
    # 1/4 .. 1/256, then 1/2, 1/8), tied, bare names as bloom-560m's files; F32
    dict(name="bloom_l2_h6_d48_tied_f32", seed=3601, n_layer=2, H=6, d=48, vocab_size=70,
         npos=64, dtype="F32", shards=1, tied=True, norm_residual=False, prefix="", n_prompt=4,
         seqs=[("soft_front", 14, "gen"), ("soft_mid", 11, "cls"), ("hard", 7, "gen")]),
    # apply_residual_connection_post_layernorm true, an untied lm_head, "transformer." names,
    # behind a key/value prefix of 3 (the text's positions start at 3); BF16, 2 shards
    dict(name="bloom_l3_h4_d32_normres_untied_kvprefix3_sharded2_bf16", seed=3702, n_layer=3,
         H=4, d=32, vocab_size=60, npos=48, dtype="BF16", shards=2, tied=False,
         norm_residual=True, prefix="transformer.", n_prompt=3, n_kv=3,
         seqs=[("soft_front", 12, "gen"), ("soft_mid_repeat", 15, "gen")]),
    # 12 heads of 4 (8 + 4 extra slopes), the residual from the norms, the prompt mid-template
    dict(name="bloom_l2_h12_d48_normres_f16", seed=3803, n_layer=2, H=12, d=48, vocab_size=50,
         npos=40, dtype="F16", shards=1, tied=True, norm_residual=True, prefix="", n_prompt=3,
         seqs=[("soft_mid", 16, "gen"), ("soft_front", 9, "cls")]),
]


def generate_case(outdir, case):
    c = dict(case, V=case["vocab_size"])
    ref_case.write(outdir, case, "tests/ref/bloom_reference.py",
                   model=lambda cdir, rng: write_model(cdir, c, bloom_tensor_list(rng, c)),
                   read=read_model, forward=torch_batch, second_way=numpy_batch_logits, d=c["d"])


def main():
    return ref_cli.run(__doc__, CASES, generate_case)


if __name__ == "__main__":
    sys.exit(main())
