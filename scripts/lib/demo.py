"""The Python steps of scripts/demo.

  python3 scripts/lib/demo.py reviews SENTIMENT_DIR OUT.jsonl OFFLINE FIXTURE.jsonl
      the review sentences as one JSON object per line {"text", "label": 0 negative |
      1 positive, "source"}: the three sources of the npm package sentiment (SENTIMENT_DIR), or
      with OFFLINE=1 the small hand-written FIXTURE; written to OUT.jsonl.part, then renamed
  /usr/bin/python3 scripts/lib/demo.py check-split VALID.h5 PRETRAINING.json
      exit 1 unless VALID.h5 is the validation split held out of the demo model's pretraining
      (needs h5py)
  python3 scripts/lib/demo.py report WORK RUN ZERO_SHOT_ACCURACY TOTAL_S TRAIN_S DEEP_RUN DEEP_S
      the demo's report, from WORK/tuned.json, WORK/tuned-ptuning-v2.json and the runs'
      metrics.jsonl (RUN: the prompt, DEEP_RUN: P-tuning v2)
"""
import hashlib
import json
import os
import sys

import metrics


def reviews(src, out, offline, fixture):
    rows = []
    if offline:  # the small hand-written fixture: labels "negative" / "positive"
        for line in open(fixture):
            r = json.loads(line)
            rows.append({"text": r["text"], "label": int(r["label"] == "positive"), "source": "fixture"})
    else:        # the three sources of the sentiment package: field "class" 0 / 1
        for name in ("imdb", "amazon", "yelp"):
            for r in json.load(open(os.path.join(src, name + ".json"))):
                rows.append({"text": r["text"], "label": r["class"], "source": name})
    with open(out + ".part", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.rename(out + ".part", out)


def check_split(valid, pretraining):
    import h5py
    f = h5py.File(valid, "r")
    # the same hash as split_sha256 in scripts/demo-model-tapt.py
    got = hashlib.sha256(f["tokens"][:].astype("<i4").tobytes() + f["offsets"][:].astype("<i8").tobytes()).hexdigest()
    want = json.load(open(pretraining))["heldout_valid"]["sha256"]
    if got != want:
        sys.exit(f"scripts/demo: {valid} is not the validation split held out of the demo model's "
                 f"pretraining (sha256 {got[:16]}..., expected {want[:16]}...): its accuracy would not be a held-out one")
    print("validation split: the one held out of the demo model's pretraining (sha256 matches)", file=sys.stderr)


def report(work, run, zero, total, t_train, deep, t_deep):
    tuned = json.load(open(f"{work}/tuned.json"))
    deep_tuned = json.load(open(f"{work}/tuned-ptuning-v2.json"))
    rows = metrics.read(f"{run}/metrics.jsonl")
    steps = metrics.steps(rows)
    tok = sum(r["tokens"] for r in steps)
    busy = sum(r["tokens"] / r["tokens_per_s"] for r in steps if r["tokens_per_s"] > 0)
    evals = metrics.evals(rows, "valid")
    deep_evals = metrics.evals(metrics.read(f"{deep}/metrics.jsonl"), "valid")
    print(f"""
softprompt demo report
  validation accuracy   {zero:.3f} zero-shot  ->  {tuned['accuracy']:.3f} tuned ({tuned['correct']}/{tuned['examples']})
                        (best.h5: the best of {len(evals)} evaluations; {evals[-1]['accuracy']:.3f} at the last step)
  training              {len(steps)} steps, 2 MPI ranks, stopped once by SIGUSR1 and resumed
  time                  {total} s in all, {t_train} s of training (this run)
  throughput            {tok / busy:.0f} tokens/s over the training steps
  checkpoint            {run}/best.h5  (PEFT adapter: {run}/adapter)
  metrics               {run}/metrics.jsonl
  P-tuning v2           {zero:.3f} zero-shot  ->  {deep_tuned['accuracy']:.3f} tuned ({deep_tuned['correct']}/{deep_tuned['examples']}), a prefix in every layer
                        (the best of {len(deep_evals)} evaluations; {deep_evals[-1]['accuracy']:.3f} at the last step; {t_deep} s of training)
  checkpoint            {deep}/best.h5  (PEFT adapter: {deep}/adapter)
  plot                  {work}/demo.png""")


def main(argv):
    if len(argv) == 5 and argv[0] == "reviews":
        reviews(argv[1], argv[2], argv[3] == "1", argv[4])
    elif len(argv) == 3 and argv[0] == "check-split":
        check_split(argv[1], argv[2])
    elif len(argv) == 8 and argv[0] == "report":
        report(argv[1], argv[2], float(argv[3]), int(argv[4]), int(argv[5]), argv[6], int(argv[7]))
    else:
        sys.stderr.write(__doc__)
        sys.exit(2)


if __name__ == "__main__":
    main(sys.argv[1:])
