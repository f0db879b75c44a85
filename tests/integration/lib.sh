# Shared helpers of the integration tests (sourced). Each test gets a private work directory
# that is removed on exit, and fails loudly with the reason.
set -euo pipefail
: "${SP_CLI:?SP_CLI must point to the softprompt executable (ctest sets it)}"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sp-itest.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

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

# losses FILE: the training losses of metrics.jsonl, one per line, in step order.
losses() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    j=json.loads(l)
    if "split" not in j: print(repr(j["loss"]))' "$1"; }

# close_losses A B TOL WHAT: same steps, losses within relative TOL.
close_losses() { python3 - "$1" "$2" "$3" "$4" <<'PY'
import json, sys
def load(p):
    return [json.loads(l) for l in open(p) if "split" not in json.loads(l)]
a, b, tol, what = load(sys.argv[1]), load(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
if [x["step"] for x in a] != [x["step"] for x in b]:
    sys.exit(f"FAIL: {what}: different steps")
worst = max(abs(x["loss"] - y["loss"]) / abs(y["loss"]) for x, y in zip(a, b))
if worst > tol:
    sys.exit(f"FAIL: {what}: losses differ by {worst:.3g} relative (tolerance {tol})")
print(f"ok: {what}: losses agree within {worst:.2g} relative over {len(a)} steps")
PY
}

# json_field FILE KEY: a top-level number of the LAST line of FILE with key KEY.
last_eval() { python3 -c 'import json,sys
rows=[json.loads(l) for l in open(sys.argv[1])]
rows=[r for r in rows if r.get("split")=="valid"]
print(rows[-1][sys.argv[2]])' "$1" "$2"; }
