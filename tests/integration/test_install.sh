# softprompt installed the way HPC sites install it (docs/install.md), from the tree under test:
#   A. `cmake --install` into a prefix: the layout (bin, the softprompt-* scripts and their
#      libexec helpers, share/softprompt with the job scripts and the demo model, docs, a man page
#      for every command, libsoftprompt.so with its soname and .a, the public headers only, each
#      compiling alone, softprompt.pc, the CMake package, the modulefiles); the shared library
#      exports the public sp_ API only; nothing loaded at run time names the source or build tree;
#   B. the prefix copied elsewhere (relocated), the source and build trees hidden (a tmpfs over
#      them in a private mount namespace), a clean environment, PATH only through the module:
#      Lmod loads the generated module (the Lua one; the Tcl one too, and a copy of the Lua one in
#      a site's module tree falls back to the recorded prefix); `softprompt info` on the installed
#      demo model; a 2-rank `train` (mpirun) whose prompt is bitwise the source tree binary's on
#      the same input; a job script copied out of the prefix runs through the module and fails
#      with a clear message without it; the C API example (examples/c) builds via pkg-config and
#      via find_package and its loss equals `softprompt eval`'s; the module unloads cleanly;
#   C. a job submitted with the installed softprompt-submit to the test Slurm cluster (2 ranks,
#      srun) records the installed prefix and binary and ends with the same prompt;
#   D. `cpack -G DEB`: the package's Depends cover the Debian package of every library the
#      binary and libsoftprompt.so link (dpkg -S), `dpkg -x` into a temporary root runs its
#      `softprompt --version` and `info` with the system's libraries, and
#      `apt-get install --simulate ./softprompt_*.deb` resolves.
# Needs root (mount namespace, the Slurm cluster: tests/cluster), Lmod and help2man (scripts/setup).
source "$(dirname "$0")/lib.sh"
: "${SP_SYNTH:?}" "${SP_REPO:?}"
t_start=$(date +%s)
build=$(cd "$(dirname "$SP_CLI")" && pwd)
lmod_init=/usr/share/lmod/lmod/init/bash
[[ -f $lmod_init ]] || fail "Lmod is not installed ($lmod_init; Debian package lmod, scripts/setup)"
command -v help2man >/dev/null || fail "help2man is not installed (scripts/setup): no man pages were built"
version=$("$SP_CLI" --version | awk '{print $2}')
[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || fail "softprompt --version: '$version'"
slurm_test          # cd WORK; the cluster harness
unset SP_BIN        # the installed softprompt is found by the rules under test

# --- A: install, layout --------------------------------------------------------------------------
opt=$WORK/opt/softprompt
cmake --install "$build" --prefix "$opt" > install.log 2>&1 || { cat install.log; fail "cmake --install failed"; }
want=(bin/softprompt bin/softprompt-submit bin/softprompt-sweep-collect bin/softprompt-plot
      bin/softprompt-get-model libexec/softprompt/metrics.py libexec/softprompt/plot.py
      libexec/softprompt/sweep_collect.py share/softprompt/slurm/train.sbatch
      share/softprompt/slurm/train-multinode.sbatch share/softprompt/slurm/sweep.sbatch
      share/softprompt/slurm/sweep.example.tsv share/softprompt/slurm/lib/softprompt-job.sh
      share/softprompt/models/demo-gpt2/config.json share/softprompt/models/demo-gpt2/model.safetensors
      share/doc/softprompt/README.md share/doc/softprompt/slurm.md share/doc/softprompt/install.md
      share/doc/softprompt/examples/c/sp_loss.c share/man/man1/softprompt.1
      share/man/man1/softprompt-submit.1 share/man/man1/softprompt-get-model.1
      lib/libsoftprompt.a lib/libsoftprompt.so lib/pkgconfig/softprompt.pc
      lib/cmake/softprompt/softprompt-config.cmake lib/cmake/softprompt/softprompt-config-version.cmake
      "share/modulefiles/softprompt/$version.lua" "share/modulefiles/softprompt/$version")
for f in "${want[@]}"; do [[ -f $opt/$f ]] || fail "A: $f is not installed"; done
for f in bin/softprompt bin/softprompt-submit share/softprompt/slurm/train.sbatch; do
  [[ -x $opt/$f ]] || fail "A: $f is not executable"
done
# A man page for every command softprompt --help lists.
n_cmd=0
while read -r cmd; do
  n_cmd=$((n_cmd + 1))
  [[ $cmd == help || -f $opt/share/man/man1/softprompt-$cmd.1 ]] || fail "A: no man page for softprompt $cmd"
  [[ $cmd == help ]] && continue
  page=$(MANWIDTH=200 man -l "$opt/share/man/man1/softprompt-$cmd.1" 2>/dev/null)
  [[ $page == *"usage: softprompt $cmd"* && $page == *"--help"* ]] \
    || fail "A: the man page of softprompt $cmd does not hold its usage and options"
done < <("$SP_CLI" --help | sed -n '/^commands:/,/^$/s/^  \([a-z][a-z0-9-]*\) .*/\1/p')
(( n_cmd >= 6 )) || fail "A: softprompt --help lists $n_cmd commands"
# The library: soname from the version, public symbols only.
major_minor=${version%.*}
[[ $(readelf -d "$opt/lib/libsoftprompt.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p') == "libsoftprompt.so.$major_minor" ]] \
  || fail "A: libsoftprompt.so's soname is not libsoftprompt.so.$major_minor"
nm -D --defined-only "$opt/lib/libsoftprompt.so" | awk '$2 ~ /^[TDBRV]$/ {sub(/@.*/, "", $3); print $3}' > exported.txt
grep -q '^sp_engine_run$' exported.txt && grep -q '^sp_model_load$' exported.txt \
  || fail "A: libsoftprompt.so does not export the public API"
if grep -v '^sp_[a-zA-Z0-9]' exported.txt > internal.txt; then
  fail "A: libsoftprompt.so exports internal symbols: $(head -n 5 internal.txt | tr '\n' ' ')"
fi
# The public headers, exactly, each compiling alone, none naming an internal header.
diff <(cd "$SP_REPO/include/softprompt" && ls -- *.h) <(cd "$opt/include/softprompt" && ls) \
  || fail "A: the installed headers are not include/softprompt/*.h"
for h in "$opt"/include/softprompt/*.h; do
  printf '#include <softprompt/%s>\nint main(void) { return 0; }\n' "${h##*/}" > hdr.c
  cc -std=c11 -Wall -Wextra -Werror -pedantic -c -I"$opt/include" hdr.c -o hdr.o 2> hdr.err \
    || { cat hdr.err; fail "A: softprompt/${h##*/} does not compile on its own"; }
  ! grep -n '#include "' "$h" | grep -v '"softprompt/' || fail "A: ${h##*/} includes a header that is not public"
done
# Nothing loaded at run time names the source or build tree (debugging information may).
for elf in "$opt/bin/softprompt" "$opt/lib/libsoftprompt.so"; do
  for sec in .rodata .data .dynstr; do
    readelf -p "$sec" "$elf" 2>/dev/null | grep -q -e "$SP_REPO" -e "$build" && fail "A: ${elf##*/} $sec names the source or build tree"
  done
  readelf -d "$elf" | grep -q -e "$SP_REPO" -e "$build" && fail "A: ${elf##*/}'s RPATH names the source or build tree"
done
if grep -rIl -e "$SP_REPO" -e "$build" "$opt" > named.txt; then
  fail "A: installed files name the source or build tree: $(tr '\n' ' ' < named.txt)"
fi
# The Spack recipe and the EasyBuild easyconfig ask only for what the install gives (neither tool
# runs here): their sanity-check files and directories exist, the easyconfig's commands run.
python3 - "$SP_REPO/packaging" "$opt" > recipes.txt <<'PY' || { cat recipes.txt; fail "A: the Spack or EasyBuild sanity checks do not hold for the install"; }
import ast, glob, os, shlex, subprocess, sys
pk, prefix = sys.argv[1:]
spack = [ast.literal_eval(n.value) for n in ast.walk(ast.parse(open(f"{pk}/spack/package.py").read()))
         if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "sanity_check_is_file"]
eb = {}
[ebfile] = glob.glob(f"{pk}/easybuild/softprompt-*.eb")
exec(open(ebfile).read(), {"SOURCE_TAR_GZ": "%(name)s-%(version)s.tar.gz", "SHLIB_EXT": "so"}, eb)
paths = eb["sanity_check_paths"]
want = [(f, os.path.isfile) for f in spack[0] + paths["files"]] + [(d, os.path.isdir) for d in paths["dirs"]]
for path, exists in want:
    if not exists(os.path.join(prefix, path)):
        sys.exit(f"{path} is not installed")
env = dict(os.environ, PATH=f"{prefix}/bin:" + os.environ["PATH"], PKG_CONFIG_PATH=f"{prefix}/lib/pkgconfig")
for cmd in eb["sanity_check_commands"]:
    subprocess.run(shlex.split(cmd.replace("%(installdir)s", prefix)), env=env, check=True,
                   stdout=subprocess.DEVNULL)
print(f"{len(want)} paths, {len(eb['sanity_check_commands'])} commands")
PY
ok "A: the Spack recipe's and the easyconfig's sanity checks hold for the install: $(cat recipes.txt)"
ok "A: installed into a prefix: ${#want[@]} files checked, $(ls "$opt/share/man/man1" | wc -l) man pages, $(wc -l < exported.txt) public symbols, headers compile alone, no tree paths"

echo "($(( $(date +%s) - t_start )) s)"
# --- inputs, and the source tree's own result -------------------------------------------------
"$SP_SYNTH" train.h5 256 64 8 1
"$SP_SYNTH" valid.h5 64 64 8 2
targs=(--steps 24 --global-batch 16 --micro-batch 4 --threads 1 --lr 0.3 --eval-every 24
       --save-every 24 --seed 7 --quiet)
mpi 2 train --model "$SP_REPO/models/demo-gpt2" --train train.h5 --valid valid.h5 --out ref "${targs[@]}" \
  > ref.log 2>&1 || { cat ref.log; fail "the source tree's 2-rank run failed"; }
ref=$WORK/ref/adapter/adapter_model.safetensors
[[ -f $ref ]] || fail "the source tree's run wrote no adapter"

# --- B: relocated, source tree hidden, clean environment, module ------------------------------
moved=$WORK/moved/softprompt
mkdir -p "$WORK/moved" && cp -a "$opt" "$moved"
tclonly=$WORK/tclonly/softprompt
mkdir -p "$WORK/tclonly" && cp -a "$opt" "$tclonly" && rm "$tclonly/share/modulefiles/softprompt/$version.lua"
mkdir -p sitemods/softprompt && cp "$opt/share/modulefiles/softprompt/$version.lua" sitemods/softprompt/
rm -rf "$opt/share/softprompt/models"   # the site copy's prefix is only looked at, never run from
mkdir -p elsewhere
cp "$SP_REPO/examples/c/sp_loss.c" "$WORK/example-source.c"
# clean ENV...: a login-like environment: no SP_*, no build paths; PATH without any softprompt.
clean() {
  env -i HOME="$HOME" USER=root LOGNAME=root TERM=dumb LANG=C.UTF-8 PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    TMPDIR="${TMPDIR:-/tmp}" OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
    OMPI_MCA_rmaps_base_oversubscribe=1 ${OPENBLAS_CORETYPE:+OPENBLAS_CORETYPE=$OPENBLAS_CORETYPE} \
    ASAN_OPTIONS="${ASAN_OPTIONS:-}:detect_leaks=0:verify_asan_link_order=0" \
    ${LSAN_OPTIONS:+LSAN_OPTIONS=$LSAN_OPTIONS} ${SLURM_CONF:+SLURM_CONF=$SLURM_CONF} "$@"
}
hide=("$SP_REPO")
[[ $build == "$SP_REPO"/* ]] || hide+=("$build")
cat > inside.sh <<'EOF'
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
for d in $HIDE; do mount -t tmpfs -o size=1m,mode=0555 none "$d"; done
for d in $HIDE; do [[ -z $(ls -A "$d") ]] || fail "B: $d is still visible"; done
cd "$WORK/elsewhere"
! type -P softprompt >/dev/null || fail "B: softprompt is on PATH before the module is loaded"

# A job script copied out of the prefix, without the module: a clear refusal.
cp "$MOVED/share/softprompt/slurm/train.sbatch" my-job.sbatch
rc=0; SP_MODEL=$MOVED/share/softprompt/models/demo-gpt2 SP_TRAIN=$WORK/train.h5 SP_OUT=$WORK/elsewhere/job-run \
  SP_LAUNCHER=mpirun bash my-job.sbatch > nomodule.log 2>&1 || rc=$?
[[ $rc == 2 ]] && grep -q "softprompt-job.sh not found .*module load softprompt" nomodule.log \
  || { cat nomodule.log; fail "B: a copied job script without the module: exit $rc"; }

# The installed job script itself, without the module: its library next to it, the binary in
# its prefix (SP_HOME found from the library's place).
SP_MODEL=$MOVED/share/softprompt/models/demo-gpt2 SP_TRAIN=$WORK/train.h5 SP_OUT=$WORK/elsewhere/installed-job \
  SP_LAUNCHER=mpirun SP_TRAIN_ARGS="--steps 2 --threads 1 --quiet" bash "$MOVED/share/softprompt/slurm/train.sbatch" \
  > installed-job.log 2>&1 || { cat installed-job.log; fail "B: the installed train.sbatch, run without the module"; }
grep -q "running: mpirun $MOVED/bin/softprompt train" installed-job.log \
  || { cat installed-job.log; fail "B: the installed train.sbatch did not find its prefix's softprompt"; }

source "$LMOD_INIT"
module use "$MOVED/share/modulefiles"
module load softprompt 2> load.err || { cat load.err; fail "B: module load softprompt failed"; }
[[ $SOFTPROMPT_HOME == "$MOVED" ]] || fail "B: SOFTPROMPT_HOME=$SOFTPROMPT_HOME, expected the relocated prefix $MOVED"
[[ $(type -P softprompt) == "$MOVED/bin/softprompt" && $(type -P softprompt-submit) == "$MOVED/bin/softprompt-submit" ]] \
  || fail "B: PATH does not lead to the relocated prefix: $(type -P softprompt)"
[[ $(man -w softprompt-train) == "$MOVED/share/man/man1/softprompt-train.1" ]] || fail "B: MANPATH: $(man -w softprompt-train)"
[[ :$PKG_CONFIG_PATH: == *":$MOVED/lib/pkgconfig:"* && :$CMAKE_PREFIX_PATH: == *":$MOVED:"* ]] \
  || fail "B: PKG_CONFIG_PATH or CMAKE_PREFIX_PATH miss the prefix"
man -w ls > /dev/null || fail "B: with the module loaded, man no longer finds the system's pages"
softprompt --version | grep -qx "softprompt $VERSION" || fail "B: softprompt --version"
model=$SOFTPROMPT_HOME/share/softprompt/models/demo-gpt2
softprompt info "$model" > info.txt || { cat info.txt; fail "B: softprompt info on the installed demo model"; }
grep -q "GPT2LMHeadModel" info.txt && grep -q "^layers  *6" info.txt || { cat info.txt; fail "B: info does not describe the demo model"; }
ok "B: module loaded from the relocated prefix (source and build trees hidden): $(sed -n 2p info.txt)"

# 2 ranks with the installed binary, same input as the source tree's run.
mpirun -np 2 --bind-to none softprompt train --model "$model" --train "$WORK/train.h5" \
  --valid "$WORK/valid.h5" --out run $TARGS > train.log 2>&1 || { cat train.log; fail "B: 2-rank train"; }
cmp -s run/adapter/adapter_model.safetensors "$WORK/ref/adapter/adapter_model.safetensors" \
  || fail "B: the installed binary's prompt differs from the source tree's"
ok "B: 2-rank train with the installed softprompt: prompt bitwise equal to the source tree's"

# The copied job script, with the module: finds its library and binary through it.
SP_MODEL=$model SP_TRAIN=$WORK/train.h5 SP_OUT=$WORK/elsewhere/job-run SP_LAUNCHER=mpirun \
  SP_TRAIN_ARGS="--steps 4 --threads 1 --quiet" bash my-job.sbatch > withmodule.log 2>&1 \
  || { cat withmodule.log; fail "B: a copied job script with the module failed"; }
grep -q "running: mpirun $MOVED/bin/softprompt train" withmodule.log && grep -q "finished: softprompt train exited 0" withmodule.log \
  || { cat withmodule.log; fail "B: the copied job script did not run the module's softprompt"; }
ok "B: the installed train.sbatch runs its prefix's softprompt without the module; a copy of it elsewhere is refused without the module and runs with it"

# The C API example: pkg-config and find_package, against the loaded module.
eval_loss=$(softprompt eval --model "$model" --data "$WORK/valid.h5" --prompt run/adapter --threads 1 --json \
  | python3 -c 'import json, sys; print(repr(json.load(sys.stdin)["loss"]))')
cp -r "$SOFTPROMPT_HOME/share/doc/softprompt/examples/c" ex
cmp -s ex/sp_loss.c "$WORK/example-source.c" || fail "B: the installed example is not examples/c/sp_loss.c"
make -s -C ex > make.log 2>&1 || { cat make.log; fail "B: the example does not build with pkg-config"; }
ldd ex/sp_loss > ldd.txt # not piped into grep -q: under pipefail an early exit is SIGPIPE for ldd
grep -q "libsoftprompt.so.* => $MOVED/lib/libsoftprompt.so" ldd.txt || { cat ldd.txt; fail "B: the pkg-config build does not use the module's libsoftprompt.so"; }
cmake -S ex -B ex-cmake > cmake.log 2>&1 && cmake --build ex-cmake >> cmake.log 2>&1 \
  || { cat cmake.log; fail "B: the example does not build with find_package(softprompt)"; }
for exe in ex/sp_loss ex-cmake/sp_loss; do
  "$exe" "$model" "$WORK/valid.h5" run/adapter > ex.out 2>&1 || { cat ex.out; fail "B: $exe failed"; }
  ex_loss=$(awk '$1 == "loss" {print $2}' ex.out)
  python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(abs(a - b) > 1e-6 * abs(b))' "$ex_loss" "$eval_loss" \
    || { cat ex.out; fail "B: $exe: loss $ex_loss, softprompt eval: $eval_loss"; }
  ok "B: $exe (C API): loss $ex_loss = softprompt eval's $eval_loss; $(grep grad_norm ex.out)"
done
rc=0; ex/sp_loss "$model" "$WORK/valid.h5" "$WORK/train.h5" > bad.out 2>&1 || rc=$?
[[ $rc == 1 ]] && grep -q "sp_loss: .*train.h5" bad.out || { cat bad.out; fail "B: the example on a bad prompt file: exit $rc"; }

module unload softprompt
[[ -z ${SOFTPROMPT_HOME:-} ]] && ! type -P softprompt >/dev/null && [[ :${PKG_CONFIG_PATH:-}: != *"$MOVED"* ]] \
  || fail "B: module unload left softprompt in the environment"
module use "$TCLONLY/share/modulefiles"
module load softprompt 2> load.err || { cat load.err; fail "B: the Tcl modulefile did not load"; }
[[ $SOFTPROMPT_HOME == "$TCLONLY" && $(type -P softprompt) == "$TCLONLY/bin/softprompt" ]] \
  || fail "B: the Tcl modulefile: SOFTPROMPT_HOME=$SOFTPROMPT_HOME"
softprompt --version > /dev/null || fail "B: softprompt through the Tcl modulefile"
module unload softprompt
module unuse "$TCLONLY/share/modulefiles"
module unuse "$MOVED/share/modulefiles"
module use "$WORK/sitemods"
module load softprompt 2> load.err || { cat load.err; fail "B: the modulefile copied into a site's tree did not load"; }
[[ $SOFTPROMPT_HOME == "$OPT" ]] || fail "B: a modulefile copied into a site's tree: SOFTPROMPT_HOME=$SOFTPROMPT_HOME, expected the recorded prefix $OPT"
ok "B: the Tcl modulefile (relocated) and a site copy of the Lua one (recorded prefix $OPT)"
EOF
clean HIDE="${hide[*]}" WORK="$WORK" MOVED="$moved" TCLONLY="$tclonly" OPT="$opt" VERSION="$version" \
  LMOD_INIT="$lmod_init" TARGS="${targs[*]}" unshare --mount --propagation private bash inside.sh \
  || fail "B failed (above)"

echo "($(( $(date +%s) - t_start )) s)"
# --- C: a job through the test Slurm cluster, submitted with the installed softprompt-submit -----
spc_start "$WORK/cluster" --nodes 1 || fail "COULD NOT START THE SLURM CLUSTER (namespaces, bridge or daemons; messages above)"
cat > submit.sh <<'EOF'
set -euo pipefail
source "$LMOD_INIT"
module use "$MOVED/share/modulefiles"
module load softprompt
cd "$WORK/elsewhere"
softprompt-submit --model "$SOFTPROMPT_HOME/share/softprompt/models/demo-gpt2" --train "$WORK/train.h5" \
  --valid "$WORK/valid.h5" --out slurm-run --ntasks-per-node 2 --cpus-per-task 1 --time 5 -- $TARGS
EOF
clean WORK="$WORK" MOVED="$moved" LMOD_INIT="$lmod_init" TARGS="${targs[*]}" bash submit.sh > submit.out 2>&1 \
  || { cat submit.out; fail "C: softprompt-submit failed"; }
job=$(awk '/^submitted job/ {print $3}' submit.out); job=${job%:}
[[ $job =~ ^[0-9]+$ ]] || { cat submit.out; fail "C: softprompt-submit printed no job id"; }
script=elsewhere/slurm-run/job.sbatch
grep -qx "export SP_HOME=\"$moved\"" "$script" && grep -qx "export SP_BIN=\"$moved/bin/softprompt\"" "$script" \
  || { grep '^export SP_' "$script"; fail "C: the job script does not record the installed prefix and binary"; }
for (( i = 0; i < 240; i++ )); do [[ -z $(squeue -h -j "$job" -o %i 2>/dev/null) ]] && break; sleep 0.5; done
log=elsewhere/slurm-run/logs/slurm-$job.out
[[ $(spc_job_field "$job" JobState) == COMPLETED ]] || { show_log "$log"; spc_logs; fail "C: the job ended $(spc_job_field "$job" JobState)"; }
grep -q "running: srun .*$moved/bin/softprompt train" "$log" || { show_log "$log"; fail "C: the job did not run the installed softprompt"; }
same_file elsewhere/slurm-run/adapter/adapter_model.safetensors "$ref" "C: the Slurm job's prompt vs the source tree's"
spc_stop || fail "the cluster was not torn down cleanly (above)"
ok "C: job $job (2 ranks, srun) submitted with the installed softprompt-submit: prompt bitwise equal to the source tree's"

echo "($(( $(date +%s) - t_start )) s)"
# --- D: the Debian package ----------------------------------------------------------------------
t_cpack=$(date +%s)
cpack -G DEB -B "$WORK/deb" --config "$build/CPackConfig.cmake" > cpack.log 2>&1 || { cat cpack.log; fail "D: cpack -G DEB failed"; }
debs=("$WORK"/deb/softprompt_*.deb)
[[ ${#debs[@]} == 1 && -f ${debs[0]} ]] || fail "D: cpack wrote no softprompt_*.deb"
deb=${debs[0]}
echo "(cpack: $(( $(date +%s) - t_cpack )) s)"
depends=$(dpkg-deb -f "$deb" Depends)
mkdir root && dpkg -x "$deb" root
# Every library the binary and the library link comes from a package in Depends (or one that a
# Depends entry pulls in: libopenblas0 is met by an implementation, libopenblas0-pthread here).
direct=$(tr ',|' '\n\n' <<< "$depends" | sed 's/(.*)//; s/ //g' | sort -u)
# shellcheck disable=SC2086  # one word per package
allowed=$(printf '%s\n' $direct; apt-cache depends $direct 2>/dev/null \
  | sed -n 's/^ *|\{0,1\}\(Pre\)\{0,1\}Depends: <\{0,1\}\([^ >]*\)>\{0,1\}$/\2/p')
covered() { grep -qx -- "$1" <<< "$allowed"; }
n=0
for elf in root/usr/bin/softprompt root/usr/lib/libsoftprompt.so.*.*.*; do
  for so in $(readelf -d "$elf" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    case $so in ld-linux*) continue ;; esac # the dynamic loader: libc6's (ldd names it by path)
    path=$(ldd "$elf" | awk -v s="$so" '$1 == s {print $3}')
    [[ -n $path ]] || fail "D: $so of ${elf#root} is not found on this system"
    path=$(realpath "$path")
    # (merged /usr: dpkg knows /lib/... for what the loader finds as /usr/lib/...)
    pkg=$( { dpkg -S "$path" 2>/dev/null || dpkg -S "${path#/usr}"; } | head -n 1 | cut -d: -f1) \
      || fail "D: no Debian package owns $path ($so of ${elf#root})"
    covered "$pkg" || fail "D: ${elf#root} needs $so from $pkg, which Depends ($depends) does not cover"
    n=$((n + 1))
  done
done
root/usr/bin/softprompt --version | grep -qx "softprompt $version" || fail "D: the package's softprompt --version"
root/usr/bin/softprompt info root/usr/share/softprompt/models/demo-gpt2 > deb-info.txt \
  || { cat deb-info.txt; fail "D: the package's softprompt info on its demo model"; }
[[ -f root/usr/share/modulefiles/softprompt/$version.lua ]] && grep -q '\[==\[/usr\]==\]' "root/usr/share/modulefiles/softprompt/$version.lua" \
  || fail "D: the package's modulefile does not record /usr"
apt-get install --simulate "$deb" > apt.log 2>&1 && grep -q "^Inst softprompt " apt.log \
  || { cat apt.log; fail "D: apt-get install --simulate of the package does not resolve"; }
ok "D: $(basename "$deb"): Depends: $depends; $n linked libraries covered; runs from dpkg -x; apt-get --simulate resolves"
ok "test took $(( $(date +%s) - t_start )) s"
