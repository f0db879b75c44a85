#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target into OUT/<target>/ (run by scripts/fuzz).

Seeds come only from the repository's own fixtures (tests/fixtures: project-made models,
tokenizer.json files trained on public-domain text, prepare inputs) or are written here; no
third-party vocabulary is used. Usage: fuzz/make_seeds.py OUT_DIR
"""
import base64
import json
import os
import struct
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIX = os.path.join(REPO, "tests", "fixtures")
OUT = sys.argv[1]


def put(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def read(*parts):
    with open(os.path.join(FIX, *parts), "rb") as f:
        return f.read()


def ref_dirs():
    d = os.path.join(FIX, "ref")
    return sorted(x for x in os.listdir(d) if os.path.isdir(os.path.join(d, x)))


def hf_dirs():
    d = os.path.join(FIX, "tokenizer", "hf")
    return sorted(x for x in os.listdir(d) if os.path.isdir(os.path.join(d, x)))


# safetensors: small hand-made files (the header is what matters), plus the smallest fixtures.
def safetensors(tensors, meta=None, pad=True):
    header, data = {}, b""
    for name, dtype, shape, raw in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + len(raw)]}
        data += raw
    if meta is not None:
        header["__metadata__"] = meta
    h = json.dumps(header, separators=(",", ":")).encode()
    if pad:
        h += b" " * (-len(h) % 8)
    return struct.pack("<Q", len(h)) + h + data


put("fuzz_safetensors", "f32", safetensors([("w", "F32", [2, 3], struct.pack("<6f", *range(6)))]))
put("fuzz_safetensors", "mixed", safetensors([
    ("a", "F16", [4], b"\x00\x3c" * 4), ("b", "BF16", [2, 2], b"\x80\x3f" * 4),
    ("c", "F64", [1], struct.pack("<d", 1.5)), ("d", "I64", [], struct.pack("<q", 7)),
    ("e", "BOOL", [3], b"\x01\x00\x01"), ("f", "U8", [0], b""), ("g", "I32", [1, 1, 1], b"\x01\0\0\0"),
], meta={"format": "pt"}))
put("fuzz_safetensors", "empty", safetensors([], meta={}))
put("fuzz_safetensors", "unpadded", safetensors([("x", "I8", [2], b"\x01\x02")], pad=False))
for d in ref_dirs():
    p = os.path.join(FIX, "ref", d, "model.safetensors")
    if os.path.exists(p) and os.path.getsize(p) <= 32768:
        put("fuzz_safetensors", d, read("ref", d, "model.safetensors"))

# config.json and the shard index of every reference model.
for d in ref_dirs():
    put("fuzz_config", d, read("ref", d, "config.json"))
    p = os.path.join(FIX, "ref", d, "model.safetensors.index.json")
    if os.path.exists(p):
        put("fuzz_index", d, read("ref", d, "model.safetensors.index.json"))

# precompiled_charsmap blobs of the Precompiled normalizers in the fixtures (T5-style), and
# the committed regression inputs (hand-built, hostile).
def charsmaps(node):
    if isinstance(node, dict):
        if node.get("type") == "Precompiled":
            yield node["precompiled_charsmap"]
        for v in node.values():
            yield from charsmaps(v)
    elif isinstance(node, list):
        for v in node:
            yield from charsmaps(v)


for d in hf_dirs():
    root = json.loads(read("tokenizer", "hf", d, "tokenizer.json"))
    for k, b64 in enumerate(charsmaps(root.get("normalizer"))):
        put("fuzz_charsmap", "%s-%d" % (d, k), base64.b64decode(b64))
REG = os.path.join(REPO, "fuzz", "regressions", "fuzz_charsmap")
for name in sorted(os.listdir(REG)):
    with open(os.path.join(REG, name), "rb") as f:
        put("fuzz_charsmap", name, f.read())

# tokenizer.json, tokenizer_config.json of every tokenizer.json kind.
for d in hf_dirs():
    put("fuzz_tokenizer_json", d, read("tokenizer", "hf", d, "tokenizer.json"))
    p = os.path.join(FIX, "tokenizer", "hf", d, "tokenizer_config.json")
    if os.path.exists(p):
        put("fuzz_tokenizer_config", d, read("tokenizer", "hf", d, "tokenizer_config.json"))
# Tiny hand-written tokenizer.json files, quicker to mutate than the trained fixtures.
char_level = {
    "model": {"type": "BPE", "vocab": {"<unk>": 0, "<s>": 1, "</s>": 2, "\u2581": 3, "a": 4, "b": 5,
                                       "\u2581a": 6, "ab": 7, "<0x41>": 8, "<0x0A>": 9},
              "merges": ["\u2581 a", "a b"], "unk_token": "<unk>", "fuse_unk": True,
              "byte_fallback": True, "ignore_merges": False, "dropout": None},
    "added_tokens": [{"id": 1, "content": "<s>", "special": True, "lstrip": False, "rstrip": False,
                      "normalized": False, "single_word": False},
                     {"id": 2, "content": "</s>", "special": True, "lstrip": True, "rstrip": True,
                      "normalized": False, "single_word": False}],
    "normalizer": {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}, {"type": "NFKC"}]},
    "pre_tokenizer": None,
    "post_processor": {"type": "TemplateProcessing",
                       "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                                  {"Sequence": {"id": "A", "type_id": 0}}],
                       "pair": [], "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}}},
    "decoder": {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
}
put("fuzz_tokenizer_json", "tiny-char-level", json.dumps(char_level))
meta = dict(char_level)
meta["normalizer"] = None
meta["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
    {"type": "Digits", "individual_digits": True},
    {"type": "Split", "pattern": {"Regex": "\\s+|[ab]+"}, "behavior": "Isolated", "invert": False},
    {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True}]}
meta["decoder"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "first", "split": True}
put("fuzz_tokenizer_json", "tiny-metaspace", json.dumps(meta))
put("fuzz_tokenizer_config", "minimal", '{"bos_token": "<s>", "add_bos_token": true}')

# vocab.json NUL merges.txt, from the byte-level fixture vocabularies.
for d in ("smollm", "llama3", "qwen2"):
    model = json.loads(read("tokenizer", "hf", d, "tokenizer.json"))["model"]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    vocab = json.dumps(model["vocab"], ensure_ascii=False)
    put("fuzz_vocab_merges", d, vocab + "\0#version: 0.2\n" + "\n".join(merges) + "\n")
put("fuzz_vocab_merges", "tiny", '{"a": 0, "b": 1, "ab": 2, "<|endoftext|>": 3}\0a b\n')

# encode: selector byte (tokenizer kind, flags) + text of the tokenizer corpus.
texts = [e["text"] for e in json.loads(read("tokenizer", "corpus.json"))]
texts += ["<|begin_of_text|>Hi<|end_of_text|>", "<s> x </s>", "  \u2581a\r\n\t\u00a0\u3000",
          "0123456789 12.5%", "\u00e9e\u0301 \ufb01 \u2460", "\x00\x01\x7f", "\U0001f469\u200d\U0001f4bb"]
for i, t in enumerate(texts):
    put("fuzz_encode", "t%02d" % i, bytes([(i * 37) & 0xff]) + t.encode("utf-8"))

# records: selector byte (0 jsonl, 1 csv, 2 tsv, 3 json) + the prepare fixtures.
for sel, ext in ((0, "jsonl"), (1, "csv"), (2, "tsv"), (3, "json")):
    put("fuzz_records", ext, bytes([sel]) + read("prepare", "reviews." + ext))
put("fuzz_records", "csv-quotes", b'\x01\xef\xbb\xbftext,label\r\n"a ""b"", c\nd",1\r\n5" screen,0\n\n')
put("fuzz_records", "jsonl-kinds", b'\x00{"text": "x", "label": 1.5, "n": null, "a": [1], "o": {}}\n\n{"text": true}\n')
put("fuzz_records", "json-array", b'\x03  [{"text": "a\\u00e9", "label": 0},\n {"text": "b", "label": 1}]\n')

# template: options byte, then template NUL target NUL verbalizer NUL text NUL label.
tpl = [
    (0x02, "{soft:2}{text} It was", "{label}", "0= terrible,1= great", "The film was fine.", "1"),
    (0x0b, "Review: {text}{soft}{{x}} =>", " {label}", "", "A long review text here.", "good"),
    (0x19, "{text} It was", "{label}", "a\\,b= x,c\\=d= y", "Short", "c=d"),
    (0xc9, "{soft:3}{label}{text}<|end_of_text|>", "{text}", "", "caf\u00e9 \u65e5\u672c", "lbl"),
    (0x06, "{text}", "", "0=<|begin_of_text|>,1= b", "  ", "0"),
]
for i, (opt, *parts) in enumerate(tpl):
    put("fuzz_template", "t%d" % i, bytes([opt]) + "\0".join(parts).encode("utf-8"))

# HDF5 edit programs (fuzz_h5mut.h): the empty program and one program per edit kind.
for target, prefix in (("fuzz_dataset", b"\x00"), ("fuzz_dataset", b"\x01"), ("fuzz_checkpoint", b"")):
    tag = target + "-" + prefix.hex()
    put(target, tag + "-none", prefix)
    for op in range(8):
        for pick in (0, 5, 11, 17, 23, 29):
            put(target, "%s-op%d-%d" % (tag, op, pick), prefix + bytes([op, pick, 3, 2, 4, 1, 9, 0, 0, 0]))

# prompt files (sp_prompt_load): the committed regression inputs (valid and broken .npy and
# KoboldAI zips), plus a float16 .npy and a zip with its meta.json written here.
reg = os.path.join(REPO, "fuzz", "regressions", "fuzz_prompt_file")
for name in sorted(os.listdir(reg)):
    with open(os.path.join(reg, name), "rb") as f:
        put("fuzz_prompt_file", name, f.read())


def npy(descr, shape, raw):
    h = "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }" % (
        descr, ", ".join(str(s) for s in shape) + ("," if len(shape) == 1 else ""))
    h += " " * (-(10 + len(h) + 1) % 64) + "\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(h)) + h.encode("latin1") + raw


put("fuzz_prompt_file", "npy-f16", npy("<f2", [2, 2], b"\x00\x3c" * 4))
import io  # noqa: E402
import zipfile  # noqa: E402
buf = io.BytesIO()
with zipfile.ZipFile(buf, "w") as z:
    z.writestr("tensor.npy", npy("<f4", [2, 3], struct.pack("<6f", *range(6))))
    z.writestr("meta.json", json.dumps({"name": "seed", "author": "", "supported": ["m"],
                                        "description": ""}))
put("fuzz_prompt_file", "kobold-meta", buf.getvalue())
