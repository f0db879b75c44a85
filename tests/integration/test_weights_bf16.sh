# --weights auto|f32|bf16 end to end: which storage each file gets (info), eval in both storages
# and with the float32 path forced (SP_CPU_NO_BF16=1), and bad input: a BF16 tensor whose bytes
# do not match its shape, an F32 value BF16 cannot hold, an unknown --weights value.
source "$(dirname "$0")/lib.sh"
cd "$WORK"

tiny=(--layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --std 0.3 --random-norms --seed 1)
"$SP_CLI" init-model "${tiny[@]}" --dtype bf16 bf16-model >/dev/null
"$SP_CLI" init-model "${tiny[@]}" f32-model >/dev/null

"$SP_CLI" info bf16-model | grep -q "in BF16 (--weights bf16)" || fail "auto did not choose BF16 for a BF16 model"
"$SP_CLI" info f32-model | grep -q "in float32 (--weights f32" || fail "auto did not keep float32 for an F32 model"
"$SP_CLI" info bf16-model --weights f32 | grep -q "in float32" || fail "--weights f32 not honoured"
"$SP_CLI" info f32-model --weights bf16 | grep -q "in BF16" || fail "--weights bf16 did not round an F32 model"
SP_CPU_NO_BF16=1 "$SP_CLI" info bf16-model | grep -q "bf16 compute *float32" ||
  fail "SP_CPU_NO_BF16=1 did not force the float32 path"
ok "info: auto picks BF16 only for BF16 files; --weights overrides; SP_CPU_NO_BF16=1 forces float32"

"$SP_SYNTH" valid.h5 64 64 16 2
"$SP_SYNTH" valid-mask.h5 64 64 16 2 mask # the masked LMs' form of the task ({mask})
# eval_three MODEL [DATA]: eval in float32, in BF16 and on BF16's float32 path; their losses agree.
eval_three() {
  local data=${2:-valid.h5}
  for w in f32 bf16; do "$SP_CLI" eval --model "$1" --data "$data" --weights $w --json > $w.json ||
    fail "$1: eval --weights $w failed"; done
  SP_CPU_NO_BF16=1 "$SP_CLI" eval --model "$1" --data "$data" --weights bf16 --json > fallback.json ||
    fail "$1: eval on the float32 path failed"
  python3 - "$1" <<'PY' || fail "$1: eval losses of the two storages and paths disagree"
import json, sys
f32, bf16, fb = (json.load(open(n + ".json"))["loss"] for n in ("f32", "bf16", "fallback"))
# the float32 path computes the BF16 weights' products in float32: as --weights f32 does
assert abs(fb - f32) <= 1e-5 * abs(f32), (fb, f32)
# BF16 products round the activations too (docs/performance.md): within 1e-2
assert abs(bf16 - f32) <= 1e-2 * abs(f32), (bf16, f32)
print(f"ok: {sys.argv[1]}: eval loss f32 {f32:.6f}, bf16 {bf16:.6f}, bf16 float32 path {fb:.6f}")
PY
}
eval_three bf16-model
# Every family's matrices in BF16 (fused q/k/v and gate_up_proj halves, interleaved heads, ...).
for arch in llama qwen2 mistral qwen3 gemma gemma2 gemma3_text gpt_neox phi3 opt phi; do
  "$SP_CLI" init-model "${tiny[@]}" --arch $arch --dtype bf16 $arch >/dev/null
  eval_three $arch
done
# the masked LMs: their MLM head's dense in BF16 too (the decoder is the tied embeddings, F32)
for arch in bert roberta; do
  "$SP_CLI" init-model "${tiny[@]}" --arch $arch --dtype bf16 $arch >/dev/null
  "$SP_CLI" info $arch | grep -q "in BF16 (--weights bf16)" || fail "$arch: auto did not choose BF16"
  eval_three $arch valid-mask.h5
done

# a BF16 tensor whose shape says one element more than its bytes hold (the header rewritten in
# place, padded to its length)
python3 - bf16-model/model.safetensors <<'PY'
import json, struct, sys
p = sys.argv[1]
raw = open(p, "rb").read()
n = struct.unpack("<Q", raw[:8])[0]
h = json.loads(raw[8:8 + n])
h["h.0.mlp.c_fc.weight"]["shape"][1] += 1
new = json.dumps(h, separators=(",", ":")).encode()
assert len(new) <= n
open(p, "wb").write(raw[:8] + new + b" " * (n - len(new)) + raw[8 + n:])
PY
if "$SP_CLI" eval --model bf16-model --data valid.h5 --weights bf16 2> bytes.err; then
  fail "a BF16 tensor with the wrong byte count was accepted"
fi
grep -q "h.0.mlp.c_fc.weight" bytes.err && grep -q "data_offsets" bytes.err ||
  { cat bytes.err; fail "the byte-count message does not name the tensor and its data_offsets"; }
ok "a BF16 tensor with the wrong byte count: $(head -1 bytes.err)"

# an F32 value beyond BF16's range (rounds to infinity): f32 loads it, bf16 refuses naming it
python3 - f32-model/model.safetensors <<'PY'
import json, struct, sys
p = sys.argv[1]
raw = bytearray(open(p, "rb").read())
n = struct.unpack("<Q", raw[:8])[0]
t = json.loads(raw[8:8 + n])["h.1.attn.c_proj.weight"]
at = 8 + n + t["data_offsets"][0] + 4 * 5
raw[at:at + 4] = struct.pack("<f", 3.4e38)
open(p, "wb").write(raw)
PY
"$SP_CLI" info f32-model --weights f32 >/dev/null || fail "the F32 model no longer loads as float32"
rc=0; "$SP_CLI" info f32-model --weights bf16 > /dev/null 2> range.err || rc=$?
[[ $rc -eq 1 ]] || fail "--weights bf16 on a value beyond BF16's range: exit $rc, expected 1"
grep -q "h.1.attn.c_proj.weight': element 5 .*beyond BF16's range.*--weights f32" range.err ||
  { cat range.err; fail "the range message does not name the tensor, element and the way out"; }
ok "a value BF16 cannot hold: $(head -1 range.err)"

rc=0; "$SP_CLI" eval --model f32-model --data valid.h5 --weights bf8 2> usage.err || rc=$?
[[ $rc -eq 2 ]] && grep -q -- "--weights 'bf8': expected auto, f32 or bf16" usage.err ||
  { cat usage.err; fail "an unknown --weights value: exit $rc"; }
ok "an unknown --weights value is a usage error (exit 2)"
