"""cell image import / ls / rm (issue 13, "Images"): OCI image layout and
docker-archive tars built here from busybox (ocibuild.py), booted, their
whiteouts and config honoured; hostile archives and layers refused with
nothing left behind; blobs shared between images stored once."""
import json
import os
import shutil
import time

import pytest

from conftest import popen_cell, stop_proc, wait_for_cell_id
from ocibuild import (CONFIG, busybox_base, docker_archive, oci_archive, sha, tar_bytes,
                      whiteout_layer)


@pytest.fixture(scope="module")
def base():
    return busybox_base()


def write(tmp_path, name, data):
    p = tmp_path / name
    p.write_bytes(data)
    return str(p)


def images_dir(state):
    return os.path.join(state, "images")


def leftovers(state):
    """Staging or removal directories left in images/."""
    d = images_dir(state)
    return ([n for n in os.listdir(d) if n.startswith(".") and any(w in n for w in (".import-", ".rm-", ".new"))]
            if os.path.isdir(d) else [])


def image_ls(run):
    r = run(["image", "ls", "--json"])
    assert r.returncode == 0, r.stderr
    return {i["name"]: i for i in json.loads(r.stdout)["images"]}


def imported(run, tmp_path, name, data, *extra):
    r = run(["image", "import", name, write(tmp_path, name + ".tar", data)] + list(extra))
    assert r.returncode == 0, r.stderr
    return r


def refused(run, state, tmp_path, name, data, words, *extra):
    r = run(["image", "import", name, write(tmp_path, name + ".tar", data)] + list(extra))
    assert r.returncode != 0, r.stdout
    for w in words:
        assert w in r.stderr, r.stderr
    assert not os.path.exists(os.path.join(images_dir(state), name))
    assert leftovers(state) == []
    return r


# ---- what an image is made of ---------------------------------------------------------


def test_oci_layout_boots_with_whiteouts_opaque_dirs_and_owners(run, state, tmp_path, base):
    data, digest = oci_archive([base, whiteout_layer()], CONFIG, gz=True)
    imported(run, tmp_path, "bb", data)
    info = image_ls(run)["bb"]
    assert info["digest"] == digest and info["source"] == "import" and info["ready"]
    assert info["size"] > 1000000 and info["created"] > 0 and info["lanes"] == []
    r = run(["run", "--image", "bb", "--", "/bin/busybox", "ls", "/a", "/etc"])
    assert r.returncode == 0, r.stderr
    # a/old and a/sub are the lower layer's, hidden by the opaque marker;
    # a/early came before the marker in the same layer and stays.
    a, etc = r.stdout.split("/etc:")
    assert sorted(a.split()[1:]) == ["early", "new"]
    assert "gone" not in etc and "passwd" in etc
    r = run(["run", "--image", "bb", "--", "/bin/busybox", "stat", "-c", "%u:%g %a", "/home/app/owned", "/tmp"])
    assert r.stdout.split("\n")[:2] == ["1234:1235 600", "0:0 1777"], r.stdout + r.stderr
    meta = json.load(open(os.path.join(images_dir(state), "bb", "image.json")))
    assert meta["digest"] == digest and len(meta["layers"]) == 2 and meta["config"]["WorkingDir"] == "/a"
    for layer in meta["layers"]:
        assert os.path.isfile(os.path.join(images_dir(state), "blobs", "sha256", layer[7:]))


def test_docker_archive_runs_entrypoint_and_cmd_with_env_and_workdir(run, tmp_path, base):
    imported(run, tmp_path, "bbd", docker_archive([base, whiteout_layer()], CONFIG))
    r = run(["run", "--image", "bbd"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:3] == ["hello from the image", "/a", "0"]
    # what the command line gives wins over the image's config
    r = run(["run", "--image", "bbd", "--env", "GREETING=mine", "--cwd", "/tmp", "--user", "7:8", "--",
             "/bin/sh", "-c", "echo $GREETING $PATH; pwd; id -u; id -g; ls /a"])
    assert r.stdout.split("\n")[:5] == ["mine /bin", "/tmp", "7", "8", "early"] or \
        r.stdout.split("\n")[:4] == ["mine /bin", "/tmp", "7", "8"], r.stdout + r.stderr


@pytest.mark.skipif(not shutil.which("zstd"), reason="needs the zstd program")
def test_zstd_layers(run, tmp_path, base):
    imported(run, tmp_path, "zst", oci_archive([base, whiteout_layer()], CONFIG, zstd=True)[0])
    r = run(["run", "--image", "zst", "--", "/bin/busybox", "ls", "/a"])
    assert r.stdout.split() == ["early", "new"], r.stdout + r.stderr


def test_config_user_by_name_and_by_number(run, tmp_path, base):
    cfg = dict(CONFIG, User="app", Cmd=["id -u; id -g; echo $HOME"])
    imported(run, tmp_path, "named", oci_archive([base], cfg)[0])
    r = run(["run", "--image", "named"])
    assert r.stdout.split("\n")[:2] == ["1234", "1235"], r.stdout + r.stderr
    imported(run, tmp_path, "grp", oci_archive([base], dict(cfg, User="app:staff"))[0])
    assert run(["run", "--image", "grp"]).stdout.split("\n")[:2] == ["1234", "50"]
    imported(run, tmp_path, "num", oci_archive([base], dict(cfg, User="42:43"))[0])
    assert run(["run", "--image", "num"]).stdout.split("\n")[:2] == ["42", "43"]
    # a name the image does not know fails the run, rather than running as root
    imported(run, tmp_path, "nouser", oci_archive([base], dict(cfg, User="ghost"))[0])
    r = run(["run", "--image", "nouser"])
    assert r.returncode != 0 and "ghost" in r.stderr


def test_passwd_symlink_to_the_host_is_resolved_inside_the_image(run, tmp_path, base):
    """A layer makes /etc/passwd a link to the host's: User is looked up in
    the image (where the link leads nowhere), never in the host's file."""
    top = tar_bytes([("etc", "dir"), ("etc/passwd", "sym", "/../../../../../etc/passwd")])
    imported(run, tmp_path, "lnk", oci_archive([base, top], dict(CONFIG, User="root"))[0])
    r = run(["run", "--image", "lnk"])
    assert r.returncode != 0 and "root" in r.stderr


@pytest.mark.parametrize("kind", ["fifo", "dir"])
def test_passwd_that_is_not_a_file_fails_the_run_without_blocking(run, state, tmp_path, base, kind):
    """A layer makes /etc/passwd a FIFO (whose open would wait for a writer
    that never comes, holding the caller) or a directory: User lookup
    refuses it at once, naming the file."""
    top = tar_bytes([("etc", "dir"), ("etc/passwd", kind)])
    r = run(["image", "import", "pw" + kind, write(tmp_path, "pw.tar", oci_archive([base, top], dict(CONFIG, User="app"))[0])])
    if r.returncode != 0:  # refused at import: nothing to look up later
        assert not os.path.exists(os.path.join(images_dir(state), "pw" + kind))
        return
    r = run(["run", "--image", "pw" + kind], timeout=60)
    assert r.returncode != 0 and "passwd" in r.stderr, r.stdout + r.stderr


def test_passwd_made_a_fifo_in_a_lane_and_committed_does_not_block(run, state, tmp_path, base):
    """The path import cannot see: a cell working in a lane replaces
    /etc/passwd with a FIFO, the lane is committed into an image that keeps
    the base's User.  Commit leaves FIFOs out (docs/architecture.md), so the
    image has no passwd; either way a run fails at once naming the file and
    never blocks (lookup_id also opens it O_NONBLOCK, for any other way in)."""
    imported(run, tmp_path, "pwbase", oci_archive([base], dict(CONFIG, User="app"))[0])
    assert run(["lane", "create", "pwlane", "--image", "pwbase"]).returncode == 0
    r = run(["run", "--image", "pwbase", "--lane", "pwlane", "--user", "0", "--", "/bin/busybox", "sh", "-c",
             "/bin/busybox rm /etc/passwd && /bin/busybox mkfifo /etc/passwd && /bin/busybox test -p /etc/passwd"])
    assert r.returncode == 0, r.stdout + r.stderr
    r = run(["lane", "commit", "pwlane", "pwfifo"])
    if r.returncode != 0:  # a commit that refuses the FIFO leaves nothing to run
        assert not os.path.exists(os.path.join(images_dir(state), "pwfifo")), r.stderr
        return
    r = run(["run", "--image", "pwfifo"], timeout=60)
    assert r.returncode != 0 and "passwd" in r.stderr, r.stdout + r.stderr


def test_identical_layers_are_stored_once(run, state, tmp_path, base):
    imported(run, tmp_path, "one", oci_archive([base], CONFIG)[0])
    imported(run, tmp_path, "two", oci_archive([base, whiteout_layer()], CONFIG, gz=False)[0])
    blobs = os.listdir(os.path.join(images_dir(state), "blobs", "sha256"))
    assert blobs.count(sha(base)) == 1
    # 2 manifests, 2 configs, the base and the second layer
    assert len(blobs) == 6, blobs
    one, two = image_ls(run)["one"], image_ls(run)["two"]
    assert one["digest"] != two["digest"]


def test_multi_platform_index_picks_linux_amd64_or_names_what_it_found(run, state, tmp_path, base):
    data, digest = oci_archive([base], CONFIG, platform={"os": "linux", "architecture": "arm64"})
    refused(run, state, tmp_path, "arm", data, ["no linux/amd64", "linux/arm64"])
    data, digest = oci_archive([base], CONFIG, platform={"os": "linux", "architecture": "amd64"})
    imported(run, tmp_path, "amd", data)
    assert image_ls(run)["amd"]["digest"] == digest


def test_names_builtins_and_existing_images_are_refused(run, state, tmp_path, base):
    data = oci_archive([base], CONFIG)[0]
    for name, word in (("host", "builtin"), ("debian-bookworm", "builtin"), ("desktop", "builtin"),
                       ("blobs", "reserved"), ("Upper", "invalid"), (".hidden", "invalid"), ("a/b", "invalid"),
                       ("x" * 64, "invalid")):
        r = run(["image", "import", name, write(tmp_path, "n.tar", data)])
        assert r.returncode != 0 and word in r.stderr, (name, r.stderr)
    imported(run, tmp_path, "dup", data)
    r = run(["image", "import", "dup", write(tmp_path, "n.tar", data)])
    assert r.returncode != 0 and "already exists" in r.stderr
    assert leftovers(state) == []


def test_stdin_import(run, state, base):
    import subprocess
    from conftest import cell_argv
    data = oci_archive([base], CONFIG)[0]
    r = subprocess.run(cell_argv(state, ["image", "import", "piped", "-"]), input=data, capture_output=True)
    assert r.returncode == 0, r.stderr
    assert "piped" in image_ls(run)


# ---- hostile archives and layers ------------------------------------------------------


def test_blob_digest_mismatch_is_refused_naming_the_blob(run, state, tmp_path, base):
    layer = whiteout_layer()

    def tamper(h, b):
        return b.replace(b"new\n", b"NEW\n") if h == sha(layer) else b
    refused(run, state, tmp_path, "tampered", oci_archive([base, layer], CONFIG, tamper=tamper)[0],
            ["sha256:" + sha(layer), "does not match its digest"])


def test_docker_layer_not_matching_diff_ids_is_refused(run, state, tmp_path, base):
    data = docker_archive([base, whiteout_layer()], CONFIG)
    data = data.replace(b"delete me\n", b"DELETE ME\n")  # inside the base layer.tar
    refused(run, state, tmp_path, "dtampered", data, ["does not match its digest"])


def test_manifest_naming_a_missing_blob_is_refused(run, state, tmp_path, base):
    layer = whiteout_layer()
    refused(run, state, tmp_path, "missing", oci_archive([base, layer], CONFIG, drop="sha256:" + sha(layer))[0],
            ["sha256:" + sha(layer), "does not hold"])


def test_huge_json_is_refused(run, state, tmp_path, base):
    index = b'{"schemaVersion": 2, "manifests": [], "pad": "' + b"x" * (5 << 20) + b'"}'
    refused(run, state, tmp_path, "hugejson", oci_archive([base], CONFIG, index=index)[0], ["index.json", "JSON"])
    refused(run, state, tmp_path, "badjson", oci_archive([base], CONFIG, index=b"{not json")[0],
            ["index.json is not valid JSON"])


def test_not_an_image_archive(run, state, tmp_path):
    refused(run, state, tmp_path, "junk", os.urandom(4096), ["tar"])
    refused(run, state, tmp_path, "plain", tar_bytes([("hello", "file", b"hi")]), ["neither an OCI"])


@pytest.mark.parametrize("entries,words", [
    ([("../../escape", "file", b"x")], ["leaves the image"]),
    ([("a/../../escape", "file", b"x")], ["leaves the image"]),
    ([("/etc/evil", "file", b"x")], ["absolute path"]),
    ([("null", "chr", (1, 3))], ["device"]),
    ([("zero", "chr", (0, 0))], ["device"]),
    ([("shadow", "hard", "/etc/shadow")], ["/etc/shadow", "absolute path"]),
    ([("shadow", "hard", "etc/shadow")], ["hard link", "not a file of the image"]),
    ([("up", "hard", "../../../../etc/shadow")], ["leaves the image"]),
    ([("dir", "dir"), ("dirlink", "hard", "dir")], ["not a file of the image"]),
    ([("big", "file", b"x", 0o644, 70000, 0)], ["65535"]),
])
def test_hostile_layer_entries_are_refused(run, state, tmp_path, base, entries, words):
    before = os.stat("/etc/shadow").st_nlink
    refused(run, state, tmp_path, "hostile", oci_archive([base, tar_bytes(entries)], CONFIG)[0], words)
    assert os.stat("/etc/shadow").st_nlink == before


def test_symlinks_cannot_carry_writes_out_of_the_image(run, state, tmp_path, base):
    """A layer plants links to a host directory, absolute and relative, then
    writes through them: the names resolve inside the new rootfs (where the
    targets do not exist: refused) or land inside it, never on the host."""
    host = tmp_path / "hostdir"
    host.mkdir()
    for target in (str(host), "../../../../../../.." + str(host)):
        layer = tar_bytes([("evil", "sym", target), ("evil/pwned", "file", b"owned")])
        r = run(["image", "import", "sym", write(tmp_path, "s.tar", oci_archive([base, layer], CONFIG)[0])])
        assert not (host / "pwned").exists()
        if r.returncode == 0:
            run(["image", "rm", "sym"])
    # a link to the image's own root: the write lands in the image
    layer = tar_bytes([("root-link", "sym", "/"), ("root-link/tmp/inside", "file", b"in")])
    imported(run, tmp_path, "inroot", oci_archive([base, layer], CONFIG)[0])
    assert os.path.isfile(os.path.join(images_dir(state), "inroot", "rootfs", "tmp", "inside"))
    assert not os.path.exists("/tmp/inside") or open("/tmp/inside", "rb").read() != b"in"
    assert leftovers(state) == []


def test_gzip_bomb_stops_at_the_size_limit(run, state, tmp_path, base):
    bomb = tar_bytes([("zeros", "file", b"\0" * (64 << 20), 0o644)])
    data = oci_archive([base, bomb], CONFIG, gz=True)[0]
    assert len(data) < (2 << 20)
    refused(run, state, tmp_path, "bomb", data, ["size limit"], "--max-image-size", "32M")
    # the archive itself counts too
    refused(run, state, tmp_path, "bomb2", oci_archive([base], CONFIG)[0], ["size limit"], "--max-image-size", "1M")


def test_setuid_files_are_kept(run, state, tmp_path, base):
    layer = tar_bytes([("bin", "dir"), ("bin/su-ish", "file", b"#!/bin/sh\n", 0o4755)])
    imported(run, tmp_path, "suid", oci_archive([base, layer], CONFIG)[0])
    st = os.stat(os.path.join(images_dir(state), "suid", "rootfs", "bin", "su-ish"))
    assert st.st_mode & 0o7777 == 0o4755
    # the state directory is root's alone: no host user reaches it
    assert os.stat(images_dir(state)).st_mode & 0o077 == 0


def test_a_killed_import_is_swept_by_the_next(run, state, tmp_path, base):
    """An import killed mid-way (SIGKILL: no cleanup of its own) leaves its
    staging directory; the next import removes it, never one in progress."""
    import signal
    import subprocess
    from conftest import cell_argv
    data = oci_archive([base], CONFIG)[0]
    p = subprocess.Popen(cell_argv(state, ["image", "import", "crash", "-"]), stdin=subprocess.PIPE,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        p.stdin.write(data[:len(data) // 2])
        p.stdin.flush()
        deadline = time.monotonic() + 20
        while not leftovers(state) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert leftovers(state), "no staging directory appeared"
        # one in progress is not swept by another import
        imported(run, tmp_path, "beside", oci_archive([base], dict(CONFIG, Cmd=["true"]))[0])
        assert any(".crash" + ".import-" in n for n in leftovers(state))
    finally:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    assert leftovers(state)
    imported(run, tmp_path, "after", oci_archive([base], dict(CONFIG, Cmd=["false"]))[0])
    assert leftovers(state) == []
    assert "crash" not in image_ls(run)


# ---- rm -------------------------------------------------------------------------------


def test_rm_refuses_while_a_lane_uses_the_image(run, state, tmp_path, base):
    imported(run, tmp_path, "busy", oci_archive([base], CONFIG)[0])
    assert run(["lane", "create", "ln", "--image", "busy"]).returncode == 0
    assert image_ls(run)["busy"]["lanes"] == ["ln"]
    r = run(["image", "rm", "busy"])
    assert r.returncode != 0 and "lane ln" in r.stderr
    r = run(["run", "--lane", "ln"])   # the lane's image config applies too
    assert r.stdout.split("\n")[:2] == ["hello from the image", "/a"], r.stdout + r.stderr
    assert run(["lane", "rm", "ln"]).returncode == 0
    r = run(["image", "rm", "busy"])
    assert r.returncode == 0, r.stderr
    assert "busy" not in image_ls(run)
    r = run(["run", "--image", "busy", "--", "/bin/sh", "-c", "true"])
    assert r.returncode != 0 and "unknown image" in r.stderr
    assert run(["image", "rm", "busy"]).returncode != 0
    assert run(["image", "rm", "host"]).returncode != 0
    assert leftovers(state) == []


def test_rm_refuses_while_a_cell_runs_the_image(run, state, tmp_path, base):
    imported(run, tmp_path, "running", oci_archive([base], CONFIG)[0])
    p = popen_cell(state, ["run", "--image", "running", "--", "/bin/sleep", "60"])
    try:
        cid = wait_for_cell_id(state)
        # Its run dir appears (locked) before the cell marks the image it
        # boots: the removal is tried once the mark is there.
        mark = os.path.join(state, "run", "cells", cid, "image")
        deadline = time.monotonic() + 15
        while not os.path.exists(mark) and time.monotonic() < deadline:
            time.sleep(0.02)
        r = run(["image", "rm", "running"])
        assert r.returncode != 0 and "cell " + cid in r.stderr, r.stderr
        assert "running" in image_ls(run)
    finally:
        stop_proc(p)
    deadline = time.monotonic() + 10
    while run(["image", "rm", "running"]).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert "running" not in image_ls(run)


# ---- the daemon: POST /v1/images/{name}/import, GET /v1/images, DELETE ------------------

import daemon as dm  # noqa: E402
from daemon import assert_problem, uniq  # noqa: E402

TAR = {"Content-Type": "application/x-tar"}


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("images"), ["--max-file-size", "64M"])


def test_api_import_list_boot_and_delete(d, base):
    admin = d.client()
    name = uniq("img")
    data, digest = oci_archive([base, whiteout_layer()], CONFIG, gz=True)
    r = admin.call("POST", "/v1/images/%s/import" % name, body=data, headers=TAR)
    assert r.status == 201, r
    assert r.body["name"] == name and r.body["digest"] == digest and r.body["source"] == "import"
    listed = {i["name"]: i for i in admin.get("/v1/images").body["images"]}
    assert listed[name]["digest"] == digest and listed[name]["size"] > 1000000 and listed[name]["created"] > 0
    assert listed["host"]["source"] == "builtin"
    assert admin.get("/v1/images/%s" % name).body["digest"] == digest
    # shared with no tenant yet: to tenants it does not exist
    tname, other = uniq("t"), d.tenant(uniq("o"))
    tenant = d.tenant(tname)
    assert name not in [i["name"] for i in tenant.get("/v1/images").body["images"]]
    assert_problem(tenant.get("/v1/images/%s" % name), 404, "not_found")
    assert_problem(tenant.post("/v1/cells", {"image": name, "resources": {"memory": "64M"}}), 400,
                   "invalid_request", "unknown image")
    assert_problem(tenant.post("/v1/lanes", {"name": uniq("l"), "image": name}), 400, "invalid_request",
                   "unknown image")
    r = admin.put("/v1/images/%s/tenants" % name, {"tenants": [tname]})
    assert r.status == 200 and r.body["tenants"] == [tname], r
    assert tenant.get("/v1/images/%s" % name).body["digest"] == digest
    assert_problem(other.get("/v1/images/%s" % name), 404, "not_found")
    # a tenant it is shared with boots it; its processes see the image
    c = tenant.post("/v1/cells", {"image": name, "resources": {"memory": "64M"}})
    assert c.status == 201, c
    try:
        out = tenant.post("/cells/%s/v1/processes/run" % c.body["id"],
                          {"command": "/bin/busybox", "args": ["ls", "/a"]})
        assert out.status == 200 and out.body["stdout"].split() == ["early", "new"], out
        # the image's Env and WorkingDir are the cell's defaults
        out = tenant.post("/cells/%s/v1/processes/run" % c.body["id"],
                          {"command": "/bin/sh", "args": ["-c", "echo $GREETING; pwd"]})
        assert out.body["stdout"].split("\n")[:2] == ["hello from the image", "/a"], out
        assert_problem(admin.delete("/v1/images/%s" % name), 409, "conflict", "cell")
    finally:
        assert tenant.delete("/v1/cells/%s" % c.body["id"]).status == 204
    assert admin.put("/v1/images/%s/tenants" % name, {"tenants": ["*"]}).status == 200
    assert other.get("/v1/images/%s" % name).status == 200
    r = admin.delete("/v1/images/%s" % name)
    assert r.status == 200, r
    assert_problem(admin.get("/v1/images/%s" % name), 404, "not_found")
    assert not os.path.exists(os.path.join(d.state, "images", ".shares", name))
    assert_problem(admin.delete("/v1/images/%s" % name), 404, "not_found")


def test_api_refuses_bad_imports(d, base):
    admin = d.client()
    data = oci_archive([base], CONFIG)[0]
    tenant = d.tenant(uniq("t"))
    assert_problem(tenant.call("POST", "/v1/images/%s/import" % uniq("img"), body=data, headers=TAR), 403, "forbidden")
    assert_problem(tenant.delete("/v1/images/host"), 403, "forbidden")
    assert_problem(admin.call("POST", "/v1/images/%s/import" % uniq("img"), body=data,
                              headers={"Content-Type": "application/json"}), 400, "invalid_request", "Content-Type")
    for bad in ("host", "debian-bookworm", "blobs", "UPPER", ".dot"):
        assert_problem(admin.call("POST", "/v1/images/%s/import" % bad, body=data, headers=TAR), 400,
                       "invalid_request")
    assert_problem(admin.call("POST", "/v1/images/%s/import" % uniq("img"), body=b"", headers=TAR), 400,
                   "invalid_request", "empty")
    assert_problem(admin.call("POST", "/v1/images/%s/import" % uniq("img"), body=os.urandom(100000), headers=TAR),
                   400, "invalid_request")
    layer = whiteout_layer()

    def tamper(h, b):
        return b.replace(b"new\n", b"NEW\n") if h == sha(layer) else b
    assert_problem(admin.call("POST", "/v1/images/%s/import" % uniq("img"), headers=TAR,
                              body=oci_archive([base, layer], CONFIG, tamper=tamper)[0]),
                   400, "invalid_request", ["sha256:" + sha(layer), "does not match"])
    # past --max-file-size: refused while streaming
    big = tar_bytes([("f", "file", os.urandom(1 << 20))]) * 70
    try:
        r = admin.call("POST", "/v1/images/%s/import" % uniq("img"), body=big, headers=TAR)
        assert r.status in (400, 413), r
    except (BrokenPipeError, ConnectionResetError):
        pass  # refused before the whole body was sent
    assert_problem(admin.delete("/v1/images/host"), 400, "invalid_request", "builtin")
    # sharing: admin only, a list of names, a known non-builtin image
    assert_problem(tenant.put("/v1/images/host/tenants", {"tenants": ["*"]}), 403, "forbidden")
    assert_problem(admin.put("/v1/images/host/tenants", {"tenants": ["*"]}), 400, "invalid_request", "builtin")
    assert_problem(admin.put("/v1/images/nope/tenants", {"tenants": ["*"]}), 404, "not_found")
    for bad in ({}, {"tenants": "*"}, {"tenants": [1]}, {"tenants": [""]}, {"tenants": ["x" * 64]},
                {"tenants": ["a"] * 1025}):
        assert_problem(admin.put("/v1/images/nope/tenants", bad), 400, "invalid_request")
    assert_problem(admin.delete("/v1/images/nope"), 404, "not_found")
    names = [i["name"] for i in admin.get("/v1/images").body["images"]]
    assert names[:3] == ["host", "debian-bookworm", "desktop"]
    leftovers_ = [n for n in os.listdir(os.path.join(d.state, "images")) if n.startswith(".")]
    assert all(not (".import-" in n or ".rm-" in n) for n in leftovers_), leftovers_


def test_api_two_imports_of_one_name_race(d, base):
    """Concurrent imports of one name: one wins, the other is a 409, no
    staging dir stays."""
    import threading
    admin = d.client()
    name = uniq("race")
    data = oci_archive([base], CONFIG)[0]
    results = []

    def go():
        results.append(admin.call("POST", "/v1/images/%s/import" % name, body=data, headers=TAR).status)
    ts = [threading.Thread(target=go) for _ in range(3)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(results)[0] == 201 and results.count(201) == 1 and set(results) <= {201, 409}, results
    # Concurrent DELETEs of it: exactly one removes it, the others are 404s.
    gate, dels = threading.Barrier(4), []

    def rm():
        gate.wait()
        dels.append(admin.delete("/v1/images/%s" % name))
    ts = [threading.Thread(target=rm) for _ in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(r.status for r in dels) == [200, 404, 404, 404], dels
    assert all(r.body["type"].endswith(":not_found") for r in dels if r.status == 404), dels
    assert [n for n in os.listdir(os.path.join(d.state, "images")) if ".import-" in n or ".rm-" in n] == []
