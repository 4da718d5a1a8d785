#!/usr/bin/env bash
# bench/runs.sh: the overhead of a run (issue 12, docs/performance.md "Runs"):
# the time from POST /v1/runs to the agent process starting, and from the
# agent's end (its answer, its exit) to the result, with the mock agent, on a
# small git repository mounted as the run's workspace.  Goal: <= 50 ms each.
#
#   sudo bash bench/runs.sh
#
# Starts one `cell serve` (a temporary state directory, --run-repo-root over
# the scratch directory) and drives it with bench/runs.py: N interleaved
# iterations of a mock run, a shell run (`echo changed > notes.txt`) and,
# for scale, sbx-agents' approach to the shell backend in a plain
# subprocess (copy the repo to a temporary directory, run the command, git
# diff, remove the copy; no isolation).  Each cell run is timed by the
# run's own `timings` and by the client's clock on the run's event stream
# (runs.py says exactly what each figure spans).  Medians and p90 in a
# markdown table, then the medians against the goal and the subprocess.
#
# Environment:
#   CELL_RUNS_BENCH_N        timed iterations (each: one run of each kind)  (default 20)
#   CELL_RUNS_BENCH_WARMUP   untimed iterations first                        (default 2)
#   CELL_RUNS_BENCH_FILES    files in the repository (plus notes.txt)        (default 100)
#   CELL_RUNS_BENCH_CELL     a prebuilt cell binary to measure (not built then)
#   CELL_BENCH_BUILD         the make BUILD directory to build and use       (default build)
#   CELL_BENCH_NO_MAKE       1: use what BUILD has, do not run make
#   CELL_BENCH_COMMIT        label for the commit line
#
# Smoke setting (CI, a few seconds): CELL_RUNS_BENCH_N=2 CELL_RUNS_BENCH_WARMUP=0.
# Exits non-zero if the daemon fails to start or dies, or a run fails or
# lacks its change; nothing about speed is asserted.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
build=${CELL_BENCH_BUILD:-build}
n=${CELL_RUNS_BENCH_N:-20}
warmup=${CELL_RUNS_BENCH_WARMUP:-2}
nfiles=${CELL_RUNS_BENCH_FILES:-100}

die() { echo "bench/runs.sh: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
for t in curl python3 git; do command -v "$t" >/dev/null || die "$t is not installed (scripts/install-deps.sh)"; done

bench_cell_setup cell-runs-bench "${CELL_RUNS_BENCH_CELL:-}" || exit 1   # $scratch, $pid, $cell_bin

# The repository: nfiles small files in a few directories, committed.
repo=$scratch/repos/proj
mkdir -p "$repo"
for i in $(seq 1 "$nfiles"); do
    mkdir -p "$repo/dir$((i % 8))"
    printf 'file %d\nline two\n' "$i" >"$repo/dir$((i % 8))/f$i.txt"
done
echo "original" >"$repo/notes.txt"
gitq() { git -C "$repo" -c user.name=bench -c user.email=bench@localhost "$@" >/dev/null; }
GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent gitq init -q
GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent gitq add -A
GIT_CONFIG_NOSYSTEM=1 HOME=/nonexistent gitq commit -q -m init

bench_cell_serve --run-repo-root "$scratch/repos" || die "cell serve did not start"   # $pid, $url, $token, $log

echo "bench/runs.sh: $n iterations (+$warmup warm-up) of mock, shell and subprocess runs on a repo of $((nfiles + 1)) files" >&2
python3 "$here/runs.py" "$url" "$token" "$repo" "$n" "$warmup" >"$scratch/out.json" ||
    { tail -20 "$log" >&2; die "runs.py failed"; }
kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; die "cell serve died"; }

echo "### Runs: overhead of a run over the agent's own work ($n interleaved iterations)"
echo
bench_machine_lines
echo "- repository: $((nfiles + 1)) files, a git repository (the run's \`repo.path\`, under \`--run-repo-root\`)"
echo
python3 - "$scratch/out.json" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))

def q(v, p):
    v = sorted(v)
    k = (len(v) - 1) * p
    i = int(k)
    return v[i] if i + 1 >= len(v) else v[i] + (v[i + 1] - v[i]) * (k - i)

rows = [("POST -> agent started (run's timings)", "timings_start"),
        ("POST -> agent started (client: agent.started read)", "client_start"),
        ("agent's end -> result (run's timings)", "timings_finish"),
        ("agent's end -> result (client: to run.finished read)", "client_finish"),
        ("whole run (client: POST -> run.finished read)", "total")]
print("| ms, median (p90) | cell, mock agent | cell, shell agent | subprocess (sbx-agents' approach) |")
print("|---|---|---|---|")
for label, key in rows:
    cells = []
    for kind in ("mock", "shell", "subproc"):
        v = d[kind].get(key, [])
        cells.append("%.1f (%.1f)" % (q(v, .5), q(v, .9)) if v else "n/a")
    print("| %s | %s |" % (label, " | ".join(cells)))
print()
m = {k: {key: q(v, .5) for key, v in d[k].items()} for k in d}
for key, what in (("client_start", "POST -> agent started"), ("client_finish", "agent's end -> result")):
    print("- %s, mock, client clock: %.1f ms (goal <= 50 ms: %s); shell %.1f ms = %.2fx the subprocess's %.1f ms"
          % (what, m["mock"][key], "met" if m["mock"][key] <= 50 else "missed", m["shell"][key],
             m["shell"][key] / max(m["subproc"][key], 1e-3), m["subproc"][key]))
print("- whole run: mock %.1f ms, shell %.1f ms, subprocess %.1f ms (shell / subprocess %.2fx)"
      % (m["mock"]["total"], m["shell"]["total"], m["subproc"]["total"],
         m["shell"]["total"] / max(m["subproc"]["total"], 1e-3)))
EOF
