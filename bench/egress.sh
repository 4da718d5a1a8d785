#!/usr/bin/env bash
# bench/egress.sh: a cell's TCP egress relay against direct host networking,
# pasta and slirp4netns, and HTTPS through interception against direct TLS
# (docs/performance.md, "Egress (issue 4): TCP relay and HTTPS interception").
#
#   sudo bash bench/egress.sh          # or: make bench (after the others)
#   CELL_EGRESS_BENCH_ONLY=https bash bench/egress.sh   # HTTPS only
#
# Puts a TCP server (bench/net_bench.c, built statically) on an address from
# 198.18.0.0/15 that it adds to the host's lo, and runs the same client:
#   direct  on the host
#   cell    in a cell, `cell run --policy` allowing only that address and
#           port: the cell's SYN waits in NFQUEUE for the owner's verdict,
#           then the kernel carries the flow over the cell's veth (the
#           egress fast path, docs/egress.md)
#   relay   the same with CELL_EGRESS_FAST=0: nftables redirects the flow
#           to the owner's listener in the cell's netns, the owner connects
#           on the host and splice()s
#   pasta   `pasta --config-net -- CLIENT` (a tap device and pasta's
#           userspace TCP translation)
#   slirp   `unshare -Urn` + `slirp4netns --configure --mtu=65520` (libslirp)
#   veth    the measured alternative to a relay (not cell): a netns with a
#           veth pair to the host (MTU 65535) and a stateful nftables filter
#           (conntrack, accept only that address and port), so the kernel
#           forwards the flow and nothing in user space touches it
# and prints markdown tables:
#   tput    1 GiB server -> client (download) and client -> server (upload):
#           MB/s medians, the ratio to direct and the machine's CPU time per GiB
#   lat     connect() + 1-byte echo round trip over fresh connections:
#           p50/p90/p99 and what each path adds to direct
#   https   HTTPS through interception (an `http` rule: the owner terminates
#           TLS with the cell's CA and re-encrypts upstream) against direct
#           TLS to the same server (bench/tls_bench.c, HTTPS/1.1 on ADDR:443
#           with a test CA and leaf made here with the openssl CLI; the cell
#           resolves bench.test through bench/egress_dns.py on ADDR:53):
#           requests/s and p50/p99 of sequential GETs, each on a new TLS
#           connection, and MB/s of one large GET.  Contenders: direct, cell.
# Contenders are interleaved round-robin, the first one rotating each round.
# Nothing is asserted: it measures.
#
# Environment:
#   CELL_EGRESS_BENCH_BYTES    bytes per transfer (tput)           (default 1073741824)
#   CELL_EGRESS_BENCH_REPS     transfers per contender/direction   (default 5; https: large GETs)
#   CELL_EGRESS_BENCH_LAT_N    timed connections per round (lat)   (default 1000)
#   CELL_EGRESS_BENCH_ROUNDS   rounds per contender (lat, https)   (default 3)
#   CELL_EGRESS_BENCH_WARMUP   untimed connections or requests per round (lat, https) (default 50)
#   CELL_EGRESS_BENCH_HTTPS_N      timed requests per round (https)  (default 1000)
#   CELL_EGRESS_BENCH_HTTPS_BYTES  bytes of the large GET (https)    (default 1073741824)
#   CELL_EGRESS_BENCH_HTTPS_SERVER keepalive: the TLS server keeps connections that do not ask to close
#                                  (as most do); close: it ends every one (https) (default keepalive)
#   CELL_EGRESS_BENCH_ONLY     space-separated subset of: tput lat https
#   CELL_EGRESS_BENCH_WHO      contenders (default: direct cell relay pasta slirp veth)
#   CELL_EGRESS_BENCH_CELL     a prebuilt cell binary to measure (not built then)
#   CELL_BENCH_BUILD           the make BUILD directory to build and use (default build)
#   CELL_BENCH_COMMIT          label for the commit line
#
# Smoke setting (CI): CELL_EGRESS_BENCH_BYTES=1048576 CELL_EGRESS_BENCH_REPS=1
# CELL_EGRESS_BENCH_LAT_N=20 CELL_EGRESS_BENCH_ROUNDS=1 CELL_EGRESS_BENCH_WARMUP=2
# CELL_EGRESS_BENCH_HTTPS_N=10 CELL_EGRESS_BENCH_HTTPS_BYTES=1048576.  A failed
# transfer, round or GET is reported, left out of the medians, and makes the
# exit status 1 after the tables; a missing pasta or slirp4netns is an error
# unless CELL_EGRESS_BENCH_WHO leaves it out.  Nothing about speed is asserted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
bytes=${CELL_EGRESS_BENCH_BYTES:-1073741824}
reps=${CELL_EGRESS_BENCH_REPS:-5}
lat_n=${CELL_EGRESS_BENCH_LAT_N:-1000}
rounds=${CELL_EGRESS_BENCH_ROUNDS:-3}
lat_warmup=${CELL_EGRESS_BENCH_WARMUP:-50}
https_n=${CELL_EGRESS_BENCH_HTTPS_N:-1000}
https_bytes=${CELL_EGRESS_BENCH_HTTPS_BYTES:-1073741824}
https_server=${CELL_EGRESS_BENCH_HTTPS_SERVER:-keepalive}
[[ $https_server == keepalive || $https_server == close ]] || { echo "CELL_EGRESS_BENCH_HTTPS_SERVER: keepalive or close" >&2; exit 2; }
https_name=bench.test                 # the name the cell resolves and the http rule pins
only=${CELL_EGRESS_BENCH_ONLY:-tput lat https}
who_all=${CELL_EGRESS_BENCH_WHO:-direct cell relay pasta slirp veth}
build=${CELL_BENCH_BUILD:-build}

die() { echo "bench/egress.sh: $*" >&2; exit 1; }
note() { echo "bench/egress.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
for t in python3 ip unshare; do command -v "$t" >/dev/null || die "$t is not installed"; done

# ---- build ----------------------------------------------------------------------
# The Makefile builds the clients and servers with the build's flags: net_bench
# static (the same binary runs on the host, in a cell and in pasta's and
# slirp4netns's namespaces), tls_bench for the host and cells on the host image.
out="$top/$build/bench/egress"        # mounted read-only into cells at /bench
mkdir -p "$out"
targets=("$build/bench/net_bench" "$build/bench/tls_bench")
[ -n "${CELL_EGRESS_BENCH_CELL:-}" ] || targets+=("$build/cell")
make -C "$top" -j"$(nproc)" BUILD="$build" "${targets[@]}" >&2 || die "make BUILD=$build ${targets[*]} failed"
# Copies, so that a rebuild while this runs cannot swap them.
cell_bin=$(bench_snapshot "${CELL_EGRESS_BENCH_CELL:-$top/$build/cell}" "$out") || die "no cell binary to measure"
cp "$top/$build/bench/net_bench" "$top/$build/bench/tls_bench" "$out/"
nb="$out/net_bench"
tb="$out/tls_bench"
[[ " $only " != *" https "* ]] || command -v openssl >/dev/null ||
    die "openssl (the CLI) is not installed: it makes the https benchmark's test CA"

# Which contenders can run here.
who=""
for w in $who_all; do
    case $w in
    direct | cell | relay) who="$who $w" ;;
    pasta) command -v pasta >/dev/null || die "pasta is not installed (package passt; or leave it out of CELL_EGRESS_BENCH_WHO)"; who="$who pasta" ;;
    slirp) command -v slirp4netns >/dev/null || die "slirp4netns is not installed (or leave it out of CELL_EGRESS_BENCH_WHO)"; who="$who slirp" ;;
    veth) command -v nft >/dev/null || die "nft is not installed (package nftables; or leave veth out of CELL_EGRESS_BENCH_WHO)"; who="$who veth" ;;
    *) die "unknown contender '$w' (direct cell relay pasta slirp veth)" ;;
    esac
done

# ---- scratch, address, server, cleanup ---------------------------------------------------
scratch=$(mktemp -d /tmp/cell-egress-bench.XXXXXX)
server_pid="" tls_pid="" dns_pid="" addr="" added=0
vns="cellbench$$" vhost="cbv$$h" vnet=""   # the veth contender's netns, host-side link, /30
cleanup() {
    local rc=$? p
    trap - EXIT INT TERM HUP
    for p in $server_pid $tls_pid $dns_pid; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
    # Under set -e a failing command here would end the trap before its exit
    # "$rc" (exit status 1 after a clean run): the host end of the veth is
    # already gone with the netns, so its delete fails; hence the || true.
    if [ "$added" = 1 ]; then ip addr del "$addr/32" dev lo 2>/dev/null || true; fi
    if [ -n "$vnet" ]; then
        ip netns del "$vns" 2>/dev/null || true
        ip link del "$vhost" 2>/dev/null || true
    fi
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

# The veth contender: what kernel forwarding costs, with the conntrack and
# the filter a fast path would keep in the cell's netns.  Its /30 comes from
# 198.18.0.0/16, checked unused like $addr.
setup_veth() {
    local a
    for _ in $(seq 50); do
        a="198.18.$((RANDOM % 254 + 1)).$(((RANDOM % 63) * 4))"
        ip -4 addr show | grep -q "inet ${a%.*}\\.$((${a##*.} + 1))/" || { vnet=$a; break; }
    done
    [ -n "$vnet" ] || die "no free /30 in 198.18.0.0/16 for the veth contender"
    local h="${vnet%.*}.$((${vnet##*.} + 1))" c="${vnet%.*}.$((${vnet##*.} + 2))"
    ip netns add "$vns"
    ip link add "$vhost" mtu 65535 type veth peer name eth0 mtu 65535 netns "$vns"
    ip addr add "$h/30" dev "$vhost"
    ip link set "$vhost" up
    ip -n "$vns" link set lo up
    ip -n "$vns" addr add "$c/30" dev eth0
    ip -n "$vns" link set eth0 up
    ip -n "$vns" route add default via "$h"
    ip netns exec "$vns" nft -f - <<EOF
table inet fast {
    chain out {
        type filter hook output priority 0; policy drop;
        oifname "lo" accept
        ct state established,related accept
        ip daddr $addr tcp dport $port ct state new accept
    }
}
EOF
}
[[ " $who " != *" veth "* ]] || setup_veth
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
    relay) CELL_EGRESS_FAST=0 "$cell_bin" --state "$scratch/state" run --policy "$scratch/policy.json" \
              --mount "$out:/bench:ro" -- /bench/net_bench "$@" 2>"$scratch/err" ;;
    # As root, pasta drops to "nobody" by default and then cannot open the
    # namespace it made (/proc/PID/ns/net: EACCES, and it retries forever).
    pasta) pasta --runas 0:0 --config-net -q -- "$nb" "$@" 2>"$scratch/err" ;;
    slirp) run_slirp "$@" ;;
    veth) ip netns exec "$vns" "$nb" "$@" 2>"$scratch/err" ;;
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
    cell) echo "cell: fast path (cell run --policy; NFQUEUE verdict, veth)" ;;
    relay) echo "cell: relay (CELL_EGRESS_FAST=0; REDIRECT, splice)" ;;
    pasta) echo "pasta --config-net" ;;
    slirp) echo "slirp4netns (--mtu=65520)" ;;
    veth) echo "veth + nftables conntrack filter, kernel forwarding (alternative, no relay)" ;;
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
echo "## Egress benchmark (bench/egress.sh)"
echo
bench_machine_lines
pv=$(dpkg-query -W -f '${Version}' passt 2>/dev/null || echo "?")
sv=$(slirp4netns --version 2>/dev/null | awk 'NR == 1 {v = $3} /^libslirp:/ {l = $2} END {print v " (libslirp " l ")"}')
echo "- tools: passt/pasta $pv, slirp4netns $sv"
echo "- server: $addr:$port on the host's lo; transfers of $bytes bytes, $reps per contender and direction; latency $rounds x $lat_n connections per contender (each round after $lat_warmup untimed)"
[[ " $only " != *" https "* ]] ||
    echo "- https: tls_bench on $addr:443 ($(openssl version | cut -d' ' -f1-2), TLS 1.3, P-256 test CA and leaf, server connections: $https_server), DNS for $https_name on $addr:53; $rounds x $https_n requests and $reps GETs of $https_bytes bytes per contender"
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
                    fails[$w.$dir]=$((${fails[$w.$dir]:-0} + 1)) failed_runs=$((failed_runs + 1))
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
                failed_runs=$((failed_runs + 1))
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
    echo "In a cell the SYN waits in NFQUEUE for the owner's verdict, then goes by the veth. Through the relay, connect()"
    echo "completes against the owner's listener in the cell's netns; the echo then waits for the owner to accept, check"
    echo "the original destination and the policy, start the relay threads and connect on the host."
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

# ---- 3. HTTPS through interception -------------------------------------------------------
# The server (bench/tls_bench.c) on $addr:443 with a leaf for bench.test from a
# test CA made here; a DNS server on $addr:53 that answers bench.test -> $addr,
# the cell's resolver's upstream, so the name gets pinned to the address.
setup_https() {
    local d="$scratch/tls"
    mkdir -p "$d"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=cell bench test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -keyout "$d/ca.key" -out "$d/ca.pem" >"$d/openssl.log" 2>&1 || die "openssl: $(cat "$d/openssl.log")"
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$https_name" \
        -keyout "$d/leaf.key" -out "$d/leaf.csr" >"$d/openssl.log" 2>&1 || die "openssl: $(cat "$d/openssl.log")"
    printf 'subjectAltName=DNS:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
        "$https_name" >"$d/leaf.ext"
    openssl x509 -req -in "$d/leaf.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial -days 2 \
        -extfile "$d/leaf.ext" -out "$d/leaf.pem" >"$d/openssl.log" 2>&1 || die "openssl: $(cat "$d/openssl.log")"
    # shellcheck disable=SC2046
    "$tb" serve "$addr" 443 "$d/leaf.pem" "$d/leaf.key" "$d/ready" $([ "$https_server" = close ] && echo close) 2>"$d/server.err" &
    tls_pid=$!
    python3 "$here/egress_dns.py" "$addr" 53 "$https_name" "$addr" "$d/dns.ready" 2>"$d/dns.err" &
    dns_pid=$!
    for _ in $(seq 100); do [ -s "$d/ready" ] && [ -s "$d/dns.ready" ] && break; sleep 0.05; done
    [ -s "$d/ready" ] || die "the TLS server did not start: $(cat "$d/server.err")"
    [ -s "$d/dns.ready" ] || die "the DNS server did not start: $(cat "$d/dns.err")"
    # $addr is this host's own (on lo): "rebind" lets the resolver hand it out.
    printf '{"rules": [{"dns": {"upstreams": ["%s"], "rebind": ["%s/32"]}}, {"http": {"host": "%s", "ports": [443]}}]}\n' \
        "$addr" "$addr" "$https_name" >"$scratch/https.json"
}
# run_https WHO MODE ARGS...: tls_bench MODE on the host (trusting the test CA,
# to $addr) or in a cell (resolving bench.test, trusting the cell's bundle,
# which holds the cell's egress CA; the owner trusts the test CA upstream).
run_https() {
    local w=$1 mode=$2
    shift 2
    case $w in
    direct) "$tb" "$mode" "$addr" 443 "$https_name" "$scratch/tls/ca.pem" "$@" 2>"$scratch/err" ;;
    cell) "$cell_bin" --state "$scratch/state" run --policy "$scratch/https.json" --upstream-ca "$scratch/tls/ca.pem" \
              --mount "$out:/bench:ro" -- /bench/tls_bench "$mode" - 443 "$https_name" \
              /etc/ssl/certs/ca-certificates.crt "$@" 2>"$scratch/err" ;;
    esac
}
https_label() {
    case $1 in
    direct) echo "direct TLS (client and server on the host)" ;;
    cell) echo "cell: interception (\`http\` rule, cell run --policy)" ;;
    esac
}
proc_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }   # utime + stime

bench_https() {
    local who_all_=$who w r line t0 t1 s0 s1
    who=""
    for w in $who_all_; do case $w in direct | cell) who="$who $w" ;; esac; done
    [ -n "$who" ] || { who=$who_all_; note "https: needs direct or cell among the contenders: skipped"; return; }
    setup_https
    declare -A rps cpu scpu runs fails mbs
    note "https requests: $rounds rounds x {$who } x $https_n requests..."
    for r in $(seq "$rounds"); do
        for w in $(order "$r"); do
            touch "$scratch/https.$w"
            t0=$(busy_ticks) s0=$(proc_ticks "$tls_pid")
            if ! run_https "$w" rps "$https_n" "$lat_warmup" >"$scratch/rps.out"; then
                note "  $w https round $r failed: $(tr '\n' ' ' <"$scratch/err")"
                fails[$w.rps]=$((${fails[$w.rps]:-0} + 1)) failed_runs=$((failed_runs + 1))
                runs[$w.rps]="${runs[$w.rps]:-} failed"
                continue
            fi
            t1=$(busy_ticks) s1=$(proc_ticks "$tls_pid")
            line=$(head -1 "$scratch/rps.out")
            rps[$w]="${rps[$w]:-} $(kv rps <<<"$line")"
            runs[$w.rps]="${runs[$w.rps]:-} $(kv rps <<<"$line")"
            # ms of CPU per request (warm-up requests and the cell's boot included)
            cpu[$w.rps]="${cpu[$w.rps]:-} $(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$((https_n + lat_warmup))" 'BEGIN {printf "%.3f", (b-a)/hz*1000/n}')"
            scpu[$w.rps]="${scpu[$w.rps]:-} $(awk -v a="$s0" -v b="$s1" -v hz="$hz" -v n="$((https_n + lat_warmup))" 'BEGIN {printf "%.3f", (b-a)/hz*1000/n}')"
            tail -n +2 "$scratch/rps.out" >>"$scratch/https.$w"
        done
        note "  round $r: $(for w in $who; do echo -n "$w ${runs[$w.rps]##* } "; done)req/s"
    done
    note "https throughput: $reps reps x {$who } x $https_bytes bytes..."
    for r in $(seq "$reps"); do
        for w in $(order "$r"); do
            t0=$(busy_ticks) s0=$(proc_ticks "$tls_pid")
            if ! line=$(run_https "$w" get "$https_bytes"); then
                note "  $w https get failed: $(tr '\n' ' ' <"$scratch/err")"
                fails[$w.get]=$((${fails[$w.get]:-0} + 1)) failed_runs=$((failed_runs + 1))
                runs[$w.get]="${runs[$w.get]:-} failed"
                continue
            fi
            t1=$(busy_ticks) s1=$(proc_ticks "$tls_pid")
            mbs[$w]="${mbs[$w]:-} $(kv mbs <<<"$line")"
            runs[$w.get]="${runs[$w.get]:-} $(kv mbs <<<"$line")"
            cpu[$w.get]="${cpu[$w.get]:-} $(awk -v a="$t0" -v b="$t1" -v hz="$hz" -v n="$https_bytes" 'BEGIN {printf "%.2f", (b-a)/hz * 1073741824/n}')"
            scpu[$w.get]="${scpu[$w.get]:-} $(awk -v a="$s0" -v b="$s1" -v hz="$hz" -v n="$https_bytes" 'BEGIN {printf "%.2f", (b-a)/hz * 1073741824/n}')"
        done
        note "  rep $r: $(for w in $who; do echo -n "$w ${runs[$w.get]##* } "; done)MB/s"
    done
    kill -0 "$tls_pid" 2>/dev/null || die "the TLS server died: $(cat "$scratch/tls/server.err")"

    echo "### HTTPS requests: sequential GETs (64-byte body), a new TCP connection and full TLS handshake each"
    echo
    echo "Req/s: median of $rounds rounds of $https_n requests (each round a fresh process, after $lat_warmup untimed requests)."
    echo "Latency: from before socket() to the last body byte, samples of all rounds pooled (TLS close not timed)."
    echo "CPU ms/request: busy time of the whole machine (/proc/stat) over a round, per request (warm-up and cell boot included);"
    echo "server: the TLS server's own CPU time."
    echo
    echo "| path | req/s (median) | / direct | p50 (µs) | p90 (µs) | p99 (µs) | p50 added to direct (µs) | CPU ms/request | server CPU ms/request | failed rounds | all rounds (req/s) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
    local base m
    # shellcheck disable=SC2086
    base=$(median ${rps[direct]:-0})
    for w in $who; do
        if [ -z "${rps[$w]:-}" ]; then
            echo "| $(https_label "$w") | n/a | n/a | n/a | n/a | n/a | n/a | n/a | n/a | ${fails[$w.rps]:-0} |${runs[$w.rps]:-} |"
            continue
        fi
        # shellcheck disable=SC2086
        m=$(median ${rps[$w]})
        # shellcheck disable=SC2086
        python3 - "$scratch/https.$w" "$scratch/https.direct" <<EOF
import sys
def pct(s, p):
    k = (len(s) - 1) * p / 100
    f = int(k)
    return s[f] + (s[min(f + 1, len(s) - 1)] - s[f]) * (k - f)
def load(f):
    try:
        return sorted(int(x) / 1000 for x in open(f) if x.strip())
    except OSError:
        return []
s, d = load(sys.argv[1]), load(sys.argv[2])
add = "%+.1f" % (pct(s, 50) - pct(d, 50)) if d else "n/a"
print("| $(https_label "$w") | $m | $(ratio "$m" "$base") | %.1f | %.1f | %.1f | %s | $(median ${cpu[$w.rps]}) | $(median ${scpu[$w.rps]}) | ${fails[$w.rps]:-0} |${runs[$w.rps]} |"
      % (pct(s, 50), pct(s, 90), pct(s, 99), add))
EOF
    done
    echo
    local mib
    mib=$(awk -v n="$https_bytes" 'BEGIN {printf "%g MiB", n/1048576}')
    echo "### HTTPS throughput: one GET of $mib (server -> client)"
    echo
    echo "Median of $reps transfers; MB = 10^6 bytes; timed by the client from before connect() to the last body byte"
    echo "(TCP and TLS handshakes included). CPU s/GiB: the whole machine over the run (cell boot included) and the TLS server's own."
    echo
    echo "| path | MB/s (median) | / direct | CPU s/GiB (median) | server CPU s/GiB | failed runs | all runs (MB/s) |"
    echo "| --- | ---: | ---: | ---: | ---: | ---: | --- |"
    # shellcheck disable=SC2086
    base=$(median ${mbs[direct]:-0})
    for w in $who; do
        if [ -z "${mbs[$w]:-}" ]; then
            echo "| $(https_label "$w") | n/a | n/a | n/a | n/a | ${fails[$w.get]:-0} |${runs[$w.get]:-} |"
            continue
        fi
        # shellcheck disable=SC2086
        m=$(median ${mbs[$w]})
        # shellcheck disable=SC2086
        echo "| $(https_label "$w") | $m | $(ratio "$m" "$base") | $(median ${cpu[$w.get]}) | $(median ${scpu[$w.get]}) | ${fails[$w.get]:-0} |${runs[$w.get]} |"
    done
    echo
    who=$who_all_
}

failed_runs=0      # transfers, rounds and GETs that failed, over every benchmark
for b in $only; do
    case $b in
    tput) bench_tput ;;
    lat) bench_lat ;;
    https) bench_https ;;
    *) die "unknown benchmark '$b' in CELL_EGRESS_BENCH_ONLY (tput lat https)" ;;
    esac
done
kill -0 "$server_pid" 2>/dev/null || die "the server died"
[ "$failed_runs" = 0 ] || die "$failed_runs runs failed (each is reported above and left out of the tables)"
