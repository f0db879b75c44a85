# Shared helpers of the integration tests (sourced). Each test gets a private work directory
# that is removed on exit, and fails loudly with the reason. scripts/lib/common.sh gives them
# SP_ROOT, the MPI environment, sp_stop_at and sp_python; Python run by a test may import
# scripts/lib's modules (metrics: the one reader of metrics.jsonl).
set -euo pipefail
: "${SP_CLI:?SP_CLI must point to the softprompt executable (ctest sets it)}"
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/lib/common.sh"
sp_mpi_env
export PYTHONPATH=$SP_ROOT/scripts/lib${PYTHONPATH:+:$PYTHONPATH}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sp-itest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
# python3 is Debian's (scripts/setup installs it, with python3-h5py), here and in the scripts the
# tests run: a python3 earlier in PATH, such as pyenv's shim, costs seconds per start on a
# loaded machine (measured: 1.2-1.9 s against 0.1 s), and the tests start python3 often.
mkdir "$WORK/.bin"
ln -s /usr/bin/python3 "$WORK/.bin/python3"
export PATH=$WORK/.bin:$PATH

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# mpi N ARGS...: softprompt under mpirun with N ranks (no core binding: ranks share the cores).
# In the sanitizer build, leak checking is off for mpirun-launched ranks only: Open MPI's plugins
# are unloaded before LeakSanitizer reports, so their allocations cannot be told from ours.
# Plain-process runs (no MPI started) keep it.
mpi() { local n=$1; shift; ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" mpirun -np "$n" --bind-to none "$SP_CLI" "$@"; }

# mpi_bg N ARGS...: the same in the background; MPI_PID is mpirun's own pid (for signals).
mpi_bg() {
  local n=$1; shift
  ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" mpirun -np "$n" --bind-to none "$SP_CLI" "$@" &
  MPI_PID=$!
}

# same_file A B WHAT: byte-identical or fail.
same_file() { cmp -s "$1" "$2" || fail "$3: $1 and $2 differ"; }

# byte_tokenizer DIR: a GPT-2-kind tokenizer (vocab.json, merges.txt) of the 256 bytes and no
# merges, id = byte, <|endoftext|> = 256: for models of vocabulary 257 (GPT-2's
# bytes_to_unicode table, written out independently).
byte_tokenizer() {
  mkdir -p "$1"
  python3 - "$1" <<'PY'
import json, sys
bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
cs, n = bs[:], 0
for b in range(256):
    if b not in bs:
        bs.append(b); cs.append(256 + n); n += 1
vocab = {chr(c): b for b, c in zip(bs, cs)}
vocab["<|endoftext|>"] = 256
json.dump(vocab, open(sys.argv[1] + "/vocab.json", "w"))
open(sys.argv[1] + "/merges.txt", "w").write("#version: 0.2\n")
PY
}

# show_log FILE: FILE under a header line (what a failing check prints).
show_log() { echo "----- $1"; cat "$1"; }

# slurm_test: the start of a test on a real Slurm cluster (test_slurm, test_multinode): loads
# the harness (tests/cluster/lib.sh: spc_start, spc_stop, ...), fails loudly when Slurm or
# network namespaces are missing, moves into WORK (which munged, user munge, must traverse to
# reach its socket under WORK/cluster) and sets what the jobs inherit: SP_BIN, the softprompt
# under test, and leak checking off for srun-launched ranks in the sanitizer build (see mpi).
slurm_test() {
  source "$SP_ROOT/tests/cluster/lib.sh"
  spc_require || fail "SLURM IS NOT AVAILABLE (above): this test needs a real Slurm and network namespaces (run as root on Debian 12); it is not skipped"
  cd "$WORK"
  chmod 755 "$WORK"
  export ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0" SP_BIN=$SP_CLI
}

# losses FILE: the training losses of metrics.jsonl, one per line, in step order.
losses() { sp_python metrics.py losses "$1"; }

# close_losses A B TOL WHAT: same steps, losses within relative TOL.
close_losses() { python3 - "$1" "$2" "$3" "$4" <<'PY'
import sys, metrics
a, b = (metrics.steps(metrics.read(p)) for p in sys.argv[1:3])
tol, what = float(sys.argv[3]), sys.argv[4]
if [x["step"] for x in a] != [x["step"] for x in b]:
    sys.exit(f"FAIL: {what}: different steps")
worst = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(a, b))
if worst > tol:
    sys.exit(f"FAIL: {what}: losses differ by {worst:.3g} relative (tolerance {tol})")
print(f"ok: {what}: losses agree within {worst:.2g} relative over {len(a)} steps")
PY
}
