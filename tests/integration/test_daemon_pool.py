"""`cell serve`'s warm pool: cells booted ahead of creates (src/server/pool.c).

A create that boots what the pool's template boots (image "host", the
default memory and disk, no policy, lane or mount) takes a ready cell,
renamed and its pids and CPU limits set when it asks for others; the pool
refills in the background; anything else boots cold.  The
attacks: a tenant's cell coming back to another tenant (files, processes,
hostname), a pooled cell escaping a tenant's quota or keeping limits the
request did not ask for, two tenants racing for the last pooled cell, and
pooled cells (processes, cgroups, run directories) outliving a SIGKILLed
or stopped daemon.  `GET /v1/limits` shows the pool's counters.
"""
import os
import subprocess
import threading

import pytest

import conftest
import daemon as dm
from daemon import assert_problem, make_tenant_token, wait_for

DEFAULT_MEMORY = 512 << 20
DEFAULT_PIDS = 1024

# Fork sleeping children until a fork fails or 60 run; say which, then kill them.
FORKS = """
import os, signal, time
kids, how = [], "all"
for _ in range(60):
    try:
        pid = os.fork()
    except OSError:
        how = "refused"
        break
    if pid == 0:
        time.sleep(30)
        os._exit(0)
    kids.append(pid)
print(how, len(kids))
for pid in kids:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
"""


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("pool"))


def pool(admin):
    r = admin.get("/v1/limits")
    assert r.status == 200, r
    return r.body["pool"]


def ready(admin, image="host"):
    return sum(t["ready"] for t in pool(admin)["templates"] if t["image"] == image)


def wait_full(admin, n=2):
    assert wait_for(lambda: ready(admin) == n, 30), pool(admin)


def new_tenant(d, admin, **quota):
    name = dm.uniq("pool")
    tok, _ = make_tenant_token(admin, name)
    if quota:
        assert admin.put("/v1/tenants/%s" % name, quota).status == 200
    return name, d.client(tok)


def create(c, body=None, status=201):
    r = c.post("/v1/cells", body if body is not None else {})
    assert r.status == status, r
    return r.body


def sh(c, cid, script):
    r = c.post("/cells/%s/v1/processes/run" % cid, {"command": "sh", "args": ["-c", script]})
    assert r.status == 200, r
    assert r.body["exitCode"] == 0, r.body
    return r.body["stdout"]


def run_dir_ids(state):
    try:
        return {e for e in os.listdir(os.path.join(str(state), "run", "cells")) if not e.startswith(".")}
    except FileNotFoundError:
        return set()


def cgroups_of(ids):
    return sorted(p for p in conftest.cell_cgroup_dirs() if os.path.basename(p) in ids)


def limit_files(libcell_prefix):
    """{file: value} of the memory and pids limits of the cell whose libcell
    id starts with libcell_prefix (its default hostname is cell-PREFIX)."""
    out = {}
    for p in conftest.cell_cgroup_dirs():
        if not os.path.basename(p).startswith(libcell_prefix):
            continue
        for f in ("memory.max", "memory.limit_in_bytes", "pids.max", "cpu.max", "cpu.cfs_quota_us"):
            v = dm._read(os.path.join(p, f)).strip()
            if v:
                out[f] = v
    return out


def assert_limits(hostname, memory, pids, cpu_quota_us=None):
    assert hostname.startswith("cell-"), hostname
    got = limit_files(hostname[len("cell-"):])
    mem = got.get("memory.max") or got.get("memory.limit_in_bytes")
    assert mem == str(memory), got
    assert got.get("pids.max") == str(pids), got
    if cpu_quota_us is not None:
        cpu = got.get("cpu.max", "").split(" ")[0] or got.get("cpu.cfs_quota_us")
        assert cpu == str(cpu_quota_us), got


# ---- taking and refilling ----------------------------------------------------------------


def test_a_default_create_takes_a_pooled_cell_and_the_pool_refills(d, admin):
    wait_full(admin)
    before = pool(admin)
    assert before["templates"] == [{"image": "host", "size": 2, "ready": 2}], before
    assert before["resources"] == {"memory": DEFAULT_MEMORY, "pids": DEFAULT_PIDS, "cpuMillis": 0, "disk": 0}
    _, c = new_tenant(d, admin)
    cell = create(c)
    after = pool(admin)
    assert after["taken"] == before["taken"] + 1, (before, after)
    assert after["unfit"] == before["unfit"] and after["empty"] == before["empty"]
    r = c.post("/cells/%s/v1/processes/run" % cell["id"], {"command": "true"})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    assert cell["state"] == "running" and cell["resources"]["memory"] == DEFAULT_MEMORY
    # Refilled off the request path: a new boot, not the taken cell back.
    wait_full(admin)
    assert pool(admin)["booted"] >= before["booted"] + 1
    assert c.delete("/v1/cells/%s" % cell["id"]).status == 204


def test_a_claimed_cell_has_the_requests_env_cwd_limits_and_tenant(d, admin):
    wait_full(admin)
    name, c = new_tenant(d, admin)
    _, other = new_tenant(d, admin)
    taken = pool(admin)["taken"]
    cell = create(c, {"env": {"POOL_FOO": "bar baz"}, "cwd": "/tmp", "ttl": 600})
    assert pool(admin)["taken"] == taken + 1
    out = sh(c, cell["id"], 'echo "$POOL_FOO"; pwd; hostname').splitlines()
    assert out[:2] == ["bar baz", "/tmp"], out
    assert_limits(out[2], DEFAULT_MEMORY, DEFAULT_PIDS)
    assert cell["env"] == {"POOL_FOO": "bar baz"} and cell["ttl"] == 600
    # The tenant's, and only the tenant's.
    assert [x["id"] for x in c.get("/v1/cells").body["cells"]] == [cell["id"]]
    assert c.get("/v1/tenants/%s" % name).body["usage"]["cells"] == 1
    assert other.get("/v1/cells/%s" % cell["id"]).status == 404
    assert other.post("/cells/%s/v1/processes/run" % cell["id"], {"command": "true"}).status == 404
    assert c.delete("/v1/cells/%s" % cell["id"]).status == 204
    # A hostname is given to the pooled cell: the UTS name and /etc/hosts,
    # which is read-only again afterwards.
    named = create(c, {"hostname": "pool-box-7"})
    assert pool(admin)["taken"] == taken + 2
    out = sh(c, named["id"], "hostname; cat /etc/hosts; echo 6.6.6.6 evil >> /etc/hosts && echo WRITABLE; "
             "grep ' /etc/hosts ' /proc/self/mountinfo")
    lines = out.splitlines()
    assert lines[0] == "pool-box-7", out
    assert "127.0.1.1\tpool-box-7" in out and "cell-" not in out, out
    assert "WRITABLE" not in out and " ro," in lines[-1], out
    assert c.delete("/v1/cells/%s" % named["id"]).status == 204


def test_a_claimed_cell_gets_the_requests_pids_and_cpu_limits(d, admin):
    """Lowered (and raised) by cgroup writes before the answer, and enforced."""
    wait_full(admin)
    _, c = new_tenant(d, admin)
    taken = pool(admin)["taken"]
    small = create(c, {"resources": {"pids": 40, "cpus": 0.5}})
    big = create(c, {"resources": {"pids": 2048}})
    assert pool(admin)["taken"] == taken + 2
    assert_limits(sh(c, small["id"], "hostname").strip(), DEFAULT_MEMORY, 40, 50000)
    assert_limits(sh(c, big["id"], "hostname").strip(), DEFAULT_MEMORY, 2048)
    # 60 forks in a cell of 40 pids: the one that would pass the limit fails.
    r = c.post("/cells/%s/v1/processes/run" % small["id"], {"command": "python3", "args": ["-c", FORKS]})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    assert r.body["stdout"].split()[0] == "refused", r.body
    assert int(r.body["stdout"].split()[1]) < 40, r.body
    for cell in (small, big):
        assert c.delete("/v1/cells/%s" % cell["id"]).status == 204


def test_a_create_that_does_not_fit_boots_cold(d, admin):
    wait_full(admin)
    _, c = new_tenant(d, admin)
    before = pool(admin)
    small = create(c, {"resources": {"memory": "64M", "pids": 100}})
    mounted = create(c, {"mounts": [{"type": "memory", "target": "/scratch", "size": "16M"}]})
    policed = create(c, {"policy": {"rules": []}})
    after = pool(admin)
    assert after["taken"] == before["taken"], (before, after)
    assert after["unfit"] == before["unfit"] + 3, (before, after)
    assert ready(admin) == 2
    host = sh(c, small["id"], "hostname").strip()
    assert_limits(host, 64 << 20, 100)
    sh(c, mounted["id"], "grep ' /scratch ' /proc/self/mountinfo")
    sh(c, policed["id"], "true")
    for cell in (small, mounted, policed):
        assert c.delete("/v1/cells/%s" % cell["id"]).status == 204


def test_pooled_cells_count_against_no_tenant_and_a_full_tenant_gets_none(d, admin):
    wait_full(admin)
    name, c = new_tenant(d, admin, maxCells=1)
    t = c.get("/v1/tenants/%s" % name).body
    assert t["usage"]["cells"] == 0, t
    before = pool(admin)
    first = create(c)
    assert pool(admin)["taken"] == before["taken"] + 1
    r = c.post("/v1/cells", {})
    assert_problem(r, 403, "quota_exceeded", detail_has="cells")
    after = pool(admin)
    # The refused create took nothing from the pool.
    assert after["taken"] == before["taken"] + 1 and after["empty"] == before["empty"], (before, after)
    assert c.get("/v1/tenants/%s" % name).body["usage"]["cells"] == 1
    assert c.delete("/v1/cells/%s" % first["id"]).status == 204


def test_a_deleted_cell_never_comes_back(d, admin):
    """Tenant A leaves a file, a process and its hostname in a pooled cell
    and deletes it; every cell B gets afterwards (more than the pool holds,
    so pooled and refilled ones) is fresh."""
    wait_full(admin)
    _, a = new_tenant(d, admin)
    _, b = new_tenant(d, admin)
    taken = pool(admin)["taken"]
    mine = create(a)
    assert pool(admin)["taken"] == taken + 1
    host_a = sh(a, mine["id"], "echo secret > /root/left-behind; echo t > /tmp/left-too; hostname").strip()
    r = a.post("/cells/%s/v1/processes" % mine["id"], {"command": "sleep", "args": ["4242"]})
    assert r.status == 200, r
    assert a.delete("/v1/cells/%s" % mine["id"]).status == 204
    seen = {host_a}
    got = []
    for _ in range(4):
        wait_full(admin)
        cell = create(b)
        got.append(cell["id"])
        out = sh(b, cell["id"], "hostname; ls -A /root /tmp; for p in /proc/[0-9]*; do cat $p/cmdline 2>/dev/null | tr '\\0' ' '; echo; done")
        host = out.splitlines()[0]
        assert host not in seen, (host, seen)
        seen.add(host)
        assert "left-behind" not in out and "left-too" not in out, out
        assert "4242" not in out, out
    assert pool(admin)["taken"] >= taken + 5
    for cid in got:
        assert b.delete("/v1/cells/%s" % cid).status == 204


def test_two_tenants_racing_for_the_last_pooled_cell_get_distinct_working_cells(tmp_path):
    with dm.served(tmp_path / "race", ["--warm", "1"]) as dd:
        admin = dd.client()
        wait_full(admin, 1)
        clients = [new_tenant(dd, admin)[1] for _ in range(2)]
        before = pool(admin)
        results = [None, None]
        go = threading.Barrier(2)

        def claim(i):
            go.wait()
            results[i] = clients[i].post("/v1/cells", {})

        threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        assert all(r is not None and r.status == 201 for r in results), results
        ids = [r.body["id"] for r in results]
        assert ids[0] != ids[1]
        after = pool(admin)
        # One of them had the pooled cell, the other booted cold (or took
        # the refill if it was quicker).
        assert after["taken"] - before["taken"] in (1, 2), (before, after)
        assert after["taken"] + after["empty"] == before["taken"] + before["empty"] + 2, (before, after)
        hosts = [sh(clients[i], ids[i], "hostname").strip() for i in range(2)]
        assert hosts[0] != hosts[1], hosts
        for i in range(2):
            assert clients[1 - i].get("/v1/cells/%s" % ids[i]).status == 404
            assert clients[i].delete("/v1/cells/%s" % ids[i]).status == 204


# ---- options --------------------------------------------------------------------------------


def test_warm_0_turns_the_pool_off(tmp_path):
    with dm.served(tmp_path / "off", ["--warm", "0"]) as dd:
        admin = dd.client()
        p = pool(admin)
        assert p["templates"] == [{"image": "host", "size": 0, "ready": 0}], p
        assert not dm.cell_pids_of_state(dd.state) and not run_dir_ids(dd.state)
        cell = create(admin)
        sh(admin, cell["id"], "true")
        p = pool(admin)
        assert p["taken"] == 0 and p["booted"] == 0, p
        assert admin.delete("/v1/cells/%s" % cell["id"]).status == 204


def test_warm_per_image_and_an_image_not_built(tmp_path):
    """host=1 sets the default image's size; an image that is not built
    (or does not exist) keeps its template empty without failing anything."""
    with dm.served(tmp_path / "img", ["--warm", "host=1", "--warm", "no-such-image=3"]) as dd:
        admin = dd.client()
        wait_full(admin, 1)
        p = pool(admin)
        assert {"image": "no-such-image", "size": 3, "ready": 0} in p["templates"], p
        assert {"image": "host", "size": 1, "ready": 1} in p["templates"], p
        assert admin.get("/v1/health").status == 200


@pytest.mark.parametrize("bad", ["-1", "65", "x", "", "=2", "host=", "ho/st=1", "host=1=2", "../x=1"])
def test_bad_warm_values_are_refused(tmp_path, bad):
    r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path), "serve", "--listen", "", "--socket", "",
                        "--warm", bad], capture_output=True, text=True, timeout=30)
    assert r.returncode != 0, r
    assert "--warm" in r.stderr, r.stderr
    assert not run_dir_ids(tmp_path)


# ---- shutdown and crashes ------------------------------------------------------------------


def test_shutdown_destroys_the_pooled_cells(tmp_path):
    dd = dm.Daemon(tmp_path / "stop", ["--warm", "3"])
    dd.start()
    try:
        wait_full(dd.client(), 3)
        ids = run_dir_ids(dd.state)
        assert len(ids) == 3, ids
        assert cgroups_of(ids)
    finally:
        dd.stop()                   # check_clean: no cell process, no mount
        dd.check_sanitizer()
    assert not run_dir_ids(dd.state)
    assert wait_for(lambda: not cgroups_of(ids), 10), cgroups_of(ids)


def test_sigkill_leaves_no_pooled_cell_behind(tmp_path):
    state = tmp_path / "crash"
    dd = dm.Daemon(state, ["--warm", "2"])
    dd.start()
    try:
        wait_full(dd.client(), 2)
        ids = run_dir_ids(state)
        assert len(ids) == 2 and cgroups_of(ids), ids
    finally:
        dd.kill9()
    # cell-init dies with the daemon's main thread ...
    assert wait_for(lambda: not dm.cell_pids_of_state(state), 10), dm.cell_pids_of_state(state)
    # ... and the next start sweeps the run directories and cgroups.
    with dm.served(state, ["--warm", "0"]) as again:
        assert again.client().get("/v1/health").status == 200
        assert not run_dir_ids(state) & ids, run_dir_ids(state)
        assert wait_for(lambda: not cgroups_of(ids), 10), cgroups_of(ids)
        assert not dm.cell_pids_of_state(state)
