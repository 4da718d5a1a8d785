#!/usr/bin/env bash
# bench/faststart.sh: issue 11's goal table ("Fast start"), every row measured
# in one run, side by side with its anchor (docs/performance.md, "Fast start").
#
#   sudo bash bench/faststart.sh            # or: make bench
#
# Rows (medians and p90 of each contender, the ratio of the medians):
#   cli     `cell run -- /bin/true` vs `bwrap --unshare-all ... /bin/true`,
#           each a fresh process timed from posix_spawn() to waitpid()
#   lib     libcell create+spawn+wait+destroy of /bin/true vs the same bwrap;
#           cli and lib are one bench/run.sh cold run (bench_cell cold, its
#           five contenders interleaved round-robin)
#   create  the daemon as a user starts it (`cell serve`, default settings):
#           POST /v1/cells {} + the first POST /cells/ID/v1/processes/run
#           {"command":"true"} as one client round on a fresh loopback
#           connection (http_bench create; DELETE after it, untimed), each
#           round alternating with a whole bwrap cold run; again with
#           `--warm 0` when the daemon has that flag (`cell help serve`)
#   run     processes/run true in a running cell vs sandbox-agent 0.4.2 (no
#           isolation), on one keep-alive connection (bench/daemon.sh run)
#   mem     the idle daemon's memory from /proc/PID/smaps_rollup: Private
#           (Private_Clean + Private_Dirty), Rss, Pss, vs sandbox-agent's:
#           bench/daemon_mem.sh's medians over CELL_FASTSTART_MEM_RUNS fresh
#           daemons of each when that script is there; else the `create`
#           daemon before its first request (after CELL_FASTSTART_SETTLE)
#           and bench/daemon.sh's reference 1 s after it started.  Private
#           leaves out library pages another process also maps, so the row
#           adds the create daemon's Rss without libc, libm and ld.so, close
#           to its Private on a quiet host, with a verdict on each
#   loop    CELL_FASTSTART_LOOP_N creates (+ deletes) in a row through the
#           daemon, the median per tenth (bench/create_loop.sh); "met" when
#           the median of the later half's tenth medians is within 1.2x of
#           the earlier half's
# The first table has each row's ratio next to the issue's goal and "met" or
# "missed"; the sub-benchmarks' own tables follow.  A row whose contender is
# missing (no bwrap, no sandbox-agent in the cache and no way to fetch it, no
# create_loop.sh) says "skipped: why"; any other failure ends the script
# non-zero.  Nothing about speed is asserted.
#
# Environment:
#   CELL_FASTSTART_N         cold iterations per contender (cli, lib, create)  (default 60)
#   CELL_FASTSTART_WARMUP    untimed iterations before each (cli, lib, create)  (default 5)
#   CELL_FASTSTART_PAUSE_MS  sleep after each daemon create round, off the clock,
#                            as between a user's creates (create)               (default 100)
#   CELL_FASTSTART_SETTLE    seconds a fresh daemon is left idle first (create, mem) (default 3)
#   CELL_FASTSTART_RUN_N     timed requests per round (run)                     (default 500)
#   CELL_FASTSTART_ROUNDS    rounds per server (run)                            (default 3)
#   CELL_FASTSTART_LOOP_N    creates in a row (loop)                            (default 100)
#   CELL_FASTSTART_MEM_RUNS  fresh idle daemons per server (mem, daemon_mem.sh) (default 3)
#   CELL_FASTSTART_ONLY      space-separated subset of: cli create run mem loop
#                            (cli also gives lib)
#   CELL_FASTSTART_SMOKE=1   CI's smoke mode: every count tiny (each still
#                            overridable by the variables above)
#   CELL_BENCH_BUILD         the make BUILD directory to build and use          (default build)
#   CELL_BENCH_NO_MAKE       1: use what BUILD has, do not run make
#   CELL_BENCH_COMMIT        label for the commit line
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
top=$(cd "$here/.." && pwd)
# shellcheck source=bench/lib.sh
. "$here/lib.sh"
if [ "${CELL_FASTSTART_SMOKE:-0}" = 1 ]; then
    d_n=3 d_warmup=1 d_pause=0 d_settle=1 d_run_n=20 d_rounds=1 d_loop_n=10 d_mem_runs=1
else
    d_n=60 d_warmup=5 d_pause=100 d_settle=3 d_run_n=500 d_rounds=3 d_loop_n=100 d_mem_runs=3
fi
n=${CELL_FASTSTART_N:-$d_n}
warmup=${CELL_FASTSTART_WARMUP:-$d_warmup}
pause_ms=${CELL_FASTSTART_PAUSE_MS:-$d_pause}
settle=${CELL_FASTSTART_SETTLE:-$d_settle}
run_n=${CELL_FASTSTART_RUN_N:-$d_run_n}
rounds=${CELL_FASTSTART_ROUNDS:-$d_rounds}
loop_n=${CELL_FASTSTART_LOOP_N:-$d_loop_n}
mem_runs=${CELL_FASTSTART_MEM_RUNS:-$d_mem_runs}
only=${CELL_FASTSTART_ONLY:-cli create run mem loop}
build=${CELL_BENCH_BUILD:-build}

die() { echo "bench/faststart.sh: $*" >&2; exit 1; }
note() { echo "bench/faststart.sh: $*" >&2; }
[ "$(id -u)" = 0 ] || die "must run as root (cells need it)"
for v in n warmup pause_ms settle run_n rounds loop_n mem_runs; do
    case ${!v} in '' | *[!0-9]*) die "$v must be a number, not '${!v}'" ;; esac
done
if [ "$n" = 0 ] || [ "$run_n" = 0 ] || [ "$rounds" = 0 ] || [ "$loop_n" = 0 ] || [ "$mem_runs" = 0 ]; then die "counts must be positive"; fi
for b in $only; do
    case $b in cli | create | run | mem | loop) ;; *) die "unknown row '$b' in CELL_FASTSTART_ONLY (cli create run mem loop)" ;; esac
done
wants() { [[ " $only " == *" $1 "* ]]; }
for t in curl python3; do command -v "$t" >/dev/null || die "$t is not installed (scripts/install-deps.sh)"; done

# ---- build and snapshot ---------------------------------------------------------------
bench_make all bench-bin || die "make BUILD=$build all bench-bin failed"
# The scripts called below measure this build as it is now.
export CELL_BENCH_NO_MAKE=1
out="$top/$build/bench/faststart"
cell_bin=$(bench_snapshot "$top/$build/cell" "$out") || die "no cell binary to measure"
cp "$top/$build/bench/http_bench" "$out/http_bench" || die "no http_bench"
hb="$out/http_bench"

scratch=$(mktemp -d /tmp/cell-faststart.XXXXXX)
serve_pid=""
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    stop_pid "$serve_pid"
    rm -rf "$scratch"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# Optional contenders: a missing one skips its rows, with the reason.
bwrap_bin=$(command -v bwrap || true)
bwrap_why="bwrap (bubblewrap) is not installed"
if [ -n "$bwrap_bin" ] && ! "$bwrap_bin" "${bench_bwrap_args[@]}" /bin/true; then
    bwrap_why="bwrap cannot start a sandbox on this host"; bwrap_bin=""
fi
ref_why=""
if wants run || wants mem; then
    ref_fetch "$top/$build/bench-cache" || ref_why="sandbox-agent $ref_version is not cached and cannot be fetched"
fi
has_warm=0
serve_help=$("$cell_bin" help serve 2>&1) || die "cell help serve failed: $serve_help"
[[ $serve_help == *--warm* ]] && has_warm=1

# Results: one "| metric | contender | anchor | ratio | goal | status |" row
# each, and the sub-benchmarks' own output, printed after the header.
goal_rows="$scratch/goal.md" details="$scratch/details.md"
: >"$goal_rows"; : >"$details"
row() { echo "| $1 | $2 | $3 | $4 | $5 | $6 |" >>"$goal_rows"; }
skip() { row "$1" "skipped: $2" "" "" "$3" "skipped"; note "$1: skipped: $2"; }
ms() { awk -v u="$1" 'BEGIN {printf "%.2f", u / 1000}'; }
# verdict RATIO GOAL: met when RATIO <= GOAL
verdict() { awk -v r="$1" -v g="$2" 'BEGIN {print (r + 0 <= g + 0) ? "met" : "missed"}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }
kv() { sed -n "s/.*\\b$1=\\([^ ]*\\).*/\\1/p"; }
mem_cell="" mem_quiet=""
# quiet_kib PID: Rss of every mapping but libc, libm, ld.so and the vdso.
# A library page counts as Private only while no other process maps it, so
# on a host where other programs use the same libraries Private is lower
# than what the daemon costs on a quiet host; this is close to the latter
# (libc and the loader are shared with every process anyway).
quiet_kib() {
    awk '/^[0-9a-f]+-[0-9a-f]+ / {n = (NF >= 6) ? $6 : ""; skip = (n ~ /\/(libc|libm)\.so|\/ld-linux/ || n == "[vdso]" || n == "[vvar]"); next}
         /^Rss:/ && !skip {s += $2} END {print s + 0}' "/proc/$1/smaps"
}

# ---- cli, lib: bench/run.sh's cold start ----------------------------------------------------
bench_cli() {
    if [ -z "$bwrap_bin" ]; then
        skip "\`cell run -- /bin/true\` vs bwrap" "$bwrap_why" "≤ 1.0×"
        skip "libcell create+spawn+wait+destroy vs bwrap" "$bwrap_why" "≤ 0.8×"
        return
    fi
    note "cli, lib: bench/run.sh cold, $n iterations x 5 contenders..."
    local raw="$scratch/raw" c
    mkdir -p "$raw"
    CELL_BENCH_BUILD=$build CELL_BENCH_ONLY=cold CELL_BENCH_N=$n CELL_BENCH_WARMUP=$warmup CELL_BENCH_RAW=$raw \
        bash "$here/run.sh" >"$scratch/run.md" || die "bench/run.sh (cold) failed"
    { echo "### cli, lib: bench/run.sh, cold start"; echo; sed '/^## /d' "$scratch/run.md"; } >>"$details"
    # p50 and p90 (ms) of one contender of cold.csv ("name",iteration,ns)
    pq() { awk -F'"' -v c="$1" '$2 == c {split($3, f, ","); print f[3] / 1e6}' "$raw/cold.csv" | quantile_of "$2"; }
    local b50 b90
    b50=$(pq bwrap 0.5) b90=$(pq bwrap 0.9)
    for c in "cell run (CLI process)|\`cell run -- /bin/true\`|1.0" \
             "cell (libcell: create+spawn+wait+destroy)|libcell create+spawn+wait+destroy|0.8"; do
        IFS='|' read -r name label goal <<<"$c"
        local c50 c90 r
        c50=$(pq "$name" 0.5) c90=$(pq "$name" 0.9)
        [ "$c50" != n/a ] || die "bench/run.sh's raw samples have no '$name'"
        r=$(ratio "$c50" "$b50")
        row "$label vs bwrap --unshare-all" "$c50 / $c90 ms" "$b50 / $b90 ms" "${r}× (p90 $(ratio "$c90" "$b90")×)" \
            "≤ ${goal}×" "$(verdict "$r" "$goal")"
    done
}

# ---- create, mem (cell's side): a fresh daemon at its default settings --------------------------
# create_rows LABEL [SERVE ARGS...]
create_rows() {
    local label=$1 st line t50 t90 a50 a90 p50 r tok
    shift
    st="$scratch/serve-$RANDOM"
    start_cell_serve "$cell_bin" "$st" "$st.log" "$@" || die "cell serve $* did not start"
    serve_pid=$started_pid
    sleep "$settle"            # idle: a warm pool, if any, has filled
    if [ $# = 0 ] && wants mem; then mem_cell=$(proc_mem "$serve_pid") mem_quiet=$(quiet_kib "$serve_pid"); fi
    if [ "$timed_create" = 1 ]; then
        note "create ($label): $n rounds of POST /v1/cells + processes/run true, alternating with bwrap..."
        tok=$(tr -d '\n' <"$st/admin.token")
        line=$(HTTP_BENCH_TOKEN=$tok HTTP_BENCH_PAUSE_MS=$pause_ms "$hb" create "$started_port" "$n" "$warmup" '{}' \
            "$bwrap_bin" "${bench_bwrap_args[@]}" /bin/true) ||
            { tail -20 "$st.log" >&2; die "create ($label) failed; the daemon's log tail is above"; }
        note "  $line"
        t50=$(ms "$(kv total_p50_us <<<"$line")") t90=$(ms "$(kv total_p90_us <<<"$line")")
        a50=$(ms "$(kv anchor_p50_us <<<"$line")") a90=$(ms "$(kv anchor_p90_us <<<"$line")")
        p50=$(ms "$(kv post_p50_us <<<"$line")")
        r=$(ratio "$t50" "$a50")
        row "daemon ($label): POST /v1/cells + first processes/run true vs bwrap cold" \
            "$t50 / $t90 ms (POST alone p50 $p50)" "$a50 / $a90 ms" "${r}× (p90 $(ratio "$t90" "$a90")×)" "≤ 0.5×" \
            "$(verdict "$r" 0.5)"
    fi
    kill -0 "$serve_pid" 2>/dev/null || { tail -20 "$st.log" >&2; die "cell serve ($label) died"; }
    stop_pid "$serve_pid"; serve_pid=""
}
bench_create() {
    timed_create=0
    if wants create && [ -z "$bwrap_bin" ]; then
        skip "daemon: POST /v1/cells + first processes/run true vs bwrap cold" "$bwrap_why" "≤ 0.5×"
    elif wants create; then
        timed_create=1
    fi
    [ "$timed_create" = 1 ] || wants mem || return 0
    create_rows "default settings"
    if [ "$has_warm" = 1 ] && [ "$timed_create" = 1 ]; then
        create_rows "--warm 0" --warm 0
    fi
}

# ---- run, mem (the reference's side): bench/daemon.sh ---------------------------------------------
ref_mem=""
bench_run() {
    [ -z "$ref_why" ] || { wants run && skip "processes/run true in a running cell vs sandbox-agent $ref_version" "$ref_why" "≤ 0.7×"; return 0; }
    local sum="$scratch/daemon.sum" c50 c90 r50 r90 r
    : >"$sum"
    # mem alone still needs the reference's idle figure: a token run then.
    local rn=$run_n rr=$rounds
    wants run || rn=1 rr=1
    note "run: bench/daemon.sh run, $rr rounds x $rn requests per server..."
    CELL_BENCH_BUILD=$build CELL_DAEMON_BENCH_ONLY=run \
        CELL_DAEMON_BENCH_N=$rn CELL_DAEMON_BENCH_ROUNDS=$rr CELL_DAEMON_BENCH_WARMUP=$((rn / 25 + 2)) \
        CELL_DAEMON_BENCH_CELL=$cell_bin CELL_DAEMON_BENCH_SUMMARY=$sum \
        bash "$here/daemon.sh" >"$scratch/daemon.md" || die "bench/daemon.sh failed"
    { echo "### run: bench/daemon.sh"; echo; sed '/^## /d' "$scratch/daemon.md"; } >>"$details"
    ref_mem=$(kv idle_ref <"$sum" | tr , ' ')
    wants run || return 0
    c50=$(kv run_cell_p50 <"$sum") c90=$(kv run_cell_p90 <"$sum")
    r50=$(kv run_ref_p50 <"$sum") r90=$(kv run_ref_p90 <"$sum")
    if [ -z "$c50" ] || [ -z "$r50" ]; then die "bench/daemon.sh wrote no run results"; fi
    r=$(ratio "$c50" "$r50")
    row "processes/run true in a running cell vs sandbox-agent $ref_version" "$(ms "$c50") / $(ms "$c90") ms" \
        "$(ms "$r50") / $(ms "$r90") ms" "${r}× (p90 $(ratio "$c90" "$r90")×)" "≤ 0.7×" "$(verdict "$r" 0.7)"
}

# The idle memory row: from bench/daemon_mem.sh (fresh daemons, alternating,
# medians) when it is there, else from the figures measured above.
bench_mem() {
    local label="idle daemon private memory (smaps_rollup Private_Clean + Private_Dirty)" c ref mib_c mib_q
    [ -n "$mem_quiet" ] || die "no idle memory of the daemon was measured"
    mib_q=$(awk -v k="$mem_quiet" 'BEGIN {printf "%.1f", k / 1024}')
    local quiet="; Rss without libc, libm, ld.so $mib_q MiB (≈ Private on a quiet host)"
    if [ -f "$here/daemon_mem.sh" ]; then
        note "mem: bench/daemon_mem.sh, $mem_runs fresh daemons per server..."
        CELL_BENCH_BUILD=$build CELL_MEM_RUNS=$mem_runs CELL_MEM_SETTLE=$settle CELL_MEM_REF=$([ -z "$ref_why" ] && echo 1 || echo 0) \
            bash "$here/daemon_mem.sh" >"$scratch/mem.md" || die "bench/daemon_mem.sh failed"
        { echo "### mem: bench/daemon_mem.sh"; echo; sed '/^## /d' "$scratch/mem.md"; } >>"$details"
        # its rows: | server | Private median | Private_Clean | Private_Dirty | Rss | Pss | threads | every run |
        mem_row() { awk -F' *[|] *' -v s="$1" '$2 == s {printf "Private %s MiB (Rss %s, Pss %s; median of '"$mem_runs"')", $3, $6, $7; exit}' "$scratch/mem.md"; }
        c=$(mem_row "cell serve")
        [ -n "$c" ] || die "bench/daemon_mem.sh printed no 'cell serve' row"
        mib_c=${c#Private }; mib_c=${mib_c%% *}
        ref="skipped: $ref_why"
        [ -n "$ref_why" ] || ref=$(mem_row "sandbox-agent $ref_version")
    else
        # "Rss Pss Private" (KiB) -> "Private P MiB (Rss R, Pss S)"
        mem_text() { awk '{printf "Private %.1f MiB (Rss %.1f, Pss %.1f)", $3 / 1024, $1 / 1024, $2 / 1024}' <<<"$1"; }
        c=$(mem_text "$mem_cell")
        mib_c=$(awk '{printf "%.1f", $3 / 1024}' <<<"$mem_cell")
        ref="skipped: ${ref_why:-bench/daemon.sh did not run}"
        [ -z "$ref_mem" ] || ref=$(mem_text "$ref_mem")
    fi
    row "$label" "$c$quiet" "$ref" "$mib_c MiB; quiet host ≈ $mib_q MiB" "≤ 5 MiB" \
        "$(verdict "$mib_c" 5) here; $(verdict "$mib_q" 5) on a quiet host"
}

bench_loop() {
    local label="$loop_n creates in a row through the daemon: second half vs first half" line r halves
    [ -f "$here/create_loop.sh" ] || { skip "$label" "bench/create_loop.sh is not there" "no slowdown (≤ 1.2×)"; return; }
    note "loop: bench/create_loop.sh, $loop_n creates..."
    CELL_BENCH_BUILD=$build CELL_CREATE_LOOP_N=$loop_n CELL_CREATE_LOOP_CELL=$cell_bin \
        bash "$here/create_loop.sh" >"$scratch/loop.md" || die "bench/create_loop.sh failed"
    { echo "### loop: bench/create_loop.sh"; echo; sed '/^## /d' "$scratch/loop.md"; } >>"$details"
    line=$(grep -o 'last tenth / first tenth (median create): [0-9.]*x' "$scratch/loop.md") ||
        die "bench/create_loop.sh printed no last/first ratio"
    r=${line##*: }; r=${r%x}
    # One tenth's median is noisy (with a warm pool, creates alternate
    # between pooled and cold cells): the verdict compares the median of
    # the later tenths' medians with that of the earlier ones.
    halves=$(awk -F' *[|] *' '$2 ~ /^[0-9]+-[0-9]+$/ {split($3, v, " "); p[++k] = v[1]}
        function med(a, b,   n, i, j, t, s) {n = 0; for (i = a; i <= b; i++) s[++n] = p[i]
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (s[j] < s[i]) {t = s[i]; s[i] = s[j]; s[j] = t}
            return n % 2 ? s[(n + 1) / 2] : (s[n / 2] + s[n / 2 + 1]) / 2}
        END {if (k < 2) exit 1; h = int(k / 2); f = med(1, h); l = med(k - h + 1, k)
            printf "%.2f %.2f %.2f\n", l, f, (f > 0) ? l / f : 0}' "$scratch/loop.md") ||
        die "bench/create_loop.sh printed no per-tenth table"
    read -r -a halves <<<"$halves"
    row "$label" "${halves[0]} ms (median of the later tenths' median creates)" "${halves[1]} ms (earlier tenths)" \
        "${halves[2]}× (last tenth / first tenth ${r}×)" "no slowdown (≤ 1.2×)" "$(verdict "${halves[2]}" 1.2)"
}

wants cli && bench_cli
if wants create || wants mem; then bench_create; fi
# mem needs daemon.sh's reference figure only without daemon_mem.sh
if wants run || { wants mem && [ ! -f "$here/daemon_mem.sh" ]; }; then bench_run; fi
wants mem && bench_mem
wants loop && bench_loop

# ---- report ---------------------------------------------------------------------------------------
echo "## Fast start (issue 11): goals"
echo
bench_machine_lines
echo "- tools: ${bwrap_bin:+$("$bwrap_bin" --version), }$(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2)${ref_why:+, no sandbox-agent}${ref_why:-, sandbox-agent $ref_version ($("$ref_bin" --version 2>/dev/null | head -1))}"
echo "- cell: $("$cell_bin" --version 2>/dev/null | head -1 || echo '?'); the daemon $([ "$has_warm" = 1 ] && echo "has --warm (measured at its default and with --warm 0)" || echo "has no --warm flag")"
echo "- iterations: cold $n per contender (after $warmup untimed), daemon create rounds $n with ${pause_ms} ms between; processes/run $rounds x $run_n; loop $loop_n; idle after ${settle} s"
echo "- bwrap: \`bwrap ${bench_bwrap_args[*]} /bin/true\`"
# How many shared libraries each binary loads (issue 11's first cause).
libs=""
for b in cell cell-daemon; do
    [ -f "$out/$b" ] && libs+="${libs:+, }$b $(ldd "$out/$b" | grep -c '=>')"
done
echo "- shared libraries (ldd): $libs"
echo
echo "| metric | cell p50 / p90 | anchor p50 / p90 | ratio of p50 | goal | status |"
echo "| --- | ---: | ---: | ---: | --- | --- |"
cat "$goal_rows"
echo
cat "$details"
