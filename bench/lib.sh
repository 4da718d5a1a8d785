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
