"""Independent float64 reference for Hugging Face Llama / Qwen2 / Mistral / Qwen3 prompt tuning.

The companion of gpt2_reference.py (same case layout: model directory in Hugging Face format,
batch.json, expected.safetensors with prompt, loss_mean, loss_sum, target_logits, target_loss,
grad_mean; with a per-layer key/value prefix also kv_prefix and kv_prefix_grad_mean), for
LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM and Qwen3ForCausalLM as transformers
defines them:

    h = embed_tokens[id] (or the soft prompt row; no position embedding)
    per layer:  a = RMSNorm(h) = w * h / sqrt(mean(h^2) + eps)
                q, k, v = a Wq^T (+bq), a Wk^T (+bk), a Wv^T (+bv)     nn.Linear [out, in]
                Qwen3: q, k = RMSNorm_q(q), RMSNorm_k(k), each head over its hd columns
                q, k = rotary(q), rotary(k)  rotate-half convention, position = index in sequence
                       (+ P_kv behind a key/value prefix), inv_freq = theta^(-2i/hd) with
                       rope_scaling (linear or llama3)
                key/value head of query head h = h // (H / Hkv)         (repeat_kv)
                keys: the prefix's P_kv rows (positions 0..P_kv-1, as given: PEFT's
                      past_key_values), then the sequence's; causal
                Mistral: key at position j visible to the query at position i iff
                      i - j < sliding_window (transformers' sliding_window_overlay,
                      kv_idx > q_idx - sliding_window, over cache positions: prefix rows
                      and prepended soft tokens leave the window like any token)
                h = h + softmax(q k^T / sqrt(hd) + mask) v Wo^T (+bo)
                m = RMSNorm(h);  h = h + (silu(m Wg^T) * (m Wu^T)) Wd^T
    logits = RMSNorm(h) lm_head^T   (lm_head = embed_tokens when tie_word_embeddings)

Self-checks on every invocation, as for GPT-2: everything is computed from the files as written
(read back), the forward is recomputed a second way (numpy, padded batch, explicit per-head
loops, rotary as a complex multiplication of (x_j, x_{j+hd/2}) pairs, SiLU via tanh, the window
as an explicit distance test per (query, key) pair, the q/k norms as x / rms(x) computed with
numpy's norm), and the autograd gradients (prompt, prefix) are compared with central finite
differences.

Usage: python3 tests/ref/llama_reference.py --out tests/fixtures/ref
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


def llama_tensor_list(rng, c):
    """Random parameters (float64) under HF names, in HF order."""
    L, d, V, F = c["n_layer"], c["d"], c["V"], c["F"]
    qd, kvd = c["H"] * c["hd"], c["Hkv"] * c["hd"]
    s = 0.2

    def n(*shape):
        return rng.normal(0.0, s, size=shape)

    def gain(k):  # Gemma stores the gain as an offset from 1
        return (0.0 if c["type"].startswith("gemma") else 1.0) + rng.normal(0.0, s, size=(k,))

    t = [("model.embed_tokens.weight", n(V, d))]
    for i in range(L):
        p = "model.layers.%d." % i
        t += [(p + "input_layernorm.weight", gain(d)),
              (p + "self_attn.q_proj.weight", n(qd, d)), (p + "self_attn.k_proj.weight", n(kvd, d)),
              (p + "self_attn.v_proj.weight", n(kvd, d))]
        if c["qkv_bias"]:
            t += [(p + "self_attn.q_proj.bias", n(qd)), (p + "self_attn.k_proj.bias", n(kvd)),
                  (p + "self_attn.v_proj.bias", n(kvd))]
        t += [(p + "self_attn.o_proj.weight", n(d, qd))]
        if c["o_bias"]:
            t += [(p + "self_attn.o_proj.bias", n(d))]
        if c["type"] in ("qwen3", "gemma3_text"):
            t += [(p + "self_attn.q_norm.weight", gain(c["hd"])),
                  (p + "self_attn.k_norm.weight", gain(c["hd"]))]
        if c["type"] in ("gemma2", "gemma3_text"):  # the MLP's norms, before and after it
            t += [(p + "pre_feedforward_layernorm.weight", gain(d)),
                  (p + "post_feedforward_layernorm.weight", gain(d))]
        t += [(p + "post_attention_layernorm.weight", gain(d)),
              (p + "mlp.gate_proj.weight", n(F, d)), (p + "mlp.up_proj.weight", n(F, d)),
              (p + "mlp.down_proj.weight", n(d, F))]
        if c["mlp_bias"]:
            t += [(p + "mlp.gate_proj.bias", n(F)), (p + "mlp.up_proj.bias", n(F)),
                  (p + "mlp.down_proj.bias", n(d))]
    t += [("model.norm.weight", gain(d))]
    if c["type"] == "phi3":  # q/k/v in one qkv_proj, gate and up in one gate_up_proj (rows)
        fused = {}
        for name, arr in t:
            for part, into in (("self_attn.q_proj.", "self_attn.qkv_proj."),
                               ("self_attn.k_proj.", "self_attn.qkv_proj."),
                               ("self_attn.v_proj.", "self_attn.qkv_proj."),
                               ("mlp.gate_proj.", "mlp.gate_up_proj."),
                               ("mlp.up_proj.", "mlp.gate_up_proj.")):
                if part in name:
                    fused.setdefault(name.replace(part, into), []).append(arr)
        t = [(n, a) for n, a in t if not any(k in n for k in ("q_proj", "k_proj", "v_proj",
                                                               "gate_proj", "up_proj"))]
        t += [(n, np.concatenate(parts, axis=0)) for n, parts in fused.items()]
    if not c["tied"]:
        t += [("lm_head.weight", n(V, d))]
    return t


HF_CLASS = {"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM",
            "mistral": "MistralForCausalLM", "qwen3": "Qwen3ForCausalLM",
            "gemma": "GemmaForCausalLM", "gemma2": "Gemma2ForCausalLM",
            "gemma3_text": "Gemma3ForCausalLM", "phi3": "Phi3ForCausalLM"}


def hf_config(c):
    """config.json as transformers writes it for the family of c["type"]."""
    qwen = c["type"] == "qwen2"
    cfg = {
        "architectures": [HF_CLASS[c["type"]]],
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "hidden_act": "silu",
        "hidden_size": c["d"],
        "initializer_range": 0.02,
        "intermediate_size": c["F"],
        "max_position_embeddings": c["npos"],
        "model_type": c["type"],
        "num_attention_heads": c["H"],
        "num_hidden_layers": c["n_layer"],
        "num_key_value_heads": c["Hkv"],
        "rms_norm_eps": c["eps"],
        "rope_scaling": c["rope_scaling"],
        "rope_theta": c["theta"],
        "tie_word_embeddings": c["tied"],
        "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[c["dtype"]],
        "use_cache": True,
        "vocab_size": c["V"],
    }
    if qwen:
        cfg.update({"use_sliding_window": False, "sliding_window": 4096, "max_window_layers": 28})
    elif c["type"] == "mistral":
        cfg.update({"sliding_window": c["window"]})
    elif c["type"] == "phi3":
        assert not (c["qkv_bias"] or c["o_bias"] or c["mlp_bias"])
        cfg.update({"sliding_window": c["window"], "partial_rotary_factor": c["partial"],
                    "original_max_position_embeddings": c["npos"], "resid_pdrop": 0.0,
                    "embd_pdrop": 0.0, "pad_token_id": 0})
    elif c["type"] == "gemma2":
        cfg.update({"attention_bias": c["o_bias"], "head_dim": c["hd"],
                    "hidden_activation": "gelu_pytorch_tanh", "pad_token_id": 0,
                    "attn_logit_softcapping": c["attn_cap"],
                    "final_logit_softcapping": c["logit_cap"],
                    "query_pre_attn_scalar": c["qpas"], "sliding_window": c["window"],
                    "cache_implementation": "hybrid"})
    elif c["type"] == "gemma3_text":
        cfg.update({"attention_bias": c["o_bias"], "head_dim": c["hd"],
                    "hidden_activation": "gelu_pytorch_tanh", "pad_token_id": 0,
                    "attn_logit_softcapping": c["attn_cap"],
                    "final_logit_softcapping": c["logit_cap"],
                    "query_pre_attn_scalar": c["qpas"], "sliding_window": c["window"],
                    "sliding_window_pattern": c["pattern"],
                    "rope_local_base_freq": c["local_theta"], "cache_implementation": "hybrid"})
    elif c["type"] == "gemma":
        assert not c["mlp_bias"] and c["qkv_bias"] == c["o_bias"]
        cfg.update({"attention_bias": c["o_bias"], "head_dim": c["hd"], "hidden_act": "gelu",
                    "pad_token_id": 0})
        if c.get("hidden_activation"):
            cfg["hidden_activation"] = c["hidden_activation"]
    elif c["type"] == "qwen3":
        assert not c["mlp_bias"] and c["qkv_bias"] == c["o_bias"]
        cfg.update({"attention_bias": c["o_bias"], "use_sliding_window": False,
                    "sliding_window": None, "max_window_layers": c["n_layer"],
                    "head_dim": c["hd"]})
    else:
        cfg.update({"attention_bias": c["o_bias"], "mlp_bias": c["mlp_bias"], "pretraining_tp": 1})
    if c["hd"] * c["H"] != c["d"]:
        cfg["head_dim"] = c["hd"]
    return cfg


def write_model(dirpath, c, params):
    tensors = [(name, c["dtype"], arr) for name, arr in params]
    ref_case.write_hf_model(dirpath, hf_config(c), tensors, c["shards"])


def read_model(dirpath):
    """Independent read-back: config + float64 weights as stored."""
    cfg, w = read_weights(dirpath)
    H = cfg["num_attention_heads"]
    hd = cfg.get("head_dim", cfg["hidden_size"] // H)
    if cfg.get("tie_word_embeddings", False):
        w["lm_head.weight"] = w["model.embed_tokens.weight"]
    mistral = cfg["model_type"] in ("mistral", "phi3")  # Phi-3: Mistral's sliding_window
    if cfg["model_type"] == "phi3":  # HF's split: qkv[..., :qd], [qd:qd + kvd], the rest; chunk(2)
        qd, kvd = H * hd, cfg["num_key_value_heads"] * hd
        for i in range(cfg["num_hidden_layers"]):
            p = "model.layers.%d." % i
            qkv = w.pop(p + "self_attn.qkv_proj.weight")
            w[p + "self_attn.q_proj.weight"] = qkv[:qd]
            w[p + "self_attn.k_proj.weight"] = qkv[qd:qd + kvd]
            w[p + "self_attn.v_proj.weight"] = qkv[qd + kvd:]
            gu = w.pop(p + "mlp.gate_up_proj.weight")
            F = gu.shape[0] // 2
            w[p + "mlp.gate_proj.weight"], w[p + "mlp.up_proj.weight"] = gu[:F], gu[F:]
    rot = int(hd * cfg.get("partial_rotary_factor", 1.0))
    gemma3 = cfg["model_type"] == "gemma3_text"
    gemma2 = cfg["model_type"] == "gemma2" or gemma3  # Gemma 3 keeps Gemma 2's block
    gemma = cfg["model_type"] in ("gemma", "gemma2", "gemma3_text")
    L = cfg["num_hidden_layers"]
    if gemma3:  # layer_types: sliding unless (layer + 1) % sliding_window_pattern == 0
        windows = [cfg["sliding_window"] if (i + 1) % cfg["sliding_window_pattern"] else None
                   for i in range(L)]
    elif gemma2:  # every other layer from the first has the window (is_sliding = not layer % 2)
        windows = [cfg["sliding_window"] if i % 2 == 0 else None for i in range(L)]
    else:
        windows = [cfg.get("sliding_window") if mistral else None] * L
    # Gemma: normalizer = torch.tensor(hidden_size ** 0.5, dtype=the embeddings' dtype)
    emb_dtype = {"float32": torch.float32, "float16": torch.float16,
                 "bfloat16": torch.bfloat16}[cfg["torch_dtype"]]
    scale = float(torch.tensor(cfg["hidden_size"] ** 0.5, dtype=emb_dtype)) if gemma else 1.0
    return {"L": cfg["num_hidden_layers"], "d": cfg["hidden_size"], "H": H,
            "Hkv": cfg.get("num_key_value_heads", H), "hd": hd, "eps": cfg["rms_norm_eps"],
            "inv_freq": inv_freq(cfg, rot), "rot": rot, "w": w,
            "windows": windows, "qk_norm": cfg["model_type"] in ("qwen3", "gemma3_text"),
            "gemma": gemma,
            # Gemma 3: sliding layers rotate with rope_local_base_freq, no rope_scaling
            "inv_freq_local": (1.0 / cfg["rope_local_base_freq"]
                               ** (np.arange(0, hd, 2, dtype=np.float64) / hd)) if gemma3 else None,
            "embed_scale": scale, "sandwich": gemma2,
            # Gemma 3 scales inside its embedding module (Gemma3TextScaledWordEmbedding), before
            # PEFT's prompt rows join: those are not scaled; Gemma 1, 2 scale inputs_embeds
            "scale_prompt": gemma and not gemma3,
            "attn_cap": cfg.get("attn_logit_softcapping") if gemma2 else None,
            "logit_cap": cfg.get("final_logit_softcapping") if gemma2 else None,
            "scaling": cfg["query_pre_attn_scalar"] ** -0.5 if gemma2 else None}


def inv_freq(cfg, hd):
    """HF's rotary frequencies with rope_scaling (default, linear, llama3), in float64, over hd
    columns (Phi-3's partial_rotary_factor: fewer than head_dim)."""
    base = cfg.get("rope_theta", 10000.0)
    f = 1.0 / base ** (np.arange(0, hd, 2, dtype=np.float64) / hd)
    rs = cfg.get("rope_scaling")
    if not rs:
        return f
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return f / rs["factor"]
    assert kind == "llama3", kind
    factor, lo, hi = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    orig = rs["original_max_position_embeddings"]
    wavelen = 2 * math.pi / f
    out = np.where(wavelen > orig / lo, f / factor, f)
    smooth = (orig / wavelen - lo) / (hi - lo)
    mid = (1 - smooth) * out / factor + smooth * out
    is_mid = (wavelen >= orig / hi) & (wavelen <= orig / lo)
    return np.where(is_mid, mid, out)


# --------------------------------------------------------------------------- forward, way 1 (torch)


def _rms(x, g, eps):
    return g * (x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps))


def _norm(M, x, g):
    """The family's RMSNorm: Gemma multiplies by (1 + w)."""
    return _rms(x, 1.0 + g if M["gemma"] else g, M["eps"])


def _rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat([-x[..., h:], x[..., :h]], dim=-1)


def visible(Pkv, T, window):
    """[T, Pkv + T] bool: key j (prefix rows first, key j at position j) visible to query i (at
    position Pkv + i): causal and, with a window, Pkv + i - j < window."""
    qpos = torch.arange(T)[:, None] + Pkv
    kpos = torch.arange(Pkv + T)[None, :]
    ok = kpos <= qpos
    if window is not None:
        ok = ok & (kpos > qpos - window)
    return ok


def torch_seq_logits(M, W, tokens, prompt, prefix=None):
    """Logits [T, V] of one sequence; tokens: ids (>= 0) or soft tokens (-1-k); prefix: None or
    [L, 2, Pkv, Hkv * hd] keys and values every position attends to first."""
    H, Hkv, hd, eps = M["H"], M["Hkv"], M["hd"], M["eps"]
    T = len(tokens)
    Pkv = 0 if prefix is None else prefix.shape[2]
    # Gemma: inputs_embeds times the normalizer (Gemma 3: the token rows only, see scale_prompt)
    ps = M["embed_scale"] if M["scale_prompt"] else 1.0
    h = torch.stack([prompt[-1 - t] * ps if t < 0
                     else W["model.embed_tokens.weight"][t] * M["embed_scale"] for t in tokens])
    rot = M["rot"]

    def cos_sin(inv_freq):  # [T, rot] each
        freqs = torch.outer(torch.arange(Pkv, Pkv + T, dtype=torch.float64),
                            torch.from_numpy(inv_freq))
        emb = torch.cat([freqs, freqs], dim=-1)
        return emb.cos(), emb.sin()
    rope_global = cos_sin(M["inv_freq"])
    rope_local = cos_sin(M["inv_freq_local"]) if M["inv_freq_local"] is not None else rope_global

    def lin(x, name):
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    for i in range(M["L"]):
        p = "model.layers.%d." % i
        a = _norm(M, h, W[p + "input_layernorm.weight"])
        q = lin(a, p + "self_attn.q_proj").view(T, H, hd).transpose(0, 1)
        k = lin(a, p + "self_attn.k_proj").view(T, Hkv, hd).transpose(0, 1)
        v = lin(a, p + "self_attn.v_proj").view(T, Hkv, hd).transpose(0, 1)
        if M["qk_norm"]:  # Qwen3, Gemma 3: RMSNorm of each head before the rotary embedding
            q = _norm(M, q, W[p + "self_attn.q_norm.weight"])
            k = _norm(M, k, W[p + "self_attn.k_norm.weight"])
        cos, sin = rope_local if M["windows"][i] is not None else rope_global
        if rot == hd:
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
        else:  # Phi-3's partial_rotary_factor: the first rot columns turn, the rest pass
            q = torch.cat([q[..., :rot] * cos + _rotate_half(q[..., :rot]) * sin, q[..., rot:]], -1)
            k = torch.cat([k[..., :rot] * cos + _rotate_half(k[..., :rot]) * sin, k[..., rot:]], -1)
        if Pkv:  # the prefix's keys and values, as given (not rotated)
            k = torch.cat([prefix[i, 0].view(Pkv, Hkv, hd).transpose(0, 1), k], dim=1)
            v = torch.cat([prefix[i, 1].view(Pkv, Hkv, hd).transpose(0, 1), v], dim=1)
        k = k.repeat_interleave(H // Hkv, dim=0)  # repeat_kv
        v = v.repeat_interleave(H // Hkv, dim=0)
        if M["scaling"] is None:
            s = q @ k.transpose(-1, -2) / math.sqrt(hd)
        else:  # Gemma 2: query_pre_attn_scalar ** -0.5
            s = q @ k.transpose(-1, -2) * M["scaling"]
        if M["attn_cap"]:  # Gemma 2: attn_logit_softcapping
            s = torch.tanh(s / M["attn_cap"]) * M["attn_cap"]
        s = s.masked_fill(~visible(Pkv, T, M["windows"][i]), float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(T, H * hd)
        o = lin(o, p + "self_attn.o_proj")
        if M["sandwich"]:  # Gemma 2: post_attention_layernorm after attention
            h = h + _norm(M, o, W[p + "post_attention_layernorm.weight"])
            m = _norm(M, h, W[p + "pre_feedforward_layernorm.weight"])
        else:
            h = h + o
            m = _norm(M, h, W[p + "post_attention_layernorm.weight"])
        g = lin(m, p + "mlp.gate_proj")
        act = (torch.nn.functional.gelu(g, approximate="tanh") if M["gemma"]
               else torch.nn.functional.silu(g))
        f = lin(act * lin(m, p + "mlp.up_proj"), p + "mlp.down_proj")
        h = h + (_norm(M, f, W[p + "post_feedforward_layernorm.weight"]) if M["sandwich"] else f)
    logits = _norm(M, h, W["model.norm.weight"]) @ W["lm_head.weight"].T
    if M["logit_cap"]:  # Gemma 2: final_logit_softcapping
        logits = torch.tanh(logits / M["logit_cap"]) * M["logit_cap"]
    return logits


def torch_batch(M, W, batch, prompt, prefix=None):
    ss, toks = batch["seq_start"], batch["tokens"]
    logits = torch.cat([torch_seq_logits(M, W, toks[ss[s]:ss[s + 1]], prompt, prefix)
                        for s in range(len(ss) - 1)])[torch.tensor(batch["target_pos"])]
    tids = batch["target_ids"]
    ce = torch.logsumexp(logits, -1) - logits[torch.arange(len(tids)), torch.tensor(tids)]
    return logits, ce


# --------------------------------------------------------------------------- forward, way 2 (numpy)


def numpy_batch_logits(M, batch, prompt, prefix=None):
    """Padded batch [n_seq, Tmax] with a key mask, per-head loops, rotary as complex products,
    the window and causality tested pair by pair on positions."""
    w, H, Hkv, hd, eps = M["w"], M["H"], M["Hkv"], M["hd"], M["eps"]
    Pkv = 0 if prefix is None else prefix.shape[2]
    ss, toks = batch["seq_start"], batch["tokens"]
    n_seq = len(ss) - 1
    lens = [ss[s + 1] - ss[s] for s in range(n_seq)]
    Tm, d = max(lens), M["d"]
    x = np.zeros((n_seq, Tm, d))
    valid = np.zeros((n_seq, Tm), dtype=bool)
    for s in range(n_seq):
        for t in range(lens[s]):
            tok = toks[ss[s] + t]
            x[s, t] = prompt[-1 - tok] * (M["embed_scale"] if M["scale_prompt"] else 1.0) \
                if tok < 0 else w["model.embed_tokens.weight"][tok] * M["embed_scale"]
            valid[s, t] = True
    def allowed_of(window):  # [n_seq, Tm, Pkv + Tm]: keys are the prefix rows, then the text's
        allowed = np.zeros((n_seq, Tm, Pkv + Tm), dtype=bool)
        for s in range(n_seq):
            for i in range(lens[s]):
                for j in range(Pkv + lens[s]):
                    dist = (Pkv + i) - j  # query and key positions
                    allowed[s, i, j] = dist >= 0 and (window is None or dist < window)
            allowed[s, lens[s]:, 0] = True  # padding rows: finite, never read
        return allowed
    rot_global = np.exp(1j * np.outer(np.arange(Pkv, Pkv + Tm), M["inv_freq"]))  # [Tm, hd/2]
    rot_local = (np.exp(1j * np.outer(np.arange(Pkv, Pkv + Tm), M["inv_freq_local"]))
                 if M["inv_freq_local"] is not None else rot_global)

    def rms(z, g):  # Gemma: the stored gain is an offset, added to 1
        return z / np.sqrt(np.mean(z * z, -1, keepdims=True) + eps) * ((1 + g) if M["gemma"] else g)

    def linear(z, name):
        y = np.einsum("sti,oi->sto", z, w[name + ".weight"])
        return y + w[name + ".bias"] if name + ".bias" in w else y

    r = M["rot"]

    def rotary(z, rot):  # z [n_seq, Tm, hd]: pairs (j, j + r/2), j < r/2, as complex numbers
        c = (z[..., :r // 2] + 1j * z[..., r // 2:r]) * rot[None]
        return np.concatenate([c.real, c.imag, z[..., r:]], axis=-1)

    def head_norm(z, g):  # z [n_seq, Tm, hd] / (|z| / sqrt(hd)), with eps; Gemma: (1 + g)
        r = np.linalg.norm(z, axis=-1, keepdims=True) / np.sqrt(hd)
        return z / np.sqrt(r * r + eps) * ((1 + g) if M["gemma"] else g)

    def with_prefix(z, i, kv, g):  # [n_seq, Pkv + Tm, hd]: the prefix's rows of head g first
        if not Pkv:
            return z
        rows = np.broadcast_to(prefix[i, kv][:, g * hd:(g + 1) * hd], (n_seq, Pkv, hd))
        return np.concatenate([rows, z], axis=1)

    h = x
    for i in range(M["L"]):
        p = "model.layers.%d." % i
        a = rms(h, w[p + "input_layernorm.weight"])
        q, k, v = (linear(a, p + "self_attn.%s_proj" % n) for n in "qkv")
        allowed = allowed_of(M["windows"][i])
        scale = 1 / np.sqrt(hd) if M["scaling"] is None else M["scaling"]
        heads = []
        for hh in range(H):
            g = hh // (H // Hkv)
            qh, kh = q[..., hh * hd:(hh + 1) * hd], k[..., g * hd:(g + 1) * hd]
            if M["qk_norm"]:
                qh = head_norm(qh, w[p + "self_attn.q_norm.weight"])
                kh = head_norm(kh, w[p + "self_attn.k_norm.weight"])
            rot = rot_local if M["windows"][i] is not None else rot_global
            qh, kh = rotary(qh, rot), with_prefix(rotary(kh, rot), i, 0, g)
            vh = with_prefix(v[..., g * hd:(g + 1) * hd], i, 1, g)
            raw = np.einsum("sie,sje->sij", qh, kh) * scale
            if M["attn_cap"]:  # cap tanh(x / cap) as cap (1 - 2 / (exp(2x / cap) + 1))
                raw = M["attn_cap"] * (1 - 2 / (np.exp(2 * raw / M["attn_cap"]) + 1))
            sc = np.where(allowed, raw, -np.inf)
            pr = np.exp(sc - sc.max(-1, keepdims=True))
            heads.append(np.einsum("sij,sje->sie", pr / pr.sum(-1, keepdims=True), vh))
        o = linear(np.concatenate(heads, -1), p + "self_attn.o_proj")
        if M["sandwich"]:
            h = h + rms(o, w[p + "post_attention_layernorm.weight"])
            m = rms(h, w[p + "pre_feedforward_layernorm.weight"])
        else:
            h = h + o
            m = rms(h, w[p + "post_attention_layernorm.weight"])
        gt = linear(m, p + "mlp.gate_proj")
        if M["gemma"]:  # tanh GELU as x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3)
            u = np.sqrt(2 / np.pi) * (gt + 0.044715 * gt ** 3)
            act = gt / (1 + np.exp(-2 * u))
        else:
            act = gt * 0.5 * (1 + np.tanh(gt / 2))  # x * sigmoid(x)
        f = linear(act * linear(m, p + "mlp.up_proj"), p + "mlp.down_proj")
        h = h + (rms(f, w[p + "post_feedforward_layernorm.weight"]) if M["sandwich"] else f)
    h = rms(h, w["model.norm.weight"])
    out = []
    for tp in batch["target_pos"]:
        s = max(i for i in range(n_seq) if ss[i] <= tp)
        out.append(w["lm_head.weight"] @ h[s, tp - ss[s]])
    out = np.stack(out)
    if M["logit_cap"]:
        out = M["logit_cap"] * (1 - 2 / (np.exp(2 * out / M["logit_cap"]) + 1))
    return out


# --------------------------------------------------------------------------- cases

LLAMA3_SCALING = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 256}
CASES = [
    # GQA ratio 1, untied, F32
    dict(name="llama_l2_h4_kv4_d32_f32", seed=1101, type="llama", n_layer=2, H=4, Hkv=4, d=32,
         hd=8, F=48, vocab_size=70, npos=64, dtype="F32", shards=1, tied=False, qkv_bias=False,
         o_bias=False, mlp_bias=False, theta=10000.0, rope_scaling=None, n_prompt=4,
         seqs=[("soft_front", 14, "gen"), ("soft_mid", 9, "cls"), ("soft_front", 6, "cls")]),
    # GQA ratio 2, untied, BF16
    dict(name="llama_l2_h4_kv2_d32_bf16", seed=1202, type="llama", n_layer=2, H=4, Hkv=2, d=32,
         hd=8, F=64, vocab_size=90, npos=48, dtype="BF16", shards=1, tied=False, qkv_bias=False,
         o_bias=False, mlp_bias=False, theta=10000.0, rope_scaling=None, n_prompt=5,
         seqs=[("soft_mid_repeat", 16, "gen"), ("soft_front", 20, "cls")]),
    # GQA ratio 4, tied, Llama 3 rope scaling (all three frequency bands occur), F32, 3 shards
    dict(name="llama_l3_h8_kv2_d64_llama3rope_tied_sharded3_f32", seed=1303, type="llama",
         n_layer=3, H=8, Hkv=2, d=64, hd=8, F=96, vocab_size=80, npos=300, dtype="F32", shards=3,
         tied=True, qkv_bias=False, o_bias=False, mlp_bias=False, theta=500000.0,
         rope_scaling=LLAMA3_SCALING, n_prompt=3, n_unused=1,
         seqs=[("soft_front", 40, "gen"), ("hard", 7, "gen"), ("soft_mid", 25, "cls")]),
    # Qwen2: q/k/v biases, GQA ratio 2, tied, F16
    dict(name="qwen2_l2_h4_kv2_d32_bias_tied_f16", seed=1404, type="qwen2", n_layer=2, H=4, Hkv=2,
         d=32, hd=8, F=80, vocab_size=64, npos=40, dtype="F16", shards=1, tied=True,
         qkv_bias=True, o_bias=False, mlp_bias=False, theta=1000000.0, rope_scaling=None,
         n_prompt=4, seqs=[("soft_front", 12, "gen"), ("soft_mid", 17, "cls"),
                           ("soft_mid_repeat", 10, "gen")]),
    # head_dim != hidden_size / heads, attention and MLP biases, linear rope scaling, BF16, 2 shards
    dict(name="llama_l2_h4_kv1_d24_hd12_biases_linrope_sharded2_bf16", seed=1505, type="llama",
         n_layer=2, H=4, Hkv=1, d=24, hd=12, F=40, vocab_size=60, npos=32, dtype="BF16", shards=2,
         tied=False, qkv_bias=True, o_bias=True, mlp_bias=True, theta=10000.0,
         rope_scaling={"rope_type": "linear", "factor": 2.0}, n_prompt=3,
         seqs=[("soft_front", 11, "gen"), ("soft_mid", 13, "cls")]),
    # Mistral: a window of 5 over sequences of up to 20, so prepended soft tokens leave it; F32
    dict(name="mistral_l2_h4_kv2_d32_window5_f32", seed=1606, type="mistral", n_layer=2, H=4,
         Hkv=2, d=32, hd=8, F=64, vocab_size=70, npos=64, dtype="F32", shards=1, tied=False,
         qkv_bias=False, o_bias=False, mlp_bias=False, theta=10000.0, rope_scaling=None,
         window=5, n_prompt=4,
         seqs=[("soft_front", 20, "gen"), ("soft_mid", 9, "cls"), ("soft_front", 14, "cls")]),
    # Mistral behind a key/value prefix of 3 rows with a window of 6: the prefix leaves the
    # window from the text's fourth row; tied, BF16, 2 shards
    dict(name="mistral_l2_h4_kv1_d24_window6_kvprefix3_tied_sharded2_bf16", seed=1707,
         type="mistral", n_layer=2, H=4, Hkv=1, d=24, hd=6, F=48, vocab_size=60, npos=48,
         dtype="BF16", shards=2, tied=True, qkv_bias=False, o_bias=False, mlp_bias=False,
         theta=10000.0, rope_scaling=None, window=6, n_prompt=3, n_kv=3,
         seqs=[("soft_front", 12, "gen"), ("soft_mid_repeat", 15, "gen")]),
    # Mistral with sliding_window null (no window), F16
    dict(name="mistral_l2_h2_kv2_d16_nowindow_f16", seed=1808, type="mistral", n_layer=2, H=2,
         Hkv=2, d=16, hd=8, F=40, vocab_size=50, npos=32, dtype="F16", shards=1, tied=False,
         qkv_bias=False, o_bias=False, mlp_bias=False, theta=10000.0, rope_scaling=None,
         window=None, n_prompt=3, seqs=[("soft_front", 16, "gen"), ("soft_mid", 10, "cls")]),
    # Qwen3: per-head q/k RMSNorm, explicit head_dim != hidden / heads, tied, F32
    dict(name="qwen3_l2_h4_kv2_d24_hd12_tied_f32", seed=1909, type="qwen3", n_layer=2, H=4,
         Hkv=2, d=24, hd=12, F=48, vocab_size=64, npos=40, dtype="F32", shards=1, tied=True,
         qkv_bias=False, o_bias=False, mlp_bias=False, theta=1000000.0, rope_scaling=None,
         n_prompt=4, seqs=[("soft_front", 13, "gen"), ("soft_mid", 11, "cls")]),
    # Gemma: scaled inputs (sqrt(32) rounded to BF16), (1 + w) norms, GeGLU, one key/value head,
    # hidden_act "gelu" without hidden_activation (the tanh GELU), tied, BF16
    dict(name="gemma_l2_h4_kv1_d32_hd8_tied_bf16", seed=2111, type="gemma", n_layer=2, H=4,
         Hkv=1, d=32, hd=8, F=64, vocab_size=70, npos=48, dtype="BF16", shards=1, tied=True,
         qkv_bias=False, o_bias=False, mlp_bias=False, theta=10000.0, rope_scaling=None,
         n_prompt=4, seqs=[("soft_front", 14, "gen"), ("soft_mid", 10, "cls")]),
    # Gemma with attention_bias, head_dim 12 != 24 / 2, hidden_activation, behind a prefix of 2;
    # F32 (sqrt(24) rounded to float32), 2 shards, untied
    dict(name="gemma_l2_h2_kv2_d24_hd12_attnbias_kvprefix2_sharded2_f32", seed=2212,
         type="gemma", n_layer=2, H=2, Hkv=2, d=24, hd=12, F=40, vocab_size=50, npos=40,
         dtype="F32", shards=2, tied=False, qkv_bias=True, o_bias=True, mlp_bias=False,
         theta=10000.0, rope_scaling=None, hidden_activation="gelu_pytorch_tanh", n_prompt=3,
         n_kv=2, seqs=[("soft_front", 12, "gen"), ("soft_mid_repeat", 11, "gen")]),
    # Gemma 2: sandwich norms, soft-capped scores (cap 3) and logits (cap 4), both reached by the
    # random model's values, query_pre_attn_scalar 12 (not head_dim), a window of 5 in layers 0
    # and 2 over sequences of up to 16; F32, tied
    dict(name="gemma2_l3_h4_kv2_d32_hd8_softcap_window5_tied_f32", seed=2313, type="gemma2",
         n_layer=3, H=4, Hkv=2, d=32, hd=8, F=64, vocab_size=60, npos=48, dtype="F32", shards=1,
         tied=True, qkv_bias=False, o_bias=False, mlp_bias=False, theta=10000.0,
         rope_scaling=None, window=5, attn_cap=3.0, logit_cap=4.0, qpas=12, n_prompt=4,
         seqs=[("soft_front", 16, "gen"), ("soft_mid", 11, "cls")]),
    # Gemma 2 behind a key/value prefix of 3 with a window of 4 in layer 0 (the prefix leaves it),
    # attention_bias, BF16 (sqrt(24) rounded to BF16), 2 shards, untied
    dict(name="gemma2_l2_h2_kv1_d24_hd12_attnbias_kvprefix3_sharded2_bf16", seed=2414,
         type="gemma2", n_layer=2, H=2, Hkv=1, d=24, hd=12, F=40, vocab_size=50, npos=40,
         dtype="BF16", shards=2, tied=False, qkv_bias=True, o_bias=True, mlp_bias=False,
         theta=10000.0, rope_scaling=None, window=4, attn_cap=2.5, logit_cap=5.0, qpas=256,
         n_prompt=3, n_kv=3, seqs=[("soft_front", 12, "gen"), ("soft_mid_repeat", 10, "gen")]),
    # Gemma 3: (1 + w) q/k norms, windows of 5 in 2 of every 3 layers rotating with base 100
    # (rope_local_base_freq), the third with rope_theta 10000 and linear rope_scaling 2; a logit
    # cap; F32, tied
    dict(name="gemma3_l3_h4_kv2_d32_hd8_localrope_window5_tied_f32", seed=2515,
         type="gemma3_text", n_layer=3, H=4, Hkv=2, d=32, hd=8, F=64, vocab_size=60, npos=48,
         dtype="F32", shards=1, tied=True, qkv_bias=False, o_bias=False, mlp_bias=False,
         theta=10000.0, rope_scaling={"rope_type": "linear", "factor": 2.0}, window=5, pattern=3,
         local_theta=100.0, attn_cap=None, logit_cap=4.0, qpas=8, n_prompt=4,
         seqs=[("soft_front", 16, "gen"), ("soft_mid", 11, "cls")]),
    # Gemma 3 behind a key/value prefix of 2, window 4, BF16, untied, attention_bias
    dict(name="gemma3_l2_h2_kv1_d24_hd12_attnbias_kvprefix2_bf16", seed=2616,
         type="gemma3_text", n_layer=2, H=2, Hkv=1, d=24, hd=12, F=40, vocab_size=50, npos=40,
         dtype="BF16", shards=1, tied=False, qkv_bias=True, o_bias=True, mlp_bias=False,
         theta=1000000.0, rope_scaling=None, window=4, pattern=2, local_theta=10000.0,
         attn_cap=None, logit_cap=None, qpas=256, n_prompt=3, n_kv=2,
         seqs=[("soft_front", 12, "gen"), ("soft_mid_repeat", 10, "gen")]),
    # Phi-3: fused qkv_proj and gate_up_proj, partial_rotary_factor 0.75 (12 of 16 columns), a
    # window of 6 (Mistral's), GQA 2, untied, F32
    dict(name="phi3_l2_h4_kv2_d32_hd16_partial75_window6_f32", seed=2717, type="phi3",
         n_layer=2, H=4, Hkv=2, d=32, hd=16, F=48, vocab_size=64, npos=48, dtype="F32", shards=1,
         tied=False, qkv_bias=False, o_bias=False, mlp_bias=False, theta=10000.0,
         rope_scaling=None, window=6, partial=0.75, n_prompt=4,
         seqs=[("soft_front", 16, "gen"), ("soft_mid", 11, "cls")]),
    # Phi-3 as Phi-4-mini: tied, partial_rotary_factor 0.5, no window, behind a key/value prefix
    # of 3; BF16, 2 shards
    dict(name="phi3_l2_h2_kv1_d24_partial50_kvprefix3_tied_sharded2_bf16", seed=2818, type="phi3",
         n_layer=2, H=2, Hkv=1, d=24, hd=12, F=40, vocab_size=50, npos=40, dtype="BF16", shards=2,
         tied=True, qkv_bias=False, o_bias=False, mlp_bias=False, theta=10000.0,
         rope_scaling=None, window=None, partial=0.5, n_prompt=3, n_kv=3,
         seqs=[("soft_front", 12, "gen"), ("soft_mid_repeat", 10, "gen")]),
    # Qwen3 with attention_bias (q/k/v and o_proj), behind a key/value prefix of 4, BF16, 3 shards
    dict(name="qwen3_l3_h2_kv1_d32_attnbias_kvprefix4_sharded3_bf16", seed=2010, type="qwen3",
         n_layer=3, H=2, Hkv=1, d=32, hd=16, F=64, vocab_size=72, npos=48, dtype="BF16",
         shards=3, tied=False, qkv_bias=True, o_bias=True, mlp_bias=False, theta=10000.0,
         rope_scaling=None, n_prompt=3, n_kv=4,
         seqs=[("soft_front", 10, "gen"), ("soft_mid", 12, "cls"), ("hard", 6, "gen")]),
]


def generate_case(outdir, case):
    c = dict(case, V=case["vocab_size"], eps=1e-6)
    ref_case.write(outdir, case, "tests/ref/llama_reference.py",
                   model=lambda cdir, rng: write_model(cdir, c, llama_tensor_list(rng, c)),
                   read=read_model, forward=torch_batch, second_way=numpy_batch_logits, d=c["d"],
                   kv_dim=c["Hkv"] * c["hd"])


def main():
    return ref_cli.run(__doc__, CASES, generate_case)


if __name__ == "__main__":
    sys.exit(main())
