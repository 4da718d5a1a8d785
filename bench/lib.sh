# bench/lib.sh: what the benchmark scripts share, sourced after they set
# $top (the source tree).
#
# bench_machine_lines: the markdown lines that say when, on what and from
# which commit a run was made (docs/performance.md keeps them with each
# table).  CELL_BENCH_COMMIT labels a run from an exported tree.
bench_machine_lines() {
    local commit dirty="" cpu
    if [ -n "${CELL_BENCH_COMMIT:-}" ]; then
        commit=$CELL_BENCH_COMMIT
    else
        commit=$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)
        if git -C "$top" status --porcelain --untracked-files=no 2>/dev/null | grep -q .; then
            dirty=" (with uncommitted changes)"
        fi
    fi
    cpu=$(grep -m1 '^model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC'); load average before: $(cut -d' ' -f1-3 /proc/loadavg)"
    echo "- commit: $commit$dirty"
    echo "- kernel: $(uname -srm)"
    echo "- CPU: $cpu, $(nproc) online CPUs; memory: $(awk '/^MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo)"
}

# stop_pid PID: SIGTERM, then SIGKILL after 10 s; reaped when it is our child.
stop_pid() {
    local p=$1
    [ -n "$p" ] && kill -0 "$p" 2>/dev/null || return 0
    kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
}

# free_port: a TCP port on 127.0.0.1 that was free a moment ago.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_http PID URL: until URL answers 200 (10 s at most), or PID is gone.
wait_http() {
    for _ in $(seq 100); do
        kill -0 "$1" 2>/dev/null || return 1
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$2")" = 200 ] && return 0
        sleep 0.1
    done
    return 1
}

# json_field NAME: the top-level field NAME of the JSON document on stdin.
json_field() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# bench_snapshot CELL DIR: copy the cell binary CELL into DIR (created) with
# the files it finds next to itself (cell-daemon, which `cell serve` execs,
# cell-init, which cells exec from there instead of from a memfd copy when it
# is the embedded build, and any shared object it loads from its own
# directory), so that a rebuild
# while a benchmark runs cannot swap them and the copy still works.  Prints
# the copy's path.
bench_snapshot() {
    local src=$1 dir=$2 f
    mkdir -p "$dir" || return 1
    cp "$src" "$dir/cell" || return 1
    for f in "$(dirname "$src")"/cell-daemon "$(dirname "$src")"/cell-init "$(dirname "$src")"/*.so; do
        [ -f "$f" ] && { cp "$f" "$dir/" || return 1; }
    done
    echo "$dir/cell"
}

# The reference server of the daemon benchmarks: sandbox-agent 0.4.2 from the
# npm registry (npm pack, or the same tarball by curl when npm is absent),
# checked against a pinned SHA-512 and cached in BUILD/bench-cache/.
ref_version=0.4.2
ref_pkg="@sandbox-agent/cli-linux-x64@$ref_version"
ref_tgz_url="https://registry.npmjs.org/@sandbox-agent/cli-linux-x64/-/cli-linux-x64-$ref_version.tgz"
ref_sha512=1fd45baaad03464087bda93379f2540eb0dadb2faf263958779fed79fcca6d0df8968704d774c63728112f1744557a411028caf7055d0704d512985036c39c8f   # = dist.integrity sha512-H9Rbqq0D...

# ref_fetch CACHE_DIR: sets ref_bin to the reference's executable, fetching
# it into CACHE_DIR first when it is not there.  Returns non-zero (with a
# reason on stderr) when it cannot be had.
ref_fetch() {
    local cache=$1 dir tgz
    dir="$cache/sandbox-agent-$ref_version"
    ref_bin="$dir/package/bin/sandbox-agent"
    [ -x "$ref_bin" ] && return 0
    mkdir -p "$cache" || return 1
    tgz="$cache/sandbox-agent-cli-linux-x64-$ref_version.tgz"
    if [ ! -s "$tgz" ]; then
        if command -v npm >/dev/null; then
            echo "fetching $ref_pkg with npm pack" >&2
            (cd "$cache" && npm pack --silent "$ref_pkg" >/dev/null) || return 1
        else
            echo "npm is not installed: fetching $ref_tgz_url with curl" >&2
            curl -fsSL -o "$tgz.part" "$ref_tgz_url" && mv "$tgz.part" "$tgz" || return 1
        fi
    fi
    echo "$ref_sha512  $tgz" | sha512sum -c --quiet - || { rm -f "$tgz"; echo "$tgz: SHA-512 mismatch" >&2; return 1; }
    rm -rf "$dir" && mkdir -p "$dir" && tar -xzf "$tgz" -C "$dir" && chmod +x "$ref_bin"
}

# serve_init CELL: prints --init if CELL's serve takes it (a new state
# directory needs it since the daemon refuses one without cell.db; an older
# cell, benchmarked for comparison, has no such flag).
serve_init() {
    "$1" help serve 2>/dev/null | grep -q -- '--init' && echo --init
    return 0
}

# _start_on_free_port LOG LAUNCHER [ARGS...]: `LAUNCHER PORT ARGS...` (a
# function that execs a server on 127.0.0.1:PORT) in the background on a
# free loopback port, another one if it was taken meanwhile, until its health
# endpoint answers; sets started_pid and started_port.  Returns non-zero
# (LOG on stderr) if it never answered.
_start_on_free_port() {
    local log=$1 launcher=$2
    shift 2
    for _ in 1 2 3 4 5; do
        started_port=$(free_port)
        "$launcher" "$started_port" "$@" >>"$log" 2>&1 &
        started_pid=$!
        wait_http "$started_pid" "http://127.0.0.1:$started_port/v1/health" && return 0
        stop_pid "$started_pid"
    done
    started_pid=""
    cat "$log" >&2
    return 1
}

_exec_cell_serve() { # PORT CELL STATE [ARGS...]
    local port=$1 cell=$2 st=$3
    shift 3
    exec "$cell" --state "$st" serve $(serve_init "$cell") --listen "127.0.0.1:$port" --socket '' "$@"
}

_exec_ref_serve() { # PORT HOME
    cd "$2" && HOME="$2" exec "$ref_bin" server --no-token --no-telemetry --host 127.0.0.1 --port "$1"
}

# start_cell_serve CELL STATE LOG [ARGS...]: `CELL --state STATE serve` on a
# free loopback port (_start_on_free_port: sets started_pid and
# started_port, non-zero if it never answered).
start_cell_serve() {
    local cell=$1 st=$2 log=$3
    shift 3
    mkdir -p "$st"
    _start_on_free_port "$log" _exec_cell_serve "$cell" "$st" "$@"
}

# bench_cell_setup NAME [CELL]: how every benchmark of one `cell serve`
# starts: cell and cell-daemon made in BUILD=$build (bench_make; not when
# CELL, a binary to measure, is given), a scratch directory (bench_scratch
# NAME: $scratch, and $pid stopped when the script ends) and a copy of CELL
# (default $top/$build/cell) in $scratch/bin as $cell_bin.  Non-zero, with
# the reason on stderr, when one step fails.
bench_cell_setup() {
    local name=$1 cell=${2:-} me
    me="bench/$(basename "$0")"
    if [ -z "$cell" ]; then
        # cell serve execs cell-daemon
        bench_make "$build/cell" "$build/cell-daemon" ||
            { echo "$me: make BUILD=$build $build/cell $build/cell-daemon failed" >&2; return 1; }
        cell=$top/$build/cell
    fi
    bench_scratch "$name"
    [ -d "$scratch" ] || { echo "$me: no scratch directory" >&2; return 1; }
    cell_bin=$(bench_snapshot "$cell" "$scratch/bin") || { echo "$me: no cell binary to measure ($cell)" >&2; return 1; }
}

# bench_cell_serve [ARGS...]: after bench_cell_setup, `$cell_bin serve ARGS`
# with a fresh state directory $scratch/state, its output in $log
# ($scratch/daemon.log), on a free loopback port (start_cell_serve); sets
# pid, port, url (http://127.0.0.1:PORT) and token (the admin token).
# Non-zero (the log on stderr) if it never answered.
bench_cell_serve() {
    log=$scratch/daemon.log
    start_cell_serve "$cell_bin" "$scratch/state" "$log" "$@" || return 1
    pid=$started_pid port=$started_port
    url="http://127.0.0.1:$port"
    token=$(tr -d '\n' <"$scratch/state/admin.token")
}

# start_ref_serve HOME LOG: the reference (ref_fetch's $ref_bin) as `server
# --no-token --no-telemetry`, with HOME (its agents' install dir) as its home
# and cwd, like start_cell_serve.
start_ref_serve() {
    mkdir -p "$1"
    _start_on_free_port "$2" _exec_ref_serve "$1"
}

# proc_mem PID -> "Rss_KiB Pss_KiB Private_KiB" from /proc/PID/smaps_rollup
# (Private = Private_Clean + Private_Dirty: what the process alone costs).
proc_mem() {
    awk '/^Rss:/ {r=$2} /^Pss:/ {p=$2} /^Private_(Clean|Dirty):/ {v+=$2} END {print r+0, p+0, v+0}' "/proc/$1/smaps_rollup"
}

# median / p90 of the numbers on stdin, one a line (linear interpolation).
quantile_of() {
    sort -g | awk -v q="$1" '{a[NR]=$1} END {if (!NR) {print "n/a"; exit} k=(NR-1)*q; i=int(k);
        v=(i+1 < NR) ? a[i+1] + (a[i+2]-a[i+1])*(k-i) : a[NR]; printf "%.3f\n", v}'
}

# bwrap's arguments for the cold-start anchor, before the command: the same
# sandbox as bench_cell.c's cold benchmark (every namespace, /usr read-only,
# fresh /proc, /dev and /tmp).
bench_bwrap_args=(--unshare-all --ro-bind /usr /usr --symlink usr/bin /bin --symlink usr/lib /lib
    --symlink usr/lib64 /lib64 --symlink usr/sbin /sbin --proc /proc --dev /dev --tmpfs /tmp --)

# bench_make TARGET...: make them in BUILD=$build, unless CELL_BENCH_NO_MAKE=1:
# bench/faststart.sh builds once, then runs the other scripts with that set,
# so that every row measures the same build even while the tree changes
# (several people work in it) or does not compile for a moment.
bench_make() {
    [ "${CELL_BENCH_NO_MAKE:-0}" = 1 ] && return 0
    make -C "$top" -j"$(nproc)" BUILD="$build" "$@" >&2
}

# A scratch directory in $scratch and a daemon pid slot in $pid, both
# cleaned up however the calling script ends (stop_pid, rm -rf).
bench_scratch() {
    scratch=$(mktemp -d "/tmp/$1.XXXXXX")
    pid=""
    trap _bench_scratch_cleanup EXIT
    trap 'exit 130' INT TERM HUP
}
_bench_scratch_cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_pid "$pid"
    rm -rf "$scratch"
    exit "$rc"
}
