"""Images and tenants (issue 13): who sees an image, what it costs, and
what removing it frees.

- Visibility fails closed: builtins are seen by every tenant, an image a
  tenant committed through the API by that tenant, any other (imported by
  the API or the CLI, committed by the CLI) only where the operator shares
  it; admins see all.  To a tenant, an image it does not see answers every
  route exactly as an unknown one does (no existence oracle).
- Removing an image removes its share list (a later image of the name does
  not inherit it) and collects the blobs no remaining image names, safely
  against imports sharing them.
- Images made through the API count against the tenant's maxDisk.

The base for lanes is busybox installed as "debian-bookworm" in the state
(test_image_commit.make_base): no Debian mirror is needed.  Runs as root."""
import fcntl
import json
import os
import subprocess
import threading

import pytest

import daemon as dm
from conftest import CELL_BIN
from daemon import assert_problem, uniq
from ocibuild import CONFIG, busybox_base, oci_archive, tar_bytes, whiteout_layer
from test_image_commit import make_base

TAR = {"Content-Type": "application/x-tar"}
MEM = {"memory": "64M"}


def cli(state, *args, timeout=120):
    return subprocess.run([CELL_BIN, "--state", str(state), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, timeout=timeout, text=True)


def ok(proc):
    assert proc.returncode == 0, "rc=%s stderr=%s" % (proc.returncode, proc.stderr)
    return proc


@pytest.fixture(scope="module")
def base():
    return busybox_base()


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    state = tmp_path_factory.mktemp("tenancy")
    (state / "images").mkdir()
    make_base(state)
    yield from dm.serve(state)


def names(client):
    r = client.get("/v1/images")
    assert r.status == 200, r
    return {i["name"]: i for i in r.body["images"]}


def same_as_unknown(call, hidden, unknown):
    """call(name) answers the hidden image exactly as the unknown name (of
    the same length): same status, type and detail but for the name."""
    assert len(hidden) == len(unknown)
    a, b = call(hidden), call(unknown)
    assert a.status == b.status, (a, b)
    if isinstance(a.body, dict) and isinstance(b.body, dict):
        da = json.dumps(a.body, sort_keys=True).replace(hidden, "NAME")
        db = json.dumps(b.body, sort_keys=True).replace(unknown, "NAME")
        assert da == db, (a, b)
    return a


def tenant_lane(client, name, script):
    assert client.post("/v1/lanes", {"name": name, "image": "debian-bookworm", "size": "64M"}).status == 201
    c = client.post("/v1/cells", {"lane": name, "resources": MEM})
    assert c.status == 201, c
    try:
        r = client.post("/cells/%s/v1/processes/run" % c.body["id"], {"command": "/bin/sh", "args": ["-c", script]})
        assert r.status == 200 and r.body["exitCode"] == 0, r
    finally:
        assert client.delete("/v1/cells/%s" % c.body["id"]).status == 204


def every_route(d, tenant, lane):
    """The routes that take an image name, each as call(name)."""
    run_body = {"agent": "mock", "prompt": "hi", "resources": MEM}
    return {
        "show": lambda n: tenant.get("/v1/images/%s" % n),
        "export": lambda n: tenant.get("/v1/images/%s/export" % n),
        "delete": lambda n: tenant.delete("/v1/images/%s" % n),
        "share": lambda n: tenant.put("/v1/images/%s/tenants" % n, {"tenants": ["*"]}),
        "cell": lambda n: tenant.post("/v1/cells", {"image": n, "resources": MEM}),
        "cell+lane mount": lambda n: tenant.post("/v1/cells", {"image": n, "resources": MEM, "mounts": [
            {"type": "lane", "lane": lane, "target": "/mnt/v"}]}),
        "lane": lambda n: tenant.post("/v1/lanes", {"name": uniq("l"), "image": n, "size": "64M"}),
        "lane import": lambda n: tenant.call("POST", "/v1/lanes/%s/import" % uniq("l"), body=tar_bytes([]),
                                             headers=TAR, query={"image": n}),
        "run": lambda n: tenant.post("/v1/runs", dict(run_body, image=n)),
    }


def test_a_tenants_commit_is_seen_by_it_alone_on_every_route(d):
    """The leak: alice's snapshot (holding her secret) must not be seen by
    bob, on any route, not even as "exists"."""
    admin = d.client()
    an, bn = uniq("alice"), uniq("bob")
    alice, bob = d.tenant(an), d.tenant(bn)
    tenant_lane(alice, "w", "echo s3cret > /root/token")
    tenant_lane(bob, "bw", "true")
    snap, unknown = uniq("snap"), uniq("snap")
    r = alice.post("/v1/lanes/w/commit", {"image": snap})
    assert r.status == 201, r
    meta = json.load(open(os.path.join(d.state, "images", snap, "image.json")))
    assert meta["source"] == "commit" and meta["tenant"] == an
    assert not os.path.exists(os.path.join(d.state, "images", ".shares", snap))
    # alice sees it, with the fields; bob does not, and an admin does.
    mine = names(alice)[snap]
    assert set(mine) >= {"name", "digest", "size", "created", "source", "lanes"}, mine
    assert mine["source"] == "commit" and mine["digest"].startswith("sha256:") and mine["lanes"] == []
    assert snap not in names(bob) and snap in names(admin)
    for what, call in every_route(d, bob, "bw").items():
        r = same_as_unknown(call, snap, unknown)
        assert r.status in (400, 403, 404), (what, r)
    # A commit onto the name: 409 whether or not the tenant sees the image
    # (names are host-wide; the answer says only that the name is taken).
    a = alice.post("/v1/lanes/w/commit", {"image": snap})
    b = bob.post("/v1/lanes/bw/commit", {"image": snap})
    assert a.status == b.status == 409 and a.body["detail"] == b.body["detail"], (a, b)
    # A lane on it is alice's alone: bob's listing names none of her lanes.
    assert alice.post("/v1/lanes", {"name": "on-snap", "image": snap, "size": "64M"}).status == 201
    assert names(alice)[snap]["lanes"] == ["on-snap"]
    assert names(admin)[snap]["lanes"] == ["%s/on-snap" % an]
    assert all("on-snap" not in i["lanes"] and "w" not in i["lanes"] for i in names(bob).values())
    # Shared with bob by the operator: seen, but bob still cannot delete it.
    assert admin.put("/v1/images/%s/tenants" % snap, {"tenants": [bn]}).status == 200
    assert names(bob)[snap]["lanes"] == []
    assert_problem(bob.delete("/v1/images/%s" % snap), 403, "forbidden")
    assert_problem(alice.delete("/v1/images/%s" % snap), 409, "conflict", "on-snap")
    assert alice.delete("/v1/lanes/on-snap").status == 204
    assert alice.delete("/v1/images/%s" % snap).status == 200
    assert not os.path.exists(os.path.join(d.state, "images", ".shares", snap))
    assert_problem(alice.get("/v1/images/%s" % snap), 404, "not_found")


def test_cli_images_are_seen_only_where_shared(d, base, tmp_path):
    """An image imported or committed by the CLI carries no owner: tenants
    see it only once the operator shares it."""
    admin = d.client()
    carol = d.tenant(uniq("carol"))
    imp, unknown = uniq("cli"), uniq("cli")
    p = tmp_path / "img.tar"
    p.write_bytes(oci_archive([base], CONFIG)[0])
    ok(cli(d.state, "image", "import", imp, str(p)))
    lane = uniq("cl")
    ok(cli(d.state, "lane", "create", lane, "--image", "debian-bookworm"))
    com = uniq("clc")
    ok(cli(d.state, "lane", "commit", lane, com))
    for name in (imp, com):
        assert name in names(admin) and name not in names(carol)
        for what, call in every_route(d, carol, "nolane").items():
            same_as_unknown(call, name, unknown)
    assert admin.put("/v1/images/%s/tenants" % imp, {"tenants": ["*"]}).status == 200
    assert imp in names(carol) and com not in names(carol)
    ok(cli(d.state, "lane", "rm", lane))
    ok(cli(d.state, "image", "rm", com))


def test_rm_drops_the_share_list_a_new_image_does_not_inherit_it(d, base):
    """`cell image rm` (the CLI, beside the daemon) removes the share list:
    a tenant's later commit of the same name is not seen by everyone."""
    admin = d.client()
    dave, erin = d.tenant(uniq("dave")), d.tenant(uniq("erin"))
    name = uniq("reused")
    assert admin.call("POST", "/v1/images/%s/import" % name, body=oci_archive([base], CONFIG)[0],
                      headers=TAR).status == 201
    assert admin.put("/v1/images/%s/tenants" % name, {"tenants": ["*"]}).status == 200
    assert name in names(erin)
    shares = os.path.join(d.state, "images", ".shares", name)
    assert os.path.exists(shares)
    ok(cli(d.state, "image", "rm", name))
    assert not os.path.exists(shares)
    tenant_lane(dave, "dl", "echo private > /root/p")
    assert dave.post("/v1/lanes/dl/commit", {"image": name}).status == 201
    assert name in names(dave) and name not in names(erin)
    assert_problem(erin.get("/v1/images/%s" % name), 404, "not_found")
    # Sharing an image being removed never outlives it (the same lock).
    assert dave.delete("/v1/images/%s" % name).status == 200
    assert_problem(admin.put("/v1/images/%s/tenants" % name, {"tenants": ["*"]}), 404, "not_found")
    assert not os.path.exists(shares)


def tenant_disk(admin, tenant):
    r = admin.get("/v1/tenants/%s" % tenant)
    assert r.status == 200, r
    return r.body


def test_images_count_against_the_tenants_disk_quota(d, base):
    admin = d.client()
    fred_name = uniq("fred")
    fred = d.tenant(fred_name)
    tenant_lane(fred, "fl", "echo data > /root/d")
    lane_bytes = 64 << 20
    # Room for the lane and 4 KiB more: the commit (busybox, ~1 MB) does not fit.
    assert admin.put("/v1/tenants/%s" % fred_name, {"maxDisk": lane_bytes + 4096}).status == 200
    before = sorted(os.listdir(os.path.join(d.state, "images")))
    r = fred.post("/v1/lanes/fl/commit", {"image": "fsnap"})
    assert_problem(r, 403, "quota_exceeded", ["\"disk\"", "fsnap", "not kept"])
    assert sorted(os.listdir(os.path.join(d.state, "images"))) == before
    assert_problem(fred.get("/v1/images/fsnap"), 404, "not_found")
    # Quota used up: refused before anything is made.
    assert admin.put("/v1/tenants/%s" % fred_name, {"maxDisk": lane_bytes}).status == 200
    assert_problem(fred.post("/v1/lanes/fl/commit", {"image": "fsnap"}), 403, "quota_exceeded", "no room")
    # Enough room: kept, and reported in the tenant's usage.
    assert admin.put("/v1/tenants/%s" % fred_name, {"maxDisk": lane_bytes + (64 << 20)}).status == 200
    r = fred.post("/v1/lanes/fl/commit", {"image": "fsnap"})
    assert r.status == 201, r
    size = names(fred)["fsnap"]["size"]
    usage = tenant_disk(admin, fred_name)["usage"]
    assert usage["images"] == size and usage["disk"] == lane_bytes + size, usage
    # The image's bytes leave less for lanes.
    assert_problem(fred.post("/v1/lanes", {"name": "more", "image": "debian-bookworm", "size": "64M"}), 403,
                   "quota_exceeded", "images")
    assert fred.delete("/v1/images/fsnap").status == 200
    assert tenant_disk(admin, fred_name)["usage"]["images"] == 0


def test_an_admins_import_is_charged_to_its_tenant(d, base):
    admin = d.client()
    who = uniq("ops")
    r = admin.post("/v1/tokens", {"tenant": who, "label": "it-ops", "admin": True})
    assert r.status == 201, r
    ops = d.client(r.body["token"])
    blobs = os.path.join(d.state, "images", "blobs", "sha256")
    data = oci_archive([base, whiteout_layer()], CONFIG)[0]
    assert admin.put("/v1/tenants/%s" % who, {"maxDisk": 1 << 20}).status == 200
    before = sorted(os.listdir(blobs)) if os.path.isdir(blobs) else []
    for _ in range(2):  # the second finds the first's blobs collected, not reused
        r = ops.call("POST", "/v1/images/big/import", body=data, headers=TAR)
        assert_problem(r, 403, "quota_exceeded", ["\"disk\"", "big"])
        assert not os.path.exists(os.path.join(d.state, "images", "big"))
        assert sorted(os.listdir(blobs)) == before
    assert admin.put("/v1/tenants/%s" % who, {"maxDisk": 64 << 20}).status == 200
    r = ops.call("POST", "/v1/images/big/import", body=data, headers=TAR)
    assert r.status == 201, r
    meta = json.load(open(os.path.join(d.state, "images", "big", "image.json")))
    assert meta["tenant"] == who and meta["source"] == "import"
    usage = tenant_disk(admin, who)["usage"]
    assert usage["images"] > meta["size"], usage   # the rootfs and its blobs
    # Charged to ops, but an import: not seen by ops' tenant tokens unshared.
    assert "big" not in names(d.tenant(who))
    assert admin.delete("/v1/images/big").status == 200
    assert tenant_disk(admin, who)["usage"]["images"] == 0


def test_two_commits_racing_for_the_last_room_keep_at_most_one(d):
    """The quota check after a commit runs under one lock: two commits of a
    tenant with room for one image never both stay."""
    admin = d.client()
    gname = uniq("gina")
    gina = d.tenant(gname)
    tenant_lane(gina, "g1", "echo one > /root/1")
    tenant_lane(gina, "g2", "echo two > /root/2")
    # Room for the two lanes and one busybox image (about 2 MB), not two.
    assert admin.put("/v1/tenants/%s" % gname, {"maxDisk": (128 << 20) + (3 << 20)}).status == 200
    out = {}

    def go(lane):
        out[lane] = gina.post("/v1/lanes/%s/commit" % lane, {"image": uniq("gs")})
    ts = [threading.Thread(target=go, args=(x,)) for x in ("g1", "g2")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    codes = sorted(r.status for r in out.values())
    assert codes in ([201, 403], [403, 403]), out
    mine = [n for n, i in names(gina).items() if i["source"] == "commit"]
    assert len(mine) == codes.count(201)
    assert tenant_disk(admin, gname)["usage"]["disk"] <= (128 << 20) + (3 << 20)
    for n in mine:
        assert gina.delete("/v1/images/%s" % n).status == 200


def test_share_racing_removal_never_outlives_the_image(d, base):
    """PUT .../tenants and DELETE of one image at once: whatever order they
    take, no share list is left for a name without an image."""
    admin = d.client()
    data = oci_archive([base], CONFIG)[0]
    for _ in range(5):
        name = uniq("sr")
        assert admin.call("POST", "/v1/images/%s/import" % name, body=data, headers=TAR).status == 201
        res = {}
        ts = [threading.Thread(target=lambda: res.__setitem__("put", admin.put(
                  "/v1/images/%s/tenants" % name, {"tenants": ["*"]}))),
              threading.Thread(target=lambda: res.__setitem__("del", admin.delete("/v1/images/%s" % name)))]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert res["del"].status == 200 and res["put"].status in (200, 404), res
        assert not os.path.exists(os.path.join(d.state, "images", ".shares", name))


def test_delete_bad_names_are_unknown(d):
    hank = d.tenant(uniq("hank"))
    for bad in ("..%2F..%2Fetc", ".shares", "blobs", "x" * 70, "UPPER", "%2Fetc"):
        r = hank.delete("/v1/images/%s" % bad)
        assert r.status in (400, 404), (bad, r)
    assert os.path.isdir(os.path.join(d.state, "images", "blobs"))


def test_a_warm_pool_of_a_hidden_image_serves_no_tenant(tmp_path, base):
    """The operator warms cells of an image it has not shared: a tenant's
    create of it answers as an unknown image (the visibility check comes
    before the pool), and once shared the tenant gets a cell of it."""
    state = tmp_path / "pool"
    (state / "images").mkdir(parents=True)
    img = tmp_path / "img.tar"
    img.write_bytes(oci_archive([base, whiteout_layer()], CONFIG)[0])
    ok(cli(state, "image", "import", "pooled", str(img)))
    with dm.served(state, ["--warm", "host=0", "--warm", "pooled=1"]) as dd:
        ivan = dd.tenant("ivan")
        same_as_unknown(lambda n: ivan.post("/v1/cells", {"image": n, "resources": MEM}), "pooled", "poolex")
        assert dd.client().put("/v1/images/pooled/tenants", {"tenants": ["ivan"]}).status == 200
        c = ivan.post("/v1/cells", {"image": "pooled", "resources": MEM})
        assert c.status == 201, c
        r = ivan.post("/cells/%s/v1/processes/run" % c.body["id"], {"command": "/bin/busybox", "args": ["cat", "/a/new"]})
        assert r.status == 200 and r.body["stdout"] == "new\n", r
        assert ivan.delete("/v1/cells/%s" % c.body["id"]).status == 204


# ---- blob collection (the CLI on a state of its own) ---------------------------------------


def blob_set(state):
    d = os.path.join(str(state), "images", "blobs", "sha256")
    return set(os.listdir(d)) if os.path.isdir(d) else set()


def image_blobs(state, name):
    m = json.load(open(os.path.join(str(state), "images", name, "image.json")))
    return {x[7:] for x in [m["digest"]] + m["layers"] + m.get("blobs", [])}


def test_rm_collects_the_blobs_only_it_named(state, tmp_path, base):
    a = tmp_path / "a.tar"
    b = tmp_path / "b.tar"
    a.write_bytes(oci_archive([base, whiteout_layer()], CONFIG)[0])
    b.write_bytes(oci_archive([base], dict(CONFIG, Env=["B=1"]))[0])
    ok(cli(state, "image", "import", "ia", str(a)))
    ok(cli(state, "image", "import", "ib", str(b)))
    ia, ib = image_blobs(state, "ia"), image_blobs(state, "ib")
    assert ia & ib and ia | ib == blob_set(state)
    # A crashed import's blob: nothing names it.
    orphan = os.path.join(str(state), "images", "blobs", "sha256", "ab" * 32)
    open(orphan, "w").write("orphan")
    ok(cli(state, "image", "rm", "ia"))
    assert blob_set(state) == ib
    ok(cli(state, "image", "export", "ib", str(tmp_path / "ib-out.tar")))
    ok(cli(state, "image", "rm", "ib"))
    assert blob_set(state) == set()


def test_a_collection_waits_for_an_import_in_progress(state, tmp_path, base):
    """While an importer holds the blob lock, rm removes the image but not
    its blobs and leaves the collection pending; the next import to let go
    collects."""
    a = tmp_path / "a.tar"
    a.write_bytes(oci_archive([base], CONFIG)[0])
    ok(cli(state, "image", "import", "ia", str(a)))
    held = image_blobs(state, "ia")
    lock = os.open(os.path.join(str(state), "images", ".blobs.lock"), os.O_RDWR)
    try:
        fcntl.flock(lock, fcntl.LOCK_SH)  # as an import between storing a blob and naming it
        ok(cli(state, "image", "rm", "ia"))
        assert blob_set(state) == held
        assert os.path.exists(os.path.join(str(state), "images", ".gc-pending"))
    finally:
        os.close(lock)
    b = tmp_path / "b.tar"
    b.write_bytes(oci_archive([whiteout_layer()], CONFIG)[0])
    ok(cli(state, "image", "import", "ib", str(b)))
    assert blob_set(state) == image_blobs(state, "ib")
    assert not os.path.exists(os.path.join(str(state), "images", ".gc-pending"))


def test_an_import_holds_off_collection_until_its_blobs_are_named(state, tmp_path, base):
    """An import still reading its archive (half of it sent on stdin) while
    the only image naming the same layers is removed: the removal leaves
    the blobs and a pending collection; the import then finishes, the
    pending collection runs when it lets go, and every blob the new image
    names is there."""
    data = oci_archive([base, whiteout_layer()], CONFIG)[0]
    old = tmp_path / "old.tar"
    old.write_bytes(data)
    ok(cli(state, "image", "import", "old", str(old)))
    shared = image_blobs(state, "old")
    p = subprocess.Popen([CELL_BIN, "--state", str(state), "image", "import", "new", "-"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        p.stdin.write(data[:len(data) // 2])
        p.stdin.flush()
        lock = os.path.join(str(state), "images", ".blobs.lock")
        assert dm.wait_for(lambda: os.path.exists(lock) and flock_busy(lock), 30)
        ok(cli(state, "image", "rm", "old"))
        assert shared <= blob_set(state)
        assert os.path.exists(os.path.join(str(state), "images", ".gc-pending"))
        p.stdin.write(data[len(data) // 2:])
        p.stdin.close()
        assert p.wait(60) == 0, p.stderr.read()
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert blob_set(state) == image_blobs(state, "new")
    assert not os.path.exists(os.path.join(str(state), "images", ".gc-pending"))
    ok(cli(state, "image", "export", "new", str(tmp_path / "new-out.tar")))


def flock_busy(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def test_imports_and_removals_of_images_sharing_layers_race(state, tmp_path, base):
    """Two threads import and remove images sharing the survivor's layers,
    over and over: each import's blobs are all there once it returns, and
    the survivor still exports and boots."""
    keep = tmp_path / "keep.tar"
    keep.write_bytes(oci_archive([base, whiteout_layer()], CONFIG)[0])
    ok(cli(state, "image", "import", "keep", str(keep)))
    tars = {}
    for who in ("x", "y"):
        p = tmp_path / ("%s.tar" % who)
        p.write_bytes(oci_archive([base, whiteout_layer()], dict(CONFIG, Env=["W=" + who]))[0])
        tars[who] = p
    failures = []

    def churn(who):
        for i in range(12):
            name = "%s%d" % (who, i)
            r = cli(state, "image", "import", name, str(tars[who]))
            if r.returncode != 0:
                failures.append((name, r.stderr))
                return
            missing = image_blobs(state, name) - blob_set(state)
            if missing:
                failures.append((name, "missing blobs %s" % missing))
            r = cli(state, "image", "rm", name)
            if r.returncode != 0:
                failures.append((name, r.stderr))
    ts = [threading.Thread(target=churn, args=(w,)) for w in ("x", "y")]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert failures == []
    assert image_blobs(state, "keep") <= blob_set(state)
    ok(cli(state, "image", "export", "keep", str(tmp_path / "keep-out.tar")))
    r = ok(cli(state, "run", "--image", "keep", "--", "/bin/busybox", "cat", "/a/new"))
    assert r.stdout == "new\n"
    ok(cli(state, "image", "rm", "keep"))
    assert blob_set(state) == set()
