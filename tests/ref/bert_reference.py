"""Independent float64 reference for Hugging Face BERT / RoBERTa masked-LM prompt tuning.

Writes, per case, a tiny random BertForMaskedLM or RobertaForMaskedLM directory in Hugging Face
layout, a packed batch (batch.json) and the expected outputs (expected.safetensors) in the format
of tests/ref/gpt2_reference.py (prompt, loss_mean, loss_sum, target_logits, target_loss,
grad_mean), read by tests/unit/test_reference.c.

The math follows transformers' modeling_bert.py and modeling_roberta.py, written here from their
definitions in float64 from the weights as stored:

  embeddings  e = inputs_embeds + position_embeddings[pos] + token_type_embeddings[0], then
              LayerNorm(layer_norm_eps); the soft prompt is part of inputs_embeds (as PEFT passes
              it), every position has token type 0 (one sequence);
  positions   BERT: 0, 1, ...; RoBERTa: padding_idx + 1, padding_idx + 2, ... (with
              inputs_embeds transformers counts them so; with input_ids it counts non-pad tokens,
              and a packed sequence holds no pad token, so both agree); soft tokens take the
              positions of the places they occupy;
  blocks      post-LN: h = LayerNorm(x + (softmax(q k^T / sqrt(hd)) v) W_o + b_o) over every
              position of the sequence (no causal mask), then LayerNorm(h + W_2 gelu(W_1 h + b_1) +
              b_2), with the exact (erf) GELU;
  MLM head    LayerNorm(gelu(dense(x))) W_wte^T + bias (BERT cls.predictions.*, RoBERTa
              lm_head.*), at the target positions only.

Self-checks run on every invocation: the files are read back, the forward is recomputed a second
way (numpy, explicit per-head loops), and the autograd gradient is compared with central finite
differences.

Usage: python3 tests/ref/bert_reference.py --out tests/fixtures/ref
"""

import math
import sys

import numpy as np
import ref_case
import ref_cli
import torch

from gpt2_reference import read_weights  # noqa: E402  (same dir)

torch.set_num_threads(1)
torch.set_default_dtype(torch.float64)

CASES = [
    dict(name="bert_l2_h2_d24_f32", arch="bert", seed=2201, n_layer=2, n_head=2, d=24, d_ff=40,
         vocab_size=60, max_pos=32, types=2, dtype="F32", shards=1, prefix=True, pooler=True,
         n_prompt=4, n_unused=0,
         seqs=[("soft_front", 12, "cls"), ("soft_mid", 15, "gen"), ("soft_mid_repeat", 10, "cls")]),
    dict(name="bert_l3_h4_d32_noprefix_sharded2_bf16", arch="bert", seed=2202, n_layer=3,
         n_head=4, d=32, d_ff=128, vocab_size=70, max_pos=24, types=2, dtype="BF16", shards=2,
         prefix=False, pooler=False, n_prompt=5, n_unused=1,
         seqs=[("soft_mid", 24, "cls"), ("soft_front", 9, "gen")]),
    dict(name="roberta_l2_h4_d32_f32", arch="roberta", seed=2203, n_layer=2, n_head=4, d=32,
         d_ff=64, vocab_size=80, max_pos=42, types=1, dtype="F32", shards=1, prefix=True,
         pooler=True, n_prompt=6, n_unused=0,
         seqs=[("soft_front", 40, "cls"), ("soft_mid_repeat", 14, "gen"), ("soft_mid", 7, "cls")]),
    dict(name="roberta_l1_h2_d16_noprefix_f16", arch="roberta", seed=2204, n_layer=1, n_head=2,
         d=16, d_ff=64, vocab_size=50, max_pos=22, types=1, dtype="F16", shards=1, prefix=False,
         pooler=False, n_prompt=3, n_unused=0,
         seqs=[("soft_front", 20, "gen"), ("soft_mid", 11, "cls")]),
    # prefix tuning: 3 key/value rows per layer every position attends to; the text's positions
    # start after them (transformers' past_key_values_length)
    dict(name="roberta_l2_h2_d24_kvprefix3_f32", arch="roberta", seed=2205, n_layer=2, n_head=2,
         d=24, d_ff=48, vocab_size=60, max_pos=30, types=1, dtype="F32", shards=1, prefix=True,
         pooler=False, n_prompt=3, n_unused=0, n_kv=3,
         seqs=[("soft_front", 14, "cls"), ("soft_mid", 25, "gen")]),
]


def base_of(c):
    return "bert." if c["arch"] == "bert" else "roberta."


def head_names(c):
    """HF names of the MLM head: dense, LayerNorm (weight, bias), bias, decoder.bias."""
    if c["arch"] == "bert":
        p = "cls.predictions."
        return (p + "transform.dense", p + "transform.LayerNorm", p + "bias", p + "decoder.bias")
    return ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias", "lm_head.decoder.bias")


def tensor_list(rng, c):
    """(name, array) in HF's state dict order, with the base model's prefix when the case has it."""
    d, F, V = c["d"], c["d_ff"], c["vocab_size"]
    pre = base_of(c) if c["prefix"] else ""

    def n(*shape):
        return rng.normal(0.0, 0.2, size=shape)

    def gain(k):
        return 1.0 + rng.normal(0.0, 0.2, size=(k,))

    t = [(pre + "embeddings.word_embeddings.weight", n(V, d)),
         (pre + "embeddings.position_embeddings.weight", n(c["max_pos"], d)),
         (pre + "embeddings.token_type_embeddings.weight", n(c["types"], d)),
         (pre + "embeddings.LayerNorm.weight", gain(d)),
         (pre + "embeddings.LayerNorm.bias", n(d))]
    for i in range(c["n_layer"]):
        L = pre + "encoder.layer.%d." % i
        for m in ("query", "key", "value"):
            t += [(L + "attention.self.%s.weight" % m, n(d, d)),
                  (L + "attention.self.%s.bias" % m, n(d))]
        t += [(L + "attention.output.dense.weight", n(d, d)),
              (L + "attention.output.dense.bias", n(d)),
              (L + "attention.output.LayerNorm.weight", gain(d)),
              (L + "attention.output.LayerNorm.bias", n(d)),
              (L + "intermediate.dense.weight", n(F, d)), (L + "intermediate.dense.bias", n(F)),
              (L + "output.dense.weight", n(d, F)), (L + "output.dense.bias", n(d)),
              (L + "output.LayerNorm.weight", gain(d)), (L + "output.LayerNorm.bias", n(d))]
    if c["pooler"]:  # BertModel's pooler: stored, not used by the MLM head
        t += [(pre + "pooler.dense.weight", n(d, d)), (pre + "pooler.dense.bias", n(d))]
    else:  # older checkpoints store the position_ids buffer instead
        t += [(pre + "embeddings.position_ids", np.arange(c["max_pos"])[None, :].astype(float))]
    dense, ln, bias, dec_bias = head_names(c)
    hb = n(V)
    t += [(bias, hb), (dense + ".weight", n(d, d)), (dense + ".bias", n(d)),
          (ln + ".weight", gain(d)), (ln + ".bias", n(d)),
          (dec_bias, hb)]  # tied to the head's bias in HF: the same values
    return t


def hf_config(c):
    r = {"architectures": ["BertForMaskedLM" if c["arch"] == "bert" else "RobertaForMaskedLM"],
         "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu", "hidden_dropout_prob": 0.1,
         "hidden_size": c["d"], "initializer_range": 0.02, "intermediate_size": c["d_ff"],
         "layer_norm_eps": 1e-12 if c["arch"] == "bert" else 1e-5,
         "max_position_embeddings": c["max_pos"], "model_type": c["arch"],
         "num_attention_heads": c["n_head"], "num_hidden_layers": c["n_layer"],
         "pad_token_id": 0 if c["arch"] == "bert" else 1,
         "position_embedding_type": "absolute",
         "torch_dtype": {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}[c["dtype"]],
         "type_vocab_size": c["types"], "use_cache": True, "vocab_size": c["vocab_size"]}
    if c["arch"] == "roberta":
        r["bos_token_id"], r["eos_token_id"] = 0, 2
    return r


def write_model(dirpath, c, params):
    tensors = [(name, "I64" if name.endswith("position_ids") else c["dtype"], arr) for name, arr in params]
    ref_case.write_hf_model(dirpath, hf_config(c), tensors, c["shards"])


def read_model(dirpath):
    """Independent read-back: config + float64 weights as stored, names without the base prefix."""
    cfg, stored = read_weights(dirpath)
    base = cfg["model_type"] + "."
    w = {(k[len(base):] if k.startswith(base) else k): v for k, v in stored.items()}
    roberta = cfg["model_type"] == "roberta"
    return {"L": cfg["num_hidden_layers"], "d": cfg["hidden_size"],
            "H": cfg["num_attention_heads"], "eps": cfg["layer_norm_eps"], "w": w,
            "pos0": cfg["pad_token_id"] + 1 if roberta else 0,
            "head": ("lm_head.dense", "lm_head.layer_norm", "lm_head.bias") if roberta else
                    ("cls.predictions.transform.dense", "cls.predictions.transform.LayerNorm",
                     "cls.predictions.bias")}


# --------------------------------------------------------------------------- forward, way 1 (torch)

def _ln(x, g, b, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def _gelu(x):  # transformers' "gelu": the exact erf form
    return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))


def torch_seq_logits(M, W, tokens, prompt, prefix=None):
    """Logits [T, V] of one sequence (soft token k written as -1-k), behind the key/value prefix
    [L, 2, P, d] when given."""
    d, H, eps = M["d"], M["H"], M["eps"]
    hd = d // H
    P = 0 if prefix is None else prefix.shape[2]
    rows = [prompt[-1 - t] if t < 0 else W["embeddings.word_embeddings.weight"][t] for t in tokens]
    T = len(tokens)
    x = torch.stack(rows)
    x = x + W["embeddings.position_embeddings.weight"][M["pos0"] + P:M["pos0"] + P + T]
    x = x + W["embeddings.token_type_embeddings.weight"][0]
    x = _ln(x, W["embeddings.LayerNorm.weight"], W["embeddings.LayerNorm.bias"], eps)

    def lin(z, name):
        return z @ W[name + ".weight"].T + W[name + ".bias"]

    for i in range(M["L"]):
        p = "encoder.layer.%d." % i
        q = lin(x, p + "attention.self.query").view(T, H, hd).transpose(0, 1)
        k = lin(x, p + "attention.self.key")
        v = lin(x, p + "attention.self.value")
        if P:
            k, v = torch.cat([prefix[i, 0], k]), torch.cat([prefix[i, 1], v])
        k = k.view(P + T, H, hd).transpose(0, 1)
        v = v.view(P + T, H, hd).transpose(0, 1)
        att = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(hd), dim=-1)  # no mask: all visible
        ctx = (att @ v).transpose(0, 1).reshape(T, d)
        h = _ln(lin(ctx, p + "attention.output.dense") + x,
                W[p + "attention.output.LayerNorm.weight"], W[p + "attention.output.LayerNorm.bias"],
                eps)
        f = lin(_gelu(lin(h, p + "intermediate.dense")), p + "output.dense")
        x = _ln(f + h, W[p + "output.LayerNorm.weight"], W[p + "output.LayerNorm.bias"], eps)
    dense, ln, bias = M["head"]
    z = _ln(_gelu(lin(x, dense)), W[ln + ".weight"], W[ln + ".bias"], eps)
    return z @ W["embeddings.word_embeddings.weight"].T + W[bias]


def torch_batch(M, W, batch, prompt, prefix=None):
    logits, ce = [], []
    s, tp, ti = batch["seq_start"], batch["target_pos"], batch["target_ids"]
    for a, b in zip(s, s[1:]):
        js = [j for j, p in enumerate(tp) if a <= p < b]
        if not js:
            continue
        lg = torch_seq_logits(M, W, batch["tokens"][a:b], prompt, prefix)
        for j in js:
            row = lg[tp[j] - a]
            logits.append(row)
            ce.append(torch.logsumexp(row, 0) - row[ti[j]])
    return torch.stack(logits), torch.stack(ce)


# --------------------------------------------------------------------------- forward, way 2 (numpy)

def numpy_seq_logits(M, tokens, prompt, prefix=None):
    """The same forward with explicit loops over heads and query rows."""
    w, d, H, eps = M["w"], M["d"], M["H"], M["eps"]
    hd = d // H
    erf = np.vectorize(math.erf)

    def ln(z, g, b):
        mu = z.mean(-1, keepdims=True)
        return (z - mu) / np.sqrt(((z - mu) ** 2).mean(-1, keepdims=True) + eps) * g + b

    def gelu(z):
        return z * 0.5 * (1.0 + erf(z / np.sqrt(2.0)))

    def lin(z, name):
        return z @ w[name + ".weight"].T + w[name + ".bias"]

    T = len(tokens)
    P = 0 if prefix is None else prefix.shape[2]
    x = np.zeros((T, d))
    for t, tok in enumerate(tokens):
        x[t] = prompt[-1 - tok] if tok < 0 else w["embeddings.word_embeddings.weight"][tok]
        x[t] += w["embeddings.position_embeddings.weight"][M["pos0"] + P + t]
        x[t] += w["embeddings.token_type_embeddings.weight"][0]
    x = ln(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    for i in range(M["L"]):
        p = "encoder.layer.%d." % i
        q, k, v = (lin(x, p + "attention.self." + m) for m in ("query", "key", "value"))
        if P:
            k, v = np.concatenate([prefix[i, 0], k]), np.concatenate([prefix[i, 1], v])
        ctx = np.zeros((T, d))
        for h in range(H):
            cs = slice(h * hd, (h + 1) * hd)
            for r in range(T):
                s = np.array([q[r, cs] @ k[j, cs] for j in range(P + T)]) / np.sqrt(hd)
                e = np.exp(s - s.max())
                ctx[r, cs] = (e / e.sum()) @ v[:, cs]
        h1 = ln(lin(ctx, p + "attention.output.dense") + x,
                w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"])
        f = lin(gelu(lin(h1, p + "intermediate.dense")), p + "output.dense")
        x = ln(f + h1, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    dense, lnn, bias = M["head"]
    z = ln(gelu(lin(x, dense)), w[lnn + ".weight"], w[lnn + ".bias"])
    return z @ w["embeddings.word_embeddings.weight"].T + w[bias]


def numpy_batch_logits(M, batch, prompt, prefix=None):
    out = []
    s, tp = batch["seq_start"], batch["target_pos"]
    for a, b in zip(s, s[1:]):
        js = [j for j, p in enumerate(tp) if a <= p < b]
        if js:
            lg = numpy_seq_logits(M, batch["tokens"][a:b], prompt, prefix)
            out += [lg[tp[j] - a] for j in js]
    return np.stack(out)


# --------------------------------------------------------------------------- a case

def generate_case(outdir, case):
    pos0 = 2 if case["arch"] == "roberta" else 0  # RoBERTa's positions start at padding_idx + 1
    ref_case.write(outdir, case, "tests/ref/bert_reference.py",
                   model=lambda cdir, rng: write_model(cdir, case, tensor_list(rng, case)),
                   read=read_model, forward=torch_batch, second_way=numpy_batch_logits,
                   d=case["d"], max_len=case["max_pos"] - pos0)


def main():
    return ref_cli.run(__doc__, CASES, generate_case)


if __name__ == "__main__":
    sys.exit(main())
