"""The runc command-line contract (issue 15), checked on runc today and on
build/cell-oci when it is built: the same steps on the same busybox
bundles (oci.py), each runtime with its own --root and JSON --log.

What containerd's runc shim relies on, and so what is checked here: the
state JSON's fields and the status transitions created -> running ->
stopped; a pid file of digits only; the container's init a child of the
caller (a subreaper, as the shim is) that sees its exit status; `create`
parking the init until `start`; --log lines that are JSON objects with
level, msg and time; `run`'s exit code (the process's, 128+N for a signal);
"does not exist" in the error for an unknown id (the shim matches that
text); kill --all and delete --force on a running, a paused and a created
container; --console-socket receiving the pty master of a terminal process;
exec (exit code, the container's namespaces and cgroup, --detach with a
pid file, --process); features.  Bad input: ids with slashes and dots, an empty id, a duplicate
id, a config.json that is not JSON, a bundle that is not there."""
import json
import os
import re
import time

import pytest

import oci
from daemon import wait_for

STATE_FIELDS = {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created", "owner"}
CREATED = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{1,9})?(Z|[+-]\d\d:\d\d)$")


@pytest.fixture
def sub(tmp_path):
    s = oci.Subreaper(tmp_path)
    yield s
    s.close()


@pytest.fixture(params=oci.RUNTIMES)
def rt(request, sub, tmp_path):
    # after sub, so that its cleanup (delete --force of what a failed test
    # left) runs while the subreaper is still there to reap the inits
    yield from oci.runtime_fixture(request.param, tmp_path)


def sleeper(tmp_path, name="b"):
    return oci.make_bundle(tmp_path / name, ["sleep", "1000"])


def gone(pid):
    """The pid no longer exists (or is a zombie about to be reaped)."""
    return oci.proc_state(pid) in (None, "Z")


def test_state_fields_and_transitions(rt, sub, tmp_path):
    b = sleeper(tmp_path)
    pid_file = str(tmp_path / "init.pid")
    rt.create("c1", b, pid_file=pid_file, via=sub).check()
    pid = oci.read_pid_file(pid_file)
    st = rt.state("c1")
    assert STATE_FIELDS <= set(st), st
    assert st["id"] == "c1" and st["status"] == "created" and st["pid"] == pid, st
    assert st["bundle"] == b and st["rootfs"] == os.path.join(b, "rootfs"), st
    assert CREATED.match(st["created"]), st
    assert isinstance(st["ociVersion"], str) and st["ociVersion"].startswith("1."), st
    # The init is the caller's child, as containerd's shim needs to see its exit.
    assert oci.ppid(pid) == sub.pid
    assert pid in sub.children()

    rt.start("c1").check()
    assert rt.state("c1")["status"] == "running"
    assert rt.state("c1")["pid"] == pid
    rt.kill("c1", "KILL").check()
    assert sub.reaped(pid) == {"signal": 9}
    rt.wait_status("c1", "stopped")
    rt.delete("c1").check()
    assert rt.status("c1") is None


def test_create_parks_init_until_start(rt, sub, tmp_path):
    """The process does not run at create (its output would be there), it
    runs at start, and the subreaper sees its exit code."""
    b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "echo started; exit 7"])
    pid_file = str(tmp_path / "init.pid")
    r = rt.create("c1", b, pid_file=pid_file, via=sub).check()
    pid = oci.read_pid_file(pid_file)
    assert oci.proc_state(pid) not in (None, "Z")
    time.sleep(0.2)    # room for a runtime that wrongly runs it at create
    with open(os.path.join(str(tmp_path), "sub-1.out")) as f:
        assert f.read() == "", r
    rt.start("c1").check()
    assert sub.reaped(pid) == {"exit": 7}
    with open(os.path.join(str(tmp_path), "sub-1.out")) as f:
        assert f.read() == "started\n"
    rt.wait_status("c1", "stopped")
    rt.delete("c1").check()


@pytest.mark.parametrize("script,code", [("true", 0), ("echo out; echo err >&2; exit 3", 3)])
def test_run_exit_code_and_output(rt, tmp_path, script, code):
    b = oci.make_bundle(tmp_path / "b", ["sh", "-c", script])
    r = rt.run("c1", b)
    assert r.rc == code, r
    if code:
        assert r.out == "out\n" and r.err.endswith("err\n"), r
    assert rt.status("c1") is None    # run deletes what it made


def test_run_killed_is_128_plus_signal(rt, tmp_path):
    b = sleeper(tmp_path)
    with open(str(tmp_path / "run.out"), "w+b") as out:
        p = rt.run_popen("c1", b, out)
        try:
            rt.wait_status("c1", "running")
            rt.kill("c1", "KILL").check()
            assert p.wait(timeout=oci.STEP_TIMEOUT) == 128 + 9
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
    assert rt.status("c1") is None


def test_log_lines_are_json(rt, sub, tmp_path):
    b = oci.make_bundle(tmp_path / "b", ["true"])
    rt.call("create", "--bundle", b, "c1", debug=True, via=sub).check()
    rt.ids.append("c1")
    rt.delete("c1", force=True).check()
    r = rt.delete("nosuch")
    assert r.rc != 0
    lines = rt.log_lines()     # every line checked: a JSON object with level, msg, time
    errors = [line for line in lines if line["level"] == "error"]
    assert errors and "does not exist" in errors[-1]["msg"], lines


@pytest.mark.parametrize("args", [["state"], ["start"], ["kill"], ["kill", "--all"], ["delete"],
                                  ["delete", "--force"], ["ps"], ["pause"], ["resume"]])
def test_unknown_id_does_not_exist(rt, args):
    """containerd's shim maps an error containing "does not exist" to
    NotFound (and delete --force of a gone container to success)."""
    r = rt.call(*(args + ["nosuch"]))
    if args == ["delete", "--force"]:
        # runc answers 0: forcing the delete of what is not there is done
        assert r.rc == 0 or "does not exist" in r.err, r
        return
    assert r.rc != 0, r
    assert "does not exist" in r.err + "".join(line["msg"] for line in rt.log_lines()), r


def test_kill_all(rt, sub, tmp_path):
    b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "sleep 1000 & sleep 1000 & wait"])
    pid_file = str(tmp_path / "init.pid")
    rt.create("c1", b, pid_file=pid_file, via=sub).check()
    init = oci.read_pid_file(pid_file)
    rt.start("c1").check()
    pids = wait_for(lambda: len(rt.ps("c1")) == 3 and rt.ps("c1"), timeout=10)
    assert pids and init in pids, pids
    rt.kill("c1", "KILL", all=True).check()
    assert sub.reaped(init) == {"signal": 9}
    assert wait_for(lambda: all(gone(p) for p in pids), timeout=10), [oci.proc_state(p) for p in pids]
    rt.wait_status("c1", "stopped")
    rt.delete("c1").check()


@pytest.mark.parametrize("wedge", ["created", "running", "paused"])
def test_delete_force(rt, sub, tmp_path, wedge):
    """delete --force ends the container whatever it is doing, a frozen
    one included, and its init is reaped by the caller."""
    b = sleeper(tmp_path)
    pid_file = str(tmp_path / "init.pid")
    rt.create("c1", b, pid_file=pid_file, via=sub).check()
    pid = oci.read_pid_file(pid_file)
    if wedge != "created":
        rt.start("c1").check()
    if wedge == "paused":
        rt.call("pause", "c1").check()
    assert rt.state("c1")["status"] == wedge
    if wedge != "created":     # runc deletes a created container without --force
        r = rt.delete("c1")
        assert r.rc != 0 and rt.state("c1")["status"] == wedge, r
    rt.delete("c1", force=True).check()
    assert rt.status("c1") is None
    assert sub.reaped(pid) == {"signal": 9}


def test_pause_resume(rt, sub, tmp_path):
    b = sleeper(tmp_path)
    rt.create("c1", b, via=sub).check()
    rt.start("c1").check()
    rt.call("pause", "c1").check()
    assert rt.state("c1")["status"] == "paused"
    rt.call("resume", "c1").check()
    assert rt.state("c1")["status"] == "running"
    rt.delete("c1", force=True).check()


@pytest.mark.parametrize("cid", ["../evil", "a/b", "..", ".", "", "/abs", "x" * 1024 + "/y"])
def test_bad_ids_refused(rt, tmp_path, cid):
    """An id is a name under --root, never a path: nothing is made outside
    the root and nothing is left in it."""
    b = sleeper(tmp_path)
    before = set(os.listdir(str(tmp_path)))
    r = rt.create(cid, b)
    assert r.rc != 0, r
    assert set(os.listdir(str(tmp_path))) <= before | {os.path.basename(rt.log)}
    assert not os.path.exists("/abs") or cid != "/abs"
    assert json.loads(rt.call("list", "--format", "json").check().out or "null") in (None, [])


def test_duplicate_id_refused(rt, sub, tmp_path):
    b = sleeper(tmp_path)
    pid_file = str(tmp_path / "init.pid")
    rt.create("c1", b, pid_file=pid_file, via=sub).check()
    pid = oci.read_pid_file(pid_file)
    r = rt.create("c1", b)
    assert r.rc != 0 and "exists" in r.err, r
    st = rt.state("c1")
    assert st["status"] == "created" and st["pid"] == pid    # the first one untouched
    rt.delete("c1", force=True).check()


def test_bad_bundles_refused(rt, tmp_path):
    """A config.json that is not JSON, one whose process is the wrong type,
    a bundle that is not there: refused, nothing left in the root."""
    bad = oci.make_bundle(tmp_path / "bad", ["true"])
    with open(os.path.join(bad, "config.json"), "w") as f:
        f.write('{"ociVersion": "1.0.2", "process": ')
    wrong = oci.make_bundle(tmp_path / "wrong", ["true"], edit=lambda c: c.update(process="sh"))
    for i, bundle in enumerate([bad, wrong, str(tmp_path / "missing")]):
        r = rt.create("c%d" % i, bundle)
        assert r.rc != 0, r
        assert rt.status("c%d" % i) is None, r
    assert [line for line in rt.log_lines() if line["level"] == "error"]
    assert json.loads(rt.call("list", "--format", "json").check().out or "null") in (None, [])


def test_console_socket(rt, sub, tmp_path):
    """terminal: true: create sends the pty master over --console-socket;
    the process has the pty as its terminal, its output comes through it."""
    b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "tty; echo hi"], terminal=True)
    cs = oci.ConsoleSocket(tmp_path / "console.sock")
    pid_file = str(tmp_path / "init.pid")
    try:
        rt.create("c1", b, pid_file=pid_file, via=sub, extra=["--console-socket", cs.path]).check()
        fd, _ = cs.receive()
    finally:
        cs.close()
    try:
        assert os.isatty(fd)
        pid = oci.read_pid_file(pid_file)
        rt.start("c1").check()
        out = oci.read_pty(fd)
        assert sub.reaped(pid) == {"exit": 0}
    finally:
        os.close(fd)
    assert re.match(r"^/dev/pts/\d+\r\nhi\r\n$", out), out
    rt.delete("c1").check()


def test_console_socket_refused_without_terminal(rt, tmp_path):
    """A --console-socket for a process without terminal is an error, and a
    terminal without a console socket too (runc's rules: the shim always
    passes them together)."""
    b = oci.make_bundle(tmp_path / "b", ["true"])
    cs = oci.ConsoleSocket(tmp_path / "console.sock")
    try:
        r = rt.create("c1", b, extra=["--console-socket", cs.path])
        assert r.rc != 0, r
    finally:
        cs.close()
    bt = oci.make_bundle(tmp_path / "bt", ["true"], terminal=True)
    r = rt.create("c2", bt)
    assert r.rc != 0, r
    assert rt.status("c1") is None and rt.status("c2") is None


def test_exec(rt, sub, tmp_path):
    """exec: the process runs in the container's namespaces and cgroup,
    its exit code is exec's; --detach --pid-file leaves it a child of the
    caller (the shim waits for exec'd processes too); --process takes the
    process as JSON."""
    b = sleeper(tmp_path)
    pid_file = str(tmp_path / "init.pid")
    rt.create("c1", b, pid_file=pid_file, via=sub).check()
    init = oci.read_pid_file(pid_file)
    rt.start("c1").check()
    r = rt.call("exec", "c1", "sh", "-c", "echo in; exit 5")
    assert r.rc == 5 and r.out == "in\n", r

    proc = dict(oci.read_config(b)["process"], args=["sleep", "1000"])
    with open(str(tmp_path / "process.json"), "w") as f:
        json.dump(proc, f)
    exec_pid_file = str(tmp_path / "exec.pid")
    rt.call("exec", "--detach", "--process", str(tmp_path / "process.json"), "--pid-file", exec_pid_file,
            "c1", via=sub).check()
    pid = oci.read_pid_file(exec_pid_file)
    assert pid != init and oci.ppid(pid) == sub.pid
    for ns in ("mnt", "pid", "net", "uts", "ipc", "user", "cgroup"):
        assert os.readlink("/proc/%d/ns/%s" % (pid, ns)) == os.readlink("/proc/%d/ns/%s" % (init, ns)), ns
    with open("/proc/%d/cgroup" % pid) as a, open("/proc/%d/cgroup" % init) as c:
        assert a.read() == c.read()
    assert pid in rt.ps("c1")
    os.kill(pid, 9)
    assert sub.reaped(pid) == {"signal": 9}
    rt.delete("c1", force=True).check()


def test_exec_refused(rt, sub, tmp_path):
    """exec into an unknown id, a stopped container, or with a --process
    that is not JSON: refused."""
    r = rt.call("exec", "nosuch", "true")
    assert r.rc != 0 and "does not exist" in r.err + "".join(x["msg"] for x in rt.log_lines()), r
    b = oci.make_bundle(tmp_path / "b", ["true"])
    rt.create("c1", b, via=sub).check()
    rt.start("c1").check()
    rt.wait_status("c1", "stopped")
    r = rt.call("exec", "c1", "true")
    assert r.rc != 0, r
    with open(str(tmp_path / "bad.json"), "w") as f:
        f.write('{"args": ')
    b2 = sleeper(tmp_path, "b2")
    rt.create("c2", b2, via=sub).check()
    r = rt.call("exec", "--process", str(tmp_path / "bad.json"), "c2")
    assert r.rc != 0, r
    rt.delete("c1").check()
    rt.delete("c2", force=True).check()


def test_features(rt):
    """`features` (what CRI-O and containerd 1.7+ ask): JSON with the OCI
    version range and the namespaces it knows."""
    f = json.loads(rt.call("features").check().out)
    assert f["ociVersionMin"].startswith("1.") and f["ociVersionMax"].startswith("1."), f
    assert {"mount", "pid", "network", "user"} <= set(f["linux"]["namespaces"]), f
