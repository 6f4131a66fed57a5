#!/usr/bin/env bash
# Runs nemesis scenarios on an older commit of the product and on this
# checkout, and prints one markdown row per scenario: its verdict before and
# after (docs/RELIABILITY.md, "Defects found on the code before their fixes").
#
#   internal/nemesis/compare.sh <commit> <scenario>... [-- <go test flags>]
#
# The older commit is checked out in a temporary git worktree; this checkout's
# internal/nemesis and internal/redistest are copied into it (the harness only
# uses APIs that the product had then; connection state recovery, which the
# official clients need, is switched off where socketio has none). Nothing is
# committed there; the worktree is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/../.."
[ $# -ge 2 ] || { echo "usage: $0 <commit> <scenario>... [-- <go test flags>]" >&2; exit 2; }
commit=$1; shift
scenarios=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do scenarios+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
flags=("$@")

tmp=$(mktemp -d /tmp/nemesis-compare.XXXXXX)
old="$tmp/old"
cleanup() {
  git worktree remove --force "$old" >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
trap cleanup EXIT

git worktree add --detach "$old" "$commit" >/dev/null
rm -rf "$old/internal/nemesis"
cp -r internal/nemesis "$old/internal/nemesis"
cp -r internal/redistest/. "$old/internal/redistest/"
if ! grep -q 'Recovery \*RecoveryOptions' "$old/socketio/options.go" 2>/dev/null; then
  cat >"$old/internal/nemesis/recovery.go" <<'EOF'
package nemesis

import (
	"time"

	"github.com/durasock/durasock/socketio"
)

// setRecovery: this checkout has no connection state recovery.
func setRecovery(*socketio.Options, time.Duration) {}
EOF
fi
(cd "$old" && go test -c -o "$tmp/before.test" ./internal/nemesis)
go test -c -o "$tmp/after.test" ./internal/nemesis

verdict() { # binary scenario -> the verdict column of its table row
  local out
  out=$(cd internal/nemesis && "$1" -test.run TestNemesis -test.v -test.timeout 60m \
    -nemesis.scenario "$2" -nemesis.table "${flags[@]}" 2>&1 || true)
  echo "$out" >"$tmp/$2.$(basename "$1").log"
  echo "$out" | grep -E "^ *\| $2 \| " | tail -1 | awk -F'|' '{gsub(/^ +| +$/, "", $13); print $13}'
}

echo "| scenario | seed | defect | before ($commit) | after ($(git rev-parse --short HEAD)) |"
echo "|---|---|---|---|---|"
for sc in "${scenarios[@]}"; do
  before=$(verdict "$tmp/before.test" "$sc")
  after=$(verdict "$tmp/after.test" "$sc")
  defect=$(grep -A3 "Name: *\"$sc\"" internal/nemesis/scenario.go | sed -n 's/.*Defect: *"\(.*\)",/\1/p' | head -1)
  seed=$(printf '%s\n' "${flags[@]}" | sed -n 's/^-nemesis.seed=//p' | tail -1)
  echo "| $sc | ${seed:-1} | ${defect:-—} | ${before:-no verdict} | ${after:-no verdict} |"
done
