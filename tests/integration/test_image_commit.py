"""`cell lane commit` / POST /v1/lanes/{name}/commit (issue 13): a lane
flattened over its image into a new image, and lanes bound to their image's
digest.  The base is a small self-contained image made in the test (busybox
from busybox-static, installed in the name "debian-bookworm" of a fresh
state directory, so no Debian mirror is needed).  Runs as root."""

import json
import os
import pathlib
import shutil
import stat
import subprocess

import pytest

from conftest import CELL_BIN

BUSYBOX = shutil.which("busybox") or "/bin/busybox"
pytestmark = pytest.mark.skipif(not os.path.exists(BUSYBOX), reason="needs busybox-static")


def cli(state, *args, stdin=subprocess.DEVNULL, timeout=120):
    return subprocess.run([CELL_BIN, "--state", str(state), *args], stdin=stdin, capture_output=True,
                          timeout=timeout, text=True)


def ok(proc):
    assert proc.returncode == 0, f"rc={proc.returncode} stderr={proc.stderr}"
    return proc


def make_base(state, name="debian-bookworm"):
    """A busybox root in images/NAME, as a built image looks."""
    img = pathlib.Path(state) / "images" / name
    root = img / "rootfs"
    for d in ("bin", "etc", "proc", "dev", "sys", "tmp", "root", "keep/sub", "gone", "opaque/old", "usr/bin"):
        (root / d).mkdir(parents=True, exist_ok=True)
    shutil.copy2(BUSYBOX, root / "bin" / "busybox")
    for tool in ("sh", "cat", "ls", "rm", "mkdir", "echo", "test", "stat", "readlink"):
        os.symlink("busybox", root / "bin" / tool)
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc" / "changed").write_text("base\n")
    (root / "etc" / "deleted").write_text("base\n")
    (root / "gone" / "file").write_text("base\n")
    (root / "opaque" / "old" / "file").write_text("base\n")
    (root / "opaque" / "base-file").write_text("base\n")
    (root / "keep" / "sub" / "file").write_text("kept\n")
    (img / "ready").write_text("test")
    return img


def sh(state, script, *extra):
    return cli(state, "run", *extra, "--", "/bin/sh", "-c", script)


@pytest.fixture
def st(state):
    s = pathlib.Path(state)
    (s / "images").mkdir(parents=True, exist_ok=True)
    make_base(s)
    return s


def prepared_lane(st, name="work"):
    ok(cli(st, "lane", "create", name, "--image", "debian-bookworm"))
    ok(sh(st, "echo new > /root/new; echo lane > /etc/changed; rm /etc/deleted; rm -r /gone; "
              "rm -r /opaque; mkdir -p /opaque/fresh; echo fresh > /opaque/fresh/file; "
              "ln -s /root/new /root/link; chmod 600 /root/new",
          "--image", "debian-bookworm", "--lane", name))
    return name


def test_commit_flattens_new_changed_deleted_and_opaque(st):
    lane = prepared_lane(st)
    ok(cli(st, "lane", "commit", lane, "snap"))
    root = st / "images" / "snap" / "rootfs"
    assert (root / "root" / "new").read_text() == "new\n"
    assert stat.S_IMODE((root / "root" / "new").stat().st_mode) == 0o600
    assert os.readlink(root / "root" / "link") == "/root/new"
    assert (root / "etc" / "changed").read_text() == "lane\n"
    assert not (root / "etc" / "deleted").exists()
    assert not (root / "gone").exists()
    # The opaque directory hides all of the base's: only the lane's is there.
    assert sorted(os.listdir(root / "opaque")) == ["fresh"]
    assert (root / "keep" / "sub" / "file").read_text() == "kept\n"
    # No overlay artefacts: whiteouts (char 0:0) nor the opaque mark.
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            m = os.lstat(os.path.join(dirpath, n)).st_mode
            assert not stat.S_ISCHR(m), os.path.join(dirpath, n)
    assert not [a for a in os.listxattr(root / "opaque") if a.startswith("trusted.overlay")]
    meta = json.loads((st / "images" / "snap" / "image.json").read_text())
    assert meta["name"] == "snap" and meta["source"] == "commit"
    assert meta["digest"].startswith("sha256:") and len(meta["digest"]) == 71
    assert meta["size"] > os.path.getsize(BUSYBOX)
    # The base image is untouched: its files were linked, never written.
    base = st / "images" / "debian-bookworm" / "rootfs"
    assert (base / "etc" / "changed").read_text() == "base\n"
    assert (base / "etc" / "deleted").exists() and (base / "opaque" / "old" / "file").exists()
    # A cell boots from the new image and sees the lane's changes.
    r = ok(sh(st, "cat /root/new /etc/changed; ls /opaque; test -e /etc/deleted || echo deleted-gone; "
                  "test -e /gone || echo dir-gone; readlink /root/link", "--image", "snap"))
    assert r.stdout == "new\nlane\nfresh\ndeleted-gone\ndir-gone\n/root/new\n", r.stdout
    # and a lane on it is bound to its digest.
    ok(cli(st, "lane", "create", "onsnap", "--image", "snap"))
    assert (st / "lanes" / "onsnap" / "image-digest").read_text().strip() == meta["digest"]
    # The same lane committed twice gives the same digest (a content digest).
    ok(cli(st, "lane", "commit", lane, "snap2"))
    assert json.loads((st / "images" / "snap2" / "image.json").read_text())["digest"] == meta["digest"]


def test_commit_bad_input(st):
    lane = prepared_lane(st)
    r = cli(st, "lane", "commit", "nosuch", "img1")
    assert r.returncode != 0 and "no lane named 'nosuch'" in r.stderr
    for bad in ("../x", ".hidden", "a/b", "", "x" * 64):
        r = cli(st, "lane", "commit", lane, bad)
        assert r.returncode != 0 and "invalid image name" in r.stderr, bad
    for builtin in ("host", "debian-bookworm"):
        r = cli(st, "lane", "commit", lane, builtin)
        assert r.returncode != 0 and "builtin" in r.stderr
    ok(cli(st, "lane", "commit", lane, "once"))
    r = cli(st, "lane", "commit", lane, "once")
    assert r.returncode != 0 and "already exists" in r.stderr
    # A lane on host is refused: its /usr is the host's.
    ok(cli(st, "lane", "create", "onhost"))
    r = cli(st, "lane", "commit", "onhost", "hostsnap")
    assert r.returncode != 0 and "/usr" in r.stderr
    assert not (st / "images" / "hostsnap").exists()
    assert not [n for n in os.listdir(st / "images") if ".tmp-" in n]


def test_commit_refused_while_the_lane_is_attached(st):
    lane = prepared_lane(st)
    p = subprocess.Popen([CELL_BIN, "--state", str(st), "run", "--image", "debian-bookworm", "--lane", lane, "--",
                          "/bin/sh", "-c", "echo up; read x"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "up\n"
        r = cli(st, "lane", "commit", lane, "busy")
        assert r.returncode != 0 and "attached" in r.stderr
        assert not (st / "images" / "busy").exists()
    finally:
        p.communicate("\n", timeout=60)


def test_lane_refuses_an_image_whose_digest_changed(st):
    ok(cli(st, "lane", "create", "bound", "--image", "debian-bookworm"))
    before = (st / "lanes" / "bound" / "image-digest").read_text().strip()
    assert before.startswith("sha256:")
    ok(sh(st, "true", "--image", "debian-bookworm", "--lane", "bound"))
    # The image is replaced by another tree under the same name.
    shutil.rmtree(st / "images" / "debian-bookworm")
    make_base(st)
    (st / "images" / "debian-bookworm" / "rootfs" / "etc" / "other").write_text("another image\n")
    r = sh(st, "true", "--image", "debian-bookworm", "--lane", "bound")
    assert r.returncode != 0
    assert "lane 'bound' was made on image 'debian-bookworm' " + before in r.stderr
    now = (st / "images" / "debian-bookworm" / "digest").read_text().strip()
    assert now != before and ("is now " + now) in r.stderr
    # A lane made before lanes recorded digests has none and is accepted.
    os.unlink(st / "lanes" / "bound" / "image-digest")
    ok(sh(st, "true", "--image", "debian-bookworm", "--lane", "bound"))


# ---- POST /v1/lanes/{name}/commit ------------------------------------------------------------


def test_api_commit_tenant_lane_attached_and_bad_input(tmp_path):
    import daemon as dm
    from daemon import assert_problem, make_tenant_token
    state = tmp_path / "d"
    (state / "images").mkdir(parents=True)
    make_base(state)
    with dm.served(state) as dd:
        admin = dd.client()
        tok, _ = make_tenant_token(admin, "alice")
        alice = dd.client(tok)
        bob = dd.client(make_tenant_token(admin, "bob")[0])
        r = alice.post("/v1/lanes", {"name": "w", "image": "debian-bookworm", "size": "64M"})
        assert r.status == 201, r
        c = alice.post("/v1/cells", {"lane": "w", "resources": {"memory": "64M"}})
        assert c.status == 201, c
        cid = c.body["id"]
        r = alice.post("/cells/%s/v1/processes/run" % cid,
                       {"command": "/bin/sh", "args": ["-c", "echo api > /root/api; rm /etc/deleted"]})
        assert r.status == 200 and r.body["exitCode"] == 0, r
        # A cell uses the lane: refused, nothing made.
        assert_problem(alice.post("/v1/lanes/w/commit", {"image": "apisnap"}), 409, "conflict", detail_has=cid)
        assert alice.delete("/v1/cells/%s" % cid).status == 204
        # Another tenant's lane is not found; bad bodies and names are 400.
        assert_problem(bob.post("/v1/lanes/w/commit", {"image": "bobsnap"}), 404, "not_found")
        assert_problem(alice.post("/v1/lanes/nosuch/commit", {"image": "x1"}), 404, "not_found")
        for body in ({}, {"image": 5}, {"image": None}, {"image": "../x"}, {"image": "A" * 70},
                     {"image": "host"}, {"image": "debian-bookworm"}, {"image": "blobs"}):
            r = alice.post("/v1/lanes/w/commit", body)
            assert r.status in (400, 422) and r.body["type"].endswith("invalid_request"), (body, r)
        r = alice.call("POST", "/v1/lanes/w/commit", body=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status == 400, r
        r = alice.post("/v1/lanes/w/commit", {"image": "apisnap"})
        assert r.status == 201, r
        assert r.body["name"] == "apisnap" and r.body["lane"] == "w" and r.body["digest"].startswith("sha256:")
        assert_problem(alice.post("/v1/lanes/w/commit", {"image": "apisnap"}), 409, "conflict")
        root = state / "images" / "apisnap" / "rootfs"
        assert (root / "root" / "api").read_text() == "api\n"
        assert not (root / "etc" / "deleted").exists()
        assert not (state / "images" / "bobsnap").exists()
        assert not [n for n in os.listdir(state / "images") if ".tmp-" in n]
        # The image is alice's: bob does not see it, cannot export it or make a lane on it.
        assert_problem(bob.get("/v1/images/apisnap"), 404, "not_found")
        assert_problem(bob.get("/v1/images/apisnap/export"), 404, "not_found")
        assert bob.post("/v1/lanes", {"name": "b", "image": "apisnap", "size": "64M"}).status == 400
        assert alice.get("/v1/images/apisnap").status == 200
        exp = alice.get("/v1/images/apisnap/export")
        assert exp.status == 200 and exp.ctype == "application/x-tar", exp
        import io
        import tarfile
        with tarfile.open(fileobj=io.BytesIO(exp.raw)) as tf:
            assert tf.getnames()[:2] == ["oci-layout", "index.json"]
        assert_problem(alice.get("/v1/images/nosuch/export"), 404, "not_found")
        assert_problem(alice.get("/v1/images/..%2Fetc/export"), 404)
        assert_problem(alice.get("/v1/images/host/export"), 400, "invalid_request")


def test_commit_of_a_hostile_lane_stays_in_the_new_image(st, tmp_path):
    """The agent owns the lane: symlinks where the base has directories,
    links out, hard links to base files, a directory over a base symlink.
    The commit writes only below the new rootfs and never into the base."""
    outside = tmp_path / "outside"
    outside.mkdir()
    ok(cli(st, "lane", "create", "evil", "--image", "debian-bookworm"))
    ok(sh(st, "rm -r /keep && ln -s / /keep; ln -s ../../../../../../" + str(outside).lstrip("/") + " /root/out; "
              "ln /etc/changed /root/hard; echo hard >> /root/hard; rm /bin/ls; mkdir -p /bin/ls/x; "
              "ln -s /etc /opaque/old/file2", "--image", "debian-bookworm", "--lane", "evil"))
    base = st / "images" / "debian-bookworm" / "rootfs"
    before = {p: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in base.rglob("*")}
    ok(cli(st, "lane", "commit", "evil", "evilsnap"))
    root = st / "images" / "evilsnap" / "rootfs"
    assert os.readlink(root / "keep") == "/"
    assert os.readlink(root / "root" / "out").endswith(str(outside).lstrip("/"))
    assert (root / "root" / "hard").read_text() == "base\nhard\n"
    assert (root / "bin" / "ls").is_dir() and not (root / "bin" / "ls").is_symlink()
    assert os.listdir(outside) == []
    after = {p: (p.lstat().st_ino, p.lstat().st_mtime_ns) for p in base.rglob("*")}
    assert after == before
    assert (base / "etc" / "changed").read_text() == "base\n"
    assert (base / "keep" / "sub" / "file").read_text() == "kept\n"


def test_concurrent_commits_to_one_name_make_one_image(st):
    for lane in ("c1", "c2", "c3"):
        ok(cli(st, "lane", "create", lane, "--image", "debian-bookworm"))
        ok(sh(st, "echo %s > /root/who" % lane, "--image", "debian-bookworm", "--lane", lane))
    procs = [subprocess.Popen([CELL_BIN, "--state", str(st), "lane", "commit", lane, "race"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for lane in ("c1", "c2", "c3", "c1")]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    assert sum(rc == 0 for rc, _ in results) == 1, results
    for rc, err in results:
        # The second commit of c1 is refused by the first one's lock, which names it.
        assert rc == 0 or "already exists" in err or "attached" in err or "is being committed into image" in err, \
            results
    who = (st / "images" / "race" / "rootfs" / "root" / "who").read_text()
    assert who in ("c1\n", "c2\n", "c3\n")
    assert not [n for n in os.listdir(st / "images") if ".tmp-" in n]


# ---- cell image export ----------------------------------------------------------------------


def _blob(tf, digest):
    import hashlib
    data = tf.extractfile("blobs/sha256/" + digest.split(":", 1)[1]).read()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest
    return data


def test_export_is_an_oci_layout_that_imports_back(st, tmp_path):
    import io
    import pty
    import tarfile
    lane = prepared_lane(st)
    ok(cli(st, "lane", "commit", lane, "snap"))
    out, again = tmp_path / "snap.tar", tmp_path / "again.tar"
    ok(cli(st, "image", "export", "snap", str(out)))
    ok(cli(st, "image", "export", "snap", str(again)))
    assert out.read_bytes() == again.read_bytes()  # deterministic
    with tarfile.open(out) as tf:
        assert tf.getnames()[:2] == ["oci-layout", "index.json"]
        assert json.load(tf.extractfile("oci-layout")) == {"imageLayoutVersion": "1.0.0"}
        index = json.load(tf.extractfile("index.json"))
        (mdesc,) = index["manifests"]
        manifest = json.loads(_blob(tf, mdesc["digest"]))
        assert manifest["schemaVersion"] == 2 and len(manifest["layers"]) == 1
        config = json.loads(_blob(tf, manifest["config"]["digest"]))
        layer = _blob(tf, manifest["layers"][0]["digest"])
        assert len(layer) == manifest["layers"][0]["size"]
        assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    with tarfile.open(fileobj=io.BytesIO(layer)) as lt:
        members = lt.getmembers()
        names = [m.name.rstrip("/") for m in members]
        assert "root/new" in names and "etc/deleted" not in names and "gone" not in names
        assert all(m.uname == "" and m.gname == "" for m in members)
        assert lt.getmember("root/new").mode == 0o600 and lt.getmember("root/new").uid == 0
        assert lt.getmember("root/link").issym() and lt.getmember("root/link").linkname == "/root/new"
    # Round trip: imported under another name, it boots with the same files.
    ok(cli(st, "image", "import", "back", str(out)))
    r = ok(sh(st, "cat /root/new /etc/changed; ls /opaque; test -e /etc/deleted || echo gone", "--image", "back"))
    assert r.stdout == "new\nlane\nfresh\ngone\n"
    a = json.loads((st / "images" / "snap" / "image.json").read_text())["config"]
    b = json.loads((st / "images" / "back" / "image.json").read_text())["config"]
    assert {k: v for k, v in a.items() if v} == {k: v for k, v in b.items() if v}
    # Refusals: host, unknown, an existing file, a terminal.
    r = cli(st, "image", "export", "host", str(tmp_path / "h.tar"))
    assert r.returncode != 0 and not (tmp_path / "h.tar").exists()
    r = cli(st, "image", "export", "nosuch", str(tmp_path / "n.tar"))
    assert r.returncode != 0 and "nosuch" in r.stderr and not (tmp_path / "n.tar").exists()
    r = cli(st, "image", "export", "snap", str(out))
    assert r.returncode != 0 and "exists" in r.stderr
    master, slave = pty.openpty()
    try:
        p = subprocess.run([CELL_BIN, "--state", str(st), "image", "export", "snap"], stdout=slave,
                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=60, text=True)
        assert p.returncode != 0 and "terminal" in p.stderr
    finally:
        os.close(master)
        os.close(slave)
