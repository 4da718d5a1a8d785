#!/bin/sh
# cell-node.sh install|uninstall|run: the node image's entry point
# (deploy/kubernetes/cell-node.yaml, docs/kubernetes.md "Deployment").
#
# install puts cell's OCI runtime on the node, as kata-deploy does for Kata:
#   - INSTALL_DIR/bin/cell-oci (a static binary: the node needs no library
#     of ours), copied in place by rename so running shims keep theirs;
#   - OCI_CONFIG, cell-oci's /etc/cell/oci.conf naming the node daemon's
#     socket and token file (docs/kubernetes.md "Egress: the node daemon");
#   - containerd's runtime entry RUNTIME_NAME (the RuntimeClass handler): a
#     block of tables between two marker comments appended to
#     CONTAINERD_CONFIG, the original kept as CONTAINERD_CONFIG.cell-backup.
#     Not a drop-in named in `imports`: containerd 1.x replaces a plugin's
#     whole section with an imported file's, so a drop-in holding the CRI
#     runtime table would drop the node's own CRI settings (sandbox image,
#     CNI, registries; test_k8s_deploy.py shows it);
#   - then containerd restarted on the host, only when something changed:
#     a second install changes nothing and restarts nothing.
# Every edit is staged beside its file and read by the host's own
# `containerd config dump` (which must show the entry with this BinaryName)
# before it replaces anything: a config containerd cannot read (missing,
# garbled), or that has a runtime of that name already, is refused and
# nothing is changed.
# uninstall undoes it: the config restored byte for byte from the backup
# when nothing else changed it since, else only cell's block taken out (the
# backup kept and named); oci.conf (unless edited) and the binary removed;
# containerd restarted.  Uninstalling twice is fine.
# run installs, then execs the node daemon: cell serve --pods (its state,
# socket and node token in CELL_STATE, a hostPath).
#
# Paths are the host's.  The installer sees the host's / at HOST_ROOT, and
# runs host commands (containerd config dump, the restart) with HOST_EXEC,
# which sees them at their own paths; with HOST_EXEC empty, host commands
# run here and see the host's files under HOST_ROOT (the tests' fake root).
# POSIX sh: busybox's in the image, dash in the tests.
set -eu

HOST_ROOT=${HOST_ROOT-/host}
HOST_EXEC=${HOST_EXEC-nsenter --target 1 --mount -- /usr/bin/env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}
CONTAINERD_CONFIG=${CONTAINERD_CONFIG:-/etc/containerd/config.toml}
CONTAINERD_RESTART=${CONTAINERD_RESTART:-systemctl restart containerd}
INSTALL_DIR=${INSTALL_DIR:-/opt/cell}
OCI_CONFIG=${OCI_CONFIG:-/etc/cell/oci.conf}
CELL_STATE=${CELL_STATE:-/var/lib/cell}
CELL_PODS=${CELL_PODS:-annotated}
RUNTIME_NAME=${RUNTIME_NAME:-cell}
RUNTIME_ROOT=${RUNTIME_ROOT:-/run/cell-oci}
SYSTEMD_CGROUP=${SYSTEMD_CGROUP:-auto}
# where this image keeps what it installs (the tests: a build directory)
PAYLOAD=${PAYLOAD:-/opt/cell/node}

ME=cell-node
CRI='plugins."io.containerd.grpc.v1.cri"'
BEGIN="# BEGIN cell-node: the RuntimeClass handler's runtime (deploy/kubernetes); cell-node uninstall removes this block"
END="# END cell-node"

die() {
  echo "$ME: $*" >&2
  exit 1
}
say() { echo "$ME: $*"; }

# Every path goes into TOML and JSON strings unquoted: keep them plain.
check_path() { # NAME VALUE
  case $2 in
    /*) ;;
    *) die "$1=$2 must be an absolute path" ;;
  esac
  case $2 in
    *[!A-Za-z0-9._/-]* | */../* | */..) die "$1=$2: only letters, digits, '.', '_', '-' and '/' (no '..') are allowed" ;;
  esac
}

setup() {
  check_path CONTAINERD_CONFIG "$CONTAINERD_CONFIG"
  check_path INSTALL_DIR "$INSTALL_DIR"
  check_path OCI_CONFIG "$OCI_CONFIG"
  check_path CELL_STATE "$CELL_STATE"
  check_path RUNTIME_ROOT "$RUNTIME_ROOT"
  case $RUNTIME_NAME in
    '' | *[!a-z0-9-]*) die "RUNTIME_NAME=$RUNTIME_NAME: lower-case letters, digits and '-' (a RuntimeClass handler)" ;;
  esac
  case $CELL_PODS in annotated | all) ;; *) die "CELL_PODS=$CELL_PODS: annotated or all" ;; esac
  case $SYSTEMD_CGROUP in auto | true | false) ;; *) die "SYSTEMD_CGROUP=$SYSTEMD_CGROUP: auto, true or false" ;; esac
  [ -d "$HOST_ROOT" ] || die "HOST_ROOT=$HOST_ROOT is not a directory (the host's / mounted into this container)"
  H=${HOST_ROOT%/}
  CONFIG=$H$CONTAINERD_CONFIG
  BACKUP=$CONFIG.cell-backup
  BIN=$INSTALL_DIR/bin/cell-oci
  changed=0
  # One install or uninstall at a time (a DaemonSet's old pod's preStop
  # and its new pod can overlap): a lock on the config's directory, which
  # must exist anyway, so that taking it writes nothing.
  if [ -d "${CONFIG%/*}" ]; then
    exec 9<"${CONFIG%/*}"
    flock 9 || die "cannot lock ${CONFIG%/*}"
  fi
}

# host_path P: P as host commands see it.
host_path() {
  if [ -n "$HOST_EXEC" ]; then echo "$1"; else echo "$H$1"; fi
}

# dump CONFIG_HOST_PATH OUT: containerd's own reading of a config, with its
# imports merged; its error on stderr and a non-zero status if it has none.
dump() {
  # shellcheck disable=SC2086  # HOST_EXEC is a command line
  $HOST_EXEC containerd --config "$1" config dump >"$2" 2>"$2.err" || {
    sed -n '1,5p' "$2.err" >&2
    return 1
  }
}

# section_value FILE SECTION KEY: KEY's value in [SECTION] of a dump.
section_value() {
  awk -v s="[$2]" -v k="$3" '
    { t = $0; sub(/^[ \t]+/, "", t) }
    substr(t, 1, 1) == "[" { in_s = (t == s); next }
    in_s && index(t, k " = ") == 1 { print substr(t, length(k) + 4); exit }' "$1"
}

# has_block FILE: FILE holds cell-node's block.
has_block() {
  grep -qxF "$BEGIN" "$1"
}

# without_block IN OUT: IN without cell-node's block and the blank line
# install put before it; fails (3) on a BEGIN line with no END after it.
without_block() {
  awk -v b="$BEGIN" -v e="$END" '
    $0 == b { inside = 1; held = 0; next }
    inside { if ($0 == e) inside = 0; next }
    held { print ""; held = 0 }
    $0 == "" { held = 1; next }
    { print }
    END { if (held) print ""; if (inside) exit 3 }' "$1" >"$2"
}

# with_newline FILE: FILE's text, ending in a newline.
with_newline() {
  cat "$1"
  if [ -s "$1" ] && [ -n "$(tail -c 1 "$1")" ]; then echo; fi
}

block_text() { # SYSTEMD_CGROUP
  cat <<EOF

$BEGIN
[$CRI.containerd.runtimes.$RUNTIME_NAME]
  runtime_type = "io.containerd.runc.v2"
  # the egress policy rides on pod annotations: containerd copies only the
  # listed ones into the runtime's config.json
  pod_annotations = ["cell.dev/*"]
  container_annotations = ["cell.dev/*"]
[$CRI.containerd.runtimes.$RUNTIME_NAME.options]
  BinaryName = "$BIN"
  # cell-oci's containers apart from runc's (its state is its own format)
  Root = "$RUNTIME_ROOT"
  # as kubelet's cgroup driver, which the node's runc entry follows
  SystemdCgroup = $1
$END
EOF
}

# put SRC DST MODE: DST (in HOST_ROOT) replaced by SRC by rename, unless
# it holds the same bytes already.
put() {
  if [ -f "$2" ] && cmp -s "$1" "$2"; then
    rm -f "$1"
    return
  fi
  mkdir -p "${2%/*}"
  chmod "$3" "$1"
  mv -f "$1" "$2"
  changed=1
  say "wrote ${2#"$H"}"
}

restart_containerd() {
  if [ "$CONTAINERD_RESTART" = none ]; then
    say "CONTAINERD_RESTART=none: restart containerd on this node for the change to apply"
    return
  fi
  say "restarting containerd: $CONTAINERD_RESTART"
  # shellcheck disable=SC2086
  $HOST_EXEC sh -c "$CONTAINERD_RESTART" ||
    die "restarting containerd failed ($CONTAINERD_RESTART): the files are in place; restart it by hand"
}

do_install() {
  setup
  [ -x "$PAYLOAD/cell-oci" ] || die "$PAYLOAD/cell-oci is missing: this is not the node image (or set PAYLOAD)"
  [ -e "$CONFIG" ] || die "no containerd config at $CONTAINERD_CONFIG on this node (set CONTAINERD_CONFIG to the file containerd reads); nothing was changed"
  [ -f "$CONFIG" ] || die "$CONTAINERD_CONFIG is not a regular file; nothing was changed"
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  dump "$(host_path "$CONTAINERD_CONFIG")" "$tmp/before" ||
    die "containerd cannot read $CONTAINERD_CONFIG (above): fix it first; nothing was changed"
  without_block "$CONFIG" "$tmp/base" ||
    die "$CONTAINERD_CONFIG has the line '$BEGIN' but not '$END' after it: mend or remove that block; nothing was changed"
  if ! has_block "$CONFIG" && grep -qF "runtimes.$RUNTIME_NAME]" "$tmp/before"; then
    got=$(section_value "$tmp/before" "$CRI.containerd.runtimes.$RUNTIME_NAME.options" BinaryName)
    die "containerd has a runtime \"$RUNTIME_NAME\" already (BinaryName ${got:-unset}), which cell-node did not write: take it out of $CONTAINERD_CONFIG or its imports, or set RUNTIME_NAME; nothing was changed"
  fi
  printf '{"socket": "%s", "tokenFile": "%s", "pods": "%s"}\n' \
    "$CELL_STATE/cell.sock" "$CELL_STATE/node.token" "$CELL_PODS" >"$tmp/oci.conf"
  if [ -e "$H$OCI_CONFIG" ] && ! cmp -s "$tmp/oci.conf" "$H$OCI_CONFIG" && ! [ -e "$H$INSTALL_DIR/oci.conf.installed" ]; then
    die "$OCI_CONFIG exists and was not written by cell-node: remove it or point OCI_CONFIG elsewhere; nothing was changed"
  fi
  rm -f "$CONFIG.cell-new"

  cg=$SYSTEMD_CGROUP
  if [ "$cg" = auto ]; then
    # the default runtime's (runc's) setting: kubelet's driver must match
    def=$(section_value "$tmp/before" "$CRI.containerd" default_runtime_name | tr -d '"')
    cg=$(section_value "$tmp/before" "$CRI.containerd.runtimes.${def:-runc}.options" SystemdCgroup)
    case $cg in true) ;; *) cg=false ;; esac
  fi

  # The new config: the old one without an earlier block, then the block.
  # Staged beside the old one (same directory, mode and owner: cp -p) and
  # read by containerd before it replaces anything.
  {
    with_newline "$tmp/base"
    block_text "$cg"
  } >"$tmp/config"
  if ! cmp -s "$tmp/config" "$CONFIG"; then
    cp -p "$CONFIG" "$CONFIG.cell-new"
    cat "$tmp/config" >"$CONFIG.cell-new"
    if ! dump "$(host_path "$CONTAINERD_CONFIG.cell-new")" "$tmp/after"; then
      rm -f "$CONFIG.cell-new"
      die "containerd cannot read the config with cell's entry (above); nothing was changed"
    fi
    got=$(section_value "$tmp/after" "$CRI.containerd.runtimes.$RUNTIME_NAME.options" BinaryName)
    if [ "$got" != "\"$BIN\"" ]; then
      rm -f "$CONFIG.cell-new"
      die "with cell's entry, containerd gives runtime $RUNTIME_NAME BinaryName ${got:-nothing}, not \"$BIN\" (an import of $CONTAINERD_CONFIG replaces its CRI section?); nothing was changed"
    fi
  fi

  # The binary and oci.conf.
  cp "$PAYLOAD/cell-oci" "$tmp/cell-oci"
  put "$tmp/cell-oci" "$H$BIN" 0755
  cp "$tmp/oci.conf" "$tmp/oci.conf.copy"
  put "$tmp/oci.conf" "$H$OCI_CONFIG" 0644
  put "$tmp/oci.conf.copy" "$H$INSTALL_DIR/oci.conf.installed" 0644

  # Last, the config.  The backup is the config as it was before cell.
  if [ -e "$CONFIG.cell-new" ]; then
    has_block "$CONFIG" || cp -p "$CONFIG" "$BACKUP"
    mv -f "$CONFIG.cell-new" "$CONFIG"
    changed=1
    say "added runtime \"$RUNTIME_NAME\" to $CONTAINERD_CONFIG (as it was before: ${BACKUP#"$H"})"
  fi
  if [ "$changed" = 1 ]; then
    restart_containerd
    say "installed: RuntimeClass handler \"$RUNTIME_NAME\" runs $BIN"
  else
    say "already installed: nothing changed, containerd not restarted"
  fi
}

do_uninstall() {
  setup
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  if [ -f "$CONFIG" ] && has_block "$CONFIG"; then
    without_block "$CONFIG" "$tmp/config" ||
      die "$CONTAINERD_CONFIG has the line '$BEGIN' but not '$END' after it: mend it by hand; nothing was changed"
    if [ -f "$BACKUP" ] && with_newline "$BACKUP" >"$tmp/backup" && cmp -s "$tmp/config" "$tmp/backup"; then
      mv -f "$BACKUP" "$CONFIG"
      say "restored $CONTAINERD_CONFIG from ${BACKUP#"$H"}"
    else
      cp -p "$CONFIG" "$CONFIG.cell-new"
      cat "$tmp/config" >"$CONFIG.cell-new"
      mv -f "$CONFIG.cell-new" "$CONFIG"
      say "$CONTAINERD_CONFIG was changed since the install: took out cell-node's block only"
      if [ -f "$BACKUP" ]; then say "the config as it was before cell is kept in ${BACKUP#"$H"}"; fi
    fi
    changed=1
  elif [ -f "$BACKUP" ]; then
    say "$CONTAINERD_CONFIG has no cell-node block: left as it is (${BACKUP#"$H"} kept)"
  fi
  rec=$H$INSTALL_DIR/oci.conf.installed
  if [ -e "$H$OCI_CONFIG" ] && [ -e "$rec" ]; then
    if cmp -s "$H$OCI_CONFIG" "$rec"; then
      rm -f "$H$OCI_CONFIG"
      rmdir "$H${OCI_CONFIG%/*}" 2>/dev/null || true
      say "removed $OCI_CONFIG"
    else
      say "$OCI_CONFIG was edited: kept"
    fi
  fi
  rm -f "$rec"
  if [ -e "$H$BIN" ]; then
    rm -f "$H$BIN"
    changed=1
    say "removed $BIN"
  fi
  # mount points in the DaemonSet: they stay
  rmdir "$H$INSTALL_DIR/bin" "$H$INSTALL_DIR" 2>/dev/null || true
  if [ "$changed" = 1 ]; then
    restart_containerd
    say "uninstalled"
  else
    say "not installed: nothing to do"
  fi
}

do_run() {
  (do_install)
  # the daemon needs 2 x --max-connections + 1024 descriptors; containerd
  # gives containers 1024 (privileged: may raise it).  busybox ash and dash
  # both have ulimit -n, -S and -H.
  # shellcheck disable=SC3045
  ulimit -n 65536 2>/dev/null || ulimit -S -n "$(ulimit -H -n)" 2>/dev/null || true
  # the node daemon: its socket and node token where oci.conf says
  exec cell serve --state "$CELL_STATE" --init --no-config --listen "" \
    --socket "$CELL_STATE/cell.sock" --pods --node-token-file "$CELL_STATE/node.token" \
    --warm 0 --log-format json "$@"
}

case ${1-} in
  install) do_install ;;
  uninstall) do_uninstall ;;
  run)
    shift
    do_run "$@" ;;
  *)
    echo "usage: $ME install | uninstall | run [cell serve options...]" >&2
    exit 2 ;;
esac
