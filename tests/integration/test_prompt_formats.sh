# Prompts in other programs' files: `export --format npy|kobold` and sp_prompt_load reading them
# back (eval, predict, export all load prompts through it); .npy files written by NumPy itself
# (float32, float16, float64; the strict header checks); pickles refused with the way out.
source "$(dirname "$0")/lib.sh"
cd "$WORK"
PY=/usr/bin/python3

"$SP_CLI" init-model --layers 2 --d 32 --heads 4 --vocab 64 --ctx 64 --seed 1 model >/dev/null
"$SP_SYNTH" valid.h5 48 64 16 2
$PY - <<'PY'
import numpy as np, h5py
rng = np.random.default_rng(3)
x = rng.normal(size=(16, 32)).astype(np.float32)
with h5py.File("p.h5", "w") as f:
    f["prompt"] = x
np.save("np-f4.npy", x)
np.save("np-f2.npy", x.astype(np.float16))
np.save("np-f8.npy", x.astype(np.float64) / 3)
np.save("bad-fortran.npy", np.asfortranarray(x))
np.save("bad-3d.npy", x.reshape(2, 8, 32))
np.save("bad-object.npy", np.array([x, None], dtype=object), allow_pickle=True)
np.save("bad-bigendian.npy", x.astype(">f4"))
np.save("bad-int.npy", (x * 10).astype(np.int32))
y = x.copy(); y[3, 5] = np.nan
np.save("bad-nan.npy", y)
np.save("bad-narrow.npy", x[:, :24].copy())
open("bad-truncated.npy", "wb").write(open("np-f4.npy", "rb").read()[:-4])
import torch
torch.save(torch.from_numpy(x), "bad-torch.pt")
import zipfile
with zipfile.ZipFile("bad-nopt.zip", "w") as z:
    z.writestr("meta.json", "{}")
PY

# export writes what NumPy writes, byte for byte; NumPy and KoboldAI's checks read it back.
"$SP_CLI" export --model model --prompt p.h5 --format npy --out out.npy >/dev/null
"$SP_CLI" export --model model --prompt p.h5 --format kobold --out out.zip --name "Test prompt" \
  --author tester --description "a test" >/dev/null
$PY - <<'PY' || fail "npy/kobold files differ from NumPy's"
import io, json, zipfile, h5py, numpy as np
x = np.asarray(h5py.File("p.h5", "r")["prompt"])
np.save("numpy-says.npy", x)
assert open("out.npy", "rb").read() == open("numpy-says.npy", "rb").read(), "not numpy.save's bytes"
z = zipfile.ZipFile("out.zip")
assert sorted(z.namelist()) == ["meta.json", "tensor.npy"], z.namelist()
with z.open("tensor.npy") as f:  # the header check KoboldAI's checksp makes
    version = np.lib.format.read_magic(f)
    shape, fortran, dtype = np.lib.format._read_array_header(f, version)
assert len(shape) == 2 and shape == (16, 32) and not fortran and dtype == np.float32
assert (np.load(io.BytesIO(z.read("tensor.npy"))) == x).all()
meta = json.loads(z.read("meta.json"))
assert meta == {"name": "Test prompt", "author": "tester", "supported": "model", "description": "a test"}, meta
PY
ok "export --format npy is numpy.save's bytes; --format kobold passes KoboldAI's checks"

# Round trips: every format read back gives the same prompt, so the same predictions.
for f in out.npy out.zip np-f4.npy; do
  rm -f back.npy
  "$SP_CLI" export --model model --prompt $f --format npy --out back.npy >/dev/null
  cmp -s back.npy out.npy || fail "$f did not read back to the same prompt"
done
"$SP_CLI" predict --model model --data valid.h5 --prompt p.h5 --threads 1 --out a.jsonl --quiet
"$SP_CLI" predict --model model --data valid.h5 --prompt out.zip --threads 1 --out b.jsonl --quiet
same_file a.jsonl b.jsonl "predictions with the prompt and with its KoboldAI zip"
for f in np-f2 np-f8; do
  "$SP_CLI" export --model model --prompt $f.npy --format npy --out $f-back.npy >/dev/null
done
$PY - <<'PY' || fail "float16/float64 .npy not converted exactly"
import numpy as np
assert (np.load("np-f2-back.npy") == np.load("np-f2.npy").astype(np.float32)).all()
assert (np.load("np-f8-back.npy") == np.load("np-f8.npy").astype(np.float32)).all()
PY
ok "npy (float32/16/64) and KoboldAI zips read back exactly; predictions identical"

# Refused, saying why: exit 1, nothing written.
refused() { # file needle
  local rc=0
  rm -f r.npy
  "$SP_CLI" export --model model --prompt "$1" --format npy --out r.npy > r.log 2>&1 || rc=$?
  (( rc == 1 )) && grep -qF -- "$2" r.log && [[ ! -e r.npy ]] || { cat r.log; fail "$1: exit $rc, expected 1 and '$2'"; }
  ok "refused $1: $(cat r.log)"
}
refused bad-fortran.npy "fortran_order True"
refused bad-3d.npy "a 3-D array: expected 2-D"
refused bad-object.npy "allow_pickle, which can run arbitrary code"
refused bad-bigendian.npy "dtype '>f4'"
refused bad-int.npy "dtype '<i4'"
refused bad-nan.npy "element [3, 5] is nan"
refused bad-truncated.npy "bytes of data for shape (16, 32)"
refused bad-narrow.npy "the prompt is 24 wide"
refused bad-torch.pt "a PyTorch pickle (as adapter_model.bin is): refused"
cp bad-torch.pt bad-torch.zip
refused bad-torch.zip "a PyTorch pickle (torch.save's zip, with data.pkl): refused"
refused bad-nopt.zip "a zip without tensor.npy"
touch r.npy
rc=0; "$SP_CLI" export --model model --prompt p.h5 --format npy --out r.npy > r.log 2>&1 || rc=$?
(( rc == 1 )) && grep -q "already exists" r.log && [[ ! -s r.npy ]] || fail "an existing file was overwritten"
ok "an existing output file is refused"
