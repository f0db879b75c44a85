# Every C source and header in the repository is as clang-format (the repo's .clang-format, the
# Debian clang-format scripts/setup installs) would write it.
source "$(dirname "$0")/lib.sh"
cd "$SP_REPO"
command -v clang-format >/dev/null || fail "clang-format is not installed (scripts/setup installs it)"
[ -d .git ] || [ -f .git ] || { echo "skip: not a git checkout"; exit 0; }
mapfile -t files < <(git ls-files '*.c' '*.h')
[ "${#files[@]}" -gt 50 ] || fail "found only ${#files[@]} C files"
if ! out=$(clang-format --dry-run -Werror "${files[@]}" 2>&1); then
  printf '%s\n' "$out" | grep -oE '^[^:]+\.[ch]:[0-9]+' | sort -u -t: -k1,1 | head -20
  fail "files above are not clang-formatted: run clang-format -i on them"
fi
echo "ok: ${#files[@]} files formatted"
