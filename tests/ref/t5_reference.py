"""Independent float64 reference for Hugging Face T5 (T5ForConditionalGeneration) prompt tuning.

Writes, per case, a tiny random T5ForConditionalGeneration directory in Hugging Face layout, a
packed batch (batch.json) and the expected outputs (expected.safetensors) in the format of
tests/ref/gpt2_reference.py (prompt, loss_mean, loss_sum, target_logits, target_loss,
grad_mean), read by tests/unit/test_reference.c, plus the relative position buckets of
-300..300 as transformers computes them (bidirectional and causal), read by
tests/unit/test_t5.c.

The math follows transformers' modeling_t5.py, written here from its definitions in float64
from the weights as stored (transformers is not imported):

  T5LayerNorm   x * rsqrt(mean(x^2) + eps) * w: no mean, no bias;
  attention     scores = q k^T (NOT scaled by 1/sqrt(d_kv)) + position_bias, softmax, times v,
                then o; inner width num_heads * d_kv (may differ from d_model);
  position_bias block 0's relative_attention_bias [buckets, heads] at
                _relative_position_bucket(key position - query position): bidirectional in the
                encoder, causal in the decoder (plus the causal mask), computed once and used by
                every block of the stack; the bucket arithmetic is done in float32 as
                transformers does it (relative_position.float()); none in cross-attention;
  blocks        x + SelfAttention(norm(x)); decoder: + EncDecAttention(norm(x), encoder output);
                x + DenseReluDense(norm(x)): wo(relu(wi x)) for feed_forward_proj "relu",
                wo(gelu_new(wi_0 x) * wi_1 x) for "gated-gelu" (T5Config maps it to gelu_new,
                the tanh form);
  head          final_layer_norm; with tie_word_embeddings the decoder output times
                d_model^-0.5, then lm_head (shared.weight when tied).

Soft tokens (PEFT's prompt) are rows of the encoder's inputs_embeds, wherever they sit. A
packed sequence is read as the engine reads it (src/model/t5.h): encoder input = positions up
to and including the first target; decoder_input_ids = [decoder_start_token_id] + the tokens
after the first target up to the last (HF's labels shifted right); the target at packed position
p is scored at decoder position p - first.

Greedy generation (generate.json in each case directory): for a few encoder inputs with the
float32 prompt (soft tokens first, in the middle, repeated, none), transformers'
T5ForConditionalGeneration.generate(do_sample=False) as it runs with PEFT's prompt tuning: the
encoder input once, decoder_input_ids = [decoder_start_token_id], and at every step the argmax
of the last decoder position's logits appended -- computed here WITHOUT a cache: every step runs
the encoder and the whole decoder prefix again (torch_seq_logits), so nothing is shared with the
engine's cached decoder. Written:
    {"max_new_tokens": N, "requests": [{"tokens": [...encoder input, soft tokens as -1 - k],
      "ids": [N greedy ids], "margins": [top-1 minus top-2 logit at each step],
      "logits": [[V logits] at each step]}, ...]}
tests/unit/test_t5.c runs the same requests through sp_generator (the cached decoder) and
requires identical ids up to the first step whose margin is below the float32 error, and every
step's logits within 1e-4 normwise (the cached decoder fed the reference's ids).

Self-check on every invocation: the files are read back, and the autograd gradient is compared
with central finite differences; every greedy step's logits equal, within 1e-9, the logits at
that position of the final decoder sequence run at once (the causal decoder's step-by-step and
whole-sequence logits agree).

Usage: python3 tests/ref/t5_reference.py --out tests/fixtures/ref
"""

import json
import math
import os
import shutil
import sys

import numpy as np
import ref_cli
import torch

from gpt2_reference import read_weights, st_write  # noqa: E402  (same dir)

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)

CASES = [
    # T5 1.0: ReLU, tied head (scaled by d^-0.5), d_kv = d / heads; 8 buckets up to distance 20 so
    # that short sequences reach the logarithmic buckets
    dict(name="t5_l2_h2_d24_relu_tied_b8_f32", seed=2301, n_layer=2, n_head=2, d=24, d_kv=12,
         d_ff=40, vocab_size=60, buckets=8, max_dist=20, gated=False, tied=True, dtype="F32",
         n_prompt=4, n_unused=0, start=0,
         seqs=[("soft_front", 12, 4), ("soft_mid", 15, 1), ("plain", 9, 0), ("soft_front", 7, 6)]),
    # T5 1.1 / Flan-T5: gated-GELU, untied head, d_kv * heads != d_model, 32 buckets / 128,
    # an encoder input past max_exact (8), the decoder starting with another id
    # prefix tuning as PEFT runs it on T5 (PeftModelForSeq2SeqLM, PREFIX_TUNING): past_key_values
    # of n_kv rows in every decoder layer's self-attention only (PEFT builds an EncoderDecoderCache
    # and empties its cross-attention part, so the encoder and the cross-attention are as without
    # a prefix); the decoder's positions start at n_kv (cache_position), the relative position
    # bias of key j for query i is bucket(j - (n_kv + i)), the causal mask covers the prefix
    dict(name="t5_l2_h2_d24_kv8_relu_untied_kvprefix3_f32", seed=2303, n_layer=2, n_head=2, d=24,
         d_kv=8, d_ff=40, vocab_size=60, buckets=8, max_dist=20, gated=False, tied=False,
         dtype="F32", n_prompt=3, n_unused=0, start=0, n_kv=3,
         seqs=[("soft_front", 10, 4), ("plain", 8, 1), ("soft_mid", 13, 6)]),
    dict(name="t5_l2_h4_d32_kv6_gated_untied_f16", seed=2302, n_layer=2, n_head=4, d=32, d_kv=6,
         d_ff=48, vocab_size=70, buckets=32, max_dist=128, gated=True, tied=False, dtype="F16",
         n_prompt=5, n_unused=1, start=3,
         seqs=[("soft_mid", 30, 5), ("soft_front", 11, 1), ("soft_mid_repeat", 14, 3)]),
]


def rel_bucket(rel, bidirectional, num_buckets, max_distance):
    """transformers' T5Attention._relative_position_bucket on a long tensor."""
    buckets = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rel > 0).to(torch.long) * num_buckets
        rel = torch.abs(rel)
    else:
        rel = -torch.min(rel, torch.zeros_like(rel))
    max_exact = num_buckets // 2
    is_small = rel < max_exact
    large = max_exact + (torch.log(rel.float() / max_exact) / math.log(max_distance / max_exact)
                         * (num_buckets - max_exact)).to(torch.long)
    large = torch.min(large, torch.full_like(large, num_buckets - 1))
    return buckets + torch.where(is_small, rel, large)


def position_bias(table, tq, tk, bidirectional, buckets, max_dist, offset=0):
    """[H, tq, tk] from the [buckets, H] table; query i at position offset + i (a prefix's rows
    before it: transformers' compute_bias with cache_position), key j at j."""
    ctx = offset + torch.arange(tq, dtype=torch.long)[:, None]
    mem = torch.arange(tk, dtype=torch.long)[None, :]
    b = rel_bucket(mem - ctx, bidirectional, buckets, max_dist)
    return table[b].permute(2, 0, 1)


def tensor_list(rng, c):
    d, F, V, H, kv = c["d"], c["d_ff"], c["vocab_size"], c["n_head"], c["d_kv"]
    inner = H * kv

    def n(*shape):
        return rng.normal(0.0, 0.3, size=shape)

    def gain():
        return 1.0 + rng.normal(0.0, 0.2, size=(d,))

    def attn(pre):
        return [(pre + ".q.weight", n(inner, d)), (pre + ".k.weight", n(inner, d)),
                (pre + ".v.weight", n(inner, d)), (pre + ".o.weight", n(d, inner))]

    def ff(pre):
        if c["gated"]:
            t = [(pre + "DenseReluDense.wi_0.weight", n(F, d)),
                 (pre + "DenseReluDense.wi_1.weight", n(F, d))]
        else:
            t = [(pre + "DenseReluDense.wi.weight", n(F, d))]
        return t + [(pre + "DenseReluDense.wo.weight", n(d, F)), (pre + "layer_norm.weight", gain())]

    t = [("shared.weight", n(V, d))]
    for stack in ("encoder", "decoder"):
        for i in range(c["n_layer"]):
            b = "%s.block.%d.layer." % (stack, i)
            t += attn(b + "0.SelfAttention")
            if i == 0:
                t += [(b + "0.SelfAttention.relative_attention_bias.weight",
                       rng.normal(0.0, 1.0, size=(c["buckets"], H)))]
            t += [(b + "0.layer_norm.weight", gain())]
            if stack == "decoder":
                t += attn(b + "1.EncDecAttention") + [(b + "1.layer_norm.weight", gain())]
            t += ff(b + ("2." if stack == "decoder" else "1."))
        t += [(stack + ".final_layer_norm.weight", gain())]
    if not c["tied"]:
        t += [("lm_head.weight", n(V, d))]
    return t


def hf_config(c):
    return {"architectures": ["T5ForConditionalGeneration"], "d_ff": c["d_ff"], "d_kv": c["d_kv"],
            "d_model": c["d"], "decoder_start_token_id": c["start"],
            "dense_act_fn": "gelu_new" if c["gated"] else "relu", "dropout_rate": 0.1,
            "eos_token_id": 1, "feed_forward_proj": "gated-gelu" if c["gated"] else "relu",
            "initializer_factor": 1.0, "is_encoder_decoder": True, "is_gated_act": c["gated"],
            "layer_norm_epsilon": 1e-6, "model_type": "t5", "n_positions": 512,
            "num_decoder_layers": c["n_layer"], "num_heads": c["n_head"],
            "num_layers": c["n_layer"], "pad_token_id": 0,
            "relative_attention_max_distance": c["max_dist"],
            "relative_attention_num_buckets": c["buckets"],
            "tie_word_embeddings": c["tied"],
            "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[c["dtype"]],
            "use_cache": True, "vocab_size": c["vocab_size"]}


def make_batch(rng, c):
    """Per sequence: an encoder input of T tokens (soft tokens front, middle, twice, or none),
    then the first k - 1 of k target tokens (the decoder's input after its start token); the
    targets at the encoder's last position and after it; k = 0: no targets (skipped)."""
    P, V = c["n_prompt"] - c["n_unused"], c["vocab_size"]
    tokens, seq_start, tpos, tids = [], [0], [], []
    for kind, T, k in c["seqs"]:
        enc = [int(x) for x in rng.integers(2, V, size=T)]
        enc[-1] = 1  # </s>
        soft = {"soft_front": [(i, i) for i in range(min(P, T - 2))],
                "soft_mid": [(max(1, (T - P) // 2) + i, (i + 1) % P) for i in range(min(P, T - 3))],
                "soft_mid_repeat": [(1, 1), (2, 0), (T // 2, 1), (T // 2 + 1, 0)],
                "plain": []}[kind]
        for pos, j in soft:
            enc[pos] = -1 - j
        labels = [int(x) for x in rng.integers(0, V, size=k)]
        off = len(tokens)
        tokens += enc + labels[:-1] if k else enc
        seq_start.append(len(tokens))
        for j in range(k):
            if k > 3 and j == 1:
                continue  # an unscored label (HF's -100): the decoder still reads it
            tpos.append(off + T - 1 + j)
            tids.append(labels[j])
    return {"n_prompt": c["n_prompt"], "seq_start": seq_start, "tokens": tokens,
            "target_pos": tpos, "target_ids": tids}


def read_model(dirpath):
    cfg, w = read_weights(dirpath)
    return {"L": cfg["num_layers"], "d": cfg["d_model"], "H": cfg["num_heads"],
            "kv": cfg["d_kv"], "eps": cfg["layer_norm_epsilon"],
            "gated": cfg["feed_forward_proj"] == "gated-gelu",
            "tied": cfg.get("tie_word_embeddings", True), "start": cfg["decoder_start_token_id"],
            "buckets": cfg["relative_attention_num_buckets"],
            "max_dist": cfg["relative_attention_max_distance"], "w": w}


def _norm(x, g, eps):
    return x * torch.rsqrt((x * x).mean(-1, keepdim=True) + eps) * g


def _gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))


def _attention(M, W, pre, h, kv_states, bias, mask=None, past=None):
    """past: (keys, values) [n, H * kv] of a prefix, before the projected rows (PEFT's
    past_key_values)."""
    H, kv = M["H"], M["kv"]
    tq = h.shape[0]
    q = (h @ W[pre + ".q.weight"].T).view(tq, H, kv).transpose(0, 1)
    k = kv_states @ W[pre + ".k.weight"].T
    if past is not None:
        k = torch.cat([past[0], k])
    tk = k.shape[0]
    k = k.view(tk, H, kv).transpose(0, 1)
    v = kv_states @ W[pre + ".v.weight"].T
    if past is not None:
        v = torch.cat([past[1], v])
    v = v.view(tk, H, kv).transpose(0, 1)
    s = q @ k.transpose(1, 2)  # no 1/sqrt(d_kv)
    if bias is not None:
        s = s + bias
    if mask is not None:
        s = s.masked_fill(mask, float("-inf"))
    ctx = (torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(tq, H * kv)
    return ctx @ W[pre + ".o.weight"].T


def _ff(M, W, pre, h):
    if M["gated"]:
        a = _gelu_new(h @ W[pre + "DenseReluDense.wi_0.weight"].T) * \
            (h @ W[pre + "DenseReluDense.wi_1.weight"].T)
    else:
        a = torch.relu(h @ W[pre + "DenseReluDense.wi.weight"].T)
    return a @ W[pre + "DenseReluDense.wo.weight"].T


def torch_seq_logits(M, W, enc_tokens, dec_ids, prompt, prefix=None):
    """prefix: [L, 2, n, H * kv] keys and values before each decoder layer's self-attention."""
    eps, L = M["eps"], M["L"]
    E = W["shared.weight"]
    x = torch.stack([prompt[-1 - t] if t < 0 else E[t] for t in enc_tokens])
    te, td = len(enc_tokens), len(dec_ids)
    bias = position_bias(W["encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
                         te, te, True, M["buckets"], M["max_dist"])
    for i in range(L):
        b = "encoder.block.%d.layer." % i
        x = x + _attention(M, W, b + "0.SelfAttention",
                           _norm(x, W[b + "0.layer_norm.weight"], eps),
                           _norm(x, W[b + "0.layer_norm.weight"], eps), bias)
        x = x + _ff(M, W, b + "1.", _norm(x, W[b + "1.layer_norm.weight"], eps))
    enc = _norm(x, W["encoder.final_layer_norm.weight"], eps)
    y = E[torch.tensor(dec_ids)]
    n = 0 if prefix is None else prefix.shape[2]
    dbias = position_bias(W["decoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight"],
                          td, n + td, False, M["buckets"], M["max_dist"], offset=n)
    causal = torch.triu(torch.ones(td, n + td, dtype=torch.bool), diagonal=1 + n)
    for i in range(L):
        b = "decoder.block.%d.layer." % i
        h = _norm(y, W[b + "0.layer_norm.weight"], eps)
        past = None if prefix is None else (prefix[i, 0], prefix[i, 1])
        y = y + _attention(M, W, b + "0.SelfAttention", h, h, dbias, causal, past)
        y = y + _attention(M, W, b + "1.EncDecAttention",
                           _norm(y, W[b + "1.layer_norm.weight"], eps), enc, None)
        y = y + _ff(M, W, b + "2.", _norm(y, W[b + "2.layer_norm.weight"], eps))
    y = _norm(y, W["decoder.final_layer_norm.weight"], eps)
    if M["tied"]:
        return (y * M["d"] ** -0.5) @ E.T
    return y @ W["lm_head.weight"].T


def torch_batch(M, W, batch, prompt, prefix=None):
    logits, ce = [], []
    s, tp, ti = batch["seq_start"], batch["target_pos"], batch["target_ids"]
    toks = batch["tokens"]
    for a, b in zip(s, s[1:]):
        js = [j for j, p in enumerate(tp) if a <= p < b]
        if not js:
            continue
        first, last = tp[js[0]], tp[js[-1]]
        dec_ids = [M["start"]] + toks[first + 1:last + 1]
        lg = torch_seq_logits(M, W, toks[a:first + 1], dec_ids, prompt, prefix)
        for j in js:
            row = lg[tp[j] - first]
            logits.append(row)
            ce.append(torch.logsumexp(row, 0) - row[ti[j]])
    return torch.stack(logits), torch.stack(ce)


GEN_MAX_NEW = 12


def gen_requests(P, V):
    """Encoder inputs ending with </s> (1): soft tokens first, in the middle, repeated, none."""
    soft = [-1 - k for k in range(P)]
    return [soft + [3 % V, 14 % V, 15 % V, 9 % V, 1],
            [26 % V, 5 % V] + soft + [35 % V, 8 % V, 1],
            soft[:2] + [9 % V] + soft + [7 % V, 1],
            [4 % V, 2 % V, 3 % V, 1]]


def greedy(M, W, enc, prompt, n, prefix=None):
    """Greedy decoding without a cache: the ids, top-2 margins and logits of every step."""
    dec, ids, margins, logits = [M["start"]], [], [], []
    with torch.no_grad():
        for _ in range(n):
            row = torch_seq_logits(M, W, enc, dec, prompt, prefix)[-1]
            top = torch.topk(row, 2).values
            nxt = int(torch.argmax(row))
            ids.append(nxt)
            margins.append(float(top[0] - top[1]))
            logits.append(row.numpy().copy())
            dec.append(nxt)
        final = torch_seq_logits(M, W, enc, dec[:-1], prompt, prefix).numpy()
    err = float(np.abs(final - np.stack(logits)).max())
    assert err < 1e-9, "step-by-step vs whole-sequence decoder logits differ by %g" % err
    return ids, margins, logits, err


def write_generate(cdir, M, W, prompt32, V, prefix32=None):
    prompt = torch.from_numpy(prompt32.astype(np.float64))
    prefix = None if prefix32 is None else torch.from_numpy(prefix32.astype(np.float64))
    out, worst = {"max_new_tokens": GEN_MAX_NEW, "requests": []}, 0.0
    for enc in gen_requests(prompt32.shape[0], V):
        ids, margins, logits, err = greedy(M, W, enc, prompt, GEN_MAX_NEW, prefix)
        worst = max(worst, err)
        out["requests"].append({"tokens": enc, "ids": ids, "margins": margins,
                                "logits": [[float(x) for x in row] for row in logits]})
    with open(os.path.join(cdir, "generate.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")
    small = min(m for r in out["requests"] for m in r["margins"])
    print("  generate: %d requests x %d tokens, smallest top-2 margin %.3g, self-check %.1e"
          % (len(out["requests"]), GEN_MAX_NEW, small, worst))


def generate_case(outdir, case):
    rng = np.random.default_rng(case["seed"])
    d, P = case["d"], case["n_prompt"]
    cdir = os.path.join(outdir, case["name"])
    if os.path.isdir(cdir):
        shutil.rmtree(cdir)
    os.makedirs(cdir)
    with open(os.path.join(cdir, "config.json"), "w") as f:
        json.dump(hf_config(case), f, indent=2)
        f.write("\n")
    st_write(os.path.join(cdir, "model.safetensors"),
             [(name, case["dtype"], arr) for name, arr in tensor_list(rng, case)], {"format": "pt"})
    prompt32 = rng.normal(0.0, 0.5, size=(P, d)).astype(np.float32)
    batch = make_batch(rng, case)
    with open(os.path.join(cdir, "batch.json"), "w") as f:
        json.dump(batch, f)
        f.write("\n")

    n_kv = case.get("n_kv", 0)
    prefix32 = (rng.normal(0.0, 0.5, size=(case["n_layer"], 2, n_kv, case["n_head"] * case["d_kv"]))
                .astype(np.float32) if n_kv else None)

    M = read_model(cdir)
    W = {k: torch.from_numpy(v.copy()) for k, v in M["w"].items()}
    prompt = torch.from_numpy(prompt32.astype(np.float64)).requires_grad_(True)
    prefix = (torch.from_numpy(prefix32.astype(np.float64)).requires_grad_(True) if n_kv
              else None)
    logits, ce = torch_batch(M, W, batch, prompt, prefix)
    n_t = len(batch["target_ids"])
    loss_sum = ce.sum()
    loss_mean = loss_sum / n_t
    grads = torch.autograd.grad(loss_mean, [prompt] + ([prefix] if n_kv else []))
    grad = grads[0].numpy()
    kv_grad = grads[1].numpy() if n_kv else None
    logits, ce = logits.detach().numpy(), ce.detach().numpy()
    p64 = prompt32.astype(np.float64)
    x64 = None if not n_kv else prefix32.astype(np.float64)

    def f(pr, px=None):
        with torch.no_grad():
            px = x64 if px is None else px
            return float(torch_batch(M, W, batch, torch.from_numpy(pr),
                                     None if px is None else torch.from_numpy(px))[1].sum()) / n_t

    used = sorted({-1 - t for t in batch["tokens"] if t < 0})
    worst, gscale, eps_fd = 0.0, np.max(np.abs(grad)), 1e-6
    for k, j in [(used[0], 0), (used[-1], d - 1), (used[len(used) // 2], d // 2)]:
        pp, pm = p64.copy(), p64.copy()
        pp[k, j] += eps_fd
        pm[k, j] -= eps_fd
        fd = (f(pp) - f(pm)) / (2 * eps_fd)
        worst = max(worst, abs(fd - grad[k, j]) / gscale)
        print("  fd check %-40s prompt[%d,%2d]: autograd %+.12e  central-diff %+.12e"
              % (case["name"], k, j, grad[k, j], fd))
    if n_kv:  # the prefix's keys and values of the first and last decoder layer
        kscale = np.max(np.abs(kv_grad))
        for c in [(0, 0, 0, 0), (case["n_layer"] - 1, 1, n_kv - 1, 3), (0, 1, 1, 5)]:
            xp, xm = x64.copy(), x64.copy()
            xp[c] += eps_fd
            xm[c] -= eps_fd
            fd = (f(p64, xp) - f(p64, xm)) / (2 * eps_fd)
            worst = max(worst, abs(fd - kv_grad[c]) / kscale)
            print("  fd check %-40s prefix%s: autograd %+.12e  central-diff %+.12e"
                  % (case["name"], c, kv_grad[c], fd))
    assert worst < 1e-6, worst
    assert all(np.all(grad[k] == 0.0) for k in range(P) if k not in used)
    extra = ([("kv_prefix", "F32", prefix32), ("kv_prefix_grad_mean", "F64", kv_grad)]
             if n_kv else [])
    rel = torch.arange(-300, 301, dtype=torch.long)
    st_write(os.path.join(cdir, "expected.safetensors"), [
        ("prompt", "F32", prompt32),
        ("loss_mean", "F64", np.array([float(loss_mean)])),
        ("loss_sum", "F64", np.array([float(loss_sum)])),
        ("target_logits", "F64", logits),
        ("target_loss", "F64", ce),
        ("grad_mean", "F64", grad),
        ("buckets_bidirectional", "F64",
         rel_bucket(rel, True, case["buckets"], case["max_dist"]).numpy().astype(np.float64)),
        ("buckets_causal", "F64",
         rel_bucket(rel, False, case["buckets"], case["max_dist"]).numpy().astype(np.float64)),
    ] + extra, {"generator": "tests/ref/t5_reference.py"})
    write_generate(cdir, M, W, prompt32, case["vocab_size"], prefix32)
    print("%-40s L=%d H=%d d=%d d_kv=%d V=%d %s %s %s tokens=%d targets=%d P=%d "
          "loss_mean=%.10f fd rel err %.1e"
          % (case["name"], M["L"], M["H"], d, case["d_kv"], case["vocab_size"], case["dtype"],
             "gated-gelu" if case["gated"] else "relu", "tied" if case["tied"] else "untied",
             len(batch["tokens"]), n_t, P, float(loss_mean), worst))


def main():
    return ref_cli.run(__doc__, CASES, generate_case)


if __name__ == "__main__":
    sys.exit(main())
