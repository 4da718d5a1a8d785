"""Hooks (issue 15; docs/oci.md "Hooks"): what a failing, slow, noisy or
missing hook does to the life cycle, against runc and build/cell-oci
(`rt`), and what only cell-oci promises.  Where each kind runs and what it
reads is the differential test in test_oci_diff.py."""
import json
import os

import pytest

import oci


@pytest.fixture(params=oci.RUNTIMES)
def rt(request, tmp_path):
    yield from oci.runtime_fixture(request.param, tmp_path)


def hook_bundle(tmp_path, kind, script, args=("sleep", "30"), timeout=None, name="b"):
    """A bundle whose one hook of `kind` runs `script` (sh -c) on the host,
    or in the container for startContainer."""
    def edit(c):
        h = {"path": "/bin/sh", "args": ["sh", "-c", script], "env": ["PATH=/bin:/usr/bin"]}
        if timeout:
            h["timeout"] = timeout
        c["hooks"] = {kind: [h]}
    return oci.make_bundle(tmp_path / name, list(args), edit=edit)


@pytest.mark.parametrize("kind", ["prestart", "createRuntime", "createContainer"])
def test_failing_create_hook_fails_create(rt, tmp_path, kind):
    """A create-time hook that fails fails `create`, with its output in the
    error, and leaves no container behind."""
    b = hook_bundle(tmp_path, kind, "echo hook-said-no >&2; exit 3")
    r = rt.create("c1", b)
    assert r.rc != 0, r
    assert "hook-said-no" in r.err, r
    if rt.name == "cell-oci":
        assert "hooks.%s[0]" % kind in r.err and "exit code 3" in r.err, r
    assert rt.status("c1") is None


def test_failing_start_container_hook_stops_the_process(rt, tmp_path):
    """startContainer fails: the container's process never runs."""
    out = tmp_path / "ran"
    os.makedirs(out)
    def edit(c):
        c["mounts"].append({"destination": "/out", "type": "bind", "source": str(out), "options": ["rbind"]})
        c["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "exit 1"]}]}
    b = oci.make_bundle(tmp_path / "b", ["sh", "-c", "touch /out/ran"], edit=edit)
    sub = oci.Subreaper(tmp_path)
    try:
        rt.create("c1", b, via=sub).check()
        rt.start("c1")
        rt.wait_status("c1", "stopped")
        assert os.listdir(out) == []
    finally:
        sub.close()


def test_poststop_failure_is_logged_not_fatal(rt, tmp_path):
    b = hook_bundle(tmp_path, "poststop", "echo poststop-broke >&2; exit 1", args=["true"])
    r = rt.run("c1", b)
    assert r.rc == 0, r
    assert rt.status("c1") is None
    if rt.name == "cell-oci":
        warned = [l["msg"] for l in rt.log_lines() if l["level"] == "warning"]
        assert any("hooks.poststop[0]" in m and "poststop-broke" in m for m in warned), warned


def test_failing_poststart_kills_the_container(rt, tmp_path):
    """runc 1.1 runs poststart during create (which fails); cell-oci in
    start, after the process started, which it kills, failing start."""
    b = hook_bundle(tmp_path, "poststart", "exit 4")
    sub = oci.Subreaper(tmp_path)
    try:
        r = rt.create("c1", b, via=sub)
        if rt.name == "runc":
            assert r.rc != 0, r
            return
        r.check()
        pid = rt.state("c1")["pid"]
        r = rt.start("c1")
        assert r.rc != 0 and "hooks.poststart[0]" in r.err and "exit code 4" in r.err, r
        assert sub.reaped(pid) == {"signal": 9}
        assert rt.status("c1") == "stopped"
    finally:
        sub.close()


def test_hook_timeout_kills_it(rt, tmp_path):
    """A hook past its timeout is killed and create fails, naming it."""
    b = hook_bundle(tmp_path, "createRuntime", "exec sleep 60", timeout=1)
    r = rt.create("c1", b)
    assert r.rc != 0, r
    if rt.name == "cell-oci":
        assert "hooks.createRuntime[0]" in r.err and "timed out after 1 s" in r.err, r
    assert rt.status("c1") is None


def test_missing_hook_binary_fails_create(rt, tmp_path):
    def edit(c):
        c["hooks"] = {"createRuntime": [{"path": str(tmp_path / "no-such-hook")}]}
    r = rt.create("c1", oci.make_bundle(tmp_path / "b", ["true"], edit=edit))
    assert r.rc != 0, r
    assert rt.status("c1") is None


@pytest.mark.parametrize("bad,field", [
    ({"prestart": [{"path": "relative/hook"}]}, "hooks.prestart[0].path"),
    ({"poststart": [{"path": "/bin/true", "timeout": "5"}]}, "hooks.poststart[0].timeout"),
    ({"createRuntime": "not-a-list"}, "hooks.createRuntime"),
    ({"preStart": [{"path": "/bin/true"}]}, "hooks.preStart is not a hook kind"),
])
def test_malformed_hooks_refused(tmp_path, bad, field):
    """cell-oci refuses malformed hooks naming the field (a misspelt kind
    would be a hook that never runs)."""
    if oci.runtime_missing("cell-oci"):
        pytest.skip(oci.runtime_missing("cell-oci"))
    rt = oci.Runtime("cell-oci", tmp_path)
    try:
        r = rt.create("c1", oci.make_bundle(tmp_path / "b", ["true"], edit=lambda c: c.update(hooks=bad)))
        assert r.rc != 0 and field in r.err, r
    finally:
        rt.cleanup()


def test_noisy_and_lingering_hooks_do_not_hang_create(tmp_path):
    """cell-oci: a hook that writes a megabyte, or leaves a child holding
    its output open, neither blocks nor holds create (the output is read
    while the hook runs, and only its exit is waited for)."""
    if oci.runtime_missing("cell-oci"):
        pytest.skip(oci.runtime_missing("cell-oci"))
    rt = oci.Runtime("cell-oci", tmp_path)
    sub = oci.Subreaper(tmp_path)
    try:
        def edit(c):
            c["hooks"] = {"createRuntime": [
                {"path": "/bin/sh", "args": ["sh", "-c", "head -c 1048576 /dev/zero"]},
                {"path": "/bin/sh", "args": ["sh", "-c", "sleep 60 & echo $! > %s" % (tmp_path / "lingerer")]}]}
        rt.create("c1", oci.make_bundle(tmp_path / "b", ["true"], edit=edit), via=sub).check()
        assert rt.status("c1") == "created"
    finally:
        with open(tmp_path / "lingerer") as f:
            os.kill(int(f.read()), 9)
        rt.cleanup()
        sub.close()


def test_hook_state_on_stdin_is_valid_json(tmp_path):
    """cell-oci: the state a hook reads is one JSON object (runc's fields)
    even with annotations that need escaping."""
    if oci.runtime_missing("cell-oci"):
        pytest.skip(oci.runtime_missing("cell-oci"))
    rt = oci.Runtime("cell-oci", tmp_path)
    got = tmp_path / "state"
    try:
        def edit(c):
            c["annotations"] = {"q": "\"'\\\n$(x)"}
            c["hooks"] = {"prestart": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > %s" % got]}]}
        rt.run("c1", oci.make_bundle(tmp_path / "b", ["true"], edit=edit)).check()
        with open(got) as f:
            st = json.load(f)
        assert st["id"] == "c1" and st["status"] == "creating" and st["annotations"] == {"q": "\"'\\\n$(x)"}
    finally:
        rt.cleanup()


def test_hook_args_and_env_exactly_as_given(rt, tmp_path):
    """args are the argv (args[0] included), env the whole environment:
    nothing of the runtime's leaks into a hook that sets its own."""
    out = tmp_path / "out"
    def edit(c):
        c["hooks"] = {"createRuntime": [{"path": "/bin/sh", "args": [
            "sh", "-c", 'echo "$0|$1" > %s/argv; env > %s/env' % (out, out), "zero", "one two"],
            "env": ["A=1", "B=two words"]}]}
    os.makedirs(out)
    rt.run("c1", oci.make_bundle(tmp_path / "b", ["true"], edit=edit)).check()
    with open(out / "argv") as f:
        assert f.read() == "zero|one two\n"
    with open(out / "env") as f:
        env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
    shell_own = {"PWD", "SHLVL", "_", "OLDPWD"}
    assert {k: v for k, v in env.items() if k not in shell_own} == {"A": "1", "B": "two words"}, env
