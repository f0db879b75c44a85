# The source map of docs/design.md holds: each module includes only the internal headers of the
# modules its row allows, and nothing is declared with the public prefix (sp_) in an internal
# header (internal functions and types are sp__; the public surface is include/ alone).
source "$(dirname "$0")/lib.sh"
cd "$SP_REPO"

# The "may include" column of the map, read from docs/design.md itself (one place).
allowed() {
  grep -E "^\| \`src/$1/\` \|" docs/design.md | awk -F'|' '{print $4}' | grep -oE '\b(util|io|tokenizer|data|model|dist|train)\b' | sort -u | tr '\n' ' ' || true
}

bad=0
for dir in src/*/; do
  mod=$(basename "$dir")
  grep -qE "^\| \`src/$mod/\` \|" docs/design.md || { echo "src/$mod/ is not in docs/design.md's map"; bad=1; continue; }
  ok=" $(allowed "$mod") $mod "
  while IFS=: read -r file inc; do
    m=${inc#*\"}; m=${m%%/*}
    case "$ok" in *" $m "*) ;; *) echo "$file includes $m/ (src/$mod/ may include:$ok)"; bad=1 ;; esac
  done < <(grep -oE '#include "(util|io|tokenizer|data|model|dist|train|cli)/' "$dir"*.[ch] || true)
done

# Public-prefixed declarations in internal headers: a function sp_x( or a type ... sp_x;
while read -r hit; do echo "internal header declares a public name: $hit"; bad=1; done < <(
  grep -nE '^[a-z].*[ *]sp_[a-z0-9][a-z0-9_]*\(|^\}\s*sp_[a-z0-9][a-z0-9_]*;|^typedef [^;]*\bsp_[a-z0-9][a-z0-9_]*;' src/*/*.h || true)

[ "$bad" = 0 ] || fail "layering or naming rules of docs/design.md broken (above)"
echo "ok: $(ls -d src/*/ | wc -l) modules follow the map; internal headers declare only sp__ names"
