"""Float64 reference for prefix tuning as transformers + PEFT run it, and its fixtures.

For existing cases of tests/fixtures/ref (the model files, batch.json and the prompt of
expected.safetensors, left unchanged), writes prefix_expected.safetensors: the loss of the batch
and its gradients when, besides the input prompt, every layer attends to a key/value prefix of
P rows, as PEFT's PREFIX_TUNING feeds it to transformers (src/peft/peft_model.py, get_prompt):

    prompt_embeddings [P, L*2*token_dim]  (token_dim = head_dim * num_key_value_heads)
      .view(P, 2L, Hkv, hd).permute(1, 2, 0, 3)  -> [2L, Hkv, P, hd]
      layer l: key = [2l], value = [2l + 1]      (PEFT: permute([2, 0, 3, 1, 4]).split(2))
    and transformers with past_key_values of length P:
      - the text's positions are P, P+1, ...  (GPT-2: wpe[P + t]; rotary angles of P + t)
      - a prefix key is used as stored (never rotated)
      - the attention mask is ones over the prefix, causal over the text.

Two parametrizations of the prefix:
  direct    prompt_embeddings itself (prefix tuning without projection; P-tuning v2)
  encoder   PEFT's PrefixEncoder with prefix_projection: Embedding(P, token_dim) ->
            Linear(token_dim, h) -> Tanh -> Linear(h, L*2*token_dim)  (torch weights [out, in])

Tensors written (F32 inputs as fed to softprompt, F64 results):
  prefix_peft [P, L*2*kv], enc_embedding [P, kv], enc_w1 [h, kv], enc_b1 [h], enc_w2 [L*2*kv, h],
  enc_b2 [L*2*kv]; direct_loss_mean, direct_grad_prompt [n_prompt, d], direct_grad_prefix_peft;
  encoder_loss_mean, encoder_grad_prompt, encoder_grad_{embedding,w1,b1,w2,b2}.
And peft_prefix_adapter/ (adapter_model.safetensors + adapter_config.json): prefix_peft as a
PEFT PREFIX_TUNING adapter for the model, written by PEFT's layout rules (a hand-made adapter
that softprompt must read to the same loss, and that its own export must reproduce).
Self-checks: central finite differences of the loss against autograd for prefix and encoder
coordinates, and (encoder) the output fed as a direct prefix gives the same loss.

Usage: python3 tests/ref/prefix_reference.py --out tests/fixtures/ref
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gpt2_reference as g2  # noqa: E402  (same dir)
import llama_reference as ll  # noqa: E402

torch.set_num_threads(1)

# case directory, family, prefix rows P, encoder hidden size, seed
CASES = [
    ("l2_h4_d32_f16", "gpt2", 4, 6, 7001),
    ("llama_l2_h4_kv2_d32_bf16", "llama", 4, 6, 7002),                       # GQA 2:1
    ("llama_l3_h8_kv2_d64_llama3rope_tied_sharded3_f32", "llama", 3, 5, 7003),  # GQA 4:1
    ("qwen2_l2_h4_kv2_d32_bias_tied_f16", "llama", 5, 7, 7004),              # Qwen2, biases
]


def past_from_peft(pe, L, Hkv, hd):
    """PEFT's view/permute of prompt_embeddings [P, L*2*Hkv*hd]: per layer (K, V) [Hkv, P, hd]."""
    P = pe.shape[0]
    pkv = pe.view(P, 2 * L, Hkv, hd).permute(1, 2, 0, 3)
    return [(pkv[2 * l], pkv[2 * l + 1]) for l in range(L)]


def gpt2_seq_logits(M, W, tokens, prompt, past):
    d, H, eps = M["d"], M["H"], M["eps"]
    hd, T, P = d // H, len(tokens), past[0][0].shape[1]
    rows = [prompt[-1 - t] if t < 0 else W["wte.weight"][t] for t in tokens]
    h = torch.stack(rows) + W["wpe.weight"][P:P + T]
    allowed = torch.cat([torch.ones(T, P, dtype=torch.bool),
                         torch.tril(torch.ones(T, T, dtype=torch.bool))], dim=1)
    for i in range(M["L"]):
        p = "h.%d." % i
        a = g2._ln(h, W[p + "ln_1.weight"], W[p + "ln_1.bias"], eps)
        q, k, v = (a @ W[p + "attn.c_attn.weight"] + W[p + "attn.c_attn.bias"]).split(d, dim=-1)
        q, k, v = (x.view(T, H, hd).transpose(0, 1) for x in (q, k, v))
        k = torch.cat([past[i][0], k], dim=1)
        v = torch.cat([past[i][1], v], dim=1)
        s = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~allowed, float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(T, d)
        h = h + o @ W[p + "attn.c_proj.weight"] + W[p + "attn.c_proj.bias"]
        m = g2._ln(h, W[p + "ln_2.weight"], W[p + "ln_2.bias"], eps)
        m = g2._gelu_new(m @ W[p + "mlp.c_fc.weight"] + W[p + "mlp.c_fc.bias"])
        h = h + m @ W[p + "mlp.c_proj.weight"] + W[p + "mlp.c_proj.bias"]
    return g2._ln(h, W["ln_f.weight"], W["ln_f.bias"], eps) @ W["wte.weight"].T


def llama_seq_logits(M, W, tokens, prompt, past):
    H, Hkv, hd, eps = M["H"], M["Hkv"], M["hd"], M["eps"]
    T, P = len(tokens), past[0][0].shape[1]
    h = torch.stack([prompt[-1 - t] if t < 0 else W["model.embed_tokens.weight"][t]
                     for t in tokens])
    pos = torch.arange(P, P + T, dtype=torch.float64)
    freqs = torch.outer(pos, torch.from_numpy(M["inv_freq"]))
    emb = torch.cat([freqs, freqs], dim=-1)
    cos, sin = emb.cos(), emb.sin()
    allowed = torch.cat([torch.ones(T, P, dtype=torch.bool),
                         torch.tril(torch.ones(T, T, dtype=torch.bool))], dim=1)

    def lin(x, name):
        y = x @ W[name + ".weight"].T
        return y + W[name + ".bias"] if name + ".bias" in W else y

    for i in range(M["L"]):
        p = "model.layers.%d." % i
        a = ll._rms(h, W[p + "input_layernorm.weight"], eps)
        q = lin(a, p + "self_attn.q_proj").view(T, H, hd).transpose(0, 1)
        k = lin(a, p + "self_attn.k_proj").view(T, Hkv, hd).transpose(0, 1)
        v = lin(a, p + "self_attn.v_proj").view(T, Hkv, hd).transpose(0, 1)
        q = q * cos + ll._rotate_half(q) * sin
        k = k * cos + ll._rotate_half(k) * sin   # the text's keys only: the cache is stored
        k = torch.cat([past[i][0], k], dim=1).repeat_interleave(H // Hkv, dim=0)
        v = torch.cat([past[i][1], v], dim=1).repeat_interleave(H // Hkv, dim=0)
        s = (q @ k.transpose(-1, -2) / math.sqrt(hd)).masked_fill(~allowed, float("-inf"))
        o = (torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(T, H * hd)
        h = h + lin(o, p + "self_attn.o_proj")
        m = ll._rms(h, W[p + "post_attention_layernorm.weight"], eps)
        h = h + lin(torch.nn.functional.silu(lin(m, p + "mlp.gate_proj")) * lin(m, p + "mlp.up_proj"),
                    p + "mlp.down_proj")
    return ll._rms(h, W["model.norm.weight"], eps) @ W["lm_head.weight"].T


def loss_mean(fam, M, W, batch, prompt, prefix_peft):
    L = M["L"]
    Hkv, hd = (M["H"], M["d"] // M["H"]) if fam == "gpt2" else (M["Hkv"], M["hd"])
    past = past_from_peft(prefix_peft, L, Hkv, hd)
    seq = gpt2_seq_logits if fam == "gpt2" else llama_seq_logits
    ss, toks = batch["seq_start"], batch["tokens"]
    logits = torch.cat([seq(M, W, toks[ss[s]:ss[s + 1]], prompt, past)
                        for s in range(len(ss) - 1)])[torch.tensor(batch["target_pos"])]
    tids = batch["target_ids"]
    ce = torch.logsumexp(logits, -1) - logits[torch.arange(len(tids)), torch.tensor(tids)]
    return ce.sum() / len(tids)


def encoder(E, w1, b1, w2, b2):
    return torch.tanh(E @ w1.T + b1) @ w2.T + b2


def peft_rows(prefix):
    """A prefix [L, 2, P, token_dim] in PEFT's prompt_embeddings order [P, L*2*token_dim]."""
    L, _, P, t = prefix.shape
    return np.ascontiguousarray(np.asarray(prefix).transpose(2, 0, 1, 3).reshape(P, L * 2 * t))


def write_peft_adapter(adir, prefix_peft, P, L, heads, token_dim, task="CAUSAL_LM"):
    """A PREFIX_TUNING adapter as PEFT saves one for this model (get_peft_model_state_dict:
    prompt_embeddings [P, L*2*token_dim]; for GQA _prepare_prompt_learning_config writes
    token_dim = head_dim * num_key_value_heads and num_attention_heads = num_key_value_heads;
    SEQ_2_SEQ_LM (T5): num_transformer_submodules 2, still P rows)."""
    os.makedirs(adir, exist_ok=True)
    g2.st_write(os.path.join(adir, "adapter_model.safetensors"),
                [("prompt_embeddings", "F32", prefix_peft)], {"format": "pt"})
    cfg = {"auto_mapping": None, "base_model_name_or_path": None, "encoder_hidden_size": token_dim,
           "inference_mode": True, "num_attention_heads": heads, "num_layers": L,
           "num_transformer_submodules": 2 if task == "SEQ_2_SEQ_LM" else 1,
           "num_virtual_tokens": P, "peft_type": "PREFIX_TUNING",
           "prefix_projection": False, "revision": None, "task_type": task,
           "token_dim": token_dim}
    with open(os.path.join(adir, "adapter_config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def fd_check(f, x, grad, coords, what):
    worst, scale = 0.0, float(np.max(np.abs(grad)))
    for c in coords:
        xp, xm = x.copy(), x.copy()
        xp[c] += 1e-6
        xm[c] -= 1e-6
        worst = max(worst, abs((f(xp) - f(xm)) / 2e-6 - grad[c]) / scale)
    assert worst < 1e-6, (what, worst)
    return worst


def generate(outdir, name, fam, P, h, seed):
    cdir = os.path.join(outdir, name)
    M = (g2 if fam == "gpt2" else ll).read_model(cdir)
    W = {k: torch.from_numpy(v.copy()) for k, v in M["w"].items()}
    batch = json.load(open(os.path.join(cdir, "batch.json")))
    prompt32 = g2.st_read(os.path.join(cdir, "expected.safetensors"))["prompt"][1].astype(np.float32)
    L = M["L"]
    kv = M["d"] if fam == "gpt2" else M["Hkv"] * M["hd"]
    o = L * 2 * kv
    rng = np.random.default_rng(seed)
    f32 = lambda *shape, s: rng.normal(0.0, s, size=shape).astype(np.float32)  # noqa: E731
    inputs = {"prefix_peft": f32(P, o, s=0.5), "enc_embedding": f32(P, kv, s=1.0),
              "enc_w1": f32(h, kv, s=0.3), "enc_b1": f32(h, s=0.1), "enc_w2": f32(o, h, s=0.3),
              "enc_b2": f32(o, s=0.1)}
    t = {k: torch.from_numpy(v.astype(np.float64)).requires_grad_(True) for k, v in inputs.items()}
    prompt = torch.from_numpy(prompt32.astype(np.float64)).requires_grad_(True)

    direct = loss_mean(fam, M, W, batch, prompt, t["prefix_peft"])
    g_prompt, g_prefix = torch.autograd.grad(direct, [prompt, t["prefix_peft"]])
    enc_names = ["enc_embedding", "enc_w1", "enc_b1", "enc_w2", "enc_b2"]
    out = encoder(*(t[k] for k in enc_names))
    enc = loss_mean(fam, M, W, batch, prompt, out)
    g_enc = torch.autograd.grad(enc, [prompt] + [t[k] for k in enc_names])

    # self-checks: finite differences (prefix and MLP), the encoder's output as a direct prefix
    pe64 = inputs["prefix_peft"].astype(np.float64)
    p64 = prompt32.astype(np.float64)

    def f_direct(x):
        with torch.no_grad():
            return float(loss_mean(fam, M, W, batch, torch.from_numpy(p64), torch.from_numpy(x)))

    e1 = fd_check(f_direct, pe64, g_prefix.numpy(), [(0, 0), (P - 1, o - 1), (P // 2, o // 2)],
                  "prefix")
    ws = [inputs[k].astype(np.float64) for k in enc_names]

    def f_w1(x):
        with torch.no_grad():
            args = [torch.from_numpy(a) for a in ws]
            args[1] = torch.from_numpy(x)
            return float(loss_mean(fam, M, W, batch, torch.from_numpy(p64), encoder(*args)))

    e2 = fd_check(f_w1, ws[1], g_enc[2].numpy(), [(0, 0), (h - 1, kv - 1)], "w1")
    with torch.no_grad():
        again = loss_mean(fam, M, W, batch, prompt, out.detach())
    assert abs(float(again) - float(enc)) < 1e-12

    tensors = [(k, "F32", v) for k, v in inputs.items()] + [
        ("direct_loss_mean", "F64", np.array([float(direct)])),
        ("direct_grad_prompt", "F64", g_prompt.numpy()),
        ("direct_grad_prefix_peft", "F64", g_prefix.numpy()),
        ("encoder_loss_mean", "F64", np.array([float(enc)])),
        ("encoder_grad_prompt", "F64", g_enc[0].numpy())] + [
        ("encoder_grad_" + k[4:], "F64", g.numpy()) for k, g in zip(enc_names, g_enc[1:])]
    g2.st_write(os.path.join(cdir, "prefix_expected.safetensors"), tensors,
                {"generator": "tests/ref/prefix_reference.py"})
    write_peft_adapter(os.path.join(cdir, "peft_prefix_adapter"), inputs["prefix_peft"], P, L,
                       M["H"] if fam == "gpt2" else M["Hkv"], kv)
    print("%-52s P=%d h=%d direct %.10f encoder %.10f  fd rel err %.1e / %.1e"
          % (name, P, h, float(direct), float(enc), e1, e2))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="the fixtures directory (tests/fixtures/ref)")
    args = ap.parse_args()
    for case in CASES:
        generate(args.out, *case)
    return 0


if __name__ == "__main__":
    sys.exit(main())
