# Every benchmark (bench/bench_*.c) parses its options with the flags tables of the CLI: a value
# that is not a number, out of range or followed by junk, an unknown option, a missing value and
# a stray argument each exit 2 with a message naming the program, the option and what was
# expected; --help exits 0. scripts/bench refuses an --out directory it did not write (its runs
# are test_bench).
source "$(dirname "$0")/lib.sh"
cd "$WORK"
bench=$(dirname "$SP_CLI")/bench
# refused PROGRAM MESSAGE ARGS...: exit 2, MESSAGE (a grep -E pattern) on stderr, nothing run
refused() {
  local prog=$1 want=$2 rc=0; shift 2
  "$bench/$prog" "$@" > out.txt 2> err.txt || rc=$?
  (( rc == 2 )) || { cat err.txt; fail "$prog $*: exit $rc, expected 2"; }
  grep -qE "^$prog: $want" err.txt || { cat err.txt; fail "$prog $*: no message '$want'"; }
  [[ ! -s out.txt ]] || fail "$prog $*: printed results after a usage error"
}
m=(--model "$WORK/none")
for prog in bench_engine bench_generate; do
  refused $prog "--batch '8x': expected an integer from 1 to" "${m[@]}" --batch 8x
  refused $prog "--batch '0': expected an integer from 1 to" "${m[@]}" --batch 0
  refused $prog "--batch '99999999999': expected an integer" "${m[@]}" --batch 99999999999
  refused $prog "--steps '': expected an integer" "${m[@]}" --steps ''
  refused $prog "--threads '-1': expected an integer from 0 to" "${m[@]}" --threads -1
  refused $prog "--weights 'f64': expected auto, f32 or bf16" "${m[@]}" --weights f64
  refused $prog "unknown option '--stpes' \(did you mean --steps\?\)" "${m[@]}" --stpes 3
  refused $prog "--seq needs a value" "${m[@]}" --seq
  refused $prog "unexpected argument 'extra'" "${m[@]}" extra
  refused $prog "--model is required \(see $prog --help\)" --batch 2
  "$bench/$prog" --help > help.txt || fail "$prog --help failed"
  grep -q -- "--batch B" help.txt || fail "$prog --help does not list --batch"
done
refused bench_engine "--targets 8: expected fewer than --seq 8" "${m[@]}" --seq 8 --targets 8
refused bench_engine "--kv-prefix 'two': expected an integer" "${m[@]}" --kv-prefix two
refused bench_generate "--stream-mib '0': expected an integer from 1 to" "${m[@]}" --stream-mib 0
refused bench_sgemm "--reps '0': expected an integer from 1 to 1000" --reps 0
refused bench_sgemm "--threads '2.5': expected an integer" --threads 2.5
refused bench_sgemm "'64x64': expected MxNxK, three positive integers" --reps 1 64x64
refused bench_sgemm "'64x64x64x': expected MxNxK" --reps 1 64x64x64x
refused bench_sgemm "'64x0x64': expected MxNxK" --reps 1 64x0x64
refused bench_sgemm "--bf16 takes no value" --bf16=1
refused bench_tokenizer "--runs '65': expected an integer from 1 to 64" --runs 65
refused bench_tokenizer "--megabytes 'lots': expected a number" --megabytes lots
refused bench_tokenizer "unexpected argument 'dir'" dir
"$bench/bench_sgemm" --reps 1 32x16x8 > sgemm.txt || fail "bench_sgemm with a valid shape failed"
grep -qE '^metric sgemm_32x16x8_gflops [0-9.]+ GFLOP/s$' sgemm.txt || fail "no metric for 32x16x8"
ok "bench_engine, bench_generate, bench_sgemm, bench_tokenizer: strict options, exit 2 with the expected value"

# scripts/bench writes only into an --out directory it wrote before (or a new one): someone
# else's directory is refused before anything runs, its files untouched.
mkdir theirs && echo "their notes" > theirs/metrics.txt && echo data > theirs/summary.md
rc=0
SP_BENCH_BUILD=$(dirname "$SP_CLI") "$SP_REPO/scripts/bench" --quick --no-peer --out "$WORK/theirs" \
  > bench.out 2> bench.err || rc=$?
(( rc == 1 )) || { cat bench.err; fail "scripts/bench into someone else's directory: exit $rc, expected 1"; }
grep -q "theirs is not empty and was not written by scripts/bench" bench.err || { cat bench.err; fail "no message"; }
[[ $(cat theirs/metrics.txt) == "their notes" && $(cat theirs/summary.md) == data && ! -e theirs/.scripts-bench ]] ||
  fail "scripts/bench changed a directory it did not write"
ok "scripts/bench refuses an --out directory it did not write, leaving it as it was"
