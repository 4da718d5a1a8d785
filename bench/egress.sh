#!/usr/bin/env bash
# bench/egress.sh: a cell's TCP egress relay against direct host networking,
# pasta and slirp4netns (docs/performance.md, "Egress (issue 4): TCP relay").
#
#   sudo bash bench/egress.sh          # or: make bench (after the others)
#
# Puts a TCP server (bench/net_bench.c, built statically) on an address from
# 198.18.0.0/15 that it adds to the host's lo, and runs the same client:
#   direct  on the host
#   cell    in a cell, `cell run --policy` allowing only that address and
#           port: nftables redirects the flow to the owner's listener in the
#           cell's netns, the owner connects on the host and splice()s
#   pasta   `pasta --config-net -- CLIENT` (a tap device and pasta's
#           userspace TCP translation)
#   slirp   `unshare -Urn` + `slirp4netns --configure --mtu=65520` (libslirp)
# and prints markdown tables:
#   tput    1 GiB server -> client (download) and client -> server (upload):
#           MB/s medians, the ratio to direct and the machine's CPU time per GiB
#   lat     connect() + 1-byte echo round trip over fresh connections:
#           p50/p90/p99 and what each path adds to direct
# Contenders are interleaved round-robin, the first one rotating each round.
# Nothing is asserted: it measures.  Only plain TCP flows (a `tcp` rule,
# the splice relay) are measured; HTTPS through interception (`http`
# rules) is not, so the issue's HTTPS row has no number yet.
#
# Environment:
#   CELL_EGRESS_BENCH_BYTES    bytes per transfer (tput)           (default 1073741824)
#   CELL_EGRESS_BENCH_REPS     transfers per contender/direction   (default 5)
#   CELL_EGRESS_BENCH_LAT_N    timed connections per round (lat)   (default 1000)
#   CELL_EGRESS_BENCH_ROUNDS   rounds per contender (lat)          (default 3)
#   CELL_EGRESS_BENCH_WARMUP   untimed connections per round (lat) (default 50)
#   CELL_EGRESS_BENCH_ONLY     space-separated subset of: tput lat
#   CELL_EGRESS_BENCH_WHO      contenders (default: direct cell pasta slirp)
#   CELL_EGRESS_BENCH_CELL     a prebuilt cell binary to measure (skips `make all`)
#   CELL_BENCH_COMMIT          label for the commit line
#   CC                         compiler                            (default cc)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
bytes=${CELL_EGRESS_BENCH_BYTES:-1073741824}
reps=${CELL_EGRESS_BENCH_REPS:-5}
lat_n=${CELL_EGRESS_BENCH_LAT_N:-1000}
rounds=${CELL_EGRESS_BENCH_ROUNDS:-3}
lat_warmup=${CELL_EGRESS_BENCH_WARMUP:-50}
only=${CELL_EGRESS_BENCH_ONLY:-tput lat}
who_all=${CELL_EGRESS_BENCH_WHO:-direct cell pasta slirp}
cc=${CC:-cc}

die() { echo "bench/egress.sh: $*" >&2; exit 1; }
note() { echo "bench/egress.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
for t in python3 ip unshare; do command -v "$t" >/dev/null || die "$t is not installed"; done

# ---- build ----------------------------------------------------------------------
out="$top/build/bench/egress"        # mounted read-only into cells at /bench
mkdir -p "$out"
if [ -n "${CELL_EGRESS_BENCH_CELL:-}" ]; then
    cp "$CELL_EGRESS_BENCH_CELL" "$out/cell"
else
    make -C "$top" -j"$(nproc)" all >&2
    cp "$top/build/cell" "$out/cell"   # a rebuild while this runs cannot swap it
fi
cell_bin="$out/cell"
# Static, so the same binary runs on the host, in a cell and in pasta's and
# slirp4netns's namespaces.
"$cc" -std=c17 -O2 -Wall -Wextra -Werror -static -o "$out/net_bench" "$here/net_bench.c"
nb="$out/net_bench"

# Which contenders can run here.
who=""
for w in $who_all; do
    case $w in
    direct | cell) who="$who $w" ;;
    pasta) if command -v pasta >/dev/null; then who="$who pasta"; else note "pasta is not installed (package passt): skipped"; fi ;;
    slirp) if command -v slirp4netns >/dev/null; then who="$who slirp"; else note "slirp4netns is not installed: skipped"; fi ;;
    *) die "unknown contender '$w' (direct cell pasta slirp)" ;;
    esac
done

# ---- scratch, address, server, cleanup ---------------------------------------------------
scratch=$(mktemp -d /tmp/cell-egress-bench.XXXXXX)
server_pid="" addr="" added=0
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
    [ "$added" = 1 ] && ip addr del "$addr/32" dev lo 2>/dev/null
    rm -rf "$scratch"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Inside a cell 127.0.0.0/8 is the cell's own loopback, so the server gets an
# address from 198.18.0.0/15 (benchmarking, RFC 2544) that is routed to the
# host's lo.  Pick one nobody else has, so a concurrent user of the range is
# not disturbed, and remove it at exit.
for _ in $(seq 50); do
    a="198.19.$((RANDOM % 254 + 1)).$((RANDOM % 254 + 1))"
    ip -4 addr show | grep -q "inet $a/" || { addr=$a; break; }
done
[ -n "$addr" ] || die "no free address in 198.19.0.0/16"
ip addr add "$addr/32" dev lo && added=1
"$nb" serve "$addr" "$scratch/port" &
server_pid=$!
for _ in $(seq 100); do [ -s "$scratch/port" ] && break; sleep 0.05; done
[ -s "$scratch/port" ] || die "the server did not start"
port=$(cat "$scratch/port")
printf '{"rules": [{"tcp": {"to": "%s/32", "ports": [%s]}}]}\n' "$addr" "$port" >"$scratch/policy.json"
mkdir -p "$scratch/state"

# run_in WHO ARGS...: the client, in that contender's network; stdout is the
# client's, stderr goes to $scratch/err.
run_in() {
    local w=$1
    shift
    case $w in
    direct) "$nb" "$@" 2>"$scratch/err" ;;
    cell) "$cell_bin" --state "$scratch/state" run --policy "$scratch/policy.json" --mount "$out:/bench:ro" \
              -- /bench/net_bench "$@" 2>"$scratch/err" ;;
    # As root, pasta drops to "nobody" by default and then cannot open the
    # namespace it made (/proc/PID/ns/net: EACCES, and it retries forever).
    pasta) pasta --runas 0:0 --config-net -q -- "$nb" "$@" 2>"$scratch/err" ;;
    slirp) run_slirp "$@" ;;
    esac
}
run_slirp() {
    local np sp rc=0 ok=0 self
    # The client's namespace process waits (inside it) for slirp4netns to
    # configure tap0 and the default route, then execs the client.
    # shellcheck disable=SC2016
    unshare -Urn bash -c 'for _ in $(seq 1000); do
            [[ $(ip -4 route show default 2>&1) == default* ]] && exec "$@"; sleep 0.01; done
        echo "slirp4netns did not configure the namespace in 10 s" >&2; exit 1' sh "$nb" "$@" 2>"$scratch/err" &
    np=$!
    # slirp4netns must not start before unshare(2) has run: it would open the
    # host's own /proc/PID/ns/net and put tap0 there.
    self=$(readlink /proc/self/ns/net)
    for _ in $(seq 500); do
        [ "$(readlink "/proc/$np/ns/net" 2>/dev/null)" != "$self" ] && { ok=1; break; }
        sleep 0.01
    done
    if [ "$ok" = 0 ] || [ -z "$(readlink "/proc/$np/ns/net" 2>/dev/null)" ]; then
        kill "$np" 2>/dev/null; wait "$np" 2>/dev/null
        echo "unshare -Urn did not start: $(cat "$scratch/err")" >"$scratch/err"
        return 1
    fi
    slirp4netns --configure --mtu=65520 --disable-host-loopback "$np" tap0 >"$scratch/slirp.log" 2>&1 &
    sp=$!
    wait "$np" || rc=$?
    kill "$sp" 2>/dev/null || true
    wait "$sp" 2>/dev/null || true
    [ "$rc" = 0 ] || echo "slirp4netns log: $(tail -3 "$scratch/slirp.log")" >>"$scratch/err"
    return "$rc"
}
label() {
    case $1 in
    direct) echo "direct (client and server on the host)" ;;
    cell) echo "cell: egress relay (cell run --policy)" ;;
    pasta) echo "pasta --config-net" ;;
    slirp) echo "slirp4netns (--mtu=65520)" ;;
    esac
}
order() {   # order ROUND: the contenders, rotated by ROUND
    local -a w
    read -r -a w <<<"$who"
    local i n=${#w[@]}
    for ((i = 0; i < n; i++)); do echo -n "${w[$(((i + $1) % n))]} "; done
}
kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p" | head -1; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2fx", a/b; else print "n/a"}'; }
busy_ticks() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }   # user nice system irq softirq
hz=$(getconf CLK_TCK)
# pasta 0.0~git20230309 logs to syslog (absent here) and, run as root, warns
# about uid_map and ping_group_range: not errors.
noise='to syslog|uid_map|user mappings|ping_group_range|ICMP requests'


# ---- header -------------------------------------------------------------------------
commit=${CELL_BENCH_COMMIT:-$(git -C "$top" rev-parse --short HEAD 2>/dev/null || echo unknown)}
echo "## Egress benchmark (bench/egress.sh)"
echo
echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
echo "- commit: $commit"
echo "- kernel: $(uname -srm)"
echo "- CPU: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) online CPUs"
pv=$(dpkg-query -W -f '${Version}' passt 2>/dev/null || echo "?")
sv=$(slirp4netns --version 2>/dev/null | awk 'NR == 1 {v = $3} /^libslirp:/ {l = $2} END {print v " (libslirp " l ")"}')
echo "- tools: passt/pasta $pv, slirp4netns $sv"
echo "- server: $addr:$port on the host's lo; transfers of $bytes bytes, $reps per contender and direction; latency $rounds x $lat_n connections per contender (each round after $lat_warmup untimed)"
echo

# ---- 1. throughput -----------------------------------------------------------------------
bench_tput() {
    note "throughput: $reps reps x {$who } x {down, up}..."
    declare -A mbs cpu runs fails
    local r w dir line t0 t1
    for r in $(seq "$reps"); do
        for dir in down up; do
            for w in $(order "$r"); do
                t0=$(busy_ticks)
                if ! line=$(run_in "$w" "$dir" "$addr" "$port" "$bytes"); then
                    # A failed transfer is reported, not retried, and left out of the median.
                    note "  $w $dir failed: $(grep -vE "$noise" "$scratch/err" | tr '\n' ' ')"
                    fails[$w.$dir]=$((${fails[$w.$dir]:-0} + 1))
                    runs[$w.$dir]="${runs[$w.$dir]:-} failed"
                    continue
                fi
                t1=$(busy_ticks)
                mbs[$w.$dir]="${mbs[$w.$dir]:-} $(kv mbs <<<"$line")"
                runs[$w.$dir]="${runs[$w.$dir]:-} $(kv mbs <<<"$line")"
                # CPU seconds per GiB, the whole machine, starting the contender included
                cpu[$w.$dir]="${cpu[$w.$dir]:-} $(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$bytes" 'BEGIN {printf "%.2f", (b-a)/hz * 1073741824/n}')"
            done
        done
        note "  rep $r: $(for w in $who; do echo -n "$w ${runs[$w.down]##* }/${runs[$w.up]##* } "; done)MB/s (down/up)"
    done
    local gib
    gib=$(awk -v n="$bytes" 'BEGIN {printf "%g", n/1073741824}')
    for dir in down up; do
        local what="server -> client (download)"
        [ "$dir" = up ] && what="client -> server (upload)"
        local base m
        # shellcheck disable=SC2086
        base=$(median ${mbs[direct.$dir]:-0})
        echo "### TCP throughput, $gib GiB $what"
        echo
        echo "Median of $reps transfers; MB = 10^6 bytes; timed by the client from before connect() to the last byte."
        echo "CPU s/GiB: busy time of the whole machine (both CPUs, /proc/stat) over the run, starting the contender included."
        echo
        echo "| path | MB/s (median) | / direct | CPU s/GiB (median) | failed runs | all runs (MB/s) |"
        echo "| --- | ---: | ---: | ---: | ---: | --- |"
        for w in $who; do
            if [ -z "${mbs[$w.$dir]:-}" ]; then
                echo "| $(label "$w") | n/a | n/a | n/a | ${fails[$w.$dir]:-0} |${runs[$w.$dir]} |"
                continue
            fi
            # shellcheck disable=SC2086
            m=$(median ${mbs[$w.$dir]})
            # shellcheck disable=SC2086
            echo "| $(label "$w") | $m | $(ratio "$m" "$base") | $(median ${cpu[$w.$dir]}) | ${fails[$w.$dir]:-0} |${runs[$w.$dir]} |"
        done
        echo
    done
}

# ---- 2. connect latency -----------------------------------------------------------------
bench_lat() {
    note "latency: $rounds rounds x {$who } x $lat_n connections..."
    local r w
    for r in $(seq "$rounds"); do
        for w in $(order "$r"); do
            touch "$scratch/lat.$w"
            if ! run_in "$w" lat "$addr" "$port" "$lat_n" "$lat_warmup" >"$scratch/lat.out"; then
                note "  $w latency round $r failed: $(grep -vE "$noise" "$scratch/err" | tr '\n' ' ')"
                echo "$w" >>"$scratch/lat.failed"
                continue
            fi
            cat "$scratch/lat.out" >>"$scratch/lat.$w"
            if grep -vqE "$noise" "$scratch/err"; then note "  $w: $(grep -vE "$noise" "$scratch/err" | tr '\n' ' ')"; fi
        done
        note "  round $r done"
    done
    echo "### Connect latency: connect() + 1-byte echo round trip, fresh connection each time"
    echo
    echo "Timed by the client from before socket()+connect() to the echoed byte ($rounds rounds of $lat_n, pooled; close not timed)."
    echo "In a cell, connect() completes against the relay's listener in the cell's netns; the echo then waits for the"
    echo "owner to accept, check the original destination and the policy, start the relay threads and connect on the host."
    echo
    echo "| path | n | p50 (µs) | p90 (µs) | p99 (µs) | mean (µs) | p50 added to direct (µs) | p99 added to direct (µs) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    local args=()
    for w in $who; do args+=("$w" "$(label "$w")" "$scratch/lat.$w"); done
    local failed
    failed=$( (sort "$scratch/lat.failed" 2>/dev/null || true) | uniq -c | awk '{printf "%s%s: %d", (NR > 1 ? ", " : ""), $2, $1}')
    python3 - "${args[@]}" <<'EOF'
import sys
def pct(s, p):                       # linear interpolation between order statistics
    k = (len(s) - 1) * p / 100
    f = int(k)
    return s[f] + (s[min(f + 1, len(s) - 1)] - s[f]) * (k - f)
a, rows, base = sys.argv[1:], [], None
for i in range(0, len(a), 3):
    s = sorted(int(x) / 1000 for x in open(a[i + 2]) if x.strip())
    if not s:
        print("| %s | 0 | n/a | n/a | n/a | n/a | n/a | n/a |" % a[i + 1])
        continue
    r = (a[i], a[i + 1], len(s), pct(s, 50), pct(s, 90), pct(s, 99), sum(s) / len(s))
    rows.append(r)
    if a[i] == "direct":
        base = r
for w, label, n, p50, p90, p99, mean in rows:
    add50 = "%+.1f" % (p50 - base[3]) if base else "n/a"
    add99 = "%+.1f" % (p99 - base[5]) if base else "n/a"
    print("| %s | %d | %.1f | %.1f | %.1f | %.1f | %s | %s |" % (label, n, p50, p90, p99, mean, add50, add99))
EOF
    echo
    [ -z "$failed" ] || { echo "Failed rounds (left out): $failed."; echo; }
}

for b in $only; do
    case $b in
    tput) bench_tput ;;
    lat) bench_lat ;;
    *) die "unknown benchmark '$b' in CELL_EGRESS_BENCH_ONLY (tput lat)" ;;
    esac
done
kill -0 "$server_pid" 2>/dev/null || die "the server died"
echo "Not measured: HTTPS through interception (\`http\` rules, TLS terminated by the owner), the issue's HTTPS row."
