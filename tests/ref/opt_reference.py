"""Independent float64 reference for Hugging Face OPT prompt tuning.

Same case layout as gpt2_reference.py (model directory in Hugging Face format, batch.json,
expected.safetensors with prompt, loss_mean, loss_sum, target_logits, target_loss, grad_mean;
behind a per-layer key/value prefix also kv_prefix and kv_prefix_grad_mean), for OPTForCausalLM
as transformers' modeling_opt.py defines it (OPTDecoder.__init__ and forward, OPTDecoderLayer):

    e = word_embed_proj_dim (hidden_size d unless narrower: opt-350m's 512 under 1024)
    x = embed_tokens[id] (or the soft prompt row: PEFT's inputs_embeds, e wide)
    x = x project_in^T                          (only when e != d: project_in, no bias)
    h = x + embed_positions[position + 2]
        position: cumsum(attention_mask) - 1 over the prefix's rows and the text's, the text's
        part (past_key_values_length = P_kv: the text starts at P_kv)
    per layer, do_layer_norm_before true (opt-125m, 1.3b, ...):
                a = LayerNorm(h) (self_attn_layer_norm)
                q = a Wq^T (+ bq) times hd^-1/2; k, v = a Wk^T (+ bk), a Wv^T (+ bv)
                keys/values: the prefix's rows first (as given), then the sequence's; causal
                h = h + attention Wout^T (+ bout)
                h = h + relu(LayerNorm(h) W1^T (+ b1)) W2^T (+ b2)   (final_layer_norm, fc1, fc2)
    per layer, do_layer_norm_before false (opt-350m): the norms after the residual adds
                h = self_attn_layer_norm(h + attention(h) Wout^T (+ bout))
                h = final_layer_norm(h + relu(h W1^T (+ b1)) W2^T (+ b2))
    y = LayerNorm_f(h) when do_layer_norm_before (decoder.final_layer_norm), else h (none exists)
    y = y project_out^T                         (only when e != d)
    logits = y lm_head^T   (lm_head [V, e] = embed_tokens when tied, the default)

Self-checks on every invocation: computed from the files as written (read back), the forward
recomputed a second way (numpy, padded batch, positions from an explicit attention mask's
cumulative sum, per-head loops, ReLU as (|x| + x) / 2), autograd gradients against central
finite differences.

Usage: python3 tests/ref/opt_reference.py --out tests/fixtures/ref
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


def opt_tensor_list(rng, c):
    """Random parameters (float64) under HF names, in HF's state-dict order (OPTDecoder registers
    embed_tokens, embed_positions, project_out, project_in, final_layer_norm, then the layers)."""
    L, d, V, F, e = c["n_layer"], c["d"], c["V"], c["F"], c.get("e", c["d"])
    s, pre, post = 0.2, c["prefix"], c.get("post", False)

    def n(*shape):
        return rng.normal(0.0, s, size=shape)

    t = [(pre + "decoder.embed_tokens.weight", n(V, e)),
         (pre + "decoder.embed_positions.weight", n(c["npos"] + 2, d))]
    if e != d:  # scaled so that the projected rows are about as large as the positions
        t += [(pre + "decoder.project_out.weight", n(e, d) * (1.0 / np.sqrt(d * s * s))),
              (pre + "decoder.project_in.weight", n(d, e) * (1.0 / np.sqrt(e * s * s)))]
    if not post:
        t += [(pre + "decoder.final_layer_norm.weight", 1.0 + n(d)),
              (pre + "decoder.final_layer_norm.bias", n(d))]
    for i in range(L):
        p = pre + "decoder.layers.%d." % i
        for m, shape in (("self_attn.k_proj", (d, d)), ("self_attn.v_proj", (d, d)),
                         ("self_attn.q_proj", (d, d)), ("self_attn.out_proj", (d, d))):
            t += [(p + m + ".weight", n(*shape))]
            if c["bias"]:
                t += [(p + m + ".bias", n(shape[0]))]
        t += [(p + "self_attn_layer_norm.weight", 1.0 + n(d)),
              (p + "self_attn_layer_norm.bias", n(d)), (p + "fc1.weight", n(F, d))]
        if c["bias"]:
            t += [(p + "fc1.bias", n(F))]
        t += [(p + "fc2.weight", n(d, F))]
        if c["bias"]:
            t += [(p + "fc2.bias", n(d))]
        t += [(p + "final_layer_norm.weight", 1.0 + n(d)), (p + "final_layer_norm.bias", n(d))]
    if not c["tied"]:
        t += [("lm_head.weight", n(V, e))]
    return t


def hf_config(c):
    """config.json as transformers writes it for OPTForCausalLM (opt-125m's keys)."""
    return {
        "_remove_final_layer_norm": False,
        "activation_dropout": 0.0,
        "activation_function": "relu",
        "architectures": ["OPTForCausalLM"],
        "attention_dropout": 0.0,
        "bos_token_id": 2,
        "do_layer_norm_before": not c.get("post", False),
        "dropout": 0.1,
        "enable_bias": c["bias"],
        "eos_token_id": 2,
        "ffn_dim": c["F"],
        "hidden_size": c["d"],
        "init_std": 0.02,
        "layerdrop": 0.0,
        "max_position_embeddings": c["npos"],
        "model_type": "opt",
        "num_attention_heads": c["H"],
        "num_hidden_layers": c["n_layer"],
        "pad_token_id": 1,
        "tie_word_embeddings": c["tied"],
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[c["dtype"]],
        "use_cache": True,
        "vocab_size": c["V"],
        "word_embed_proj_dim": c.get("e", c["d"]),
    }


def write_model(dirpath, c, params):
    tensors = [(name, c["dtype"], arr) for name, arr in params]
    ref_case.write_hf_model(dirpath, hf_config(c), tensors, c["shards"])


def read_model(dirpath):
    """Independent read-back: config + float64 weights as stored (the "model." prefix removed)."""
    cfg, w = read_weights(dirpath)
    w = {k[len("model."):] if k.startswith("model.") else k: v for k, v in w.items()}
    if cfg.get("tie_word_embeddings", True):
        w["lm_head.weight"] = w["decoder.embed_tokens.weight"]
    H, d = cfg["num_attention_heads"], cfg["hidden_size"]
    e = cfg.get("word_embed_proj_dim", d)
    return {"L": cfg["num_hidden_layers"], "d": d, "H": H, "hd": d // H, "eps": 1e-5, "w": w,
            "e": e, "project": e != d, "pre_norm": cfg.get("do_layer_norm_before", True)}


# --------------------------------------------------------------------------- forward, way 1 (torch)


def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def torch_seq_logits(M, W, tokens, prompt, prefix=None):
    """Logits [T, V] of one sequence; tokens: ids (>= 0) or soft tokens (-1-k); prefix: None or
    [L, 2, Pkv, d] keys and values every position attends to first."""
    H, hd, eps = M["H"], M["hd"], M["eps"]
    T = len(tokens)
    Pkv = 0 if prefix is None else prefix.shape[2]
    h = torch.stack([prompt[-1 - t] if t < 0 else W["decoder.embed_tokens.weight"][t]
                     for t in tokens])
    if M["project"]:  # inputs_embeds (the prompt's rows too) through project_in
        h = h @ W["decoder.project_in.weight"].T
    # OPTLearnedPositionalEmbedding: positions from the attention mask's cumsum (the prefix's
    # rows counted: past_key_values_length), plus the offset 2
    h = h + W["decoder.embed_positions.weight"][torch.arange(Pkv, Pkv + T) + 2]

    def lin(x, name):
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    def ln(x, name):
        return _ln(x, W[name + ".weight"], W[name + ".bias"], eps)

    for i in range(M["L"]):
        p = "decoder.layers.%d." % i
        a = ln(h, p + "self_attn_layer_norm") if M["pre_norm"] else h
        q = (lin(a, p + "self_attn.q_proj") * hd ** -0.5).view(T, H, hd).transpose(0, 1)
        k = lin(a, p + "self_attn.k_proj").view(T, H, hd).transpose(0, 1)
        v = lin(a, p + "self_attn.v_proj").view(T, H, hd).transpose(0, 1)
        if Pkv:
            k = torch.cat([prefix[i, 0].view(Pkv, H, hd).transpose(0, 1), k], dim=1)
            v = torch.cat([prefix[i, 1].view(Pkv, H, hd).transpose(0, 1), v], dim=1)
        s = q @ k.transpose(-1, -2)
        causal = torch.arange(Pkv + T)[None, :] <= torch.arange(T)[:, None] + Pkv
        s = s.masked_fill(~causal, float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(T, H * hd)
        h = h + lin(o, p + "self_attn.out_proj")
        if M["pre_norm"]:
            f = torch.relu(lin(ln(h, p + "final_layer_norm"), p + "fc1"))
            h = h + lin(f, p + "fc2")
        else:  # 350m applies layer norm AFTER attention (and after the MLP)
            h = ln(h, p + "self_attn_layer_norm")
            h = ln(h + lin(torch.relu(lin(h, p + "fc1")), p + "fc2"), p + "final_layer_norm")
    if M["pre_norm"]:
        h = ln(h, "decoder.final_layer_norm")
    if M["project"]:
        h = h @ W["decoder.project_out.weight"].T
    return h @ W["lm_head.weight"].T


def torch_batch(M, W, batch, prompt, prefix=None):
    ss, toks = batch["seq_start"], batch["tokens"]
    logits = torch.cat([torch_seq_logits(M, W, toks[ss[s]:ss[s + 1]], prompt, prefix)
                        for s in range(len(ss) - 1)])[torch.tensor(batch["target_pos"])]
    tids = batch["target_ids"]
    ce = torch.logsumexp(logits, -1) - logits[torch.arange(len(tids)), torch.tensor(tids)]
    return logits, ce


# --------------------------------------------------------------------------- forward, way 2 (numpy)


def numpy_batch_logits(M, batch, prompt, prefix=None):
    """Padded batch [n_seq, Tmax] with a key mask, positions from the mask's cumulative sum as
    transformers takes them, per-head loops, ReLU as (|x| + x) / 2."""
    w, H, hd, eps = M["w"], M["H"], M["hd"], M["eps"]
    Pkv = 0 if prefix is None else prefix.shape[2]
    ss, toks = batch["seq_start"], batch["tokens"]
    n_seq = len(ss) - 1
    lens = [ss[s + 1] - ss[s] for s in range(n_seq)]
    Tm, d, e = max(lens), M["d"], M["e"]
    mask = np.zeros((n_seq, Pkv + Tm), dtype=np.int64)  # PEFT: ones for the prefix, then the text
    for s in range(n_seq):
        mask[s, :Pkv + lens[s]] = 1
    pos = (np.cumsum(mask, axis=1) * mask - 1)[:, Pkv:]  # OPT's position_ids
    x = np.zeros((n_seq, Tm, d))
    for s in range(n_seq):
        for t in range(lens[s]):
            tok = toks[ss[s] + t]
            row = prompt[-1 - tok] if tok < 0 else w["decoder.embed_tokens.weight"][tok]
            if M["project"]:  # project_in, written as a sum over the e input columns
                row = sum(row[j] * w["decoder.project_in.weight"][:, j] for j in range(e))
            x[s, t] = row + w["decoder.embed_positions.weight"][pos[s, t] + 2]
    allowed = np.zeros((n_seq, Tm, Pkv + Tm), dtype=bool)
    for s in range(n_seq):
        for i in range(lens[s]):
            for j in range(Pkv + lens[s]):
                allowed[s, i, j] = (Pkv + i) - j >= 0
        allowed[s, lens[s]:, 0] = True

    def ln(z, name):
        mu = z.mean(-1, keepdims=True)
        sd = np.sqrt(((z - mu) ** 2).mean(-1, keepdims=True) + eps)
        return (z - mu) / sd * w[name + ".weight"] + w[name + ".bias"]

    def linear(z, name):
        y = np.einsum("sti,oi->sto", z, w[name + ".weight"])
        return y + w[name + ".bias"] if name + ".bias" in w else y

    def with_prefix(z, i, kv, hh):
        if not Pkv:
            return z
        rows = np.broadcast_to(prefix[i, kv][:, hh * hd:(hh + 1) * hd], (n_seq, Pkv, hd))
        return np.concatenate([rows, z], axis=1)

    h = x
    for i in range(M["L"]):
        p = "decoder.layers.%d." % i
        pre_norm = M["pre_norm"]
        a = ln(h, p + "self_attn_layer_norm") if pre_norm else h
        q, k, v = (linear(a, p + "self_attn.%s_proj" % n) for n in "qkv")
        heads = []
        for hh in range(H):
            sl = slice(hh * hd, (hh + 1) * hd)
            kh, vh = with_prefix(k[..., sl], i, 0, hh), with_prefix(v[..., sl], i, 1, hh)
            sc = np.where(allowed, np.einsum("sie,sje->sij", q[..., sl], kh) / np.sqrt(hd), -np.inf)
            pr = np.exp(sc - sc.max(-1, keepdims=True))
            heads.append(np.einsum("sij,sje->sie", pr / pr.sum(-1, keepdims=True), vh))
        h = h + linear(np.concatenate(heads, -1), p + "self_attn.out_proj")
        if not pre_norm:
            h = ln(h, p + "self_attn_layer_norm")
        f = linear(ln(h, p + "final_layer_norm") if pre_norm else h, p + "fc1")
        h = h + linear((np.abs(f) + f) / 2, p + "fc2")
        if not pre_norm:
            h = ln(h, p + "final_layer_norm")
    if M["pre_norm"]:
        h = ln(h, "decoder.final_layer_norm")
    out = []
    for tp in batch["target_pos"]:
        s = max(i for i in range(n_seq) if ss[i] <= tp)
        y = h[s, tp - ss[s]]
        if M["project"]:
            y = np.einsum("od,d->o", w["decoder.project_out.weight"], y)
        out.append(w["lm_head.weight"] @ y)
    return np.stack(out)


# --------------------------------------------------------------------------- cases

CASES = [
    # opt-125m's block: pre-norm, ReLU, biases, positions offset by 2, tied; "model." names; F32
    dict(name="opt_l2_h4_d32_tied_f32", seed=3401, n_layer=2, H=4, d=32, F=96, vocab_size=70,
         npos=40, dtype="F32", shards=1, tied=True, bias=True, prefix="model.", n_prompt=4,
         seqs=[("soft_front", 14, "gen"), ("soft_mid", 9, "cls"), ("hard", 6, "gen")]),
    # enable_bias false, an untied lm_head, older "decoder." names, behind a key/value prefix of 3
    # (positions continue at 3 + 2); BF16, 2 shards
    dict(name="opt_l3_h2_d24_nobias_untied_kvprefix3_sharded2_bf16", seed=3502, n_layer=3, H=2,
         d=24, F=64, vocab_size=60, npos=32, dtype="BF16", shards=2, tied=False, bias=False,
         prefix="", n_prompt=3, n_kv=3,
         seqs=[("soft_front", 12, "gen"), ("soft_mid_repeat", 15, "gen")]),
    # opt-350m's form: do_layer_norm_before false (norms after the residual adds, no final norm)
    # and word_embed_proj_dim 16 under hidden_size 32 (project_in / project_out, the embeddings,
    # the tied head and the prompt 16 wide); "model." names; F32
    dict(name="opt_l2_h4_d32_e16_postnorm_tied_f32", seed=3603, n_layer=2, H=4, d=32, e=16,
         post=True, F=80, vocab_size=70, npos=40, dtype="F32", shards=1, tied=True, bias=True,
         prefix="model.", n_prompt=4,
         seqs=[("soft_front", 14, "gen"), ("soft_mid", 9, "cls"), ("hard", 6, "gen")]),
    # the same behind a key/value prefix of 3 (kv rows d wide, the prompt e wide), untied head
    # [V, e], no biases, F16
    dict(name="opt_l3_h2_d24_e12_postnorm_nobias_untied_kvprefix3_f16", seed=3704, n_layer=3,
         H=2, d=24, e=12, post=True, F=64, vocab_size=60, npos=32, dtype="F16", shards=1,
         tied=False, bias=False, prefix="", n_prompt=3, n_kv=3,
         seqs=[("soft_front", 12, "gen"), ("soft_mid_repeat", 15, "gen")]),
    # post-norm without projections; pre-norm with them (no published checkpoint has either,
    # but OPTConfig allows both)
    dict(name="opt_l2_h2_d16_postnorm_tied_f32", seed=3805, n_layer=2, H=2, d=16, post=True,
         F=48, vocab_size=50, npos=24, dtype="F32", shards=1, tied=True, bias=True, prefix="",
         n_prompt=2, seqs=[("soft_front", 10, "gen"), ("soft_mid", 8, "cls")]),
    dict(name="opt_l2_h2_d16_e24_prenorm_tied_sharded2_f32", seed=3906, n_layer=2, H=2, d=16,
         e=24, F=48, vocab_size=50, npos=24, dtype="F32", shards=2, tied=True, bias=True,
         prefix="model.", n_prompt=3, seqs=[("soft_front", 11, "gen"), ("soft_mid", 9, "cls")]),
]


def generate_case(outdir, case):
    c = dict(case, V=case["vocab_size"])
    ref_case.write(outdir, case, "tests/ref/opt_reference.py",
                   model=lambda cdir, rng: write_model(cdir, c, opt_tensor_list(rng, c)),
                   read=read_model, forward=torch_batch, second_way=numpy_batch_logits,
                   d=c.get("e", c["d"]), kv_dim=c["d"])


def main():
    return ref_cli.run(__doc__, CASES, generate_case)


if __name__ == "__main__":
    sys.exit(main())
