"""Masks in mounts (`cell run --mount SRC:DST[:ro] --mask PATH`, `--overlay
... --mask PATH`, cell_options_add_mask, POST /v1/cells mounts[].mask).

A masked path is absent (ENOENT) in read-only binds and in overlays, and an
empty private copy (a tmpfs file or directory mounted over it) in
read-write binds.  Each bypass is tried, in each kind of mount, as the
cell's root and as a non-root uid:
- a symlink elsewhere in the tree pointing at the masked file (relative and
  absolute), /proc/self/root and /proc/1/root paths, `..` walks;
- a mask path with a symlink component, or that is a symlink, is refused;
- `..`, `.`, absolute and empty mask paths are refused at definition;
- a second hard link to a masked file elsewhere in the mount is refused,
  naming the link (one outside the mount is fine);
- renaming the masked file's parent (and the file itself) in a rw bind:
  the empty copy stays over the content, which never shows;
- the same tree mounted a second time (the same source, its parent, a
  child) is refused;
- writes to the empty copy never reach the host file;
- a masked path that does not exist: ro/overlay hide one created later on
  the host; rw has nothing to cover.
The host tree is the same afterwards (bytes and metadata).
"""
import hashlib
import json
import os
import stat

import pytest

import daemon as dm
from conftest import run_cell

OWNER = 1000
SECRET = b"TOPSECRET-token\n"
GITCFG = b"[remote]\n url = https://user:TOPSECRET@example.com/r.git\n"


def snapshot(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for name in [""] + sorted(dirs + files):
            if name == "" and d != root:
                continue
            p = os.path.join(d, name) if name else d
            st = os.lstat(p)
            entry = [st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_mtime_ns, st.st_ino, st.st_nlink]
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    entry.append(hashlib.sha256(f.read()).hexdigest())
            elif stat.S_ISLNK(st.st_mode):
                entry.append(os.readlink(p))
            out[os.path.relpath(p, root)] = entry
    return out


def make_repo(hostdir):
    """A checkout owned by OWNER with .env, .git/config, secrets/ and links
    (relative and absolute) pointing at the masked files."""
    repo = os.path.join(hostdir, "repo")
    os.makedirs(os.path.join(repo, ".git"))
    os.makedirs(os.path.join(repo, "secrets/deep"))
    os.makedirs(os.path.join(repo, "src"))
    files = {".env": SECRET, ".git/config": GITCFG, ".git/HEAD": b"ref: refs/heads/main\n",
             "secrets/key": SECRET, "secrets/deep/k2": SECRET, "src/main.c": b"int main;\n",
             "README": b"readme\n"}
    for rel, data in files.items():
        with open(os.path.join(repo, rel), "wb") as f:
            f.write(data)
    os.symlink("../.env", os.path.join(repo, "src/envlink"))
    os.symlink("/w/.env", os.path.join(repo, "abslink"))
    os.symlink("secrets", os.path.join(repo, "seclink"))
    for d, dirs, fs in os.walk(repo):
        for n in dirs + fs + [""]:
            os.lchown(os.path.join(d, n) if n else d, OWNER, OWNER)
    os.chmod(os.path.join(repo, ".env"), 0o600)
    return repo


@pytest.fixture
def repo(hostdir):
    r = make_repo(hostdir)
    before = snapshot(r)
    yield r
    assert snapshot(r) == before, "the host directory changed"


MASKS = ["--mask", ".env", "--mask", ".git/config", "--mask", "secrets"]

# Every way to name a masked file; each prints its content or an error.
READ_ALL = r"""
cd /w
for p in .env .git/config secrets/key secrets/deep/k2 src/envlink abslink seclink/key /w/src/../.env \
         /proc/self/root/w/.env /proc/1/root/w/.git/config /proc/self/cwd/.env ./.git/../.env; do
    if out=$(cat "$p" 2>&1); then echo "READ $p: $out"; else echo "NO $p: $out"; fi
done
ls -A /w | tr '\n' ' '; echo
ls -A /w/.git | tr '\n' ' '; echo
cat README src/main.c .git/HEAD
grep -r TOPSECRET /w 2>/dev/null && echo LEAK-GREP
tar cf - -C /w . 2>/dev/null | grep -a -c TOPSECRET || true
"""


def cell_run(run, mount, script, user=None, masks=MASKS):
    args = ["run"] + mount + masks
    if user is not None:
        args += ["--user", str(user)]
    return run(args + ["--", "sh", "-c", script])


@pytest.mark.parametrize("user", [None, OWNER])
@pytest.mark.parametrize("kind", ["ro", "overlay"])
def test_masked_paths_are_absent(run, repo, kind, user):
    mount = ["--mount", "%s:/w:ro" % repo] if kind == "ro" else ["--overlay", "%s:/w" % repo]
    r = cell_run(run, mount, READ_ALL, user)
    assert r.returncode == 0, r
    assert "TOPSECRET" not in r.stdout, r.stdout
    for line in r.stdout.splitlines():
        if line.startswith(("READ", "NO")):
            # /proc/1 (cell-init) is not dumpable: its root is EACCES.
            assert line.startswith("NO") and ("No such file" in line or
                                              (line.startswith("NO /proc/1/") and "Permission denied" in line)), line
    listing = r.stdout.split("\n")
    assert ".env" not in listing[-6].split() and "secrets" not in listing[-6].split(), r.stdout
    assert "README" in r.stdout and "src" in r.stdout and "HEAD" in r.stdout
    assert "int main;" in r.stdout and "ref: refs/heads/main" in r.stdout
    assert r.stdout.rstrip().endswith("0"), r.stdout


def test_masked_dirs_keep_their_parent_attributes(run, repo):
    """The whiteout layer's .git/ and root show the host directories' owner,
    mode and modification time."""
    os.chmod(os.path.join(repo, ".git"), 0o750)
    try:
        want = ["1000:1000 %s %d" % (mode, os.stat(p).st_mtime)
                for mode, p in (("750", os.path.join(repo, ".git")), ("755", repo))]
        for mount in (["--mount", "%s:/w:ro" % repo], ["--overlay", "%s:/w" % repo]):
            r = run(["run"] + mount + MASKS + ["--", "stat", "-c", "%u:%g %a %Y", "/w/.git", "/w"])
            assert r.returncode == 0, r
            got = r.stdout.split("\n")[:2]
            # An overlay's root is its upper directory (ovl_make_upper: owner and mode only).
            assert got[0] == want[0] and (got[1] == want[1] or mount[0] == "--overlay"), (mount, got, want)
    finally:
        os.chmod(os.path.join(repo, ".git"), 0o755)


@pytest.mark.parametrize("user", [None, OWNER])
def test_rw_masks_are_empty_private_copies(run, repo, user):
    r = cell_run(run, ["--mount", "%s:/w" % repo], READ_ALL, user)
    assert r.returncode == 0, r
    assert "TOPSECRET" not in r.stdout, r.stdout
    for p in (".env", ".git/config", "src/envlink", "/proc/self/root/w/.env", "/w/src/../.env"):
        assert "READ %s: \n" % p in r.stdout, (p, r.stdout)
    assert "NO secrets/key" in r.stdout and "NO seclink/key" in r.stdout


def test_rw_mask_copies_are_writable_and_never_reach_the_host(run, repo):
    script = r"""
cd /w
stat -c '%u:%g %a %s' .env secrets
echo written > .env && cat .env
echo more > .git/config && cat .git/config
mkdir secrets/new && echo n > secrets/new/f && ls secrets | tr '\n' ' '; echo
cat .env
"""
    for user in (None, OWNER):
        r = cell_run(run, ["--mount", "%s:/w" % repo], script, user)
        assert r.returncode == 0, r
        lines = r.stdout.split("\n")
        assert lines[0] == "1000:1000 600 0" and lines[1].startswith("1000:1000 755"), r.stdout
        assert lines[2:6] == ["written", "more", "new ", "written"], r.stdout


RENAME = r"""
cd /w
mv .git git2 && echo renamed-parent
cat git2/config; echo "[$(cat git2/config)]"
mv git2 .git
mv .env other 2>&1 | sed 's/.*: //'; rm .env 2>&1 | sed 's/.*: //'
mv secrets s2 2>&1 | sed 's/.*: //'
mkdir d && mv .git d/ && cat d/.git/config && echo "[$(cat d/.git/config)]"
ln d/.git/config hl 2>&1 | sed 's/.*: //'
umount d/.git/config 2>&1 | sed 's/.*: //'
grep -r TOPSECRET /w && echo LEAK
mv d/.git .git && rmdir d
echo done
"""


@pytest.mark.parametrize("user", [None, OWNER])
def test_rw_rename_keeps_the_mask_over_the_content(run, hostdir, user):
    repo = make_repo(hostdir)
    r = cell_run(run, ["--mount", "%s:/w" % repo], RENAME, user)
    assert r.returncode == 0, r
    assert "TOPSECRET" not in r.stdout and "LEAK" not in r.stdout, r.stdout
    assert "renamed-parent\n[]\n" in r.stdout and "done" in r.stdout, r.stdout
    assert r.stdout.count("Device or resource busy") >= 3, r.stdout   # mv/rm of a mount point
    assert "Invalid cross-device link" in r.stdout, r.stdout          # ln of the copy
    with open(os.path.join(repo, ".git/config"), "rb") as f:
        assert f.read() == GITCFG
    with open(os.path.join(repo, ".env"), "rb") as f:
        assert f.read() == SECRET


@pytest.mark.parametrize("mode", ["ro", "rw", "overlay"])
def test_hard_link_elsewhere_is_refused_naming_it(run, hostdir, mode):
    repo = make_repo(hostdir)
    os.link(os.path.join(repo, ".env"), os.path.join(repo, "src/copy-of-env"))
    os.link(os.path.join(repo, "secrets/deep/k2"), os.path.join(hostdir, "outside-link"))
    try:
        mount = ["--overlay", "%s:/w" % repo] if mode == "overlay" else \
            ["--mount", "%s:/w%s" % (repo, ":ro" if mode == "ro" else "")]
        r = cell_run(run, mount, "cat /w/src/copy-of-env")
        assert r.returncode == 125 and "src/copy-of-env" in r.stderr and "hard link" in r.stderr, r
        assert "TOPSECRET" not in r.stdout
        # The link masked too, or only outside the mount: allowed.
        r = cell_run(run, mount, "cat /w/src/copy-of-env 2>&1; echo", masks=MASKS + ["--mask", "src/copy-of-env"])
        assert r.returncode == 0 and "TOPSECRET" not in r.stdout, r
    finally:
        os.unlink(os.path.join(repo, "src/copy-of-env"))
        os.unlink(os.path.join(hostdir, "outside-link"))


def test_symlink_masks_are_refused(run, repo):
    for mask in ("src/envlink", "seclink/key", "abslink"):
        r = cell_run(run, ["--mount", "%s:/w:ro" % repo], "true", masks=["--mask", mask])
        assert r.returncode == 125 and "symbolic link" in r.stderr and mask in r.stderr, (mask, r)


@pytest.mark.parametrize("mask,needle", [
    ("../etc/passwd", "'..'"), ("a/../../x", "'..'"), ("./.env", "'.'"), ("/etc/shadow", "absolute"),
    ("", "empty"), ("a//b", "empty component"), ("a/", "empty component"), ("x" * 300, "longer than"),
    ("y/" * 600, "bytes long"),
])
def test_bad_mask_paths_are_refused_at_definition(run, repo, mask, needle):
    r = cell_run(run, ["--mount", "%s:/w:ro" % repo], "true", masks=["--mask", mask])
    assert r.returncode == 125 and needle in r.stderr and "--mask" in r.stderr, (mask, r)


def test_mask_options_are_checked(run, repo):
    r = run(["run", "--mask", ".env", "--mount", "%s:/w" % repo, "--", "true"])
    assert r.returncode == 2 and "after the --mount" in r.stderr, r
    r = run(["run", "--tmpfs", "/t", "--mask", ".env", "--", "true"])
    assert r.returncode == 2 and "after the --mount" in r.stderr, r
    r = cell_run(run, ["--mount", "%s:/w" % repo], "true", masks=["--mask", ".git", "--mask", ".git/config"])
    assert r.returncode == 125 and "overlaps" in r.stderr, r
    r = cell_run(run, ["--mount", "%s:/w" % repo], "true", masks=["--mask", ".env", "--mask", ".env"])
    assert r.returncode == 125 and "overlaps" in r.stderr, r
    many = []
    for i in range(65):
        many += ["--mask", "m%d" % i]
    r = cell_run(run, ["--mount", "%s:/w" % repo], "true", masks=many)
    assert r.returncode == 125 and "64" in r.stderr, r
    r = cell_run(run, ["--mount", "%s/README:/w" % repo], "true", masks=["--mask", "x"])
    assert r.returncode == 125 and "directory" in r.stderr, r


@pytest.mark.parametrize("second", ["same", "parent", "child", "file"])
def test_the_same_tree_mounted_again_is_refused(run, repo, hostdir, second):
    src = {"same": repo, "parent": hostdir, "child": os.path.join(repo, "secrets"),
           "file": os.path.join(repo, ".env")}[second]
    r = run(["run", "--mount", "%s:/w" % repo] + MASKS + ["--mount", "%s:/again:ro" % src, "--",
                                                          "sh", "-c", "cat /again/.env /again/repo/.env /again"])
    assert r.returncode == 125 and "shares files with mount /w" in r.stderr, r
    assert "TOPSECRET" not in r.stdout
    if second != "file":
        r = run(["run", "--overlay", "%s:/again" % src, "--mount", "%s:/w:ro" % repo] + MASKS + ["--", "true"])
        assert r.returncode == 125 and "shares files" in r.stderr, r


def test_the_same_source_with_the_same_masks_may_be_mounted_twice(run, repo):
    """As a run mounts its repository (an overlay at /workspace, a read-only
    base): both hide the same paths.  Other masks, or none, are refused."""
    r = run(["run", "--overlay", "%s:/ws" % repo, "--mask", "secrets", "--mask", ".env", "--mask", ".git/config",
             "--mount", "%s:/base:ro" % repo] + MASKS + ["--", "sh", "-c", READ_ALL.replace("/w", "/ws") +
                                                         READ_ALL.replace("/w", "/base")])
    assert r.returncode == 0 and "TOPSECRET" not in r.stdout and r.stdout.count("readme") == 2, r
    for other in (MASKS[:4], MASKS + ["--mask", "README"], []):
        r = run(["run", "--overlay", "%s:/ws" % repo] + MASKS + ["--mount", "%s:/base:ro" % repo] + other +
                ["--", "true"])
        assert r.returncode == 125 and "shares files" in r.stderr, (other, r)


def test_missing_masks(run, hostdir):
    """ro/overlay: a masked path that does not exist stays hidden when the
    host creates it later; rw: there is nothing to cover."""
    repo = make_repo(hostdir)
    late = os.path.join(repo, "late.env")
    script = "while [ ! -e /tmp/go ]; do sleep 0.05; done; cat /w/late.env /w/nodir/x 2>&1; true"
    masks = ["--mask", "late.env", "--mask", "nodir/x"]
    for mount in (["--mount", "%s:/w:ro" % repo], ["--overlay", "%s:/w" % repo]):
        r = cell_run(run, mount, "touch /tmp/go; " + script, masks=masks)
        assert r.returncode == 0 and "No such file" in r.stdout, r
        with open(late, "wb") as f:
            f.write(SECRET)
        try:
            r = cell_run(run, mount, "touch /tmp/go; " + script, masks=masks)
            assert r.returncode == 0 and "TOPSECRET" not in r.stdout and "No such file" in r.stdout, r
        finally:
            os.unlink(late)
    r = cell_run(run, ["--mount", "%s:/w" % repo], "cat /w/late.env 2>&1; echo n > /w/late.env; cat /w/late.env",
                 masks=masks)
    assert r.returncode == 0 and r.stdout.endswith("n\n"), r
    os.unlink(late)     # the cell's own file, on the host as any rw write


def test_no_handle_syscalls_in_the_cell(run, repo):
    """open_by_handle_at would open the covered inode by its handle: the
    cell's seccomp filter refuses it and name_to_handle_at."""
    script = r"""
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
buf = ctypes.create_string_buffer(128 + 8)
ctypes.memmove(buf, (128).to_bytes(4, "little"), 4)
mid = ctypes.c_int()
r = libc.name_to_handle_at(-100, b"/w/.env", buf, ctypes.byref(mid), 0)
print("n2h", r, os.strerror(ctypes.get_errno()))
r = libc.open_by_handle_at(os.open("/w", os.O_RDONLY), buf, 0)
print("obh", r, os.strerror(ctypes.get_errno()))
"""
    r = run(["run", "--mount", "%s:/w" % repo] + MASKS + ["--", "python3", "-c", script])
    assert r.returncode == 0, r
    assert "n2h -1" in r.stdout and "obh -1" in r.stdout, r.stdout


# ---- through the daemon -----------------------------------------------------------------


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("masks"), [], unix_socket=True)


@pytest.mark.parametrize("kind", ["bind-ro", "bind-rw", "overlay"])
def test_daemon_masks(d, admin, repo, kind):
    m = {"type": "overlay" if kind == "overlay" else "bind", "source": repo, "target": "/w",
         "mask": [".env", ".git/config", "secrets"]}
    if kind == "bind-ro":
        m["readonly"] = True
    r = admin.post("/v1/cells", {"resources": {"memory": "128M"}, "mounts": [m]})
    assert r.status == 201, r
    cid = r.body["id"]
    try:
        out = admin.post("/cells/%s/v1/processes/run" % cid, {"command": "sh", "args": ["-c", READ_ALL]})
        assert out.status == 200 and out.body["exitCode"] == 0, out
        assert "TOPSECRET" not in out.body["stdout"] and "readme" in out.body["stdout"], out.body
    finally:
        assert admin.delete("/v1/cells/%s" % cid).status == 204


def test_cli_create_mount_overlay_mask(d, repo):
    env = {k: v for k, v in os.environ.items() if k not in ("CELL_TOKEN", "CELL_URL")}

    def cli(*args):
        return run_cell(d.state, list(args), env=env)

    r = cli("--json", "create", "--memory", "128M", "--mount-overlay", "%s:/w" % repo, *MASKS)
    assert r.returncode == 0, r
    cid = json.loads(r.stdout)["id"]
    try:
        r = cli("exec", cid, "--", "sh", "-c", READ_ALL)
        assert r.returncode == 0 and "TOPSECRET" not in r.stdout and "readme" in r.stdout, r
    finally:
        assert cli("rm", cid).returncode == 0
    r = cli("create", "--mask", ".env", "--mount-overlay", "%s:/w" % repo)
    assert r.returncode == 2 and "after the --mount-overlay" in r.stderr, r
    r = cli("create", "--mount-overlay", "%s:/w" % repo, "--mask", "../x")
    assert r.returncode != 0 and "mounts[0].mask[0]" in r.stderr, r


@pytest.mark.parametrize("mask,status,needle", [
    ("x", 400, "mounts[0].mask"), ([5], 400, "mounts[0].mask[0]"), (["../x"], 400, "mounts[0].mask[0]"),
    (["/abs"], 400, "mounts[0].mask[0]"), ([""], 400, "mounts[0].mask[0]"), (["a", "a/b"], 400, "mounts[0].mask[1]"),
    (["m%d" % i for i in range(65)], 400, "64"), (["src/envlink"], 400, "symbolic link"),
    ([".env"], 400, "memory"),
])
def test_daemon_mask_bad_input(d, admin, repo, mask, status, needle):
    m = {"type": "bind", "source": repo, "target": "/w", "mask": mask}
    if needle == "memory":
        m = {"type": "memory", "target": "/w", "mask": mask}
    r = admin.post("/v1/cells", {"resources": {"memory": "64M"}, "mounts": [m]})
    assert r.status == status, r
    assert r.ctype == "application/problem+json" and needle in r.body["detail"], r
    assert not admin.get("/v1/cells").body["cells"], "a refused create must not leave a cell"


def test_daemon_masks_of_a_shared_tree_are_refused(d, admin, repo):
    mounts = [{"type": "bind", "source": repo, "target": "/w", "mask": [".env"]},
              {"type": "bind", "source": repo, "target": "/again", "readonly": True}]
    r = admin.post("/v1/cells", {"resources": {"memory": "64M"}, "mounts": mounts})
    assert r.status == 409 and r.ctype == "application/problem+json" and "shares files" in r.body["detail"], r
    assert not admin.get("/v1/cells").body["cells"]
