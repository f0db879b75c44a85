"""The metrics.jsonl of a `softprompt train` run, read the one way (stdlib only).

One JSON object per line, written by rank 0 (docs/usage.md, Training -> Outputs):
  a row without "split" is a training step:  step, loss, lr, grad_norm, tokens, tokens_per_s,
                                             elapsed_s
  a row with "split" is an evaluation:       step, split, loss, examples, accuracy, per_class
A value that is not a number (NaN, infinity) is written as null. A resumed run may log a step
again: the last row of a step counts.

Imported by scripts/lib/plot.py, scripts/lib/sweep_collect.py, scripts/lib/demo.py and the
integration tests (PYTHONPATH=scripts/lib); shell scripts use its commands (USAGE).
"""
import json
import math
import os
import sys
import time


USAGE = """usage: python3 scripts/lib/metrics.py losses FILE
         the training losses, one per line in file order (repr: None for null)
       python3 scripts/lib/metrics.py wait FILE STEPS [--pid PID] [--timeout SECONDS]
         until FILE holds STEPS training rows: exit 0; 1 when process PID ended first; 3 when
         SECONDS passed first
"""


class MetricsError(ValueError):
    """A line of metrics.jsonl that is not a metrics record; the message names file and line."""


def is_step(row):
    """A training step: a row without "split"."""
    return "split" not in row


def is_eval(row, split=None):
    """An evaluation (of SPLIT when given): a row with "split"."""
    return "split" in row and (split is None or row["split"] == split)


def steps(rows):
    """The training-step rows, in file order."""
    return [r for r in rows if is_step(r)]


def evals(rows, split=None):
    """The evaluation rows (of SPLIT when given), in file order."""
    return [r for r in rows if is_eval(r, split)]


def finite(v):
    """A number that is finite (null, the written form of NaN and infinity, is not)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read(path, skip_bad=False, warn=None):
    """The rows of the metrics.jsonl at PATH, in file order. Blank lines are passed over, and so
    is a last line without its newline (the run is still writing it), with warn(message) when
    WARN is given. Any other line that is not a JSON object with an integer "step" raises
    MetricsError naming the file and line, or with SKIP_BAD is passed over (a line cut short by a
    kill). OSError when the file cannot be read."""
    with open(path, "rb") as f:
        raw = f.read()
    lines = raw.decode("utf-8", "replace").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    rows = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("no integer 'step'")
        except ValueError as e:
            if i == len(lines) and not raw.endswith(b"\n"):
                if warn:
                    warn(f"{path}: skipping the unfinished last line {i}")
                continue
            if skip_bad:
                continue
            raise MetricsError(f"{path}: line {i} is not a metrics record ({e})") from None
        rows.append(row)
    return rows


def count_steps(path):
    """The number of training rows in PATH (0 when it does not exist yet)."""
    try:
        return len(steps(read(path, skip_bad=True)))
    except FileNotFoundError:
        return 0


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie has ended, whether or not its parent has collected it yet
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (OSError, IndexError):
        return False


def wait(path, n, pid=None, timeout=None, poll=0.05):
    """Until PATH holds N training rows: 0; 1 when process PID ends first; 3 at TIMEOUT seconds."""
    end = None if timeout is None else time.monotonic() + timeout
    while True:
        if count_steps(path) >= n:
            return 0
        if pid is not None and not _alive(pid):
            return 0 if count_steps(path) >= n else 1
        if end is not None and time.monotonic() >= end:
            return 3
        time.sleep(poll)


def _main(argv):
    if len(argv) >= 2 and argv[0] == "losses":
        for r in steps(read(argv[1])):
            print(repr(r.get("loss")))
        return 0
    if len(argv) >= 3 and argv[0] == "wait":
        opts = dict(zip(argv[3::2], argv[4::2]))
        if len(argv[3:]) % 2 or set(opts) - {"--pid", "--timeout"}:
            sys.stderr.write(USAGE)
            return 2
        pid = int(opts["--pid"]) if "--pid" in opts else None
        timeout = float(opts["--timeout"]) if "--timeout" in opts else None
        return wait(argv[1], int(argv[2]), pid, timeout)
    sys.stderr.write(USAGE)
    return 2


if __name__ == "__main__":
    try:
        sys.exit(_main(sys.argv[1:]))
    except (MetricsError, OSError) as e:
        sys.exit(f"metrics: {e}")
