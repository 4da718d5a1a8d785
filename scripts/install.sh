#!/usr/bin/env bash
# install.sh install|uninstall: what `make install` and `make uninstall` do
# (the Makefile passes BUILD, DESTDIR and the directories; README "Install").
#
# install writes the binaries, libcell, its header and pkg-config file, the
# man pages and completions that scripts/gen-docs.py made in $BUILD/doc, the
# systemd unit, the example config (never over an existing one) and the
# state directory (0700), and lists every file it wrote in
# $DATADIR/cell/installed.  uninstall removes what that list names: not the
# state directory, and not the config once it has been edited.
#
# Only cell and cell-daemon are programs to install: cell-init, cell-egress,
# cell-untar, cell-mock-agent and the plugins are embedded in them and in
# libcell.so.0 (docs/architecture.md), and `cell serve` runs the cell-daemon
# beside the cell it was started as.
set -euo pipefail

for v in BUILD PREFIX BINDIR LIBDIR INCLUDEDIR DATADIR MANDIR SYSCONFDIR SYSTEMDUNITDIR STATEDIR; do
  if [ -z "${!v:-}" ]; then
    echo "install.sh: $v is not set (run it through make install / make uninstall)" >&2
    exit 2
  fi
done
D=${DESTDIR:-}
# The list is one path a line, split on spaces.
case "$D$PREFIX$BINDIR$LIBDIR$INCLUDEDIR$DATADIR$MANDIR$SYSCONFDIR$SYSTEMDUNITDIR$STATEDIR" in
  *[[:space:]]*) echo "install.sh: DESTDIR, PREFIX and the directories must not contain spaces" >&2; exit 2 ;;
esac
MANIFEST=$DATADIR/cell/installed
CONF=$SYSCONFDIR/cell/cell.conf

# put MODE SRC DST: install one file and list it.
put() {
  install -D -m "$1" "$2" "$D$3"
  echo "f $3" >>"$NEW"
}

# subst SRC: SRC with @VAR@ replaced by the directories.
subst() {
  sed -e "s|@PREFIX@|$PREFIX|g" -e "s|@BINDIR@|$BINDIR|g" -e "s|@LIBDIR@|$LIBDIR|g" \
      -e "s|@INCLUDEDIR@|$INCLUDEDIR|g" -e "s|@SYSCONFDIR@|$SYSCONFDIR|g" \
      -e "s|@STATEDIR@|$STATEDIR|g" -e "s|@VERSION@|$VERSION|g" "$1"
}

do_install() {
  local need f
  for need in cell cell-daemon libcell.so.0 libcell-public.a doc/.stamp; do
    if [ ! -e "$BUILD/$need" ]; then
      echo "install.sh: $BUILD/$need is missing: build first (make BUILD=$BUILD all docs)" >&2
      exit 1
    fi
  done
  VERSION=$(sed -n 's/^#define CELL_VERSION_STRING "\(.*\)"/\1/p' include/cell.h)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  NEW=$tmp/installed
  : >"$NEW"

  put 0755 "$BUILD/cell" "$BINDIR/cell"
  put 0755 "$BUILD/cell-daemon" "$BINDIR/cell-daemon"
  put 0755 "$BUILD/libcell.so.0" "$LIBDIR/libcell.so.0"
  ln -sfn libcell.so.0 "$D$LIBDIR/libcell.so"
  echo "f $LIBDIR/libcell.so" >>"$NEW"
  # The static library programs outside the tree link: cell.h's functions only.
  put 0644 "$BUILD/libcell-public.a" "$LIBDIR/libcell.a"
  put 0644 include/cell.h "$INCLUDEDIR/cell.h"
  subst dist/libcell.pc.in >"$tmp/libcell.pc"
  put 0644 "$tmp/libcell.pc" "$LIBDIR/pkgconfig/libcell.pc"
  for f in "$BUILD"/doc/man1/*.1; do
    put 0644 "$f" "$MANDIR/man1/${f##*/}"
  done
  put 0644 "$BUILD/doc/completion/cell.bash" "$DATADIR/bash-completion/completions/cell"
  put 0644 "$BUILD/doc/completion/_cell" "$DATADIR/zsh/site-functions/_cell"
  subst dist/cell.service.in >"$tmp/cell.service"
  put 0644 "$tmp/cell.service" "$SYSTEMDUNITDIR/cell.service"

  # The config: an operator's file is never replaced; ours is listed with
  # its digest, so uninstall removes it only while it is unedited.
  if [ -e "$D$CONF" ]; then
    echo "install.sh: $D$CONF exists: kept (the example is etc/cell.conf)"
  elif [ -e etc/cell.conf ]; then
    install -D -m 0644 etc/cell.conf "$D$CONF"
    echo "c $(sha256sum <etc/cell.conf | cut -d' ' -f1) $CONF" >>"$NEW"
  fi
  install -d -m 0700 "$D$STATEDIR"

  # A file an earlier install wrote and this one did not stays listed.
  if [ -f "$D$MANIFEST" ]; then
    while read -r kind a b; do
      f=${b:-$a}
      if { [ -e "$D$f" ] || [ -L "$D$f" ]; } && ! awk -v f="$f" '$NF == f { n++ } END { exit !n }' "$NEW"; then
        echo "$kind $a${b:+ $b}" >>"$NEW"
      fi
    done <"$D$MANIFEST"
  fi
  install -D -m 0644 "$NEW" "$D$MANIFEST"
  echo "install.sh: installed $(wc -l <"$NEW") files under ${D:-/} (list: $D$MANIFEST)"
}

do_uninstall() {
  local kind a b
  if [ ! -f "$D$MANIFEST" ]; then
    echo "install.sh: $D$MANIFEST not found: nothing installed with PREFIX=$PREFIX${D:+ DESTDIR=$D}" >&2
    exit 1
  fi
  while read -r kind a b; do
    case $kind in
      f) rm -f "$D$a" ;;
      c)
        if [ -f "$D$b" ] && [ "$(sha256sum <"$D$b" | cut -d' ' -f1)" = "$a" ]; then
          rm -f "$D$b"
        elif [ -e "$D$b" ]; then
          echo "install.sh: $D$b was edited: kept"
        fi ;;
    esac
  done <"$D$MANIFEST"
  rm -f "$D$MANIFEST"
  rmdir "$D$DATADIR/cell" "$D$SYSCONFDIR/cell" 2>/dev/null || true
  echo "install.sh: uninstalled (the state in $D$STATEDIR is kept)"
}

case "${1:-}" in
  install) do_install ;;
  uninstall) do_uninstall ;;
  *) echo "usage: install.sh install|uninstall" >&2; exit 2 ;;
esac
