# scripts/get-model against a local stand-in for the Hugging Face hub (tests/tools/fake_hub.py
# on 127.0.0.1): fresh download of a sharded model through a renamed-repository redirect,
# a re-run that downloads nothing, resuming after a dropped connection (within one run and
# across runs), checksum failures, a damaged local file, a missing model, network failure,
# offline verification, and `softprompt info` on the result.
source "$(dirname "$0")/lib.sh"
GET_MODEL="$SP_REPO/scripts/get-model"
HUB="$WORK/hub"
MODELS="$WORK/models"

# The fake hub's tree: ROOT/<repo>/<revision>/<file>.
gpt2="$HUB/openai-community/gpt2/main"
"$SP_CLI" init-model --layers 2 --d 64 --heads 2 --vocab 512 --ctx 64 --shards 2 "$gpt2" >/dev/null
printf '{"!": 0, "\\"": 1, "a": 2, "b": 3, "ab": 4}\n' >"$gpt2/vocab.json"
printf '#version: 0.2\na b\n' >"$gpt2/merges.txt"
printf '{"version": "1.0", "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]}}\n' \
  >"$gpt2/tokenizer.json"
printf '{"model_max_length": 64}\n' >"$gpt2/tokenizer_config.json"
# (no generation_config.json: an optional file that 404s)
tiny="$HUB/acme/tiny/main"
"$SP_CLI" init-model --layers 1 --d 64 --heads 2 --vocab 1024 --ctx 64 --seed 7 "$tiny" >/dev/null
printf '{"a": 0}\n' >"$tiny/vocab.json"; printf '#version: 0.2\n' >"$tiny/merges.txt"
: >"$tiny/tokenizer_config.json"   # an empty file downloads too
# A second revision of acme/tiny, sharded: switching to it must retire model.safetensors.
"$SP_CLI" init-model --layers 1 --d 64 --heads 2 --vocab 1024 --ctx 64 --seed 8 --shards 2 \
  "$HUB/acme/tiny/v2" >/dev/null

python3 "$SP_REPO/tests/tools/fake_hub.py" "$HUB" "$WORK/port" --alias gpt2=openai-community/gpt2 &
HUB_PID=$!
trap 'kill "$HUB_PID" 2>/dev/null; wait "$HUB_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do [[ -s "$WORK/port" ]] && break; sleep 0.05; done
[[ -s "$WORK/port" ]] || fail "the fake hub did not start"
export SP_HF_ENDPOINT="http://127.0.0.1:$(cat "$WORK/port")"
export SP_GET_MODEL_RETRY_DELAY=0 SP_GET_MODEL_RETRIES=3
LOG="$HUB/.requests.log"
gets() { grep -c "^GET " "$LOG" || true; }
faults() { printf '%s\n' "$1" >"$HUB/.faults.json"; }

# ---- fresh download of a sharded model (gpt2 -> openai-community/gpt2, a 307 like the hub's) ----
"$GET_MODEL" gpt2 --dir "$MODELS" >"$WORK/out1" 2>&1 || { cat "$WORK/out1"; fail "fresh download"; }
for f in config.json model.safetensors.index.json model-00001-of-00002.safetensors \
         model-00002-of-00002.safetensors tokenizer.json vocab.json merges.txt tokenizer_config.json; do
  same_file "$gpt2/$f" "$MODELS/gpt2/$f" "downloaded $f"
done
[[ ! -e "$MODELS/gpt2/generation_config.json" ]] || fail "a missing optional file was created"
compgen -G "$MODELS/gpt2/.get-model/*.part*" >/dev/null && fail "a .part file was left behind"
grep -q "model-00001-of-00002.safetensors .*downloaded, sha256 ok" "$WORK/out1" || { cat "$WORK/out1"; fail "shard not reported verified by sha256"; }
grep -q "config.json .*downloaded, git-sha1 ok" "$WORK/out1" || fail "config.json not reported verified by git sha1"
grep -q "2 shards listed in model.safetensors.index.json" "$WORK/out1" || { cat "$WORK/out1"; fail "softprompt info did not run on the result"; }
grep -q "^commit $(python3 -c 'import hashlib; print(hashlib.sha1(b"openai-community/gpt2@main").hexdigest())')" \
  "$MODELS/gpt2/.get-model/source" || fail "the repository commit was not recorded"
"$SP_CLI" info "$MODELS/gpt2" >/dev/null || fail "softprompt info rejects the downloaded model"
ok "fresh download of a sharded model, verified, softprompt info passes"

# ---- re-run: nothing downloaded ----
before=$(gets)
"$GET_MODEL" gpt2 --dir "$MODELS" >"$WORK/out2" 2>&1 || { cat "$WORK/out2"; fail "re-run"; }
[[ "$(gets)" == "$before" ]] || fail "the re-run downloaded again: $(tail -n 5 "$LOG")"
[[ $(grep -c "up to date" "$WORK/out2") == 8 ]] || { cat "$WORK/out2"; fail "re-run did not report 8 files up to date"; }
ok "re-run is a no-op (HEAD requests only)"

# ---- a damaged local file is noticed and replaced ----
python3 - "$MODELS/gpt2/model-00002-of-00002.safetensors" <<'PY'
import sys
p = sys.argv[1]; b = bytearray(open(p, "rb").read()); b[-1] ^= 1; open(p, "wb").write(b)
PY
"$GET_MODEL" gpt2 --dir "$MODELS" >"$WORK/out3" 2>&1 || { cat "$WORK/out3"; fail "repair run"; }
grep -q "model-00002-of-00002.safetensors: the local copy differs" "$WORK/out3" || { cat "$WORK/out3"; fail "damage not reported"; }
same_file "$gpt2/model-00002-of-00002.safetensors" "$MODELS/gpt2/model-00002-of-00002.safetensors" "repaired shard"
ok "a damaged local file is downloaded again"

# ---- a dropped connection is resumed within the run (a Range request for the rest) ----
key=acme/tiny/main/model.safetensors
size=$(stat -c %s "$tiny/model.safetensors")
faults "{\"drop_once\": [\"$key\"]}"
: >"$LOG"
"$GET_MODEL" acme/tiny --dir "$MODELS" >"$WORK/out4" 2>&1 || { cat "$WORK/out4"; fail "download with a dropped connection"; }
same_file "$tiny/model.safetensors" "$MODELS/acme/tiny/model.safetensors" "resumed model.safetensors"
same_file "$tiny/tokenizer_config.json" "$MODELS/acme/tiny/tokenizer_config.json" "an empty file"
grep -q "^GET /cdn/$key bytes=$((size / 2))-$" "$LOG" ||
  { cat "$LOG"; fail "no resuming request from byte $((size / 2))"; }
grep -q "retrying" "$WORK/out4" || fail "the retry was not reported"
ok "dropped connection resumed in the same run from byte $((size / 2)) of $size"

# ---- ... and across runs: the first run gives up, the partial file is kept, the next resumes ----
rm -rf "$MODELS/acme"
faults "{\"drop_once\": [\"$key\"], \"round\": 2}"   # changed: drops once more
: >"$LOG"
if SP_GET_MODEL_RETRIES=1 "$GET_MODEL" acme/tiny --dir "$MODELS" >"$WORK/out5" 2>&1; then
  fail "a dropped connection without retries succeeded"
fi
grep -q "network failure" "$WORK/out5" || { cat "$WORK/out5"; fail "no network failure message"; }
grep -q "partial download .* is kept" "$WORK/out5" || { cat "$WORK/out5"; fail "the kept partial file was not reported"; }
[[ ! -e "$MODELS/acme/tiny/model.safetensors" ]] || fail "an incomplete file was put in place"
[[ $(stat -c %s "$MODELS/acme/tiny/.get-model/model.safetensors.part") == $((size / 2)) ]] ||
  fail "the partial download does not hold the first half"
"$GET_MODEL" acme/tiny --dir "$MODELS" >"$WORK/out6" 2>&1 || { cat "$WORK/out6"; fail "resuming run"; }
grep -q "model.safetensors: resuming at" "$WORK/out6" || { cat "$WORK/out6"; fail "resume not reported"; }
grep -q "^GET /cdn/$key bytes=$((size / 2))-$" "$LOG" || { cat "$LOG"; fail "the next run did not resume"; }
same_file "$tiny/model.safetensors" "$MODELS/acme/tiny/model.safetensors" "model.safetensors resumed across runs"
ok "an interrupted run's partial download is resumed by the next run"

# ---- checksum mismatch: the .part is deleted, nothing is put in place, the error says so ----
rm -rf "$MODELS/acme"
faults "{\"corrupt\": [\"$key\"]}"
if "$GET_MODEL" acme/tiny --dir "$MODELS" >"$WORK/out7" 2>&1; then fail "a corrupted download was accepted"; fi
grep -q "model.safetensors: checksum mismatch: the hub says sha256 " "$WORK/out7" ||
  { cat "$WORK/out7"; fail "no checksum mismatch message"; }
[[ ! -e "$MODELS/acme/tiny/model.safetensors" && ! -e "$MODELS/acme/tiny/.get-model/model.safetensors.part" ]] ||
  fail "the corrupted download was left behind"
faults '{"corrupt": ["openai-community/gpt2/main/merges.txt"]}'
rm -f "$MODELS/gpt2/merges.txt"
if "$GET_MODEL" gpt2 --dir "$MODELS" >"$WORK/out8" 2>&1; then fail "a corrupted small file was accepted"; fi
grep -q "merges.txt: checksum mismatch: the hub says git-sha1 " "$WORK/out8" || { cat "$WORK/out8"; fail "no git-sha1 mismatch message"; }
faults '{}'
"$GET_MODEL" gpt2 --dir "$MODELS" >"$WORK/out9" 2>&1 || { cat "$WORK/out9"; fail "gpt2 after the fault was gone"; }
"$GET_MODEL" acme/tiny --dir "$MODELS" >"$WORK/out9" 2>&1 || { cat "$WORK/out9"; fail "download after the fault was gone"; }
same_file "$tiny/model.safetensors" "$MODELS/acme/tiny/model.safetensors" "model.safetensors after a mismatch"
ok "checksum mismatches (sha256 of an LFS file, git sha1 of a small file) fail and leave nothing"

# ---- another revision: its files come in, the earlier revision's single file goes ----
"$GET_MODEL" acme/tiny --revision v2 --dir "$MODELS" >"$WORK/out10" 2>&1 || { cat "$WORK/out10"; fail "revision v2"; }
[[ ! -e "$MODELS/acme/tiny/model.safetensors" ]] || fail "model.safetensors of main was not retired"
grep -q "model.safetensors: removed (not in revision v2)" "$WORK/out10" || { cat "$WORK/out10"; fail "retirement not reported"; }
same_file "$HUB/acme/tiny/v2/model-00002-of-00002.safetensors" "$MODELS/acme/tiny/model-00002-of-00002.safetensors" "v2 shard"
ok "switching revision replaces the weights"

# ---- missing model, missing revision, network failure, usage errors ----
if "$GET_MODEL" nobody/nothing --dir "$MODELS" >"$WORK/out11" 2>&1; then fail "a missing model succeeded"; fi
grep -q "no such model or file: repository 'nobody/nothing' not found" "$WORK/out11" || { cat "$WORK/out11"; fail "missing model message"; }
[[ ! -e "$MODELS/nobody/nothing/config.json" ]] || fail "files made for a missing model"
if "$GET_MODEL" acme/tiny --revision nope --dir "$WORK/m2" >"$WORK/out12" 2>&1; then fail "a missing revision succeeded"; fi
grep -q "no such model or file: 'acme/tiny' has no revision 'nope'" "$WORK/out12" || { cat "$WORK/out12"; fail "missing revision message"; }
closed=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
if SP_HF_ENDPOINT="http://127.0.0.1:$closed" SP_GET_MODEL_RETRIES=2 "$GET_MODEL" gpt2 --dir "$MODELS" >"$WORK/out13" 2>&1; then
  fail "no server, yet success"
fi
grep -q "network failure: cannot download from http://127.0.0.1:$closed" "$WORK/out13" || { cat "$WORK/out13"; fail "network failure message"; }
grep -q -- "--offline" "$WORK/out13" || fail "the offline hint is missing"
set +e; "$GET_MODEL" --dir "$MODELS" >/dev/null 2>&1; rc1=$?; "$GET_MODEL" '../x' >/dev/null 2>&1; rc2=$?; set -e
[[ $rc1 == 2 && $rc2 == 2 ]] || fail "usage errors exit $rc1, $rc2 (want 2)"
mkdir -p "$WORK/m3/mine" && echo keep >"$WORK/m3/mine/notes.txt"
if "$GET_MODEL" mine --dir "$WORK/m3" >"$WORK/out14" 2>&1; then fail "wrote into a foreign directory"; fi
grep -q "was not made by get-model" "$WORK/out14" || { cat "$WORK/out14"; fail "foreign directory message"; }
ok "missing model/revision, network failure and usage errors are reported clearly"

# ---- offline: verifies against the recorded checksums, no request ----
: >"$LOG"
SP_HF_ENDPOINT="http://127.0.0.1:$closed" "$GET_MODEL" gpt2 --dir "$MODELS" --offline >"$WORK/out15" 2>&1 ||
  { cat "$WORK/out15"; fail "offline verification"; }
[[ ! -s "$LOG" ]] || fail "--offline made requests"
grep -q "8 files verified offline" "$WORK/out15" || { cat "$WORK/out15"; fail "offline summary"; }
printf 'x' >>"$MODELS/gpt2/vocab.json"
if "$GET_MODEL" gpt2 --dir "$MODELS" --offline >"$WORK/out16" 2>&1; then fail "offline accepted a changed file"; fi
grep -q "vocab.json: git-sha1 mismatch" "$WORK/out16" || { cat "$WORK/out16"; fail "offline mismatch message"; }
ok "--offline verifies without network and catches a changed file"
