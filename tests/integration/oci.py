"""Support for the OCI runtime tests (issue 15): bundles, a runc-compatible
runtime binary driven through its command line, a subreaper standing in for
containerd's shim, and a private containerd.  Every step runs the same way
against runc (the reference) and build/cell-oci, side by side.

    @pytest.fixture(params=oci.RUNTIMES)      # "runc", "cell-oci"
    def rt(request, tmp_path):
        yield from oci.runtime_fixture(request.param, tmp_path)

    b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "exit 3"])
    rt.create("c1", b); rt.start("c1"); rt.state("c1")["status"]

Standard library only.  `python3 oci.py subreaper` is the helper process
Subreaper starts (see there).

Environment:
    CELL_BIN      the cell binary (default: <checkout>/build/cell)
    CELL_OCI_BIN  the OCI runtime under test (default: cell-oci next to
                  CELL_BIN); its parameter is skipped when it is not there
    RUNC_BIN      the reference runtime (default: runc on PATH)
"""
import copy
import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
CELL_BIN = os.environ.get("CELL_BIN") or os.path.join(CHECKOUT, "build", "cell")
CELL_OCI_BIN = os.environ.get("CELL_OCI_BIN") or os.path.join(os.path.dirname(CELL_BIN), "cell-oci")
RUNC_BIN = os.environ.get("RUNC_BIN") or shutil.which("runc") or "/usr/sbin/runc"
BUSYBOX = "/bin/busybox"
CONTAINERD_BIN = shutil.which("containerd") or "/usr/bin/containerd"
CTR_BIN = shutil.which("ctr") or "/usr/bin/ctr"
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer", "ThreadSanitizer")
# Every runtime command is bounded: a hung runtime fails its test, it does
# not hold the suite.
STEP_TIMEOUT = 20


def runtime_binary(name):
    return {"runc": RUNC_BIN, "cell-oci": CELL_OCI_BIN}[name]


def runtime_missing(name):
    """Why the runtime `name` cannot be tested here, or None."""
    path = runtime_binary(name)
    if os.access(path, os.X_OK):
        return None
    if name == "cell-oci":
        return "cell-oci is not built (%s; set CELL_OCI_BIN)" % path
    return "%s is not installed (scripts/install-deps.sh installs runc)" % path


def _runtime_params():
    import pytest
    return [pytest.param(n, id=n, marks=pytest.mark.skipif(runtime_missing(n) is not None,
                                                           reason=runtime_missing(n) or ""))
            for n in ("runc", "cell-oci")]


# The `runtimes` pytest parameter: runc always, cell-oci when it is built.
RUNTIMES = _runtime_params()


# ---- bundles -------------------------------------------------------------------

_SPEC = None


def runc_spec():
    """`runc spec`'s config.json (made once, in a scratch directory), as a
    fresh dict each call."""
    global _SPEC
    if _SPEC is None:
        d = tempfile.mkdtemp(prefix="oci-spec-")
        try:
            subprocess.run([RUNC_BIN, "spec", "--bundle", d], check=True, timeout=STEP_TIMEOUT,
                           capture_output=True)
            with open(os.path.join(d, "config.json")) as f:
                _SPEC = json.load(f)
        finally:
            shutil.rmtree(d)
    return copy.deepcopy(_SPEC)


_APPLETS = None


def busybox_applets():
    global _APPLETS
    if _APPLETS is None:
        _APPLETS = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True,
                                  timeout=STEP_TIMEOUT).stdout.split()
    return _APPLETS


def make_rootfs(root):
    """A busybox root filesystem at `root`: bin/busybox (a copy, never a
    hard link: a container that writes its rootfs must not reach the host's
    binary) and every applet as a relative symlink to it (what `busybox
    --install -s` makes, except that busybox points its links at the host
    path it runs from, /usr/bin/busybox, absent in the rootfs)."""
    root = str(root)
    for d in ("bin", "etc", "tmp", "root", "proc", "dev", "sys"):
        os.makedirs(os.path.join(root, d), exist_ok=True)
    os.chmod(os.path.join(root, "tmp"), 0o1777)
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    for a in busybox_applets():
        if a != "busybox":
            os.symlink("busybox", os.path.join(root, "bin", a))
    with open(os.path.join(root, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    with open(os.path.join(root, "etc", "group"), "w") as f:
        f.write("root:x:0:\nnogroup:x:65534:\n")
    return root


def make_bundle(bundle, args, env=None, terminal=False, edit=None, rootfs=None):
    """An OCI bundle at `bundle` (created): rootfs/ from busybox (or the
    directory `rootfs`, used as given) and config.json from `runc spec` with
    process.args = args, env (default PATH=/bin), terminal; edit(config) may
    change anything else.  Returns the bundle's absolute path."""
    bundle = os.path.abspath(str(bundle))
    os.makedirs(bundle, exist_ok=True)
    cfg = runc_spec()
    if rootfs is None:
        make_rootfs(os.path.join(bundle, "rootfs"))
    else:
        cfg["root"]["path"] = os.path.abspath(str(rootfs))
    cfg["process"]["args"] = list(args)
    cfg["process"]["env"] = list(env) if env is not None else ["PATH=/bin", "HOME=/root"]
    cfg["process"]["terminal"] = terminal
    # runc's default cgroup is /ID in every hierarchy, shared by every root:
    # two tests (pytest -n 2, or two people) using the id c1 at once would
    # share one.  A flat name of the bundle's own leaves no parent behind.
    cfg["linux"]["cgroupsPath"] = "/cell-ocitest-" + os.urandom(6).hex()
    if edit:
        edit(cfg)
    write_config(bundle, cfg)
    return bundle


def read_config(bundle):
    with open(os.path.join(bundle, "config.json")) as f:
        return json.load(f)


def write_config(bundle, cfg):
    with open(os.path.join(bundle, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


# ---- a runtime binary ------------------------------------------------------------


class Result:
    """A finished runtime command: rc, out, err (text)."""

    def __init__(self, argv, rc, out, err):
        self.argv, self.rc, self.out, self.err = argv, rc, out, err

    def __repr__(self):
        return "<%s: rc %s, out %r, err %r>" % (" ".join(self.argv), self.rc, self.out[-400:],
                                                 self.err[-800:])

    def check(self):
        assert self.rc == 0, self
        return self


def _read_tmp(f):
    f.seek(0)
    return f.read().decode("utf-8", "replace")


def run_bounded(argv, timeout=STEP_TIMEOUT, input=None, env=None, cwd=None):
    """Run argv to completion with stdout and stderr in files, not pipes: a
    runtime's `create` hands its stdio to the container's init, which would
    hold a pipe open (and the reader) until the container exits.  On timeout
    the command is killed and the test fails naming it."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.Popen(argv, stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL,
                             stdout=out, stderr=err, env=env, cwd=cwd, start_new_session=True)
        try:
            if input is not None:
                p.communicate(input.encode() if isinstance(input, str) else input, timeout=timeout)
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
            raise AssertionError("timed out after %ss: %s\nstdout: %s\nstderr: %s" % (
                timeout, " ".join(map(str, argv)), _read_tmp(out)[-1000:], _read_tmp(err)[-2000:]))
        return Result([str(a) for a in argv], rc, _read_tmp(out), _read_tmp(err))


LOG_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class Runtime:
    """A runc-compatible binary with its own --root and a --log file in
    JSON format, as containerd's runc shim calls it."""

    def __init__(self, name, workdir, binary=None):
        self.name = name
        self.binary = binary or runtime_binary(name)
        self.workdir = str(workdir)
        self.root = os.path.join(self.workdir, "root-" + name)
        self.log = os.path.join(self.workdir, "log-%s.json" % name)
        os.makedirs(self.root, exist_ok=True)
        self.ids = []

    def argv(self, *args, debug=False):
        a = [self.binary, "--root", self.root, "--log", self.log, "--log-format", "json"]
        return a + (["--debug"] if debug else []) + [str(x) for x in args]

    def call(self, *args, timeout=STEP_TIMEOUT, debug=False, via=None, input=None):
        """Run one command; `via` a Subreaper to run it as that helper's
        child (the shim's place)."""
        argv = self.argv(*args, debug=debug)
        r = via.run(argv, timeout=timeout) if via else run_bounded(argv, timeout=timeout, input=input)
        for m in SANITIZER_MARKERS:
            assert m not in r.err, r
        return r

    def create(self, cid, bundle, pid_file=None, via=None, extra=()):
        self.ids.append(cid)
        args = ["create", "--bundle", bundle] + (["--pid-file", pid_file] if pid_file else [])
        return self.call(*(args + list(extra) + [cid]), via=via)

    def start(self, cid):
        return self.call("start", cid)

    def run(self, cid, bundle, detach=False, via=None, timeout=STEP_TIMEOUT, pid_file=None):
        self.ids.append(cid)
        args = ["run", "--bundle", bundle] + (["--detach"] if detach else []) + \
            (["--pid-file", pid_file] if pid_file else [])
        return self.call(*(args + [cid]), via=via, timeout=timeout)

    def run_popen(self, cid, bundle, out):
        """`run` in the foreground, left running: a Popen whose stdout and
        stderr go to the open file `out`."""
        self.ids.append(cid)
        return subprocess.Popen(self.argv("run", "--bundle", bundle, cid), stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, start_new_session=True)

    def state(self, cid):
        r = self.call("state", cid).check()
        return json.loads(r.out)

    def status(self, cid):
        """The state's status, or None when the runtime says there is no
        such container."""
        r = self.call("state", cid)
        return json.loads(r.out)["status"] if r.rc == 0 else None

    def wait_status(self, cid, want, timeout=10.0):
        end = time.monotonic() + timeout
        while True:
            st = self.status(cid)
            if st == want:
                return st
            assert time.monotonic() < end, "%s: %s stayed %s, never %s" % (self.name, cid, st, want)
            time.sleep(0.02)

    def kill(self, cid, sig="KILL", all=False):
        return self.call(*(["kill"] + (["--all"] if all else []) + [cid, sig]))

    def delete(self, cid, force=False):
        return self.call(*(["delete"] + (["--force"] if force else []) + [cid]))

    def ps(self, cid):
        """The host pids of the container's processes (`ps --format json`)."""
        return json.loads(self.call("ps", "--format", "json", cid).check().out)

    def log_lines(self):
        """The --log file's lines, each parsed as JSON; fails on a line that
        is not a JSON object with level, msg and an RFC 3339 time (the shim
        reads the last "error" line's msg into containerd's error)."""
        if not os.path.exists(self.log):
            return []
        out = []
        with open(self.log) as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    o = json.loads(line)
                except ValueError:
                    raise AssertionError("%s --log line is not JSON: %r" % (self.name, line))
                assert isinstance(o, dict) and {"level", "msg", "time"} <= set(o), (self.name, line)
                assert LOG_TIME.match(o["time"]), (self.name, line)
                out.append(o)
        return out

    def cleanup(self):
        """delete --force every container this object made; then the root
        must list none."""
        for cid in self.ids:
            if self.status(cid) is not None:
                self.delete(cid, force=True)
        left = self.call("list", "--format", "json")
        if left.rc == 0 and left.out.strip() not in ("", "null", "[]"):
            raise AssertionError("%s left containers: %s" % (self.name, left.out))


def runtime_fixture(name, tmp_path):
    """The body of a test's runtime fixture: yields a Runtime, deletes what
    it made afterwards."""
    rt = Runtime(name, tmp_path)
    try:
        yield rt
    finally:
        rt.cleanup()


def subreaper_fixture(rt, tmp_path):
    """The body of a test's shim fixture: yields a Subreaper; afterwards the
    containers of `rt` are deleted before it goes (their inits are its
    children: closing it first would wait for them)."""
    s = Subreaper(tmp_path)
    try:
        yield s
    finally:
        rt.cleanup()
        s.close()


class ConsoleSocket:
    """The --console-socket a runtime's create is given when the process
    has terminal: true: a listening AF_UNIX socket to which the runtime
    sends the pty master (SCM_RIGHTS), as containerd's shim receives it."""

    def __init__(self, path):
        import socket
        self.path = str(path)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(1)
        self.sock.settimeout(STEP_TIMEOUT)

    def receive(self):
        """The pty master fd (owned by the caller), and the message bytes
        that came with it."""
        import socket
        conn, _ = self.sock.accept()
        with conn:
            conn.settimeout(STEP_TIMEOUT)
            msg, fds, _, _ = socket.recv_fds(conn, 4096, 4)
        assert len(fds) == 1, "console socket: %d fds with %r" % (len(fds), msg)
        return fds[0], msg

    def close(self):
        self.sock.close()


def read_pty(fd, timeout=STEP_TIMEOUT):
    """Read a pty master until the other side closes (EIO), bounded."""
    out, end = b"", time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], max(0.0, end - time.monotonic()))
        if not r:
            break
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out.decode("utf-8", "replace")


def read_pid_file(path):
    """The pid in a runtime's --pid-file, checked to be digits only:
    containerd (go-runc's ReadPidFile) parses it with strconv.Atoi, so a
    trailing newline would fail every create."""
    with open(path) as f:
        data = f.read()
    assert re.fullmatch(r"[1-9][0-9]*", data), "pid file holds %r" % data
    return int(data)


def ppid(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def proc_state(pid):
    """/proc/PID/stat's state letter, or None when the pid is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


# ---- hooks -------------------------------------------------------------------------

HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")
# Runs in the runtime's namespaces and in the container's (busybox sh or
# dash): where it ran (its mount, pid and network namespaces, cwd, uid) and
# the state on its stdin, into $REC/KIND; its name appended to $REC/order.
_HOOK_SCRIPT = """#!/bin/sh
k=$1
{ echo "mnt $(readlink /proc/self/ns/mnt)"; echo "pid $(readlink /proc/self/ns/pid)"
  echo "net $(readlink /proc/self/ns/net)"; echo "cwd $(pwd)"; echo "uid $(id -u)"
  echo "state $(cat)"; } > "$REC/$k"
echo "$k" >> "$REC/order"
"""


def add_recording_hooks(cfg, bundle, kinds=HOOK_KINDS):
    """Give config `cfg` of `bundle` (made by make_bundle) one recording hook
    of each kind: BUNDLE/hook.sh on the host, /hook.sh in the rootfs for
    startContainer (its path resolves in the container), recording into
    BUNDLE/rec, which the container sees at /rec (a bind).  Returns the
    host record directory; read_hook_records() reads it."""
    rec = os.path.join(bundle, "rec")
    os.makedirs(rec, exist_ok=True)
    for path in (os.path.join(bundle, "hook.sh"), os.path.join(bundle, "rootfs", "hook.sh")):
        with open(path, "w") as f:
            f.write(_HOOK_SCRIPT)
        os.chmod(path, 0o755)
    cfg["mounts"].append({"destination": "/rec", "type": "bind", "source": rec, "options": ["rbind", "rw"]})
    cfg["hooks"] = {}
    for k in kinds:
        inside = k == "startContainer"
        cfg["hooks"][k] = [{"path": "/hook.sh" if inside else os.path.join(bundle, "hook.sh"),
                            "args": ["hook.sh", k], "env": ["PATH=/bin:/usr/bin", "REC=" + ("/rec" if inside else rec)]}]
    return rec


def read_hook_records(rec):
    """{kind: {"mnt", "pid", "net", "cwd", "uid", "state" (parsed)}} and the
    order the hooks ran in."""
    out = {}
    for k in HOOK_KINDS:
        p = os.path.join(rec, k)
        if not os.path.exists(p):
            continue
        d = {}
        with open(p) as f:
            for line in f:
                key, _, v = line.rstrip("\n").partition(" ")
                d[key] = v
        d["state"] = json.loads(d["state"])
        out[k] = d
    order = []
    if os.path.exists(os.path.join(rec, "order")):
        with open(os.path.join(rec, "order")) as f:
            order = f.read().split()
    return out, order


# ---- the subreaper (the shim's place) ----------------------------------------------


def decode_status(st):
    """A wait status as {"exit": N} or {"signal": N}."""
    if os.WIFSIGNALED(st):
        return {"signal": os.WTERMSIG(st)}
    return {"exit": os.WEXITSTATUS(st)}


class Subreaper:
    """A helper process that is a child subreaper (prctl
    PR_SET_CHILD_SUBREAPER), as containerd's shim is: commands run through
    it are its children, so a container init that its runtime's `create`
    leaves behind reparents to it, and it reaps the init and reports its
    exit status.  run(argv) runs a command to completion as its child;
    reaped(pid) waits for the report of an orphan it reaped."""

    def __init__(self, workdir):
        self.workdir = str(workdir)
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "subreaper"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buf = b""
        self.events = []
        ready = self._next(lambda e: "ready" in e, STEP_TIMEOUT)
        self.pid = ready["ready"]
        assert self.pid == self.proc.pid
        self.n = 0

    def _next(self, match, timeout):
        """The first event (old or new) that match(event) accepts, removed
        from the list; fails after `timeout` seconds."""
        end = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if match(e):
                    return self.events.pop(i)
            left = end - time.monotonic()
            if left <= 0:
                raise AssertionError("subreaper: no matching event in %ss (%s)" % (timeout, self.events))
            r, _, _ = select.select([self.proc.stdout], [], [], left)
            if r:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                assert chunk, "subreaper exited (rc %s)" % self.proc.poll()
                self.buf += chunk
                while b"\n" in self.buf:
                    line, self.buf = self.buf.split(b"\n", 1)
                    self.events.append(json.loads(line))

    def run(self, argv, timeout=STEP_TIMEOUT):
        self.n += 1
        out = os.path.join(self.workdir, "sub-%d.out" % self.n)
        err = os.path.join(self.workdir, "sub-%d.err" % self.n)
        self.proc.stdin.write((json.dumps({"argv": [str(a) for a in argv], "out": out, "err": err}) +
                               "\n").encode())
        self.proc.stdin.flush()
        started = self._next(lambda e: e.get("tag") == self.n and "spawned" in e, timeout)
        try:
            done = self._next(lambda e: e.get("tag") == self.n and "status" in e, timeout)
        except AssertionError:
            if started["spawned"]:
                os.kill(started["spawned"], signal.SIGKILL)
            raise AssertionError("timed out after %ss: %s" % (timeout, " ".join(map(str, argv))))
        st = done["status"]
        with open(out, errors="replace") as fo, open(err, errors="replace") as fe:
            return Result([str(a) for a in argv], st.get("exit", 128 + st.get("signal", 0)),
                          fo.read(), fe.read())

    def reaped(self, pid, timeout=10.0):
        """The exit status ({"exit": N} or {"signal": N}) of the orphan
        `pid` once the helper has reaped it."""
        return self._next(lambda e: e.get("reaped") == pid, timeout)["status"]

    def children(self):
        return _children(self.pid)

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(timeout=STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


def _children(pid):
    """The pids of pid's children (/proc/PID/task/*/children)."""
    out = []
    for t in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, t)) as f:
            out += [int(x) for x in f.read().split()]
    return out


def _subreaper_main():
    """The helper: JSON lines in on stdin ({"argv", "out", "err"}), JSON
    lines out: {"ready": PID}, {"tag", "spawned": PID}, {"tag", "status"}
    when that command exits, {"reaped": PID, "status"} for any other child
    (an orphan that reparented here).  Ends at stdin's EOF, after reaping
    what is left for a few seconds."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    PR_SET_CHILD_SUBREAPER = 36
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_CHILD_SUBREAPER): %s" % os.strerror(ctypes.get_errno()))
    rfd, wfd = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    signal.set_wakeup_fd(wfd)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    out = sys.stdout.buffer
    tags = {}

    def emit(o):
        out.write((json.dumps(o) + "\n").encode())
        out.flush()

    def reap():
        while True:
            try:
                pid, st = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid in tags:
                emit({"tag": tags.pop(pid), "status": decode_status(st)})
            else:
                emit({"reaped": pid, "status": decode_status(st)})

    emit({"ready": os.getpid()})
    stdin = sys.stdin.buffer.raw
    buf, n, eof_at = b"", 0, None
    while True:
        if eof_at is not None and (not _children(os.getpid()) or time.monotonic() > eof_at + 5):
            return
        timeout = None if eof_at is None else 0.05
        r, _, _ = select.select([rfd] + ([stdin] if eof_at is None else []), [], [], timeout)
        if rfd in r:
            try:
                os.read(rfd, 4096)
            except BlockingIOError:
                pass
        reap()
        if eof_at is not None:
            continue
        if stdin in r:
            chunk = os.read(stdin.fileno(), 65536)
            if not chunk:
                eof_at = time.monotonic()
                continue
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                req = json.loads(line)
                n += 1
                fa = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                      (os.POSIX_SPAWN_OPEN, 1, req["out"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600),
                      (os.POSIX_SPAWN_OPEN, 2, req["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)]
                try:
                    pid = os.posix_spawn(req["argv"][0], req["argv"], os.environ, file_actions=fa,
                                         setsigdef=(signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD))
                except OSError as e:
                    emit({"tag": n, "spawned": 0, "error": str(e)})
                    emit({"tag": n, "status": {"exit": 127}})
                    continue
                tags[pid] = n
                emit({"tag": n, "spawned": pid})


# ---- a private containerd -------------------------------------------------------------


CGROUP_ROOT = "/sys/fs/cgroup"
# Plugins this harness does not use: not loaded, so containerd starts in
# tens of milliseconds and writes nowhere but its own root and state (the
# "opt" plugin would create /opt/containerd).
DISABLED_PLUGINS = [
    "io.containerd.grpc.v1.cri", "io.containerd.internal.v1.opt", "io.containerd.internal.v1.restart",
    "io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs",
    "io.containerd.tracing.processor.v1.otlp",
    "io.containerd.internal.v1.tracing",
]


def _toml_str(s):
    return json.dumps(str(s))    # a TOML basic string is a JSON string for these paths


class Containerd:
    """containerd with its own root, state, sockets and config under
    `workdir`.  Its config (version 2) has CRI runtime entries "runc" and
    "cell" (io.containerd.runc.v2, BinaryName = cell-oci), each with its
    own runc root, and restrict_oom_score_adj = true (root here lacks
    CAP_SYS_RESOURCE: see docs/kubernetes.md); the CRI plugin itself is
    loaded only with cri=True.  ctr(...) runs `ctr` against it, bounded.

    With cri=True (issue 15's CRI path, test_oci_cri.py): containerd runs
    in a network namespace the harness makes (`ip netns`, its loopback up),
    so the CNI bridge, its host side and the pods' veths live there and
    nowhere else; a bridge network `cri-bridge` on CRI_SUBNET (in
    198.18.0.0/15, host-local IPAM state in the private directory); the
    sandbox image SANDBOX_IMAGE (busybox sleeping for ever) imported into
    the CRI's namespace k8s.io before any pod asks for it (nothing is
    pulled); cgroupfs as the cgroup driver (v1, hybrid or v2); AppArmor
    off.  Pods' cgroups go under `cgroup_parent`, which stop() removes."""

    def __init__(self, workdir, cri=False):
        self.dir = os.path.abspath(str(workdir))
        self.root = os.path.join(self.dir, "root")
        self.state = os.path.join(self.dir, "state")
        # The sockets' directory is short whatever workdir is: a unix
        # socket path holds at most 107 bytes, and containerd refuses one
        # over 104 (pytest's tmp_path for a long test name is longer).
        self.sockdir = tempfile.mkdtemp(prefix="ctd-")
        self.sock = os.path.join(self.sockdir, "c.sock")
        self.fifo = os.path.join(self.dir, "fifo")
        self.config = os.path.join(self.dir, "config.toml")
        self.logpath = os.path.join(self.dir, "containerd.log")
        self.cri = cri
        self.proc = None
        # containers' cgroups are /NAMESPACE/ID: a namespace of its own keeps
        # two containerds (pytest -n 2) apart; stop() removes its cgroups
        self.ns = "ocitest-" + os.urandom(6).hex()
        # CRI pods: the parent cgroup a test's PodSandboxConfig names
        # (kubelet always names one), removed with the namespace's by stop()
        self.cgroup_parent = "/" + self.ns
        self.netns = self.ns if cri else None
        # more environment for containerd, which its shims and their
        # runtimes inherit (CELL_OCI_CONFIG: test_oci_cri_egress.py)
        self.env = {}
        # the CRI runtime entries config_text() writes; config_file: a
        # config written elsewhere, started as it is instead (the
        # installer's, test_k8s_deploy.py)
        self.runtimes = ("runc", "cell")
        self.config_file = None
        for d in (self.root, self.state, self.fifo):
            os.makedirs(d, exist_ok=True)

    def runc_root(self, name):
        """The runc root the shim gives runtime `name` (ctr --runc-root)."""
        return os.path.join(self.dir, "runc-root", name)

    def config_text(self):
        disabled = [p for p in DISABLED_PLUGINS if not (self.cri and p.endswith(".cri"))]
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        lines = [
            "version = 2",
            "root = %s" % _toml_str(self.root),
            "state = %s" % _toml_str(self.state),
            "disabled_plugins = [%s]" % ", ".join(_toml_str(p) for p in disabled),
            "[grpc]", "  address = %s" % _toml_str(self.sock),
            "[ttrpc]", "  address = %s" % _toml_str(self.sock + ".ttrpc"),
            "[%s]" % cri,
            "  restrict_oom_score_adj = true",
            # no AppArmor on these machines; a profile would only be refused
            "  disable_apparmor = true",
            # imported by start(): a pull would need a registry
            "  sandbox_image = %s" % _toml_str(SANDBOX_IMAGE),
            # the CRI plugin's defaults would create /etc/cni/net.d and pods'
            # netns mounts under /var/run/netns
            "  netns_mounts_under_state_dir = true",
            "[%s.cni]" % cri,
            "  conf_dir = %s" % _toml_str(os.path.join(self.dir, "cni", "net.d")),
            '  bin_dir = "/usr/lib/cni"',
            "[%s.containerd]" % cri,
            '  default_runtime_name = "runc"',
        ]
        for name in self.runtimes:
            binary = RUNC_BIN if name == "runc" else CELL_OCI_BIN
            rt = "%s.containerd.runtimes.%s" % (cri, name)
            lines += ["[%s]" % rt, '  runtime_type = "io.containerd.runc.v2"']
            if name == "cell":
                # issue 15's egress policy rides on pod annotations: containerd
                # copies only the listed ones into the runtime's config.json
                lines += ['  pod_annotations = ["cell.dev/*"]', '  container_annotations = ["cell.dev/*"]']
            lines += ["[%s.options]" % rt, "  BinaryName = %s" % _toml_str(binary),
                      "  Root = %s" % _toml_str(self.runc_root(name)),
                      # cgroupfs paths (PodSandboxConfig's cgroup_parent/ID), on
                      # v1, hybrid and v2 alike: no systemd here to ask
                      "  SystemdCgroup = false"]
        return "\n".join(lines) + "\n"

    def cni_conf(self):
        """The CNI network of cri=True: a bridge with host-local IPAM, its
        gateway (the bridge's host side) CRI_GATEWAY."""
        return {"cniVersion": "0.4.0", "name": "cri-bridge", "plugins": [
            {"type": "bridge", "bridge": "cri0", "isGateway": True, "ipMasq": False,
             "ipam": {"type": "host-local", "subnet": CRI_SUBNET, "gateway": CRI_GATEWAY,
                      # the default is /var/lib/cni/networks
                      "dataDir": os.path.join(self.dir, "cni", "ipam"),
                      "routes": [{"dst": "0.0.0.0/0"}]}}]}

    def _start_cri(self):
        """The network namespace, the CNI conf; returns the argv prefix that
        puts containerd in that namespace (nsenter: the network namespace
        only, so its mounts stay visible to stop()'s check)."""
        conf_dir = os.path.join(self.dir, "cni", "net.d")
        os.makedirs(conf_dir, exist_ok=True)
        with open(os.path.join(conf_dir, "10-cri-bridge.conflist"), "w") as f:
            json.dump(self.cni_conf(), f, indent=2)
        run_bounded(["ip", "netns", "add", self.netns]).check()
        run_bounded(["ip", "-n", self.netns, "link", "set", "lo", "up"]).check()
        return ["nsenter", "--net=/run/netns/" + self.netns]

    def netns_exec(self, *argv):
        """argv for running a command in containerd's network namespace
        (where the bridge's host side is)."""
        return ["ip", "netns", "exec", self.netns] + [str(a) for a in argv]

    def import_image(self, ref, tar, namespace=None, named=False):
        """Import the OCI layout tar (bytes) as `ref` into `namespace` (the
        harness's own by default; "k8s.io" for the CRI's images).  named:
        the tar's index already names its manifest `ref`
        (io.containerd.image.name), and ctr takes that name; an --index-name
        of the same name would make two images of one name, and once the
        second replaced the first, containerd's GC could take the index
        before its unpack read it ("content digest ...: not found", the
        node image in test_k8s_deploy, now and then)."""
        path = os.path.join(self.dir, "import-%s.tar" % os.urandom(4).hex())
        with open(path, "wb") as f:
            f.write(tar)
        try:
            argv = self.ctr_argv("images", "import", *([] if named else ["--index-name", ref]), path)
            if namespace:
                argv[argv.index("--namespace") + 1] = namespace
            run_bounded(argv).check()
        finally:
            os.unlink(path)
        return ref

    def start(self):
        if self.config_file is None:
            with open(self.config, "w") as f:
                f.write(self.config_text())
        self.logf = open(self.logpath, "ab")
        prefix = self._start_cri() if self.cri else []
        self.proc = subprocess.Popen(prefix + [CONTAINERD_BIN, "--config", self.config_file or self.config],
                                     stdin=subprocess.DEVNULL,
                                     stdout=self.logf, stderr=self.logf, start_new_session=True,
                                     env=dict(os.environ, **self.env))
        end = time.monotonic() + STEP_TIMEOUT
        while True:
            assert self.proc.poll() is None, "containerd exited: %s" % self.log_tail()
            if os.path.exists(self.sock) and self.ctr("version", timeout=5).rc == 0:
                if self.cri:
                    self.import_image(SANDBOX_IMAGE, sandbox_image_tar(), namespace=CRI_NAMESPACE)
                return self
            assert time.monotonic() < end, "containerd did not answer: %s" % self.log_tail()
            time.sleep(0.05)

    def log_tail(self, n=4000):
        with open(self.logpath, errors="replace") as f:
            return f.read()[-n:]

    def ctr_argv(self, *args):
        return [CTR_BIN, "--address", self.sock, "--namespace", self.ns] + [str(a) for a in args]

    def ctr(self, *args, timeout=STEP_TIMEOUT):
        return run_bounded(self.ctr_argv(*args), timeout=timeout)

    def run_args(self, runtime):
        """ctr run / task start options that put runtime `name`'s binary
        and root, and the fifos, in this containerd's directory."""
        return ["--fifo-dir", self.fifo, "--runc-binary", runtime_binary(runtime),
                "--runc-root", self.runc_root(runtime)]

    def import_busybox(self, ref="ocitest/busybox:1"):
        """Import busybox_image_tar() as `ref` (kept as its index)."""
        path = os.path.join(self.dir, "busybox-oci.tar")
        with open(path, "wb") as f:
            f.write(busybox_image_tar())
        self.ctr("images", "import", "--index-name", ref, path).check()
        return ref

    def shims(self):
        """Pids of shims serving this containerd (they outlive it)."""
        pids = []
        for p in os.listdir("/proc"):
            if not p.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % p, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and self.sock.encode() in argv:
                pids.append(int(p))
        return pids

    def tasks(self):
        """{id: (pid, status)} from `ctr task ls`."""
        r = self.ctr("task", "ls").check()
        out = {}
        for line in r.out.splitlines()[1:]:
            f = line.split()
            if len(f) >= 3:
                out[f[0]] = (int(f[1]), f[2])
        return out

    def stop(self):
        """Delete every container left, stop containerd, then check that no
        shim and no mount of it is left (and clear what was)."""
        problems = []
        if self.cri and self.proc and self.proc.poll() is None:
            problems += self._stop_cri_containers()
        if self.proc and self.proc.poll() is None:
            r = self.ctr("containers", "ls", "-q")
            for cid in r.out.split() if r.rc == 0 else []:
                self.ctr("task", "kill", "-s", "KILL", cid)
                self.ctr("task", "delete", "-f", cid)
                self.ctr("containers", "delete", cid)
                problems.append("container %s left" % cid)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=STEP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                problems.append("containerd ignored SIGTERM")
            self.logf.close()
        for pid in self.shims():
            problems.append("shim %d left" % pid)
            # its containers' inits first: they outlive a killed shim
            try:
                victims = _children(pid) + [pid]
            except OSError:
                victims = [pid]
            for victim in victims:
                try:
                    os.kill(victim, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        with open("/proc/self/mountinfo") as f:
            mounts = [line.split()[4] for line in f if line.split()[4].startswith(self.dir + "/")]
        for m in sorted(mounts, key=len, reverse=True):
            problems.append("mount %s left" % m)
            subprocess.run(["umount", "-l", m], timeout=STEP_TIMEOUT)
        problems += self._remove_cgroups()
        if self.netns and os.path.exists("/run/netns/" + self.netns):
            r = run_bounded(["ip", "netns", "del", self.netns])
            if r.rc != 0:
                problems.append("netns %s: %s" % (self.netns, r.err.strip()))
        shutil.rmtree(self.sockdir, ignore_errors=True)
        return problems

    def _stop_cri_containers(self):
        """Kill and delete what the CRI left in k8s.io (a test removes its
        pods itself: anything here is a problem)."""
        problems = []

        def ctr(*args):
            """Bounded; a call that times out (a runtime that hangs) is a
            problem, and stop() goes on to stop containerd."""
            argv = self.ctr_argv(*args)
            argv[argv.index("--namespace") + 1] = CRI_NAMESPACE
            try:
                return run_bounded(argv)
            except AssertionError as e:
                problems.append(str(e).split("\n")[0])
                return Result(argv, -1, "", "")
        r = ctr("containers", "ls", "-q")
        for cid in r.out.split() if r.rc == 0 else []:
            problems.append("CRI container %s left" % cid)
            ctr("task", "kill", "-s", "KILL", cid)
            ctr("task", "delete", "-f", cid)
            ctr("containers", "delete", cid)
            # a sandbox's libcni cache entries, which only its teardown removes
            for n in os.listdir(CNI_CACHE) if os.path.isdir(CNI_CACHE) else []:
                if "-%s-" % cid in n:
                    os.unlink(os.path.join(CNI_CACHE, n))
        return problems

    def _remove_cgroups(self):
        """rmdir the namespace's cgroup in every hierarchy (runc removes a
        container's own, containerd never the /NAMESPACE parent); one that
        still holds a container's is a problem."""
        problems = []
        # "" first: on cgroup v2 the namespace's cgroup is in the root itself
        for h in [""] + os.listdir(CGROUP_ROOT):
            d = os.path.join(CGROUP_ROOT, h, self.ns)
            if not os.path.isdir(d):
                continue
            try:
                os.rmdir(d)
            except OSError as e:
                problems.append("cgroup %s left: %s" % (d, e))
        return problems


def containerd_fixture(tmp_path_factory, cri=False):
    """The body of a module fixture: yields a started Containerd, stops it
    after the module and fails if anything of it was left behind."""
    c = Containerd(tmp_path_factory.mktemp("containerd"), cri=cri)
    try:
        c.start()       # in the try: a failed start still goes (netns, cgroups)
        yield c
    finally:
        problems = c.stop()
    assert not problems, problems


def busybox_layer():
    """A layer tar of the busybox root filesystem make_rootfs() makes."""
    import ocibuild
    applets = busybox_applets()
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    ents = [("bin", "dir"), ("bin/busybox", "file", bb, 0o755)]
    ents += [("bin/" + a, "sym", "busybox") for a in applets if a != "busybox"]
    ents += [("etc", "dir"),
             ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n", 0o644),
             ("etc/group", "file", b"root:x:0:\nnogroup:x:65534:\n", 0o644),
             ("tmp", "dir", None, 0o1777), ("root", "dir", None, 0o700)]
    return ocibuild.tar_bytes(ents)


# cri=True: the CRI plugin's namespace, its network and its sandbox image.
# The registry name cannot resolve (.invalid), so nothing is ever pulled.
CRI_NAMESPACE = "k8s.io"
# libcni's result cache: containerd 1.6 cannot move it into the private dir
CNI_CACHE = "/var/lib/cni/results"
CRI_SUBNET = "198.18.213.0/24"
CRI_GATEWAY = "198.18.213.1"
SANDBOX_IMAGE = "ocitest.invalid/pause:1"


def sandbox_image_tar():
    """The pod sandbox ("pause") image: busybox whose entrypoint sleeps for
    ever (the CRI kills it with SIGKILL at StopPodSandbox)."""
    import ocibuild
    tar, _ = ocibuild.oci_archive([busybox_layer()], {"Env": ["PATH=/bin"], "Entrypoint": ["/bin/sleep", "2147483647"],
                                                      "WorkingDir": "/"},
                                  platform={"architecture": "amd64", "os": "linux"})
    return tar


def busybox_image_tar():
    """An OCI image layout tar (ocibuild.oci_archive) of busybox_layer(),
    its manifest marked linux/amd64 so ctr picks it from the index."""
    import ocibuild
    tar, _ = ocibuild.oci_archive([busybox_layer()], {"Env": ["PATH=/bin"], "Cmd": ["sh"], "WorkingDir": "/"},
                                  platform={"architecture": "amd64", "os": "linux"})
    return tar


if __name__ == "__main__":
    if sys.argv[1:] == ["subreaper"]:
        _subreaper_main()
    else:
        sys.exit("usage: oci.py subreaper")
