"""The command line every float64 reference generator in tests/ref shares:
`<generator>.py --out DIR` writes each of its cases into DIR."""
import argparse
import os


def run(doc, cases, generate_case):
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--out", required=True, help="output directory (e.g. tests/fixtures/ref)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for case in cases:
        generate_case(args.out, case)
    print("%d cases written to %s" % (len(cases), args.out))
    return 0
