"""Independent float64 reference for greedy generation with a soft prompt, and its fixtures.

For committed reference models of every family (tests/fixtures/ref: GPT-2, Llama with
grouped-query heads, Qwen2 with q/k/v biases, Qwen3's q/k norms, Gemma, Gemma 2 with soft-caps
and a window of 5, Gemma 3 with local rotary bases, Mistral with a window of 5, BLOOM's ALiBi, and
cases with a per-layer key/value prefix) and the float32 prompt (and kv_prefix) of each case's
expected.safetensors,
greedy decoding as transformers' generate() does it with PEFT prompt tuning (do_sample=False:
the next token is the argmax of the last position's logits), computed WITHOUT a cache: every
step runs the whole sequence so far through torch_seq_logits of gpt2_reference.py /
llama_reference.py / bloom_reference.py (Hugging Face's math in float64), so nothing here shares the engine's key/
value cache logic. Requests put the soft tokens first, in the middle, or nowhere; a case with a
kv_prefix runs every request behind it (PEFT's prefix tuning: past_key_values, positions after
it). The windows (5, 6) are shorter than the sequences, so rows leave them while decoding.

Written to each case directory as generate.json:
    {"max_new_tokens": N, "kv_prefix": rows of the prefix every request runs behind (absent: none),
     "requests": [{"tokens": [...], "ids": [N greedy ids], "margins": [N top-1 minus top-2
                   logits at each step]}, ...]}
tests/unit/test_generator.c runs the same requests through sp_generator (greedy, the key/value
cache, a batch mixing them) and requires identical ids up to the first step whose margin is
below the float32 error bound (after a near tie the two may rightly part).

Self-check on every invocation: the logits of every step equal, within 1e-9, those of the final
sequence computed a second way at once (numpy, padded batch: numpy_batch_logits), i.e. the
causal model's step-by-step and whole-sequence logits agree in float64.

Usage: python3 tests/ref/generate_reference.py --out tests/fixtures/ref
Only torch and numpy are needed; deterministic (single-threaded torch, no random draws beyond
the fixed request lists below).
"""

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bloom_reference as bl  # noqa: E402
import gpt2_reference as g2  # noqa: E402  (same dir)
import llama_reference as ll  # noqa: E402

torch.set_num_threads(1)

MAX_NEW = 10
CASES = [("l2_h2_d24_ninner40_f32", g2),
         ("llama_l2_h4_kv2_d32_bf16", ll),
         ("qwen2_l2_h4_kv2_d32_bias_tied_f16", ll),
         ("qwen3_l2_h4_kv2_d24_hd12_tied_f32", ll),
         ("gemma_l2_h4_kv1_d32_hd8_tied_bf16", ll),
         ("gemma2_l3_h4_kv2_d32_hd8_softcap_window5_tied_f32", ll),
         ("gemma3_l3_h4_kv2_d32_hd8_localrope_window5_tied_f32", ll),
         ("mistral_l2_h4_kv2_d32_window5_f32", ll),
         ("qwen3_l3_h2_kv1_d32_attnbias_kvprefix4_sharded3_bf16", ll),
         ("gemma2_l2_h2_kv1_d24_hd12_attnbias_kvprefix3_sharded2_bf16", ll),
         ("mistral_l2_h4_kv1_d24_window6_kvprefix3_tied_sharded2_bf16", ll),
         ("bloom_l2_h6_d48_tied_f32", bl),
         ("bloom_l3_h4_d32_normres_untied_kvprefix3_sharded2_bf16", bl)]


def requests(P, V):
    """Soft tokens first, in the middle, repeated, and none; ids below V."""
    soft = [-1 - k for k in range(P)]
    return [soft + [3 % V, 14 % V, 15 % V, 9 % V],
            [26 % V, 5 % V] + soft + [35 % V, 8 % V],
            soft[:2] + [9 % V] + soft + [7 % V],
            [1 % V, 2 % V, 3 % V]]


def greedy(mod, M, W, tokens, prompt, n, prefix):
    toks, ids, margins, step_logits = list(tokens), [], [], []
    extra = () if prefix is None else (prefix,)
    for _ in range(n):
        logits = mod.torch_seq_logits(M, W, toks, prompt, *extra)[-1]
        top = torch.topk(logits, 2).values
        nxt = int(torch.argmax(logits))
        ids.append(nxt)
        margins.append(float(top[0] - top[1]))
        step_logits.append(logits.numpy())
        toks.append(nxt)
    return toks, ids, margins, np.stack(step_logits)


def self_check(mod, M, full, n0, step_logits, prompt, prefix):
    """The steps' logits against the final sequence's logits at positions n0-1.. (numpy)."""
    n = len(full)
    batch = {"seq_start": [0, n], "tokens": full, "target_pos": list(range(n0 - 1, n - 1)),
             "target_ids": [0] * (n - n0)}
    extra = () if prefix is None else (prefix.numpy(),)
    other = mod.numpy_batch_logits(M, batch, prompt.numpy(), *extra)
    err = np.abs(other - step_logits[: n - n0]).max()
    assert err < 1e-9, "step-by-step vs whole-sequence logits differ by %g" % err
    return err


def generate_case(outdir, name, mod):
    cdir = os.path.join(outdir, name)
    M = mod.read_model(cdir)
    W = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in M["w"].items()}
    with open(os.path.join(cdir, "config.json")) as f:
        cfg = json.load(f)
    V = cfg["vocab_size"]
    npos = cfg.get("n_positions", cfg.get("max_position_embeddings", cfg.get("seq_length")))
    expected = g2.st_read(os.path.join(cdir, "expected.safetensors"))
    prompt32 = expected["prompt"][1]
    prompt = torch.from_numpy(np.array(prompt32, dtype=np.float32).astype(np.float64))
    prefix = None
    if "kv_prefix" in expected:  # [L, 2, P, kv_dim] float32, as the engine reads it
        prefix = torch.from_numpy(np.array(expected["kv_prefix"][1], dtype=np.float32)
                                  .astype(np.float64))
    n_kv = 0 if prefix is None else prefix.shape[2]
    out = {"max_new_tokens": MAX_NEW, "requests": []}
    if n_kv:
        out["kv_prefix"] = n_kv
    worst = 0.0
    for toks in requests(prompt.shape[0], V):
        assert n_kv + len(toks) + MAX_NEW <= npos
        full, ids, margins, step_logits = greedy(mod, M, W, toks, prompt, MAX_NEW, prefix)
        worst = max(worst, self_check(mod, M, full[:-1], len(toks), step_logits, prompt, prefix))
        out["requests"].append({"tokens": toks, "ids": ids, "margins": margins})
    with open(os.path.join(cdir, "generate.json"), "w") as f:
        json.dump(out, f)
        f.write("\n")
    small = min(m for r in out["requests"] for m in r["margins"])
    print("%s: %d requests x %d tokens, smallest top-2 margin %.3g, self-check %.1e" %
          (name, len(out["requests"]), MAX_NEW, small, worst))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True, help="tests/fixtures/ref")
    a = ap.parse_args()
    for name, mod in CASES:
        generate_case(a.out, name, mod)


if __name__ == "__main__":
    main()
