#!/usr/bin/env bash
# test.sh: the whole test suite: unit tests (cmocka), integration tests
# (pytest), the sandbox-agent SDK suite (node --test), then all three again
# built with ASan+UBSan, and the daemon tests with TSan.  Ends with "N passed,
# N failed".
set -uo pipefail
cd "$(dirname "$0")/.."

PYTEST=(/usr/bin/python3 -m pytest -q -p no:cacheprovider --durations=25)
# The integration tests run in CELL_TEST_JOBS processes (pytest-xdist), one
# test file per process at a time (module daemons, netfake's address ranges
# per file): they mostly wait on cells, not on the CPU.  CELL_TEST_JOBS=0
# runs them in this process, one after the other.
PYTEST_PAR=()
if [ "${CELL_TEST_JOBS:=2}" -gt 0 ] && /usr/bin/python3 -c 'import xdist' 2>/dev/null; then
  PYTEST_PAR=(-n "$CELL_TEST_JOBS" --dist loadfile)
fi
# A test that hangs fails after 10 minutes, with its stack, and the run goes
# on (pytest-timeout); nothing here relies on it for timing.
if /usr/bin/python3 -c 'import pytest_timeout' 2>/dev/null; then
  PYTEST+=(--timeout=600)
fi
passed=0 failed=0 broken=0
export CELL_TEST_STATE="${CELL_TEST_STATE:-$(mktemp -d /tmp/cell-test-state.XXXXXX)}"
SECONDS=0
t_stage() { echo "=== $* [${SECONDS}s]"; } # a stage heading with the time since the start

count_cmocka() { # log
  local p f
  p=$(grep -oE '\[  PASSED  \] [0-9]+' "$1" | awk '{s+=$4} END {print s+0}')
  f=$(grep -oE '\[  FAILED  \] [0-9]+' "$1" | awk '{s+=$4} END {print s+0}')
  passed=$((passed + p)); failed=$((failed + f))
}
count_pytest() { # log
  local line p f e
  line=$(grep -E '^(=+ )?[0-9]+ (passed|failed|skipped|error)' "$1" | tail -1)
  p=$(grep -oE '[0-9]+ passed' <<<"$line" | grep -oE '[0-9]+' || true)
  f=$(grep -oE '[0-9]+ failed' <<<"$line" | grep -oE '[0-9]+' || true)
  e=$(grep -oE '[0-9]+ errors?' <<<"$line" | grep -oE '[0-9]+' || true)
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0} + ${e:-0}))
}
count_node() { # log exit-status  (node --test TAP: "# pass N" / "# fail N")
  local p f
  p=$(grep -E '^# pass [0-9]+' "$1" | tail -1 | grep -oE '[0-9]+' || true)
  f=$(grep -E '^# fail [0-9]+' "$1" | tail -1 | grep -oE '[0-9]+' || true)
  # A run that failed before the runner could summarise (npm ci) counts once.
  if [ -z "$f" ] && [ "$2" -ne 0 ]; then f=1; fi
  passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0}))
}

# The sanitizer builds and the fuzz targets compile in the background, one
# after the other at a lower priority, while the release stage's tests (which
# mostly wait on cells) run.  bg_wait NAME waits for one of them; the stage
# then runs the same make in the foreground: nothing left to do when the
# background build succeeded, its errors shown when it failed.
bg_dir=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$bg_dir"' EXIT
bg_builds() { # name=make-args ... (make-args split on spaces)
  local spec
  for spec in "$@"; do touch "$bg_dir/${spec%%=*}.queued"; done
  (
    for spec in "$@"; do
      # shellcheck disable=SC2086
      nice -n 10 make -j"$(nproc)" ${spec#*=} >/dev/null 2>&1
      touch "$bg_dir/${spec%%=*}.done"
    done
  ) &
}
bg_wait() { # name: returns at once unless bg_builds queued it
  [ -e "$bg_dir/$1.queued" ] || return 0
  while [ ! -e "$bg_dir/$1.done" ]; do sleep 1; done
}
san_make_args() { # build-dir san-flags
  echo "BUILD=$1 SAN=$2 ${2:+OPT=-O1}"
}

# The debian-bookworm image (debootstrap: the longest fixture, ~100 s) is
# built in the background too, holding the lock conftest's debian_state
# takes, so the first test that needs it waits only for the rest of it.  A
# failed build is retried, and reported, by the fixture.
debian_image_bg() { # cell-binary
  mkdir -p "$CELL_TEST_STATE"
  exec 9>"$CELL_TEST_STATE/.debian-image.lock"
  flock 9
  # The subshell holds the lock (fd 9) until the build ends; cell gets no copy.
  # (A second command: a subshell of one command is that command, exec'd with
  # fd 9 closed, and the lock was free at once.)
  ( "$1" --state "$CELL_TEST_STATE" image build debian-bookworm >/dev/null 2>&1 9>&-; exit $? ) &
  exec 9>&-
}

# The desktop image (issue 16; ~100 s, ~350 MB from the mirror) after it, in
# a state dir of its own, for the desktop-image stage, which waits on this
# lock.  After it and niced: the integration tests wait for debian-bookworm,
# nothing waits for this until the bench smoke is over; idle I/O class, so
# its unpacking does not slow the browser tests it overlaps.
desktop_state="$CELL_TEST_STATE/desktop"
desktop_image_bg() { # cell-binary
  mkdir -p "$desktop_state"
  exec 8>"$CELL_TEST_STATE/.desktop-image.lock"
  flock 8
  ( flock "$CELL_TEST_STATE/.debian-image.lock" true
    start=$SECONDS
    nice -n 10 ionice -c 3 "$1" --state "$desktop_state" image build desktop >"$CELL_TEST_STATE/desktop-build.log" 2>&1 8>&-
    echo "exit status $?, $((SECONDS - start)) s" >>"$CELL_TEST_STATE/desktop-build.log" ) &
  exec 8>&-
}

start_background() {
  [ -e "$CELL_TEST_STATE/images/debian-bookworm/ready" ] || debian_image_bg "$PWD/build/cell"
  [ -e "$desktop_state/images/desktop/ready" ] || desktop_image_bg "$PWD/build/cell"
  # shellcheck disable=SC2046
  bg_builds "build-asan=$(san_make_args build-asan address,undefined) all build-asan/tests/.stamp" \
    "build-tsan=$(san_make_args build-tsan thread) all" \
    "build-fuzz=BUILD=build-fuzz $(printf 'build-fuzz/fuzz/%s ' $fuzz_targets)"
}

stage() { # name build-dir san-flags [command to start once it is built]
  local name=$1 build=$2 san=$3 log
  log=$(mktemp)
  t_stage "$name: build"
  bg_wait "$build"
  # shellcheck disable=SC2046
  if ! make -j"$(nproc)" $(san_make_args "$build" "$san") all "$build"/tests/.stamp >"$log" 2>&1; then
    cat "$log"; echo "=== $name: build FAILED"; broken=1; failed=$((failed + 1)); return
  fi
  "${@:4}"
  t_stage "$name: unit tests"
  for t in "$build"/tests/test_*; do
    [ -x "$t" ] || continue
    "$t" 2>&1 | tee -a "$log.unit"
  done
  count_cmocka "$log.unit"
  t_stage "$name: integration tests"
  CELL_BIN="$PWD/$build/cell" "${PYTEST[@]}" "${PYTEST_PAR[@]}" tests/integration 2>&1 | tee "$log.it"
  count_pytest "$log.it"
  t_stage "$name: sandbox-agent SDK conformance (node --test)"
  CELL_BIN="$PWD/$build/cell" tests/sdk/run.sh 2>&1 | tee "$log.sdk"
  count_node "$log.sdk" "${PIPESTATUS[0]}"
  rm -f "$log" "$log.unit" "$log.it" "$log.sdk"
}

# Every libFuzzer target the Makefile lists.
fuzz_targets=$(sed -n 's/^FUZZ_TARGETS *:= *//p' Makefile)
# docs/openapi.json against @redocly/cli's recommended rules (zero errors;
# the warnings accepted are listed in tests/openapi/redocly.yaml).
t_stage "openapi: redocly lint (tests/openapi/lint.sh)"
if tests/openapi/lint.sh; then passed=$((passed + 1)); else echo "openapi lint: FAILED"; failed=$((failed + 1)); fi

stage "release" build "" start_background

# The Inspector UI (/ui/) in Debian's chromium, driven by playwright-core
# (tests/ui/run.sh, about 15 s), against the release build.
t_stage "release: Inspector UI in chromium (tests/ui/run.sh)"
CELL_BIN="$PWD/build/cell" tests/ui/run.sh 2>&1 | tee /tmp/cell-ui-tests.log
count_node /tmp/cell-ui-tests.log "${PIPESTATUS[0]}"

# The issue's load test: wrk with 128 connections on health and run; no
# errors, no growth of the daemon's RSS, fds or threads between rounds.
t_stage "load: wrk -c128 against cell serve (bench/load_check.sh)"
if CELL_LOAD_CELL="$PWD/build/cell" CELL_LOAD_TIME=5s bash bench/load_check.sh 2>&1 | tee /tmp/cell-load.log | tail -12 &&
   grep -q '^load_check: ok' /tmp/cell-load.log; then
  passed=$((passed + 1))
else
  echo "load_check: FAILED"; failed=$((failed + 1))
fi
rm -f /tmp/cell-load.log

# Bench smoke (release build only): each benchmark script once with tiny
# counts, so that none can rot: every contender must run and every driver
# build (make bench-bin); nothing about speed is asserted.  About 65 s.
bench_smoke() { # name command...
  local name=$1 log
  shift
  log=$(mktemp)
  # One retry: the anchors (pasta, slirp4netns) occasionally reset a
  # connection; a script that rotted fails both times.
  if "$@" >"$log" 2>&1 || { tail -5 "$log"; echo "bench smoke $name: retrying once"; "$@" >"$log" 2>&1; }; then
    echo "bench smoke $name: ok"; passed=$((passed + 1))
  else
    tail -30 "$log"; echo "bench smoke $name: FAILED"; failed=$((failed + 1))
  fi
  rm -f "$log"
}
t_stage "bench smoke: bench/*.sh once each with tiny counts"
bench_smoke run.sh env CELL_BENCH_BUILD=build CELL_BENCH_N=3 CELL_BENCH_WARM_N=10 CELL_BENCH_DENSITY=3 \
  CELL_BENCH_PHASES_N=3 CELL_BENCH_WARMUP=1 bash bench/run.sh
bench_smoke daemon.sh env CELL_BENCH_BUILD=build CELL_DAEMON_BENCH_N=20 CELL_DAEMON_BENCH_WARMUP=2 \
  CELL_DAEMON_BENCH_ROUNDS=1 CELL_DAEMON_BENCH_FS_REPS=1 CELL_DAEMON_BENCH_FS_SIZE=1048576 \
  CELL_DAEMON_BENCH_WRK_TIME=1s CELL_DAEMON_BENCH_CELLS=3 bash bench/daemon.sh
bench_smoke egress.sh env CELL_BENCH_BUILD=build CELL_EGRESS_BENCH_BYTES=1048576 CELL_EGRESS_BENCH_REPS=1 \
  CELL_EGRESS_BENCH_LAT_N=20 CELL_EGRESS_BENCH_ROUNDS=1 CELL_EGRESS_BENCH_WARMUP=2 CELL_EGRESS_BENCH_HTTPS_N=10 \
  CELL_EGRESS_BENCH_HTTPS_BYTES=1048576 bash bench/egress.sh
bench_smoke fs_api.sh env CELL_BENCH_BUILD=build CELL_FS_BENCH_SIZE=1048576 CELL_FS_BENCH_REPS=1 bash bench/fs_api.sh
bench_smoke agents.sh env CELL_BENCH_BUILD=build CELL_AGENTS_BENCH_N=1 CELL_AGENTS_BENCH_WARMUP=0 \
  CELL_AGENTS_BENCH_ROUNDS=1 CELL_AGENTS_BENCH_PINGS=3 CELL_AGENTS_BENCH_WORDS=20 CELL_AGENTS_BENCH_INSTANCES=2 bash bench/agents.sh
bench_smoke faststart.sh env CELL_BENCH_BUILD=build CELL_FASTSTART_SMOKE=1 bash bench/faststart.sh
bench_smoke daemon_mem.sh env CELL_BENCH_BUILD=build CELL_MEM_RUNS=1 CELL_MEM_SETTLE=1 bash bench/daemon_mem.sh
bench_smoke runs.sh env CELL_BENCH_BUILD=build CELL_RUNS_BENCH_N=2 CELL_RUNS_BENCH_WARMUP=0 bash bench/runs.sh
bench_smoke vfs.sh env CELL_BENCH_BUILD=build CELL_VFS_BENCH_FILES=2 CELL_VFS_BENCH_FILE_SIZE=1048576 \
  CELL_VFS_BENCH_REPS=1 bash bench/vfs.sh
bench_smoke image.sh env CELL_BENCH_BUILD=build CELL_IMAGE_BENCH_SMOKE=1 bash bench/image.sh
bench_smoke binstats.sh env BINSTATS_N=3 bash scripts/binstats.sh build
bench_smoke oci.sh env CELL_BENCH_BUILD=build CELL_OCI_BENCH_N=3 CELL_OCI_BENCH_WARMUP=1 bash bench/oci.sh
bench_smoke ui.sh env CELL_BENCH_BUILD=build CELL_UI_BENCH_N=2 CELL_UI_BENCH_REF=0 bash bench/ui.sh
bench_smoke desktop.sh env CELL_BENCH_BUILD=build CELL_DESKTOP_BENCH_N=1 CELL_DESKTOP_BENCH_M=2 bash bench/desktop.sh
bench_smoke desktop_live.sh env CELL_BENCH_BUILD=build CELL_LIVE_BENCH_M=2 bash bench/desktop_live.sh
# A new bench script or program must join the above: each bench/*.sh is run
# here (load_check.sh in the load stage) or by faststart.sh, each bench/*.c
# is a Makefile target (make bench-bin).
bench_coverage() {
  local f bad=""
  for f in bench/*.sh; do
    [ "$f" = bench/lib.sh ] && continue
    grep -q "bash $f" scripts/test.sh || grep -qF "\"\$here/${f#bench/}\"" bench/faststart.sh || bad+=" $f"
  done
  for f in bench/*.c; do grep -qF "$f" Makefile || bad+=" $f"; done
  [ -z "$bad" ] || { echo "not smoke-run in CI or not built by make bench-bin:$bad"; return 1; }
}
bench_smoke coverage bench_coverage

# The desktop image, built in the background since the release stage began:
# a cell of it driven by the unmodified SDK's desktop methods (chromium,
# xterm, a recording; tests/sdk/desktop_image.mjs, ~10 s).  The test builds
# it through POST /v1/images/desktop/build ("already built", or the build's
# progress and error when the background build failed) and fails, never
# skips, when it cannot: CELL_DESKTOP_STATE is set.
t_stage "desktop image: the SDK's desktop methods in a cell of it (tests/sdk/desktop_image.mjs)"
flock "$CELL_TEST_STATE/.desktop-image.lock" true
tail -2 "$CELL_TEST_STATE/desktop-build.log" 2>/dev/null | sed 's/^/background build: /'
CELL_BIN="$PWD/build/cell" CELL_DESKTOP_STATE="$desktop_state" timeout -k 10 1500 \
  node --test --test-reporter=tap tests/sdk/desktop_image.mjs 2>&1 | tee /tmp/cell-desktop-image.log
count_node /tmp/cell-desktop-image.log "${PIPESTATUS[0]}"
rm -f /tmp/cell-desktop-image.log

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:halt_on_error=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
stage "asan+ubsan" build-asan "address,undefined"

# ThreadSanitizer: only the daemon's integration tests (test_daemon_*.py,
# and test_agents.py for the ACP proxy's reader threads), which exercise
# its threads, to keep CI within 20 minutes.  A TSan report
# in a daemon's stderr fails the test that owns the daemon (check_sanitizer).
t_stage "tsan: build"
bg_wait build-tsan
tsan_log=$(mktemp)
# shellcheck disable=SC2046
if make -j"$(nproc)" $(san_make_args build-tsan thread) all >"$tsan_log" 2>&1; then
  t_stage "tsan: daemon integration tests"
  TSAN_OPTIONS="halt_on_error=0 second_deadlock_stack=1 suppressions=$PWD/tests/tsan.supp" CELL_BIN="$PWD/build-tsan/cell" \
    "${PYTEST[@]}" "${PYTEST_PAR[@]}" tests/integration/test_daemon_*.py tests/integration/test_agents.py 2>&1 | tee "$tsan_log.it"
  count_pytest "$tsan_log.it"
else
  cat "$tsan_log"; echo "=== tsan: build FAILED"; broken=1; failed=$((failed + 1))
fi
rm -f "$tsan_log" "$tsan_log.it"

# libFuzzer, each target FUZZ_SECONDS (10) from a scratch copy of its seed
# corpus (fuzz/corpus/http for fuzz_http), two at a time: a fuzzer is one
# single-threaded process.
fuzz_one() { # target: runs it, leaves build-fuzz/fuzz/TARGET.log and .rc
  local target=$1 dir=build-fuzz/fuzz
  rm -rf "$dir/$target.corpus" && mkdir -p "$dir/$target.corpus" &&
    { [ ! -d "fuzz/corpus/${target#fuzz_}" ] || cp "fuzz/corpus/${target#fuzz_}"/* "$dir/$target.corpus/"; } &&
    "$dir/$target" -max_total_time="${FUZZ_SECONDS:-10}" -max_len=4096 "$dir/$target.corpus" >"$dir/$target.log" 2>&1
  echo $? >"$dir/$target.rc"
}
t_stage "fuzz: each target briefly (FUZZ_SECONDS=${FUZZ_SECONDS:-10}), two at a time"
bg_wait build-fuzz
# A target that failed to build fails below (its log says it is missing);
# -k: the others are built all the same, and its errors are shown here.
# shellcheck disable=SC2086,SC2046
make -k -j"$(nproc)" BUILD=build-fuzz $(printf 'build-fuzz/fuzz/%s ' $fuzz_targets) 2>&1 >/dev/null |
  grep -E 'error|undefined reference' || true
# shellcheck disable=SC2086
set -- $fuzz_targets
while [ $# -gt 0 ]; do
  pair=("$1" ${2:+"$2"}) pids=()
  for target in "${pair[@]}"; do rm -f "build-fuzz/fuzz/$target.rc"; fuzz_one "$target" & pids+=($!); done
  wait "${pids[@]}"
  for target in "${pair[@]}"; do
    if [ "$(cat "build-fuzz/fuzz/$target.rc" 2>/dev/null)" = 0 ]; then
      echo "fuzz $target: ok ($(grep -oE 'Done [0-9]+ runs' "build-fuzz/fuzz/$target.log"))"; passed=$((passed + 1))
    else
      tail -30 "build-fuzz/fuzz/$target.log" 2>/dev/null; echo "fuzz $target: FAILED"; failed=$((failed + 1))
    fi
  done
  shift "${#pair[@]}"
done

wait
rm -rf "$CELL_TEST_STATE"
t_stage "done"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ "$broken" -eq 0 ]
