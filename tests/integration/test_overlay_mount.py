"""Overlay mounts (CELL_MOUNT_OVERLAY, `cell run --overlay`, POST /v1/cells
{"type": "overlay"}): a host directory writable in the cell, never written.

- Every kind of change works inside the cell, as the cell's root and as a
  non-root uid that owns the host files: copy-up writes and appends, new
  files, deletes (whiteouts), directory renames (EXDEV then `mv` copies),
  chmod, chown, symlinks, hard links, fifos, xattrs.
- A hostile cell tries hard to write through: write, truncate, O_TRUNC
  opens, unlink, rename, chmod/chown (by path and by an fd opened before
  copy-up), setxattr (user and trusted.overlay.*), utimes, mknod, link,
  shared mmap writes, writes through /proc/self/fd of an fd opened before
  copy-up, the layers' host paths shown in mountinfo, a read-only bind of
  the same directory beside it.  The host directory is byte for byte and
  metadata (mode, owner, size, mtime, ctime, inode, link count, xattrs)
  the same afterwards.
- A setuid-root program in the host directory gives a non-root uid nothing
  (nosuid mounts and no_new_privs); the nosuid seccomp filter of read-write
  binds is not installed (nothing the cell writes reaches the host).
- The daemon: admin tokens only (403 otherwise), bad input refused (400
  naming the field), the overlay works and leaves the host untouched.
"""
import hashlib
import json
import os
import shutil
import stat

import pytest

import daemon as dm
from conftest import run_cell
from daemon import assert_problem, make_tenant_token

OWNER = 1000  # the host directory's owner, as a user's checkout would be


def snapshot(root):
    """Everything about the tree that a write could change (atime aside)."""
    out = {}
    for d, dirs, files in os.walk(root):
        for name in [""] + sorted(dirs + files):
            p = os.path.join(d, name) if name else d
            if name == "" and d != root:
                continue
            st = os.lstat(p)
            entry = {k: getattr(st, k) for k in ("st_mode", "st_uid", "st_gid", "st_size", "st_mtime_ns",
                                                  "st_ctime_ns", "st_ino", "st_nlink")}
            entry["xattrs"] = {a: os.getxattr(p, a, follow_symlinks=False)
                               for a in sorted(os.listxattr(p, follow_symlinks=False))}
            if stat.S_ISLNK(st.st_mode):
                entry["link"] = os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    entry["sha"] = hashlib.sha256(f.read()).hexdigest()
            out[os.path.relpath(p, root)] = entry
    return out


def make_repo(hostdir):
    """A checkout owned by OWNER, with a root-owned secret, links and a
    setuid-root copy of id(1)."""
    repo = os.path.join(hostdir, "repo")
    for d in ("sub/deep", "emptydir"):
        os.makedirs(os.path.join(repo, d))
    files = {"a.txt": b"hello\n", "sub/b.txt": b"bee\n", "sub/deep/c.txt": b"sea\n", "ro.txt": b"read only\n",
             "hard1": b"linked\n", "bin.dat": bytes(range(256)) * 64, "rootfile": b"root's\n", "secret": b"s3cret\n"}
    for rel, data in files.items():
        with open(os.path.join(repo, rel), "wb") as f:
            f.write(data)
    os.link(os.path.join(repo, "hard1"), os.path.join(repo, "hard2"))
    os.symlink("a.txt", os.path.join(repo, "link"))
    os.symlink("/etc/passwd", os.path.join(repo, "abslink"))
    os.setxattr(os.path.join(repo, "a.txt"), "user.note", b"keep")
    shutil.copy("/usr/bin/id", os.path.join(repo, "suid-id"))
    for d, dirs, fs in os.walk(repo):
        for n in dirs + fs + [""]:
            os.lchown(os.path.join(d, n) if n else d, OWNER, OWNER)
    os.chmod(os.path.join(repo, "ro.txt"), 0o444)
    for rel, mode in (("rootfile", 0o644), ("secret", 0o600), ("suid-id", 0o4755)):
        os.chown(os.path.join(repo, rel), 0, 0)
        os.chmod(os.path.join(repo, rel), mode)
    os.chmod(repo, 0o755)
    return repo


@pytest.fixture
def repo(hostdir):
    r = make_repo(hostdir)
    before = snapshot(r)
    yield r
    assert snapshot(r) == before, "the host directory changed"


# ---- changes inside the cell ------------------------------------------------------------

ROOT_SCRIPT = r"""
cd /workspace
step() { if "$@" 2>/dev/null; then echo "ok $*"; else echo "FAIL $*"; fi; }
step sh -c 'echo more >> a.txt'
step sh -c ': > sub/b.txt'
step rm sub/deep/c.txt
step rmdir sub/deep
step rm -r emptydir
step mv sub sub2
step chmod 600 ro.txt
step chown 1234:1234 a.txt
step ln -s a.txt newlink
step ln hard1 hard3
step sh -c 'echo new > newfile'
step mkdir newdir
step touch -d 2000-01-01 rootfile
step mkfifo fifo
step sh -c 'echo x > secret'
echo ---
stat -c '%n %u:%g %a %s %h' a.txt ro.txt hard1 hard3 secret rootfile . | sort
echo ---
cat a.txt sub2/b.txt secret
ls -A | tr '\n' ' '
"""


def test_changes_as_root_stay_in_the_cell(run, repo):
    r = run(["run", "--overlay", "%s:/workspace" % repo, "--", "sh", "-c", ROOT_SCRIPT])
    assert r.returncode == 0, r.stderr
    steps, stats, rest = r.stdout.split("---\n")
    assert "FAIL" not in steps, steps
    # Host owners show 1:1 (host uid 1000 is the cell's uid 1000; root is
    # the cell's root); the mount's root keeps the directory's owner.
    assert sorted(stats.splitlines()) == [
        ". 1000:1000 755 %s 1" % stats.split()[3], "a.txt 1234:1234 644 11 1", "hard1 1000:1000 644 7 2",
        "hard3 1000:1000 644 7 2", "ro.txt 1000:1000 600 10 1", "rootfile 0:0 644 7 1", "secret 0:0 600 2 1",
    ], stats
    content, listing = rest.rsplit("\n", 1)
    assert content == "hello\nmore\nx", rest
    assert set(listing.split()) == {"a.txt", "abslink", "bin.dat", "fifo", "hard1", "hard2", "hard3", "link",
                                    "newdir", "newfile", "newlink", "ro.txt", "rootfile", "secret", "sub2",
                                    "suid-id"}, listing


USER_SCRIPT = r"""
cd /workspace
step() { if "$@" 2>/dev/null; then echo "ok $*"; else echo "FAIL $*"; fi; }
step sh -c 'echo more >> a.txt'
step sh -c 'echo new > newfile'
step rm sub/b.txt
step mv sub sub2
step chmod 600 a.txt
step ln -s a.txt newlink
step ln hard1 hard3
step mkdir newdir
echo ---
id -u
cat secret 2>/dev/null || echo no-secret
echo x 2>/dev/null > rootfile || echo no-rootfile
cat a.txt
"""


def test_changes_as_the_owner_uid_stay_in_the_cell(run, repo):
    r = run(["run", "--user", "%d:%d" % (OWNER, OWNER), "--overlay", "%s:/workspace" % repo, "--",
             "sh", "-c", USER_SCRIPT])
    assert r.returncode == 0, r.stderr
    steps, rest = r.stdout.split("---\n")
    assert "FAIL" not in steps, steps
    assert rest == "%d\nno-secret\nno-rootfile\nhello\nmore\n" % OWNER, rest


# ---- trying to write through ------------------------------------------------------------

ATTACK = r"""
import ctypes, errno, json, mmap, os, shutil, stat
W = "/workspace"
res = {}
def attempt(name, fn):
    try:
        fn()
        res[name] = "ok"
    except OSError as e:
        res[name] = errno.errorcode.get(e.errno, str(e.errno))

# An fd on the lower file, opened before any copy-up.
ro = os.open(W + "/a.txt", os.O_RDONLY)
ro2 = os.open(W + "/ro.txt", os.O_RDONLY)
attempt("write_ro_fd", lambda: os.write(ro, b"X"))
attempt("ftruncate_ro_fd", lambda: os.ftruncate(ro, 0))
def mm_shared():
    m = mmap.mmap(ro, 0, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
    m[0:1] = b"X"
    m.flush()
attempt("mmap_shared_ro_fd", mm_shared)
attempt("fchmod_ro_fd", lambda: os.fchmod(ro2, 0o666))
attempt("fchown_ro_fd", lambda: os.fchown(ro2, 7, 7))
attempt("fsetxattr_ro_fd", lambda: os.setxattr(ro2, "user.evil", b"1"))
def via_proc():
    f = os.open("/proc/self/fd/%d" % ro, os.O_WRONLY | os.O_TRUNC)
    os.write(f, b"via-proc\n")
    os.close(f)
attempt("reopen_proc_fd_rw", via_proc)
attempt("write_ro_fd_after", lambda: os.write(ro, b"X"))
def mm_rw():
    f = os.open(W + "/bin.dat", os.O_RDWR)
    m = mmap.mmap(f, 0)
    m[0:4] = b"PWND"
    m.flush()
    m.close()
    os.close(f)
attempt("mmap_rw", mm_rw)
attempt("truncate", lambda: os.truncate(W + "/sub/b.txt", 0))
attempt("o_trunc", lambda: os.close(os.open(W + "/rootfile", os.O_WRONLY | os.O_TRUNC)))
attempt("append_hardlink", lambda: open(W + "/hard2", "ab").write(b"more"))
attempt("unlink", lambda: os.unlink(W + "/hard1"))
attempt("rename_file", lambda: os.rename(W + "/ro.txt", W + "/ro2.txt"))
attempt("rename_dir", lambda: os.rename(W + "/sub", W + "/sub2"))
attempt("chmod", lambda: os.chmod(W + "/secret", 0o4777))
attempt("chown", lambda: os.chown(W + "/secret", 5, 5))
attempt("lchown", lambda: os.lchown(W + "/link", 5, 5))
attempt("setxattr_user", lambda: os.setxattr(W + "/a.txt", "user.evil", b"1"))
attempt("removexattr", lambda: os.removexattr(W + "/a.txt", "user.note"))
attempt("setxattr_overlay", lambda: os.setxattr(W + "/bin.dat", "trusted.overlay.redirect", b"/etc"))
attempt("utime", lambda: os.utime(W + "/sub/deep", (0, 0)))
attempt("mkfifo", lambda: os.mkfifo(W + "/fifo"))
attempt("mknod_chr", lambda: os.mknod(W + "/null2", 0o666 | stat.S_IFCHR, os.makedev(1, 3)))
attempt("link", lambda: os.link(W + "/hard2", W + "/hard4"))
def swap_for_link():
    os.unlink(W + "/link")
    os.symlink("/etc/shadow", W + "/link")
attempt("symlink_swap", swap_for_link)
attempt("rmtree", lambda: shutil.rmtree(W + "/emptydir"))
attempt("write_base", lambda: open("/base/a.txt", "ab").write(b"X"))
attempt("mkdir_base", lambda: os.mkdir("/base/x"))
def remount():
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(None, b"/base", None, 32 | 4096, None) != 0:  # MS_REMOUNT | MS_BIND, read-write
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
attempt("remount_base", remount)
# The layers' host paths, as mountinfo shows them, do not exist here.
layers = []
for line in open("/proc/self/mountinfo"):
    for opt in line.split()[-1].split(","):
        if opt.startswith(("lowerdir=", "upperdir=", "workdir=")):
            layers.append(opt.split("=", 1)[1])
res["layers"] = len(layers)
res["layers_reachable"] = [p for p in layers if os.path.exists(p)]
res["a"] = open(W + "/a.txt").read()
res["base_a"] = open("/base/a.txt").read()
print(json.dumps(res))
"""


def test_write_through_attempts_leave_the_host_unchanged(run, repo):
    r = run(["run", "--overlay", "%s:/workspace" % repo, "--mount", "%s:/base:ro" % repo, "--",
             "python3", "-"], input=ATTACK)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    # What a writable directory allows worked, on the cell's copy.
    for k in ("reopen_proc_fd_rw", "mmap_rw", "truncate", "o_trunc", "append_hardlink", "unlink", "rename_file",
              "chmod", "chown", "lchown", "setxattr_user", "removexattr", "utime", "mkfifo", "link",
              "symlink_swap", "rmtree", "fchmod_ro_fd", "fchown_ro_fd", "fsetxattr_ro_fd"):
        assert res[k] == "ok", (k, res)
    # What a read-only fd or a read-only mount refuses, refused.
    assert res["write_ro_fd"] == "EBADF" and res["write_ro_fd_after"] == "EBADF", res
    assert res["ftruncate_ro_fd"] in ("EINVAL", "EBADF"), res
    assert res["mmap_shared_ro_fd"] == "EACCES", res
    assert res["mknod_chr"] == "EPERM", res
    assert res["setxattr_overlay"] in ("EPERM", "EACCES", "EOPNOTSUPP"), res
    # Directories of the lower layer cannot be renamed (redirect_dir off).
    assert res["rename_dir"] in ("ok", "EXDEV"), res
    assert res["write_base"] == "EROFS" and res["mkdir_base"] == "EROFS" and res["remount_base"] != "ok", res
    assert res["layers"] >= 3 and res["layers_reachable"] == [], res
    assert res["a"] == "via-proc\n" and res["base_a"] == "hello\n", res


def test_setuid_in_the_host_directory_gives_nothing(run, repo):
    # Owned by host root, so by the cell's root (1:1), mode 4755: nosuid
    # mounts and no_new_privs keep a non-root uid what it is.
    r = run(["run", "--user", "%d:%d" % (OWNER, OWNER), "--overlay", "%s:/workspace" % repo, "--",
             "sh", "-c", "/workspace/suid-id -u; /workspace/suid-id -ru; grep NoNewPrivs /proc/self/status; "
             "grep ' /workspace ' /proc/self/mounts"])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert " ".join(lines[:3]).split() == [str(OWNER), str(OWNER), "NoNewPrivs:", "1"], r.stdout
    assert lines[3].startswith("overlay /workspace overlay rw,nosuid,nodev,"), r.stdout
    # No nosuid seccomp filter here, unlike a read-write bind: what the
    # cell's root makes setuid lands in its own tmpfs, never on the host.
    r = run(["run", "--overlay", "%s:/workspace" % repo, "--", "sh", "-c",
             "cp /workspace/a.txt /workspace/mine && chmod 4755 /workspace/mine && stat -c %a /workspace/mine"])
    assert r.returncode == 0 and r.stdout == "4755\n", r


def test_overlay_options_are_checked(run, hostdir):
    f = os.path.join(hostdir, "file")
    open(f, "w").close()
    for spec, needle in (("%s:/w" % f, "must be a directory"), ("/nonexistent-dir:/w", "does not exist"),
                         ("%s:/w:lots" % hostdir, "--overlay"), ("nocolon", "--overlay"),
                         ("%s:/w:1K" % hostdir, "1 MiB"), ("%s:/proc/x" % hostdir, "/proc")):
        r = run(["run", "--overlay", spec, "--", "true"])
        assert r.returncode in (2, 125), (spec, r)
        assert needle in r.stderr, (spec, r.stderr)


def test_a_full_upper_layer_is_enospc_and_the_host_unchanged(run, repo):
    r = run(["run", "--overlay", "%s:/workspace:2M" % repo, "--", "sh", "-c",
             "dd if=/dev/zero of=/workspace/big bs=1M count=8 2>&1; echo rc=$?"])
    assert "No space left on device" in r.stdout, r


# ---- through the daemon -----------------------------------------------------------------


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("ovl"), ["--limit", "cell.memory=%d" % (1 << 30)], unix_socket=True)


def test_cli_create_mount_overlay(d, repo, hostdir):
    def cli(*args):
        env = {k: v for k, v in os.environ.items() if k not in ("CELL_TOKEN", "CELL_URL")}
        return run_cell(d.state, list(args), env=env)

    r = cli("--json", "create", "--memory", "128M", "--mount-overlay", "%s:/workspace:32M" % repo)
    assert r.returncode == 0, r
    cid = json.loads(r.stdout)["id"]
    try:
        r = cli("exec", cid, "--", "sh", "-c", "echo x >> /workspace/a.txt && cat /workspace/a.txt && "
                "df -k /workspace | tail -1")
        assert r.returncode == 0 and r.stdout.startswith("hello\nx\n") and " 32768 " in r.stdout, r
    finally:
        assert cli("rm", cid).returncode == 0
    for spec, needle in (("nocolon", "--mount-overlay"), ("%s:relative" % repo, "--mount-overlay"),
                         ("%s:/w:lots" % repo, "--mount-overlay"),
                         ("%s/a.txt:/w" % repo, "mounts[0].source")):
        r = cli("create", "--mount-overlay", spec)
        assert r.returncode != 0 and needle in r.stderr, (spec, r)


def test_daemon_overlay_needs_admin_and_leaves_the_host_alone(d, admin, repo):
    tok, _ = make_tenant_token(admin, dm.uniq("ovl"))
    other = d.client(tok)
    mounts = [{"type": "overlay", "source": repo, "target": "/workspace", "size": "64M"},
              {"type": "bind", "source": repo, "target": "/base", "readonly": True}]
    body = {"resources": {"memory": "128M"}, "mounts": mounts}
    assert_problem(other.post("/v1/cells", {"resources": {"memory": "64M"}, "mounts": mounts[:1]}), 403,
                   "forbidden", detail_has="overlay")
    assert other.get("/v1/cells").body["cells"] == []
    r = admin.post("/v1/cells", body)
    assert r.status == 201, r
    cid = r.body["id"]
    try:
        out = admin.post("/cells/%s/v1/processes/run" % cid, {"command": "sh", "args": ["-c",
            "cd /workspace && echo more >> a.txt && rm -r sub && echo n > new && cat a.txt /base/a.txt && "
            "ls /base | tr '\\n' ' '"]})
        assert out.status == 200 and out.body["exitCode"] == 0, out
        assert out.body["stdout"].startswith("hello\nmore\nhello\n"), out.body
        assert "sub" in out.body["stdout"].split("\n")[-1], out.body
    finally:
        assert admin.delete("/v1/cells/%s" % cid).status == 204


@pytest.mark.parametrize("mount,status,needle", [
    ({"type": "overlay", "target": "/w"}, 400, "source"),
    ({"type": "overlay", "source": "relative/dir", "target": "/w"}, 400, "mounts[0].source"),
    ({"type": "overlay", "source": "/nonexistent-dir", "target": "/w"}, 400, "mounts[0].source"),
    ({"type": "overlay", "source": "/etc/passwd", "target": "/w"}, 400, "mounts[0].source"),
    ({"type": "overlay", "source": 5, "target": "/w"}, 422, "source"),
    ({"type": "overlay", "source": "/tmp", "target": "/w", "size": "lots"}, 400, "size"),
    ({"type": "overlay", "source": "/tmp", "target": "/w", "size": "64G"}, None, "mounts[0].size"),
    ({"type": "overlay", "source": "/tmp"}, 422, "target"),
    ({"type": "overlayfs", "source": "/tmp", "target": "/w"}, 400, "overlay"),
])
def test_daemon_overlay_bad_input(admin, mount, status, needle):
    r = admin.post("/v1/cells", {"resources": {"memory": "64M"}, "mounts": [mount]})
    assert r.status in ((status,) if status else (400, 422)), r
    assert r.ctype == "application/problem+json" and needle in r.body["detail"], r
    assert not [c for c in admin.get("/v1/cells").body["cells"]], "a refused create must not leave a cell"
