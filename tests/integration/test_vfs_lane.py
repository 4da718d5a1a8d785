"""POST /v1/cells mounts[] {"type": "lane"}: a tenant's lane shown read-only
in a cell through the daemon's virtual filesystem (src/server/laneview.c),
without a copy: its files are read, nothing can be written, links and
devices of the lane are absent, another tenant's lane and bad input are
refused, and a lane attached to a running cell cannot be viewed."""
import io
import tarfile

import pytest

import daemon as dm
from daemon import assert_problem, make_tenant_token


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("vfslane"))


def make_tar(entries):
    """entries: (name, bytes | None for a dir | ('link', target) for a symlink)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in entries:
            ti = tarfile.TarInfo(name)
            if data is None:
                ti.type, ti.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(ti)
            elif isinstance(data, tuple):
                ti.type, ti.linkname = tarfile.SYMTYPE, data[1]
                tf.addfile(ti)
            else:
                ti.size, ti.mode = len(data), 0o644
                tf.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def import_lane(client, name, entries):
    r = client.call("POST", "/v1/lanes/%s/import" % name, body=make_tar(entries),
                    headers={"Content-Type": "application/x-tar"})
    assert r.status in (200, 201), r


def new_cell(client, mounts, **extra):
    body = {"resources": {"memory": "128M"}, "mounts": mounts}
    body.update(extra)
    return client.post("/v1/cells", body)


def sh(client, cell_id, script):
    r = client.post("/cells/%s/v1/processes/run" % cell_id, {"command": "sh", "args": ["-c", script]})
    assert r.status == 200, r
    return r.body


@pytest.fixture(scope="module")
def lane(admin):
    import_lane(admin, "viewed", [("a.txt", b"hello lane\n"), ("sub", None), ("sub/b.txt", b"inner\n"),
                                  ("etc", ("link", "/etc")), ("up", ("link", "../../../"))])
    return "viewed"


def test_a_lane_mount_reads_the_lanes_files_and_writes_nothing(admin, lane):
    r = new_cell(admin, [{"type": "lane", "lane": lane, "target": "/data"}])
    assert r.status == 201, r
    cid = r.body["id"]
    try:
        out = sh(admin, cid, "cat /data/a.txt /data/sub/b.txt; ls -A /data | tr '\\n' ' '; grep -c ' /data fuse' "
                             "/proc/mounts")
        assert out["exitCode"] == 0, out
        assert out["stdout"] == "hello lane\ninner\na.txt sub 1\n"
        # Links in the lane are not in the view: nothing leads out of it.
        out = sh(admin, cid, "cat /data/etc/passwd || ls /data/up/ || test -e /data/etc")
        assert out["exitCode"] != 0
        for script in ("echo x >/data/a.txt", "touch /data/new", "rm /data/a.txt", "mkdir /data/d",
                       "mv /data/a.txt /data/b.txt", "umount /data", "mount -o remount,rw /data"):
            out = sh(admin, cid, script)
            assert out["exitCode"] != 0, (script, out)
        assert sh(admin, cid, "cat /data/a.txt")["stdout"] == "hello lane\n"
        r = admin.get("/v1/cells/" + cid)
        assert r.body["mounts"] == [{"type": "lane", "lane": lane, "target": "/data", "readonly": True}]
    finally:
        assert admin.delete("/v1/cells/" + cid).status in (200, 204)


def test_another_tenants_lane_is_not_found(admin, lane):
    tok, _ = make_tenant_token(admin, "vfs-other")
    other = admin.with_token(tok)
    r = new_cell(other, [{"type": "lane", "lane": lane, "target": "/data"}])
    assert_problem(r, 404, "not_found", "mounts[0].lane")


@pytest.mark.parametrize("mount,status,word", [
    ({"type": "lane", "target": "/data"}, 422, "lane"),
    ({"type": "lane", "lane": 5, "target": "/data"}, 422, "lane"),
    ({"type": "lane", "lane": "nope", "target": "/data"}, 404, "nope"),
    ({"type": "lane", "lane": "../viewed", "target": "/data"}, 404, "lane"),
    ({"type": "lane", "lane": "viewed", "target": "/data", "readonly": False}, 400, "read-only"),
    ({"type": "lane", "lane": "viewed", "target": "/data", "mask": [".env"]}, 400, "mask"),
    ({"type": "lane", "lane": "viewed"}, 422, "target"),
])
def test_bad_lane_mounts_are_refused(admin, lane, mount, status, word):
    assert_problem(new_cell(admin, [mount]), status, None, word)


def test_a_lane_attached_to_a_running_cell_cannot_be_viewed(admin):
    import_lane(admin, "busy", [("f", b"x")])
    r = new_cell(admin, [], lane="busy")
    assert r.status == 201, r
    owner = r.body["id"]
    try:
        r = new_cell(admin, [{"type": "lane", "lane": "busy", "target": "/data"}])
        assert_problem(r, 409, "conflict", "attached to a running cell")
        assert admin.get("/v1/health").status == 200
    finally:
        assert admin.delete("/v1/cells/" + owner).status in (200, 204)
    # Detached now: the view boots, and holds the lane while it runs.
    r = new_cell(admin, [{"type": "lane", "lane": "busy", "target": "/data"}])
    assert r.status == 201, r
    viewer = r.body["id"]
    try:
        assert sh(admin, viewer, "cat /data/f")["stdout"] == "x"
        assert_problem(new_cell(admin, [], lane="busy"), 409, "conflict")
    finally:
        assert admin.delete("/v1/cells/" + viewer).status in (200, 204)


def test_concurrent_views_of_one_lane_one_wins(admin):
    # A view holds the lane's lock like an attached cell: of two cells
    # created at once with the same lane mounted, one boots, the other is
    # refused, and the daemon serves on.
    import threading
    import_lane(admin, "raced", [("f", b"y")])
    results = []

    def create():
        results.append(new_cell(admin, [{"type": "lane", "lane": "raced", "target": "/data"}]))

    threads = [threading.Thread(target=create) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    made = [r.body["id"] for r in results if r.status == 201]
    try:
        assert len(results) == 2 and len(made) == 1, results
        lost = [r for r in results if r.status != 201][0]
        assert_problem(lost, 409, "conflict", "attached to a running cell")
        assert sh(admin, made[0], "cat /data/f")["stdout"] == "y"
        assert admin.get("/v1/health").status == 200
    finally:
        for cid in made:
            assert admin.delete("/v1/cells/" + cid).status in (200, 204)
