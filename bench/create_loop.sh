#!/usr/bin/env bash
# bench/create_loop.sh: N creates in a row through the daemon, each followed
# by its delete, and the latency of each tenth of the loop, so that a create
# path that slows down as records, cgroups or uid ranges pile up shows
# (docs/performance.md, "Daemon create loop").
#
#   sudo bash bench/create_loop.sh
#
# Starts one `cell serve` on a free loopback port with a fresh state
# directory, then does N times: POST /v1/cells {} (default image and limits),
# optionally POST .../processes/run {"command":"true"} in it, DELETE it; all
# on one keep-alive connection.  Prints one markdown table: per tenth of the
# loop, the median and the max of create, run and delete, in ms.
# Nothing is asserted about speed; it exits non-zero when a request fails.
#
# Environment:
#   CELL_CREATE_LOOP_N       creates (default 100; a multiple of 10 reads best)
#   CELL_CREATE_LOOP_RUN     1: also run `true` in each cell before deleting it (default 0)
#   CELL_CREATE_LOOP_CELL    a prebuilt cell binary to measure (not built then)
#   CELL_BENCH_BUILD         the make BUILD directory to build and use (default build)
#   CELL_BENCH_COMMIT        label for the commit line
# Smoke setting (CI): CELL_CREATE_LOOP_N=10.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
n=${CELL_CREATE_LOOP_N:-100}
with_run=${CELL_CREATE_LOOP_RUN:-0}
build=${CELL_BENCH_BUILD:-build}

die() { echo "bench/create_loop.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
case $n in ''|*[!0-9]*|0) die "CELL_CREATE_LOOP_N must be a positive number" ;; esac

bench_cell_setup cell-create-loop "${CELL_CREATE_LOOP_CELL:-}" || exit 1   # $scratch, $pid, $cell_bin
bench_cell_serve || die "cell serve did not start"   # $pid, $port, $token

echo "## cell daemon: $n creates in a row"
echo
bench_machine_lines
echo "- cell: \`cell serve\` (fresh state directory), POST /v1/cells {} then$([ "$with_run" = 1 ] && echo " processes/run true and") DELETE, one keep-alive connection"
echo

python3 - "$port" "$token" "$n" "$with_run" <<'EOF'
import http.client, json, statistics, sys, time

port, token, n, with_run = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
hdr = {"Authorization": "Bearer " + token, "Content-Type": "application/json"}

def call(method, path, body, want):
    t0 = time.perf_counter()
    conn.request(method, path, body=body, headers=hdr)
    resp = conn.getresponse()
    data = resp.read()
    ms = (time.perf_counter() - t0) * 1000
    if resp.status != want:
        sys.exit(f"bench/create_loop.sh: {method} {path}: HTTP {resp.status}: {data[:300]!r}")
    return ms, data

rows = []
for i in range(n):
    c_ms, data = call("POST", "/v1/cells", "{}", 201)
    cid = json.loads(data)["id"]
    r_ms = None
    if with_run:
        r_ms, data = call("POST", f"/cells/{cid}/v1/processes/run", '{"command":"true"}', 200)
        if json.loads(data).get("exitCode") != 0:
            sys.exit(f"bench/create_loop.sh: true did not exit 0 in cell {cid}: {data[:300]!r}")
    d_ms, _ = call("DELETE", f"/v1/cells/{cid}", None, 204)
    rows.append((c_ms, r_ms, d_ms))

tenths = 10 if n >= 10 else n
cols = ["create", "run", "delete"] if with_run else ["create", "delete"]
print("| creates | " + " | ".join(f"{c} p50 / max (ms)" for c in cols) + " |")
print("| --- |" + " ---: |" * len(cols))
for k in range(tenths):
    part = rows[k * n // tenths:(k + 1) * n // tenths]
    cells = []
    for j, c in enumerate(["create", "run", "delete"]):
        if c not in cols:
            continue
        v = [r[j] for r in part]
        cells.append(f"{statistics.median(v):.2f} / {max(v):.2f}")
    print(f"| {k * n // tenths + 1}-{(k + 1) * n // tenths} | " + " | ".join(cells) + " |")
allc = [r[0] for r in rows]
first, last = allc[: max(1, n // 10)], allc[-max(1, n // 10):]
print()
print(f"All {n}: create p50 {statistics.median(allc):.2f} ms, p90 {sorted(allc)[int(0.9 * (n - 1))]:.2f} ms; "
      f"last tenth / first tenth (median create): {statistics.median(last) / statistics.median(first):.2f}x")
EOF
kill -0 "$pid" 2>/dev/null || { tail -20 "$scratch/serve.log" >&2; die "cell serve died"; }
