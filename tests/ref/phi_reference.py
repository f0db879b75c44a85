"""Independent float64 reference for Hugging Face Phi-2 (PhiForCausalLM) prompt tuning.

Same case layout as gpt2_reference.py (model directory in Hugging Face format, batch.json,
expected.safetensors with prompt, loss_mean, loss_sum, target_logits, target_loss, grad_mean;
behind a per-layer key/value prefix also kv_prefix and kv_prefix_grad_mean), for PhiForCausalLM
as transformers' modeling_phi.py defines it (qk_layernorm false):

    h = embed_tokens[id] (or the soft prompt row)
    per layer:  a = LayerNorm(h) (input_layernorm: the block's one norm)
                q, k, v = a Wq^T + bq, a Wk^T + bk, a Wv^T + bv
                q, k: the first rot = int(hd * partial_rotary_factor) columns rotated
                      (rotate-half within them, base rope_theta, position = index + P_kv)
                keys/values: the prefix's rows first (as given), then the sequence's; causal
                h = h + (attention Wdense^T + bdense) + fc2(gelu_new(fc1(a)))   (parallel)
    logits = LayerNorm_f(h) lm_head^T + lm_head.bias

Self-checks on every invocation: computed from the files as written (read back), the forward
recomputed a second way (numpy, padded batch, per-head loops, rotation as complex products,
gelu_new as x sigmoid(2u)), autograd gradients against central finite differences.

Usage: python3 tests/ref/phi_reference.py --out tests/fixtures/ref
Only torch and numpy are needed.
"""

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


def phi_tensor_list(rng, c):
    """Random parameters (float64) under HF names, in HF's state-dict order."""
    L, d, V, F = c["n_layer"], c["d"], c["V"], c["F"]
    s = 0.2

    def n(*shape):
        return rng.normal(0.0, s, size=shape)

    t = [("model.embed_tokens.weight", n(V, d))]
    for i in range(L):
        p = "model.layers.%d." % i
        for m, o, k in (("self_attn.q_proj", d, d), ("self_attn.k_proj", d, d),
                        ("self_attn.v_proj", d, d), ("self_attn.dense", d, d),
                        ("mlp.fc1", F, d), ("mlp.fc2", d, F)):
            t += [(p + m + ".weight", n(o, k)), (p + m + ".bias", n(o))]
        t += [(p + "input_layernorm.weight", 1.0 + n(d)), (p + "input_layernorm.bias", n(d))]
    t += [("model.final_layernorm.weight", 1.0 + n(d)), ("model.final_layernorm.bias", n(d))]
    if not c["tied"]:
        t += [("lm_head.weight", n(V, d))]
    t += [("lm_head.bias", n(V))]
    return t


def hf_config(c):
    """config.json as transformers writes it for PhiForCausalLM (phi-2's keys)."""
    return {
        "architectures": ["PhiForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 50256,
        "embd_pdrop": 0.0,
        "eos_token_id": 50256,
        "hidden_act": "gelu_new",
        "hidden_size": c["d"],
        "initializer_range": 0.02,
        "intermediate_size": c["F"],
        "layer_norm_eps": c["eps"],
        "max_position_embeddings": c["npos"],
        "model_type": "phi",
        "num_attention_heads": c["H"],
        "num_hidden_layers": c["n_layer"],
        "num_key_value_heads": c["H"],
        "partial_rotary_factor": c["partial"],
        "qk_layernorm": False,
        "resid_pdrop": 0.1,
        "rope_scaling": None,
        "rope_theta": c["base"],
        "tie_word_embeddings": c["tied"],
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[c["dtype"]],
        "use_cache": True,
        "vocab_size": c["V"],
    }


def write_model(dirpath, c, params):
    tensors = [(name, c["dtype"], arr) for name, arr in params]
    ref_case.write_hf_model(dirpath, hf_config(c), tensors, c["shards"])


def read_model(dirpath):
    """Independent read-back: config + float64 weights as stored."""
    cfg, w = read_weights(dirpath)
    if cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = w["model.embed_tokens.weight"]
    H, d = cfg["num_attention_heads"], cfg["hidden_size"]
    hd = d // H
    rot = int(hd * cfg.get("partial_rotary_factor", 0.5))
    return {"L": cfg["num_hidden_layers"], "d": d, "H": H, "hd": hd, "rot": rot,
            "eps": cfg["layer_norm_eps"], "w": w,
            "inv_freq": 1.0 / cfg["rope_theta"] ** (np.arange(0, rot, 2, dtype=np.float64) / rot)}


# --------------------------------------------------------------------------- forward, way 1 (torch)


def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def torch_seq_logits(M, W, tokens, prompt, prefix=None):
    H, hd, rot, eps = M["H"], M["hd"], M["rot"], M["eps"]
    T = len(tokens)
    Pkv = 0 if prefix is None else prefix.shape[2]
    h = torch.stack([prompt[-1 - t] if t < 0 else W["model.embed_tokens.weight"][t]
                     for t in tokens])
    freqs = torch.outer(torch.arange(Pkv, Pkv + T, dtype=torch.float64),
                        torch.from_numpy(M["inv_freq"]))
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()

    def lin(x, name):
        return x @ W[name + ".weight"].T + W[name + ".bias"]

    for i in range(M["L"]):
        p = "model.layers.%d." % i
        a = _ln(h, W[p + "input_layernorm.weight"], W[p + "input_layernorm.bias"], eps)
        q = lin(a, p + "self_attn.q_proj").view(T, H, hd).transpose(0, 1)
        k = lin(a, p + "self_attn.k_proj").view(T, H, hd).transpose(0, 1)
        v = lin(a, p + "self_attn.v_proj").view(T, H, hd).transpose(0, 1)
        q = torch.cat([q[..., :rot] * cos + _rotate_half(q[..., :rot]) * sin, q[..., rot:]], -1)
        k = torch.cat([k[..., :rot] * cos + _rotate_half(k[..., :rot]) * sin, k[..., rot:]], -1)
        if Pkv:
            k = torch.cat([prefix[i, 0].view(Pkv, H, hd).transpose(0, 1), k], dim=1)
            v = torch.cat([prefix[i, 1].view(Pkv, H, hd).transpose(0, 1), v], dim=1)
        s = q @ k.transpose(-1, -2) * hd ** -0.5
        causal = torch.arange(Pkv + T)[None, :] <= torch.arange(T)[:, None] + Pkv
        s = s.masked_fill(~causal, float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(T, H * hd)
        f = lin(torch.nn.functional.gelu(lin(a, p + "mlp.fc1"), approximate="tanh"), p + "mlp.fc2")
        h = h + lin(o, p + "self_attn.dense") + f
    hf = _ln(h, W["model.final_layernorm.weight"], W["model.final_layernorm.bias"], eps)
    return lin(hf, "lm_head")


def torch_batch(M, W, batch, prompt, prefix=None):
    ss, toks = batch["seq_start"], batch["tokens"]
    logits = torch.cat([torch_seq_logits(M, W, toks[ss[s]:ss[s + 1]], prompt, prefix)
                        for s in range(len(ss) - 1)])[torch.tensor(batch["target_pos"])]
    tids = batch["target_ids"]
    ce = torch.logsumexp(logits, -1) - logits[torch.arange(len(tids)), torch.tensor(tids)]
    return logits, ce


# --------------------------------------------------------------------------- forward, way 2 (numpy)


def numpy_batch_logits(M, batch, prompt, prefix=None):
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
            x[s, t] = prompt[-1 - tok] if tok < 0 else w["model.embed_tokens.weight"][tok]
    allowed = np.zeros((n_seq, Tm, Pkv + Tm), dtype=bool)
    for s in range(n_seq):
        for i in range(lens[s]):
            for j in range(Pkv + lens[s]):
                allowed[s, i, j] = (Pkv + i) - j >= 0
        allowed[s, lens[s]:, 0] = True
    rotc = np.exp(1j * np.outer(np.arange(Pkv, Pkv + Tm), M["inv_freq"]))

    def ln(z, name):
        mu = z.mean(-1, keepdims=True)
        sd = np.sqrt(((z - mu) ** 2).mean(-1, keepdims=True) + eps)
        return (z - mu) / sd * w[name + ".weight"] + w[name + ".bias"]

    def linear(z, name):
        return np.einsum("sti,oi->sto", z, w[name + ".weight"]) + w[name + ".bias"]

    def rotary(z):
        c = (z[..., :rot // 2] + 1j * z[..., rot // 2:rot]) * rotc[None]
        return np.concatenate([c.real, c.imag, z[..., rot:]], axis=-1)

    def with_prefix(z, i, kv, hh):
        if not Pkv:
            return z
        rows = np.broadcast_to(prefix[i, kv][:, hh * hd:(hh + 1) * hd], (n_seq, Pkv, hd))
        return np.concatenate([rows, z], axis=1)

    h = x
    for i in range(M["L"]):
        p = "model.layers.%d." % i
        a = ln(h, p + "input_layernorm")
        q, k, v = (linear(a, p + "self_attn.%s_proj" % n) for n in "qkv")
        heads = []
        for hh in range(H):
            sl = slice(hh * hd, (hh + 1) * hd)
            qh = rotary(q[..., sl])
            kh = with_prefix(rotary(k[..., sl]), i, 0, hh)
            vh = with_prefix(v[..., sl], i, 1, hh)
            sc = np.where(allowed, np.einsum("sie,sje->sij", qh, kh) / np.sqrt(hd), -np.inf)
            pr = np.exp(sc - sc.max(-1, keepdims=True))
            heads.append(np.einsum("sij,sje->sie", pr / pr.sum(-1, keepdims=True), vh))
        f1 = linear(a, p + "mlp.fc1")
        u = np.sqrt(2 / np.pi) * (f1 + 0.044715 * f1 ** 3)
        f = linear(f1 / (1 + np.exp(-2 * u)), p + "mlp.fc2")
        h = h + linear(np.concatenate(heads, -1), p + "self_attn.dense") + f
    h = ln(h, "model.final_layernorm")
    out = []
    for tp in batch["target_pos"]:
        s = max(i for i in range(n_seq) if ss[i] <= tp)
        out.append(w["lm_head.weight"] @ h[s, tp - ss[s]] + w["lm_head.bias"])
    return np.stack(out)


# --------------------------------------------------------------------------- cases

CASES = [
    # Phi-2's block: one norm, parallel, partial_rotary_factor 0.4 (4 of 10 columns), biases,
    # untied head with a bias; F32
    dict(name="phi_l2_h4_d40_partial40_f32", seed=3601, n_layer=2, H=4, d=40, F=80,
         vocab_size=70, npos=64, dtype="F32", shards=1, tied=False, partial=0.4, base=10000.0,
         n_prompt=4, seqs=[("soft_front", 14, "gen"), ("soft_mid", 9, "cls"), ("hard", 6, "gen")]),
    # tied (the head's bias still its own), partial 0.5, behind a key/value prefix of 3; BF16,
    # 2 shards
    dict(name="phi_l3_h2_d32_partial50_kvprefix3_tied_sharded2_bf16", seed=3702, n_layer=3,
         H=2, d=32, F=64, vocab_size=60, npos=48, dtype="BF16", shards=2, tied=True,
         partial=0.5, base=10000.0, n_prompt=3, n_kv=3,
         seqs=[("soft_front", 12, "gen"), ("soft_mid_repeat", 15, "gen")]),
]


def generate_case(outdir, case):
    c = dict(case, V=case["vocab_size"], eps=1e-5)
    ref_case.write(outdir, case, "tests/ref/phi_reference.py",
                   model=lambda cdir, rng: write_model(cdir, c, phi_tensor_list(rng, c)),
                   read=read_model, forward=torch_batch, second_way=numpy_batch_logits, d=c["d"])


def main():
    return ref_cli.run(__doc__, CASES, generate_case)


if __name__ == "__main__":
    sys.exit(main())
