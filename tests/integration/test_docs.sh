# docs/usage.md's command reference must be exactly what `softprompt <cmd> --help` prints, and
# every long option a command's source accepts must appear in its --help.
source "$(dirname "$0")/lib.sh"
"$SP_REPO/scripts/update-usage-docs" "$SP_CLI" --check || fail "docs/usage.md differs from --help"
commands=$("$SP_CLI" help | awk '/^commands:/{on=1; next} on && /^  [a-z-]+ / {print $1}' | grep -v '^help$')
[[ -n $commands ]] || fail "softprompt help lists no commands"
for cmd in $commands; do
  src=$SP_REPO/src/cli/cmd_${cmd//-/_}.c
  [[ -f $src ]] || fail "no source file $src for command $cmd"
  help=$("$SP_CLI" "$cmd" --help)
  opts=$({ grep -oE 'SP_OPT_[A-Z0-9]+\("[a-z][a-z0-9-]+"' "$src" || true; } | sed 's/.*("//; s/"$//' | sort -u)
  for opt in $opts; do
    [[ $opt == help ]] && continue
    grep -q -- "--$opt" <<<"$help" || fail "softprompt $cmd accepts --$opt but its --help does not mention it"
  done
  echo "ok: softprompt $cmd: $(wc -w <<<"$opts") options, all in --help"
done
ok "docs/usage.md matches --help"
