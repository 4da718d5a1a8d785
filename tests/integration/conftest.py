"""Shared fixtures for the cell integration tests.

Run as root on a Linux host (the CLI refuses anything else):

    make -j2
    CELL_BIN=$PWD/build/cell /usr/bin/python3 -m pytest -q tests/integration

Environment:
    CELL_BIN               the cell binary (default: <checkout>/build/cell)
    CELL_TEST_STATE        state directory for the debian-bookworm image; it is
                           reused across sessions and never deleted (default: a
                           temporary directory, deleted after the session)
                           Under pytest-xdist (-n N) the workers share its
                           image (built once, under a lock) and each runs its
                           cells in a state dir of its own
    CELL_TEST_IMAGE_CACHE  a directory holding a prebuilt debian-bookworm/ image
                           (with its ready file) to copy instead of running
                           `cell image build debian-bookworm` (~45 s, needs the
                           Debian mirror)

Fixtures:
    cell          path of the cell binary
    state         a fresh, empty state directory for one test; after the test
                  it is checked for leftovers (see assert_no_leftovers) and
                  removed
    run           run(args, input=None, timeout=60, state=None, cwd=None) runs
                  `cell --state STATE ARGS...` and returns a CompletedProcess
                  with text stdout/stderr
    debian_state  session-wide state directory with debian-bookworm built
    dstate        debian_state, checked for leftovers after each test
    hostdir       a scratch directory on the host, removed after the test
    admin, anon   clients of the module's daemon fixture `d` (daemon.serve())
    cells         ids of cells a test created, deleted after it (with admin)

Support modules: daemon.py (the daemon, its clients, tokens), netfake.py
(addresses on lo, fake DNS, echo and HTTP upstreams, the decide webhook),
oci.py (OCI bundles, runc and cell-oci side by side, a subreaper in the
shim's place, a private containerd), ocibuild.py (OCI image tars).
"""
import ctypes
import os
import select
import shutil
import signal
import struct
import subprocess
import tempfile
import time

import pytest

from daemon import wait_for  # noqa: F401  (tests import it from here too)

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
CELL_BIN = os.environ.get("CELL_BIN") or os.path.join(CHECKOUT, "build", "cell")

# Cells run as host uids from 0x40000000 up (65536 per slot).
CELL_UID_FIRST = 0x40000000
DEBIAN = "debian-bookworm"


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "debian: needs the debian-bookworm image")


# ---- running the CLI ----------------------------------------------------------


def cell_argv(state, args):
    return [CELL_BIN, "--state", state] + [str(a) for a in args]


def run_cell(state, args, input=None, timeout=60, cwd=None, env=None):
    """Run `cell --state STATE ARGS` to completion; text output."""
    return subprocess.run(
        cell_argv(state, args),
        input=input,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def popen_cell(state, args, **kw):
    """Start `cell --state STATE ARGS` in the background (own session so
    signals sent to it do not hit pytest)."""
    kw.setdefault("stdout", subprocess.PIPE)
    kw.setdefault("stderr", subprocess.PIPE)
    kw.setdefault("text", True)
    kw.setdefault("start_new_session", True)
    return subprocess.Popen(cell_argv(state, args), **kw)


def stop_proc(p, timeout=10):
    """Make sure a Popen'ed CLI is gone (used in finally blocks)."""
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=timeout)
    for f in (p.stdout, p.stderr, p.stdin):
        if f:
            try:
                f.close()
            except OSError:
                pass


def wait_ready(p, word="ready", timeout=15):
    """Read the CLI's stdout until the cell prints `word`."""
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        if not select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))[0]:
            break
        line = p.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.strip() == word:
            return
    stop_proc(p)
    pytest.fail("the cell never printed %r; stdout=%r stderr=%r" % (word, seen, p.stderr.read()))


def running_cell_ids(state):
    d = os.path.join(state, "run", "cells")
    try:
        return sorted(e for e in os.listdir(d) if not e.startswith("."))
    except FileNotFoundError:
        return []


def wait_for_cell_id(state, timeout=15.0):
    """The id of the (single) running cell of `state`, once it exists."""
    ids = wait_for(lambda: running_cell_ids(state), timeout)
    assert ids, "no cell appeared under %s/run/cells" % state
    return ids[0]


# ---- cgroups ----------------------------------------------------------------------


def _mountinfo(pid="self"):
    try:
        with open("/proc/%s/mountinfo" % pid) as f:
            return f.read()
    except OSError:
        return ""


def cgroup_roots():
    """(v2 root or None, {v1 controller: mount point})"""
    v2, v1 = None, {}
    for line in _mountinfo().splitlines():
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) < 5 or len(rfields) < 3:
            continue
        mnt = fields[4]
        if rfields[0] == "cgroup2" and v2 is None:
            v2 = mnt
        elif rfields[0] == "cgroup":
            for opt in rfields[2].split(","):
                if opt in ("memory", "pids", "cpu", "freezer", "cpuacct") and opt not in v1:
                    v1[opt] = mnt
    return v2, v1


def cell_cgroup_parents():
    """Every '<hierarchy>/cell' directory that may hold cell cgroups."""
    v2, v1 = cgroup_roots()
    roots = set(v1.values())
    if v2:
        roots.add(v2)
    return sorted(os.path.join(r, "cell") for r in roots)


def cell_cgroup_dirs():
    out = set()
    for parent in cell_cgroup_parents():
        try:
            for e in os.listdir(parent):
                p = os.path.join(parent, e)
                if os.path.isdir(p):
                    out.add(p)
        except FileNotFoundError:
            pass
    return out


def cgroup_dirs_of(cell_id):
    """{controller: directory} of a running cell, v1 or v2."""
    v2, v1 = cgroup_roots()
    found = {}
    for ctrl, root in v1.items():
        p = os.path.join(root, "cell", cell_id)
        if os.path.isdir(p):
            found[ctrl] = p
    if v2:
        p = os.path.join(v2, "cell", cell_id)
        if os.path.isdir(p):
            found["v2"] = p
    return found


def cgroup_is_empty(path):
    try:
        with open(os.path.join(path, "cgroup.procs")) as f:
            return f.read().strip() == ""
    except FileNotFoundError:
        return True  # gone meanwhile
    except OSError:
        return False


# ---- leftovers ----------------------------------------------------------------------


def _status_uid(pid):
    try:
        with open("/proc/%s/status" % pid) as f:
            for line in f:
                if line.startswith("Uid:"):
                    return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


def cell_range_pids():
    """Host pids of live (non-zombie) processes running as a cell uid."""
    out = []
    for e in os.listdir("/proc"):
        if not e.isdigit():
            continue
        uid = _status_uid(e)
        if uid is None or uid < CELL_UID_FIRST:
            continue
        try:
            with open("/proc/%s/stat" % e) as f:
                st = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if st != "Z":
            out.append(int(e))
    return out


def cell_pids_of_state(state):
    """Cell processes that belong to cells of `state`: their root overlay
    names the state directory in its mount options.  Cells of other state
    directories (other test sessions on this host) are not counted."""
    return [p for p in cell_range_pids() if state in _mountinfo(p)]


class CellIdWatch:
    """The ids of the cells made under STATE/run/cells from now on (inotify:
    a cell's run directory is made as .new-ID, then renamed to ID), so that
    the leftover check blames a test for its own cells' cgroups only, not for
    those of cells that other tests run at the same time in other state dirs
    (pytest-xdist's other workers, other sessions on this host).  ids() is
    None when that is unknown (no inotify, or its queue overflowed): then
    every new cgroup counts."""

    IN_MOVED_TO, IN_CREATE, IN_Q_OVERFLOW = 0x80, 0x100, 0x4000

    def __init__(self, state):
        self.fd, self.names, self.overflow = -1, set(), False
        d = state
        for part in ("run", "cells"):  # made as the runtime makes them (0700)
            d = os.path.join(d, part)
            try:
                os.mkdir(d, 0o700)
            except FileExistsError:
                pass
        libc = ctypes.CDLL(None, use_errno=True)
        fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if fd >= 0 and libc.inotify_add_watch(fd, d.encode(), self.IN_CREATE | self.IN_MOVED_TO) < 0:
            os.close(fd)
            fd = -1
        self.fd = fd

    def ids(self):
        while self.fd >= 0:
            try:
                buf = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            off = 0
            while off + 16 <= len(buf):  # struct inotify_event: wd, mask, cookie, len, name[len]
                _, mask, _, n = struct.unpack_from("iIII", buf, off)
                name = buf[off + 16:off + 16 + n].split(b"\0", 1)[0].decode(errors="replace")
                off += 16 + n
                if mask & self.IN_Q_OVERFLOW:
                    self.overflow = True
                elif name:
                    self.names.add(name[len(".new-"):] if name.startswith(".new-") else name)
        return None if self.fd < 0 or self.overflow else set(self.names)

    def close(self):
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def assert_no_leftovers(state, cg_before, timeout=5.0, ours=None):
    """ours: the ids of the cells the test made (CellIdWatch.ids()); None:
    every new cell cgroup is the test's."""
    problems = []
    if not wait_for(lambda: not cell_pids_of_state(state), timeout):
        problems.append("cell processes still running: %s" % cell_pids_of_state(state))
    cells = running_cell_ids(state)
    if cells:
        problems.append("state/run/cells not empty: %s" % cells)
    for who in ("self", "1"):
        lines = [l for l in _mountinfo(who).splitlines() if state in l]
        if lines:
            problems.append("mounts referencing the state dir in /proc/%s/mountinfo: %s" % (who, lines))

    def leaked_cgroups():
        return sorted(d for d in cell_cgroup_dirs() - cg_before
                      if (ours is None or os.path.basename(d) in ours) and cgroup_is_empty(d))

    # New, empty cell cgroups that stay: leaked by a cell that has ended.
    # (Non-empty new ones belong to cells running elsewhere right now; any of
    # ours would have shown up as processes above.)
    wait_for(lambda: not leaked_cgroups(), timeout)
    leaked = leaked_cgroups()
    if leaked:
        problems.append("cgroups left behind: %s" % leaked)
    assert not problems, "leftovers after the test: " + "; ".join(problems)


# ---- fixtures ---------------------------------------------------------------------------


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("cell integration tests must run as root")


@pytest.fixture(scope="session")
def cell():
    _need_root()
    if not os.access(CELL_BIN, os.X_OK):
        pytest.fail("cell binary %s not found: run `make` or set CELL_BIN" % CELL_BIN)
    return CELL_BIN


@pytest.fixture
def state(cell):
    d = tempfile.mkdtemp(prefix="cell-it-")
    before = cell_cgroup_dirs()
    watch = CellIdWatch(d)
    try:
        yield d
        assert_no_leftovers(d, before, ours=watch.ids())
    finally:
        watch.close()
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def run(state):
    def _run(args, input=None, timeout=60, state=None, cwd=None, env=None):
        return run_cell(state or _default, args, input=input, timeout=timeout, cwd=cwd, env=env)

    _default = state
    return _run


def _image_ready(state, name):
    return os.path.exists(os.path.join(state, "images", name, "ready"))


def _provide_debian(d):
    """Build debian-bookworm in state d (or copy it from CELL_TEST_IMAGE_CACHE)
    unless it is there."""
    os.makedirs(os.path.join(d, "images"), exist_ok=True)
    if not _image_ready(d, DEBIAN):
        cache = os.environ.get("CELL_TEST_IMAGE_CACHE")
        src = os.path.join(cache, DEBIAN) if cache else None
        if src and os.path.exists(os.path.join(src, "ready")):
            dst = os.path.join(d, "images", DEBIAN)
            shutil.rmtree(dst, ignore_errors=True)
            subprocess.run(["cp", "-a", src, dst], check=True)
        else:
            r = run_cell(d, ["image", "build", DEBIAN], timeout=1200)
            if r.returncode != 0:
                pytest.fail("cell image build %s failed (%d):\n%s%s" % (DEBIAN, r.returncode, r.stdout[-3000:],
                                                                         r.stderr[-3000:]))
    assert _image_ready(d, DEBIAN)


def _provide_debian_locked(d):
    """_provide_debian(d) holding flock(d/.debian-image.lock): whoever shares
    the state dir (pytest-xdist's workers, scripts/test.sh's build of the
    image in the background) builds it once; the others wait for it."""
    import fcntl

    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, ".debian-image.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _provide_debian(d)


def _worker_debian_state(worker, shared):
    """Under pytest-xdist (-n): the image is built once in the shared state
    dir; each worker then runs its cells in a state dir of its own holding a
    hard-linked copy of it (the image is only ever an overlay's read-only
    lower layer).  One state dir for both would make dstate's leftover check
    count the other worker's cells as this test's."""
    _provide_debian_locked(shared)
    d = tempfile.mkdtemp(prefix="cell-it-debian-%s-" % worker)
    os.makedirs(os.path.join(d, "images"))
    src, dst = os.path.join(shared, "images", DEBIAN), os.path.join(d, "images", DEBIAN)
    if subprocess.run(["cp", "-al", src, dst]).returncode != 0:  # another file system: a real copy
        shutil.rmtree(dst, ignore_errors=True)
        subprocess.run(["cp", "-a", src, dst], check=True)
    return d


@pytest.fixture(scope="session")
def debian_state(cell, tmp_path_factory):
    persistent = os.environ.get("CELL_TEST_STATE")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    d = None
    try:
        if worker:
            # Without CELL_TEST_STATE the workers share the image in their
            # common pytest base directory (pytest rotates those).
            shared = persistent or str(tmp_path_factory.getbasetemp().parent / "debian-state")
            d = _worker_debian_state(worker, shared)
        else:
            d = persistent or tempfile.mkdtemp(prefix="cell-it-debian-")
            _provide_debian_locked(d)
        yield d
    finally:
        if d and (worker or not persistent):
            shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def dstate(debian_state):
    before = cell_cgroup_dirs()
    watch = CellIdWatch(debian_state)
    try:
        yield debian_state
        assert_no_leftovers(debian_state, before, ours=watch.ids())
    finally:
        watch.close()


@pytest.fixture
def hostdir():
    """A scratch directory on the host, removed after the test."""
    d = tempfile.mkdtemp(prefix="cell-it-host-")
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---- clients of a module's daemon ---------------------------------------------------------
# A module that starts `cell serve` defines a module-scoped fixture `d`
# (usually `yield from daemon.serve(...)`); these build on it.


@pytest.fixture(scope="module")
def admin(d):
    """The module daemon's admin client."""
    return d.client()


@pytest.fixture(scope="module")
def anon(d):
    """A client of the module daemon without a token."""
    return d.client(admin=False)


@pytest.fixture
def cells(admin):
    """A list a test appends the ids of cells it creates to; deleted after it."""
    made = []
    yield made
    for cid in made:
        admin.delete("/v1/cells/%s" % cid)
