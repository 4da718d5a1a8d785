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
# .gitignore files of WORKSPACE.  When BASE is a git work tree, A's index
# starts as a copy of BASE's own (seed below), so git hashes only what its
# stat data says changed: in BASE since git last looked, in WORKSPACE
# since the run began.  A workspace file still as in the base is the
# overlay's lower file (its inode, times and size); one the agent wrote
# was copied up, which gives it a new ctime no process can set back
# (core.trustctime), so a change cannot hide behind the base's stat data.
# Otherwise every file of both trees is hashed.
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
        -c core.splitIndex=false -c core.checkStat=default -c core.trustctime=true -c core.looseCompression=1 \
        -c core.bigFileThreshold=512m -c diff.external= -c diff.renames=true -c diff.renameLimit=1000 \
        -c gc.auto=0 -c maintenance.auto=false -c index.sparse=false -c safe.directory='*' \
        -c advice.addEmbeddedRepo=false -c apply.whitespace=nowarn "$@"
}

# A bare repository's minimum (what git checks for one): `git init` would
# also copy its templates, a few ms the run's result waits for.
mkdir -p "$GIT_DIR/objects" "$GIT_DIR/refs" "$GIT_DIR/info" || exit 1
echo 'ref: refs/heads/main' >"$GIT_DIR/HEAD" || exit 1
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

# A git work tree's own index and objects (its stat data and blob ids) let
# add -A read only the files changed since git last looked at them, so
# the trees cost O(changes) rather than O(repository) (measured: bench/runs.sh).
# Everything git reads there is the base's, in the cell: at worst a wrong
# diff, which the agent could have produced by writing files.  Only a
# .git directory with an index of its own; other layouts (a worktree's
# .git file) and an index git refuses (a split index) take the slow path.
seed() {
    [ -d "$1/.git/objects" ] && [ -f "$1/.git/index" ] || return 1
    cp -- "$1/.git/index" "$tmp/index.a" 2>/dev/null || return 1
    GIT_ALTERNATE_OBJECT_DIRECTORIES=$1/.git/objects
    export GIT_ALTERNATE_OBJECT_DIRECTORIES
    # add -A never looks at an entry marked assume-unchanged (ls-files -v:
    # a lower-case tag) or skip-worktree (S): a change there would go
    # unseen.
    if GIT_INDEX_FILE=$tmp/index.a g ls-files -v -z 2>/dev/null | grep -qz '^[a-zS]'; then
        unseed
        return 1
    fi
}

# When the cell started, in seconds since the epoch (its init's start
# time), or 0.  Tree B's add must not trust stat data that a change in
# the same second could leave as it was: git compares whole seconds, and
# an entry it recorded no earlier than its index file's mtime is "racily
# clean", hashed again.  Tree A's index gets the cell's start less 2 s as
# its mtime, so every base file touched since then is hashed in B.
cell_start() {
    read -r st </proc/1/stat || { echo 0; return; }
    # shellcheck disable=SC2086  # the fields after "pid (comm) "
    set -- ${st##*) }
    shift 19 || { echo 0; return; }
    while read -r k v; do
        [ "$k" = btime ] && { echo $((v + $1 / 100)); return; }
    done </proc/stat
    echo 0
}

unseed() {
    rm -f -- "$tmp/index.a"
    unset GIT_ALTERNATE_OBJECT_DIRECTORIES
    ta=
}

do_diff() {
    # A tree the agent removed (a lane's or an upload's copy is a plain
    # directory of the cell) is an empty one: everything in it was deleted.
    mkdir "$tmp/empty" || exit 1
    [ -d "$1" ] || set -- "$tmp/empty" "$2"
    [ -d "$2" ] || set -- "$1" "$tmp/empty"
    if seed "$1"; then
        ta=$(tree "$tmp/index.a" "$1") || unseed
    fi
    [ -n "${ta:-}" ] || ta=$(tree "$tmp/index.a" "$1") || exit 1
    # Tree B from A's index: a workspace file still as in the base (the
    # overlay shows the base's inode, times and size) is not read again,
    # unless the base's was changed since shortly before the cell started.
    since=$(cell_start)
    touch -d "@$((since > 2 ? since - 2 : 0))" -- "$tmp/index.a" || exit 1
    tb=$(tree "$tmp/index.a" "$2") || exit 1

    opts='-r -M --no-textconv --no-ext-diff'
    # shellcheck disable=SC2086  # $opts are words
    g diff-tree $opts -z --name-status "$ta" "$tb" >"$tmp/names" &
    names=$!
    # shellcheck disable=SC2086
    g diff-tree $opts -z --numstat "$ta" "$tb" >"$tmp/numstat" || exit 1
    wait "$names" || exit 1
    # shellcheck disable=SC2046  # two numbers
    set -- $(stat -c %s -- "$tmp/names" "$tmp/numstat") || exit 1
    printf 'cell-rundiff 1 %d %d\n' "$1" "$2" || exit 1
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
