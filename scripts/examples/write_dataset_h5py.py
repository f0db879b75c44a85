#!/usr/bin/env python3
"""Writes a small softprompt classification dataset with h5py (layout: docs/formats.md).

Usage: write_dataset_h5py.py OUT.h5

The token ids below are hard-coded for illustration; a real script would tokenize text with
the model's tokenizer. Template "<soft0> <soft1> {text} It was", verbalizer
0 -> " terrible" (token 7818), 1 -> " great" (token 1049). Soft slot k is stored as -1 - k.
"""
import os
import sys

import h5py
import numpy as np

# (input tokens, label). The single target of a classification example sits at its last
# position: the logits there are scored against the verbalizer token of the label.
EXAMPLES = [
    ([-1, -2, 40, 1842, 340, 13, 632, 373], 1),
    ([-1, -2, 1212, 373, 257, 2089, 3807, 13, 632, 373], 0),
    ([-1, -2, 317, 34264, 13, 632, 373], 1),
]
VERBALIZER = [7818, 1049]
CLASS_NAMES = ["negative", "positive"]
N_SOFT = 2
CHUNK = 4096


def growing(f, name, data, dtype):
    """A 1-D chunked dataset, shuffled and deflated like the ones softprompt writes."""
    data = np.asarray(data, dtype=dtype)
    f.create_dataset(name, data=data, maxshape=(None,), chunks=(CHUNK,),
                     shuffle=True, compression="gzip", compression_opts=4)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: write_dataset_h5py.py OUT.h5")
    out = sys.argv[1]
    tokens = [t for toks, _ in EXAMPLES for t in toks]
    offsets = np.cumsum([0] + [len(toks) for toks, _ in EXAMPLES])
    target_pos = [len(toks) - 1 for toks, _ in EXAMPLES]  # within each example
    target_ids = [VERBALIZER[label] for _, label in EXAMPLES]
    target_offsets = np.arange(len(EXAMPLES) + 1)  # one target per example

    tmp = out + ".tmp"  # write, then rename: readers never see a half-written file
    # The HDF5 1.10 file format checksums all metadata, so damage is detected, not parsed.
    with h5py.File(tmp, "w", libver=("v110", "v110")) as f:
        growing(f, "tokens", tokens, np.int32)
        growing(f, "offsets", offsets, np.int64)
        growing(f, "target_offsets", target_offsets, np.int64)
        growing(f, "target_pos", target_pos, np.int32)
        growing(f, "target_ids", target_ids, np.int32)
        growing(f, "labels", [label for _, label in EXAMPLES], np.int32)
        f.create_dataset("verbalizer", data=np.asarray(VERBALIZER, dtype=np.int32))
        f.create_dataset("class_names", data=CLASS_NAMES, dtype=h5py.string_dtype("utf-8"))
        a = f.attrs
        a["format"] = "softprompt-dataset"
        a["format_version"] = np.int64(1)
        a["task"] = "classification"
        a["n_examples"] = np.int64(len(EXAMPLES))
        a["n_tokens"] = np.int64(len(tokens))
        a["n_targets"] = np.int64(len(target_ids))
        a["n_soft"] = np.int64(N_SOFT)
        a["n_classes"] = np.int64(len(VERBALIZER))
        a["max_length"] = np.int64(16)
        a["n_truncated"] = np.int64(0)
        a["seed"] = np.uint64(1234)
        a["tokenizer_hash"] = ""  # unknown here; softprompt fills it when it tokenizes
        a["template"] = "<soft0> <soft1> {text} It was"
        a["target"] = "{label}"
        a["verbalizer"] = "0: terrible, 1: great"
        a["source"] = "write_dataset_h5py.py"
        a["split"] = "train"
        a["created_by"] = "write_dataset_h5py.py"
    os.replace(tmp, out)


if __name__ == "__main__":
    main()
