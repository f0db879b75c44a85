# scripts/plot: two short training runs drawn into one PNG (checked by its header), one run
# alone, a run without evaluations, and clear failures on bad input.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
PLOT="$SP_REPO/scripts/plot"
command -v gnuplot >/dev/null || fail "gnuplot is not installed (Debian package gnuplot-nox: scripts/setup)"

"$SP_CLI" init-model --layers 1 --d 16 --heads 2 --vocab 64 --ctx 64 model >/dev/null
"$SP_SYNTH" train.h5 128 64 4 1
"$SP_SYNTH" valid.h5 128 64 4 2
common=(--model model --train train.h5 --valid valid.h5 --steps 30 --eval-every 10
        --global-batch 8 --threads 1 --quiet)
"$SP_CLI" train "${common[@]}" --out run-a
"$SP_CLI" train "${common[@]}" --out run-b --optimizer adamw --lr 0.05

# png_size FILE: "WIDTH HEIGHT" from the PNG signature and IHDR chunk, or a failure.
png_size() { python3 - "$1" <<'PY'
import struct, sys
b = open(sys.argv[1], "rb").read(33)
if len(b) < 33 or b[:8] != b"\x89PNG\r\n\x1a\n" or b[12:16] != b"IHDR":
    sys.exit(f"FAIL: {sys.argv[1]} is not a PNG file")
w, h = struct.unpack(">II", b[16:24])
if w <= 0 or h <= 0:
    sys.exit(f"FAIL: {sys.argv[1]}: bad size {w}x{h}")
print(w, h)
PY
}

"$PLOT" two.png run-a run-b >out.txt 2>&1 || { cat out.txt; fail "plotting two runs"; }
grep -q "wrote two.png (2 runs)" out.txt || { cat out.txt; fail "no summary"; }
[[ "$(png_size two.png)" == "1000 750" ]] || fail "two.png: size $(png_size two.png), want 1000 750"
[[ $(stat -c %s two.png) -gt 10000 ]] || fail "two.png is suspiciously small"
[[ ! -e two.png.tmp ]] || fail "a temporary file was left behind"
ok "two runs plotted into a valid 1000x750 PNG"

"$PLOT" --smooth 5 --title "run a" --size 640x480 one.png "$WORK/run-a/" >/dev/null ||
  fail "plotting one run with options"
[[ "$(png_size one.png)" == "640 480" ]] || fail "one.png has the wrong size"
mkdir noeval
python3 -c 'import json, sys, metrics
for r in metrics.steps(metrics.read(sys.argv[1])): print(json.dumps(r))' run-a/metrics.jsonl >noeval/metrics.jsonl
"$PLOT" noeval.png noeval >/dev/null || fail "plotting a run without evaluations"
png_size noeval.png >/dev/null
# A run still being written: its unfinished last line is skipped with a note.
mkdir live && cat run-a/metrics.jsonl >live/metrics.jsonl && printf '{"step":31,"lo' >>live/metrics.jsonl
"$PLOT" live.png live >out.txt 2>&1 || { cat out.txt; fail "plotting a run with an unfinished line"; }
grep -q "skipping the unfinished last line" out.txt || fail "the unfinished line was not reported"
ok "one run with options, a run without evaluations, a run still writing"

# A diverged run: metrics.jsonl writes non-finite values as null (steps and evaluations).
mkdir nan
{ head -n 12 run-a/metrics.jsonl
  printf '{"step":13,"loss":null,"lr":0.3,"grad_norm":null,"tokens":96,"tokens_per_s":1000.0,"elapsed_s":1.0}\n'
  printf '{"step":13,"split":"valid","loss":null,"examples":128,"accuracy":0.5,"per_class":[]}\n'
  printf '{"step":14,"split":"valid","loss":null,"examples":0,"accuracy":null}\n'; } >nan/metrics.jsonl
"$PLOT" nan.png nan >out.txt 2>&1 || { cat out.txt; fail "plotting a run with null values"; }
png_size nan.png >/dev/null
ok "a run with null (non-finite) values is plotted"

# expect_failure STATUS MESSAGE ARGS...: scripts/plot ARGS fails with STATUS and MESSAGE.
expect_failure() {
  local want=$1 msg=$2 rc=0; shift 2
  "$PLOT" "$@" >err.txt 2>&1 || rc=$?
  [[ $rc == "$want" ]] || { cat err.txt; fail "plot $*: exit $rc, want $want"; }
  grep -qF -- "$msg" err.txt || { cat err.txt; fail "plot $*: no message '$msg'"; }
}
mkdir norun empty bad
: >empty/metrics.jsonl
printf '{"step":1,"loss":2.0}\nnot json\n{"step":2,"loss":1.0}\n' >bad/metrics.jsonl
expect_failure 1 "norun: no metrics.jsonl (not an output directory of \`softprompt train\`?)" x1.png norun
expect_failure 1 "empty/metrics.jsonl: no training or evaluation records (empty file" x2.png empty
expect_failure 1 "bad/metrics.jsonl: line 2 is not a metrics record" x3.png bad
expect_failure 1 "nowhere: no such run directory" x4.png run-a nowhere
expect_failure 2 "need OUT.png and at least one RUN_DIR" x5.png
expect_failure 2 "the output must be a .png file" run-a run-b
expect_failure 2 "--smooth must be a positive integer" --smooth 0 x6.png run-a
ls x*.png* >/dev/null 2>&1 && fail "a failed plot left a file: $(ls x*.png*)"
ok "missing, empty and malformed metrics and usage errors fail with clear messages"
