# rundiff.sh: the diff of a run's workspace against its base, and the apply
# of such a diff to a host directory (issue 12; docs/api.md "The diff and
# apply").  src/server/rundiff.c embeds this file and runs it in a cell as
#   env -i PATH=... /bin/sh -c SCRIPT rundiff diff BASE WORKSPACE
#   env -i PATH=... /bin/sh -c SCRIPT rundiff apply REPO <PATCH
# passing every path as an argument: nothing is interpolated into it.
#
# Every byte of the trees is hostile (the agent wrote WORKSPACE; a lane or
# upload BASE came from a client), so git reads nothing from them but
# files: its repository is a fresh bare one under a private mktemp
# directory, it reads no system, global or repository config but what is
# given here, and $GIT_DIR/info/attributes (which beats every
# .gitattributes of a tree, macros included) unsets each attribute that
# changes a file's bytes on the way in or out (text, eol, crlf, filter,
# ident, working-tree-encoding) or steers the diff (diff: binary files are
# detected by content and no driver or textconv ever runs; merge).  The
# same holds for apply, so a patch is applied byte for byte as it was made.
#
# diff: tree A is BASE; tree B is WORKSPACE added on top of A's index, so a
# file A has stays in B (changed or deleted) even if WORKSPACE's .gitignore
# now ignores it, as a tracked file does in git; new files follow the
# .gitignore files of WORKSPACE.  A's index is read from its tree, so every
# entry's stat data is zero and each of WORKSPACE's files is hashed.
# Directories named .git are never added; a nested repository becomes a
# gitlink (its HEAD commit), one without a commit is left out (git says so
# on stderr); FIFOs, sockets and devices are skipped; symlinks are recorded
# as links, never followed.  Output (stdout), in this order:
#   "cell-rundiff 1 N M\n"
#   N bytes: diff-tree --name-status -z
#   M bytes: diff-tree --numstat -z
#   the patch (diff-tree -p --binary --full-index), up to EOF.
#
# apply: the patch (stdin: the daemon hands over its open file, which the
# directory's owner, as whom this runs, could not open) is copied to the
# private directory, then git apply --check, then git apply, in REPO.  A
# patch that does not apply exits 2, nothing written (git's complaints on
# stderr); git refuses paths with ".." or a .git component and paths
# beyond a symlink.
#
# Exit 0, 3 when the image has no git, 2 (apply) the patch does not apply,
# else 1; git's messages go to stderr.
set -u
mode=$1

if ! command -v git >/dev/null 2>&1; then
    echo "the image has no git; the diff needs git" >&2
    exit 3
fi
cd / || exit 1
tmp=$(mktemp -d /tmp/cell-rundiff.XXXXXXXX) || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 1' HUP INT TERM

GIT_DIR=$tmp/git
GIT_CONFIG_NOSYSTEM=1
GIT_CONFIG_GLOBAL=/dev/null
HOME=/nonexistent
LC_ALL=C
GIT_TERMINAL_PROMPT=0
GIT_OPTIONAL_LOCKS=0
GIT_NO_REPLACE_OBJECTS=1
export GIT_DIR GIT_CONFIG_NOSYSTEM GIT_CONFIG_GLOBAL HOME LC_ALL GIT_TERMINAL_PROMPT GIT_OPTIONAL_LOCKS \
    GIT_NO_REPLACE_OBJECTS

g() {
    git -c core.hooksPath=/dev/null -c core.fsmonitor=false -c core.symlinks=true \
        -c core.autocrlf=false -c core.safecrlf=false -c core.eol=lf -c core.filemode=true \
        -c core.ignorecase=false -c core.precomposeunicode=false -c core.protectNTFS=false \
        -c core.attributesFile=/dev/null -c core.excludesFile=/dev/null -c core.untrackedCache=false \
        -c core.splitIndex=false -c core.checkStat=default -c core.looseCompression=1 \
        -c core.bigFileThreshold=512m -c diff.external= -c diff.renames=true -c diff.renameLimit=1000 \
        -c gc.auto=0 -c maintenance.auto=false -c index.sparse=false -c safe.directory='*' \
        -c advice.addEmbeddedRepo=false -c apply.whitespace=nowarn "$@"
}

g init --bare -q "$GIT_DIR" || exit 1
printf '%s\n' '* !text !eol !crlf !filter !ident !working-tree-encoding !diff !merge' \
    >"$GIT_DIR/info/attributes" || exit 1

# One tree: the index GIT_INDEX_FILE ($1) plus what the directory $2 holds.
# --ignore-errors: a file git cannot read (a host file only its owner may
# read) is left out (git says so on stderr) rather than failing the whole
# diff; git's own failures exit 128.
tree() {
    GIT_INDEX_FILE=$1 g --work-tree="$2" add -A --ignore-errors >&2
    [ $? -le 1 ] || return 1
    GIT_INDEX_FILE=$1 g write-tree
}

do_diff() {
    # A tree the agent removed (a lane's or an upload's copy is a plain
    # directory of the cell) is an empty one: everything in it was deleted.
    mkdir "$tmp/empty" || exit 1
    [ -d "$1" ] || set -- "$tmp/empty" "$2"
    [ -d "$2" ] || set -- "$1" "$tmp/empty"
    ta=$(tree "$tmp/index.a" "$1") || exit 1
    GIT_INDEX_FILE=$tmp/index.b g read-tree "$ta" || exit 1
    tb=$(tree "$tmp/index.b" "$2") || exit 1

    opts='-r -M --no-textconv --no-ext-diff'
    # shellcheck disable=SC2086  # $opts are words
    g diff-tree $opts -z --name-status "$ta" "$tb" >"$tmp/names" || exit 1
    # shellcheck disable=SC2086
    g diff-tree $opts -z --numstat "$ta" "$tb" >"$tmp/numstat" || exit 1
    printf 'cell-rundiff 1 %d %d\n' "$(wc -c <"$tmp/names")" "$(wc -c <"$tmp/numstat")" || exit 1
    cat "$tmp/names" "$tmp/numstat" || exit 1
    # shellcheck disable=SC2086
    g diff-tree $opts -p --binary --full-index "$ta" "$tb" || exit 1
    exit 0
}

do_apply() {
    cat >"$tmp/patch" || exit 1
    cd "$1" || exit 1
    GIT_WORK_TREE=$1
    export GIT_WORK_TREE
    g apply --check --binary -- "$tmp/patch" >&2 || exit 2
    g apply --binary -- "$tmp/patch" >&2 || exit 1
    exit 0
}

shift
case $mode in
diff) do_diff "$@" ;;
apply) do_apply "$@" ;;
*) echo "rundiff.sh: unknown mode $mode" >&2; exit 1 ;;
esac
