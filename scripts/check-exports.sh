#!/usr/bin/env bash
# check-exports.sh LIB [HEADER]: the dynamic symbols a shared LIB defines
# must be exactly the functions HEADER (default include/cell.h) declares,
# each under a CELL_* version node (src/libcell.map); for a static LIB
# (NAME.a), its global symbols, without versions.  Prints what differs and
# exits 1; prints "check-exports: ok (N symbols)" and exits 0 when they agree.
set -euo pipefail
so=${1:?usage: check-exports.sh LIB [HEADER]}
header=${2:-$(dirname "$0")/../include/cell.h}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# "VALUE TYPE NAME@@VERSION" (or "@VERSION" for older nodes); the version
# nodes themselves appear as absolute symbols named after the node.
static=0
case "$so" in *.a) static=1 ;; esac
if [ "$static" = 1 ]; then
  nm -g --defined-only "$so" | awk 'NF == 3 { print $3 }' | sort >"$tmp/exported"
else
  nm -D --defined-only "$so" | awk '$2 == "A" && $3 ~ /^CELL_[0-9.]+$/ { next } { print $3 }' | sort >"$tmp/exported"
fi
sed 's/@.*//' "$tmp/exported" | sort -u >"$tmp/names"
grep -oE '\bcell_[a-z0-9_]+[[:space:]]*\(' "$header" | tr -d '( \t' | sort -u >"$tmp/declared"

bad=0
if grep -v '^cell_' "$tmp/names" >"$tmp/foreign"; then
  echo "check-exports: $so exports symbols outside the cell_ namespace (hide them: src/libcell.map):"
  sed 's/^/  /' "$tmp/foreign"
  bad=1
fi
if [ "$static" = 0 ] && grep -vE '@@?CELL_[0-9.]+$' "$tmp/exported" >"$tmp/unversioned"; then
  echo "check-exports: $so exports symbols without a CELL_* version:"
  sed 's/^/  /' "$tmp/unversioned"
  bad=1
fi
comm -23 "$tmp/names" "$tmp/declared" | grep '^cell_' >"$tmp/extra" || true
if [ -s "$tmp/extra" ]; then
  echo "check-exports: $so exports cell_ symbols that $header does not declare (internal; keep them out of src/libcell.map):"
  sed 's/^/  /' "$tmp/extra"
  bad=1
fi
comm -13 "$tmp/names" "$tmp/declared" >"$tmp/missing"
if [ -s "$tmp/missing" ]; then
  echo "check-exports: $header declares functions $so does not export (add them to src/libcell.map, in a new version node):"
  sed 's/^/  /' "$tmp/missing"
  bad=1
fi
[ "$bad" = 0 ] || exit 1
echo "check-exports: ok ($(wc -l <"$tmp/names") symbols)"
