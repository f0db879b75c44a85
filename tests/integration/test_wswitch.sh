# A family, or a kind of norm / positions / q-k-v projection / MLP, that some code does not
# handle fails to compile: every place that depends on them switches on the enum without a
# default, and the build has -Wall (-Wswitch) -Werror. Shown here on copies of the headers with
# one more value: each source file that must handle it is compiled as the build compiles it and
# must fail naming the value; the unmodified headers compile (docs/design.md, "Adding a family").
source "$(dirname "$0")/lib.sh"
CC=${SP_CC:-cc}
flags=(-std=c11 -Wall -Wextra -Werror -D_GNU_SOURCE -fsyntax-only)
read -r -a deps <<< "$(pkg-config --cflags openblas jansson)"

# compile FILE INCLUDE_DIR...: the file against the given headers first, then the repository's.
compile() {
  local file=$1; shift
  local inc=()
  for d in "$@"; do inc+=(-I "$d"); done
  "$CC" "${flags[@]}" "${inc[@]}" -I "$SP_REPO/include" -I "$SP_REPO/src" "${deps[@]}" "$SP_REPO/$file" 2>&1
}

# expect_unhandled HEADER ANCHOR NEW FILE...: HEADER (repo path) with the line "NEW," added after
# the line holding ANCHOR; every FILE must fail to compile naming NEW.
expect_unhandled() {
  local header=$1 anchor=$2 new=$3; shift 3
  local root=$WORK/$new
  mkdir -p "$root/$(dirname "$header")"
  grep -q "$anchor" "$SP_REPO/$header" || fail "$header has no line with $anchor"
  sed "/$anchor/a\\    $new," "$SP_REPO/$header" > "$root/$header"
  grep -q "^    $new,$" "$root/$header" || fail "could not add $new to $header"
  # include/softprompt/x.h is found as "softprompt/x.h" under include/, src/model/x.h as
  # "model/x.h" under src/
  local inc=$root/include
  [[ $header == src/* ]] && inc=$root/src
  for file in "$@"; do
    out=$(compile "$file" "$inc") && fail "$file compiled with $new added to $header, unhandled"
    grep -q "$new.* not handled in switch" <<< "$out" ||
      { echo "$out" >&2; fail "$file: no -Wswitch error naming $new"; }
    echo "ok: $file: $(grep -m1 "$new.* not handled in switch" <<< "$out" | sed 's/.*error: //')"
  done
}

# the control: every file compiles with the headers as they are
files=(src/model/family.c src/model/config.c src/model/init.c src/model/engine.c
       src/model/worker.c src/model/loader.c src/train/fingerprint.c src/cli/cmd_info.c
       src/cli/cmd_init_model.c)
for file in "${files[@]}"; do compile "$file" > "$WORK/out" || { cat "$WORK/out"; fail "$file does not compile"; }; done
ok "${#files[@]} files compile with the headers as they are"

# a new family: its description, config.json keys, init-model's config and defaults, what its
# fingerprint hashes
expect_unhandled include/softprompt/model.h "^    SP_ARCH_QWEN2," SP_ARCH_NEWFAMILY \
  src/model/family.c src/model/config.c src/model/init.c src/train/fingerprint.c \
  src/cli/cmd_init_model.c
# a new kind of block piece: the engine step (training and generation run the same one), the
# activation memory, info and init-model
expect_unhandled src/model/family.h "^    SP_MLP_GEGLU," SP_MLP_NEWKIND \
  src/model/engine.c src/model/worker.c src/cli/cmd_info.c src/cli/cmd_init_model.c
expect_unhandled src/model/family.h "^    SP_NORM_RMSNORM_PLUS1," SP_NORM_NEWKIND \
  src/model/engine.c src/cli/cmd_info.c
expect_unhandled src/model/family.h "^    SP_POS_ALIBI," SP_POS_NEWKIND \
  src/model/engine.c src/model/worker.c src/model/loader.c src/cli/cmd_info.c
expect_unhandled src/model/family.h "^    SP_QKV_SEPARATE," SP_QKV_NEWKIND src/model/engine.c \
  src/model/worker.c
expect_unhandled src/model/family.h "^    SP_QKNORM_PER_HEAD," SP_QKNORM_NEWKIND \
  src/model/engine.c src/model/worker.c src/cli/cmd_info.c
expect_unhandled src/model/family.h "^    SP_BLOCK_SANDWICH," SP_BLOCK_NEWKIND src/model/engine.c \
  src/model/worker.c
expect_unhandled src/model/family.h "^    SP_EMBED_NORM," SP_EMBED_NEWKIND src/model/engine.c \
  src/model/loader.c
# a new weight storage: the matrix products
expect_unhandled include/softprompt/model.h "^    SP_WSTORE_BF16," SP_WSTORE_INT8 \
  src/model/kernels.c src/model/family.c
ok "-Wswitch -Werror names every place a new family or kind must be handled"
