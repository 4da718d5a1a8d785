"""The runs' diff script (src/server/rundiff.sh) run as the daemon runs it
(`env -i PATH=... /bin/sh -c SCRIPT rundiff MODE A B`) in `cell run` cells
with host directories bound where a run's cell has them, and the apply of
runs' patches through the daemon (POST /v1/runs/{id}/apply).

    kinds of change    new, deleted, modified, binary, renamed, mode-changed,
                       file <-> symlink, names with newlines, tabs, quotes and
                       invalid UTF-8: listed right, and the patch applied to
                       a copy of the base gives the workspace back, bytes and
                       modes
    symlinks outside   links to /etc/shadow, to a host file and to / are
                       recorded as links (their targets as text), never read
    .gitignore         new ignored files stay out; a file the base has stays
                       in though the workspace's .gitignore now ignores it
                       (no silent deletion)
    nested .git        a nested repository is its commit (a gitlink); one
                       without a commit is left out; .git directories never
                       show
    .gitattributes     filters, textconv, ident, eol and encodings in the
                       tree, and git config planted in the cell (/etc/gitconfig,
                       ~/.gitconfig, fsmonitor, hooks): no command runs, no
                       byte changes
    no git             a clear message, exit 3
    apply              hostile hand-made patches (.git/, .., beyond a symlink,
                       a link then a write through it, absolute paths) are
                       refused with nothing written; a conflict writes
                       nothing; files are written as the directory's owner
"""
import json
import os
import shutil
import stat
import subprocess
import uuid

import pytest

import daemon as dm
from conftest import CELL_BIN, CHECKOUT

SCRIPT_PATH = os.path.join(CHECKOUT, "src", "server", "rundiff.sh")
with open(SCRIPT_PATH) as _f:
    SCRIPT = _f.read()
ENV = ["/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin"]
BASE, WS = "/.cell-run/base", "/workspace"


def cell_run(state, mounts, argv, user=None, pre=None, stdin=None, timeout=120):
    """`cell run` with the mounts ((src, dst, ro)); argv after `--`.  pre:
    a shell command run first in the same cell (as root); stdin: a file."""
    args = [CELL_BIN, "--state", state, "run"]
    for src, dst, ro in mounts:
        args += ["--mount", "%s:%s%s" % (src, dst, ":ro" if ro else "")]
    if user:
        args += ["--user", "%d:%d" % user]
    if pre:
        argv = ["/bin/sh", "-c", pre + '\nexec "$@"', "pre"] + argv
    if stdin is None:
        return subprocess.run(args + ["--"] + argv, capture_output=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    with open(stdin, "rb") as f:
        return subprocess.run(args + ["--"] + argv, capture_output=True, timeout=timeout, stdin=f)


def script_argv(mode, a, b, path="/usr/local/bin:/usr/bin:/bin"):
    return ["/usr/bin/env", "-i", "PATH=" + path, "/bin/sh", "-c", SCRIPT, "rundiff", mode, a, b]


def parse(out):
    """(name-status records, numstat records, patch bytes) of the script's output."""
    head, _, rest = out.partition(b"\n")
    magic, version, n, m = head.split(b" ")
    assert (magic, version) == (b"cell-rundiff", b"1"), head
    n, m = int(n), int(m)
    names, numstat, patch = rest[:n], rest[n:n + m], rest[n + m:]
    fields = names.split(b"\0")[:-1] if names else []
    entries, i = [], 0
    while i < len(fields):
        st = fields[i].decode()
        if st[0] in "RC":
            entries.append((st[0], fields[i + 2], fields[i + 1]))
            i += 3
        else:
            entries.append((st[0], fields[i + 1], None))
            i += 2
    return entries, numstat, patch


def diff(state, base, ws, **kw):
    r = cell_run(state, [(base, BASE, True), (ws, WS, False)], script_argv("diff", BASE, WS), **kw)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    return parse(r.stdout) + (r.stderr,)


def apply(state, repo, patch_file, user=None, **kw):
    """The apply as srv_rundiff_apply runs it: the patch on stdin, as the owner."""
    st = os.stat(repo)
    os.chmod(patch_file, 0o600)     # the owner cannot open it: it reads stdin
    argv = ["/usr/bin/env", "-i", "PATH=/usr/local/bin:/usr/bin:/bin", "/bin/sh", "-c", SCRIPT, "rundiff",
            "apply", "/repo"]
    return cell_run(state, [(repo, "/repo", False)], argv, user=user or (st.st_uid, st.st_gid), stdin=patch_file,
                    **kw)


def snapshot(root, skip=()):
    """{relative path: (kind, bytes or link target, exec bit)} under root."""
    out = {}
    for top, dirs, files in os.walk(root):
        dirs[:] = [x for x in dirs if x not in skip and not os.path.islink(os.path.join(top, x))] + \
            [x for x in dirs if os.path.islink(os.path.join(top, x))]
        for f in files + [x for x in dirs if os.path.islink(os.path.join(top, x))]:
            p = os.path.join(top, f)
            rel = os.path.relpath(p, root)
            if rel.split(os.sep)[0] in skip:
                continue
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), False)
            elif stat.S_ISREG(st.st_mode):
                with open(p, "rb") as fh:
                    out[rel] = ("file", fh.read(), bool(st.st_mode & 0o100))
    return out


def write(root, rel, data, mode=0o644):
    p = os.path.join(root, rel)
    os.makedirs(os.path.dirname(p), exist_ok=True)
    with open(p, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())
    os.chmod(p, mode)


@pytest.fixture
def trees(hostdir):
    base, ws = os.path.join(hostdir, "base"), os.path.join(hostdir, "ws")
    os.mkdir(base)
    os.mkdir(ws)
    return base, ws


def round_trip(state, hostdir, base, ws, patch, skip=()):
    """Apply patch to a copy of base in an apply-like cell: it must equal ws."""
    host = os.path.join(hostdir, "host")
    shutil.copytree(base, host, symlinks=True)
    pf = os.path.join(hostdir, "p.patch")
    with open(pf, "wb") as f:
        f.write(patch)
    r = apply(state, host, pf)
    assert r.returncode == 0, r.stderr[-2000:]
    assert snapshot(host, skip) == snapshot(ws, skip)
    return host


# ---- the diff script ---------------------------------------------------------------------


def test_changes_of_every_kind_round_trip(state, hostdir, trees):
    base, ws = trees
    big = "".join("line %d of a file that moves\n" % i for i in range(200))
    odd = [b"new\nline", b"tab\there", b'quote"s', b"bad\xff\xfename", "caf\u00e9 \u2603".encode()]
    files = {"mod.txt": "a\nb\n", "gone.txt": "bye\n", "old/moved.txt": big, "exe.sh": "#!/bin/sh\n",
             "tolink": "a file\n", "linkto": "x\n", "same.bin": bytes(range(256)) * 4}
    for rel, data in files.items():
        write(base, rel, data)
    os.symlink("mod.txt", os.path.join(base, "alink"))
    shutil.rmtree(ws)
    shutil.copytree(base, ws, symlinks=True)
    write(ws, "mod.txt", "a\nc\n")
    os.unlink(os.path.join(ws, "gone.txt"))
    os.makedirs(os.path.join(ws, "new"), exist_ok=True)
    os.rename(os.path.join(ws, "old", "moved.txt"), os.path.join(ws, "new", "moved.txt"))
    with open(os.path.join(ws, "new", "moved.txt"), "a") as f:
        f.write("one more line\n")
    os.chmod(os.path.join(ws, "exe.sh"), 0o755)
    os.unlink(os.path.join(ws, "tolink"))
    os.symlink("/etc/passwd", os.path.join(ws, "tolink"))
    os.unlink(os.path.join(ws, "linkto"))
    os.unlink(os.path.join(ws, "alink"))
    os.symlink("exe.sh", os.path.join(ws, "alink"))
    write(ws, "added.bin", b"\0\1\2\3binary\0" * 100)
    write(ws, "empty", b"")
    for name in odd:
        with open(os.path.join(ws.encode(), name), "wb") as f:
            f.write(b"odd name\n")
    entries, numstat, patch, _ = diff(state, base, ws)
    got = {(s, p, o) for s, p, o in entries}
    want = {("M", b"mod.txt", None), ("D", b"gone.txt", None), ("R", b"new/moved.txt", b"old/moved.txt"),
            ("M", b"exe.sh", None), ("T", b"tolink", None), ("D", b"linkto", None), ("M", b"alink", None),
            ("A", b"added.bin", None), ("A", b"empty", None)} | {("A", n, None) for n in odd}
    assert got == want, got ^ want
    assert b"-\t-\tadded.bin\0" in numstat and b"\tmod.txt\0" in numstat
    assert b"GIT binary patch" in patch and b"old mode 100644\nnew mode 100755" in patch
    assert b"rename from old/moved.txt" in patch
    round_trip(state, hostdir, base, ws, patch)


def test_no_change_is_an_empty_diff(state, trees):
    base, ws = trees
    for root in trees:
        write(root, "a.txt", "same\n")
    entries, numstat, patch, _ = diff(state, base, ws)
    assert entries == [] and numstat == b"" and patch == b""


def test_symlinks_pointing_outside_are_recorded_not_followed(state, hostdir, trees):
    base, ws = trees
    secret = "host-secret-" + uuid.uuid4().hex
    outside = os.path.join(hostdir, "outside")
    os.mkdir(outside)
    write(outside, "secret.txt", secret + "\n")
    write(base, "a.txt", "a\n")
    write(ws, "a.txt", "a\n")
    links = {"shadow": "/etc/shadow", "root": "/", "host": os.path.join(outside, "secret.txt"),
             "up": "../" * 10 + outside.lstrip("/") + "/secret.txt", "hostdir": outside}
    for name, target in links.items():
        os.symlink(target, os.path.join(ws, name))
    entries, _, patch, _ = diff(state, base, ws)
    assert {(s, p) for s, p, _ in entries} == {("A", n.encode()) for n in links}
    assert patch.count(b"new file mode 120000") == len(links)
    for target in links.values():
        assert ("\n+%s\n\\ No newline at end of file" % target).encode() in patch
    assert secret.encode() not in patch
    assert b"root:" not in patch


def test_gitignore_hides_new_files_but_never_deletes_tracked_ones(state, trees):
    base, ws = trees
    for root in trees:
        write(root, ".gitignore", "*.log\nbuild/\n")
        write(root, "tracked.txt", "t\n")
        write(root, "keep.txt", "k\n")
        write(root, "old.log", "ignored in both\n")
    write(ws, "new.log", "new but ignored\n")
    write(ws, "build/out.o", "ignored dir\n")
    write(ws, "old.log", "changed but ignored\n")
    # The agent ignores everything and changes a tracked file: it stays
    # tracked, so its change shows and nothing reads as deleted.
    write(ws, ".gitignore", "*\n")
    write(ws, "tracked.txt", "t2\n")
    write(ws, "brand-new.txt", "ignored by the new rule\n")
    entries, _, patch, _ = diff(state, base, ws)
    assert sorted((s, p) for s, p, _ in entries) == [("M", b".gitignore"), ("M", b"tracked.txt")], entries
    assert b"ignored" not in patch.replace(b"ignored by", b"")


def test_nested_repositories_are_gitlinks_and_git_dirs_never_show(state, trees):
    base, ws = trees
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "init.defaultBranch=main"]
    for root in trees:
        subprocess.run(git + ["init", "-q", root], check=True)
        write(root, "top.txt", "top\n")
    write(ws, ".git/config", "[core]\n\thooksPath = /tmp/evil\n")   # never in the diff
    dep = os.path.join(ws, "vendor", "dep")
    os.makedirs(dep)
    subprocess.run(git + ["init", "-q", dep], check=True)
    write(dep, "dep.txt", "dep secret content\n")
    subprocess.run(git + ["-C", dep, "add", "dep.txt"], check=True)
    subprocess.run(git + ["-C", dep, "commit", "-qm", "x"], check=True)
    head = subprocess.run(["git", "-C", dep, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    empty = os.path.join(ws, "empty")
    subprocess.run(git + ["init", "-q", empty], check=True)
    write(empty, "e.txt", "no commit\n")
    # A .git file pointing anywhere in the cell; .git in other cases.
    write(ws, "fake/.git", "gitdir: /etc\n")
    write(ws, "fake/f.txt", "f\n")
    write(ws, ".GIT/config", "[core]\n\tfsmonitor = touch /tmp/pwned\n")
    write(ws, "x/.Git/hooks/pre-commit", "#!/bin/sh\n")
    write(ws, "top.txt", "top changed\n")
    entries, _, patch, err = diff(state, base, ws)
    paths = {p for _, p, _ in entries}
    assert b"vendor/dep" in paths and ("+Subproject commit %s" % head).encode() in patch
    assert b"dep secret content" not in patch and b"no commit" not in patch
    assert not any(b".git/" in p.lower() or p.lower().startswith(b".git") for p in paths), paths
    assert b"top.txt" in paths
    assert b"empty" not in paths
    assert b"hooksPath" not in patch


def test_hostile_gitattributes_and_planted_config_run_nothing_and_change_no_byte(state, hostdir, trees):
    base, ws = trees
    crlf, ident = b"one\r\ntwo\r\n", b"$Id: deadbeef $\n"
    utf16 = "h\u00e9".encode("utf-16")
    for root in trees:
        write(root, "crlf.txt", crlf)
        write(root, "ident.txt", ident)
        write(root, "u16.txt", utf16)
    write(ws, "crlf.txt", crlf + b"three\r\n")
    write(ws, "ident.txt", ident + b"$Id$\n")
    write(ws, "u16.txt", utf16 + "x".encode("utf-16-le"))
    write(ws, "lf.txt", b"lf\n")
    write(ws, ".gitattributes",
          "[attr]evil text eol=crlf ident\n* evil filter=pwn diff=pwn merge=pwn\n"
          "u16.txt working-tree-encoding=UTF-16\n*.txt text=auto crlf\n")
    # Config git would obey if it read it: every one runs a command.
    planted = ("[filter \"pwn\"]\n\tclean = touch /tmp/pwned-clean; cat\n\tsmudge = touch /tmp/pwned-smudge; cat\n"
               "\trequired = true\n[diff \"pwn\"]\n\ttextconv = touch /tmp/pwned-textconv; cat\n"
               "\tcommand = touch /tmp/pwned-ext\n[diff]\n\texternal = touch /tmp/pwned-external\n"
               "[core]\n\tfsmonitor = touch /tmp/pwned-fsmonitor\n\thooksPath = /tmp\n\tautocrlf = true\n")
    pre = ("printf '%s' \"$PLANTED\" > /etc/gitconfig; printf '%s' \"$PLANTED\" > /root/.gitconfig; "
           "mkdir -p /root/.config/git; printf '%s' \"$PLANTED\" > /root/.config/git/config")
    pre = "PLANTED='%s'\n%s" % (planted.replace("'", "'\\''"), pre)
    check = "; for f in /tmp/pwned-*; do test -e \"$f\" && echo \"PWNED $f\" >&2; done; true"
    r = cell_run(state, [(base, BASE, True), (ws, WS, False)],
                 ["/bin/sh", "-c", '"$@"; rc=$?' + check + '; exit $rc', "x"] + script_argv("diff", BASE, WS),
                 pre=pre)
    assert r.returncode == 0, r.stderr[-2000:]
    assert b"PWNED" not in r.stderr, r.stderr
    entries, numstat, patch = parse(r.stdout)
    assert b"three\r\n" in patch and b"+$Id$\n" in patch
    # Applied to the base, the patch gives the workspace's exact bytes.
    round_trip(state, hostdir, base, ws, patch)


def test_special_files_are_skipped(state, trees):
    base, ws = trees
    write(base, "a", "a\n")
    write(ws, "a", "a\n")
    os.mkfifo(os.path.join(ws, "fifo"))
    os.link(os.path.join(ws, "a"), os.path.join(ws, "hardlink"))
    entries, _, patch, _ = diff(state, base, ws)
    assert [(s, p) for s, p, _ in entries] == [("A", b"hardlink")], entries


def test_an_image_without_git_says_so(state, trees):
    base, ws = trees
    r = cell_run(state, [(base, BASE, True), (ws, WS, False)], script_argv("diff", BASE, WS, path="/nonexistent"))
    assert r.returncode == 3 and b"the image has no git; the diff needs git" in r.stderr, r


def test_a_big_diff_streams(state, trees):
    base, ws = trees
    write(base, "big.txt", "".join("%d\n" % i for i in range(10)))
    write(ws, "big.txt", "".join("%d\n" % i for i in range(400000)))
    write(ws, "rand.bin", os.urandom(4 << 20))
    entries, numstat, patch, _ = diff(state, base, ws)
    assert len(patch) > 7 << 20 and b"\n+399999\n" in patch and b"GIT binary patch" in patch


# ---- the apply mode: hand-made hostile patches ------------------------------------------------


def new_file_patch(path, body="pwned\n", mode="100644"):
    return ("diff --git a/{p} b/{p}\nnew file mode {m}\nindex 0000000..1111111\n--- /dev/null\n+++ b/{p}\n"
            "@@ -0,0 +1 @@\n+{b}").format(p=path, m=mode, b=body)


HOSTILE = {
    "dot-git": new_file_patch(".git/hooks/pre-commit", mode="100755"),
    "nested-dot-git": new_file_patch("sub/.git/config"),
    "dot-git-case": new_file_patch(".GIT/config"),
    "dotdot": new_file_patch("../escape"),
    "dotdot-inside": new_file_patch("a/../../escape"),
    "beyond-link": new_file_patch("link/evil"),
    "absolute": ("diff --git a//etc/evil b//etc/evil\nnew file mode 100644\nindex 0000000..1111111\n"
                 "--- /dev/null\n+++ b//etc/evil\n@@ -0,0 +1 @@\n+pwned\n"),
    "link-then-through": ("diff --git a/l2 b/l2\nnew file mode 120000\nindex 0000000..1111111\n--- /dev/null\n"
                          "+++ b/l2\n@@ -0,0 +1 @@\n+/outside\n\\ No newline at end of file\n")
    + new_file_patch("l2/x"),
    "ok-then-conflict": new_file_patch("fine.txt")
    + ("diff --git a/a.txt b/a.txt\nindex 1111111..2222222 100644\n--- a/a.txt\n+++ b/a.txt\n"
       "@@ -1 +1 @@\n-not what is there\n+pwned\n"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_patches_are_refused_and_write_nothing(state, hostdir, name):
    repo = os.path.join(hostdir, "repo")
    outside = os.path.join(hostdir, "outside")
    os.makedirs(os.path.join(repo, ".git", "hooks"))
    os.mkdir(outside)
    write(repo, "a.txt", "a\n")
    write(outside, "keep.txt", "k\n")
    os.symlink(outside, os.path.join(repo, "link"))
    pf = os.path.join(hostdir, "p.patch")
    with open(pf, "w") as f:
        f.write(HOSTILE[name])
    before, outside_before, around = snapshot(repo), snapshot(outside), sorted(os.listdir(hostdir))
    r = apply(state, repo, pf)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert snapshot(repo) == before and snapshot(outside) == outside_before
    assert sorted(os.listdir(hostdir)) == around
    assert not os.path.exists("/etc/evil")


def test_apply_writes_as_the_directory_owner(state, hostdir):
    repo = os.path.join(hostdir, "repo")
    os.mkdir(repo)
    write(repo, "a.txt", "a\n")
    os.chown(repo, 1234, 2345)
    os.chown(os.path.join(repo, "a.txt"), 1234, 2345)
    pf = os.path.join(hostdir, "p.patch")
    with open(pf, "w") as f:
        f.write(new_file_patch("sub/new.txt", body="hello\n")
                + "diff --git a/a.txt b/a.txt\nindex 1111111..2222222 100644\n--- a/a.txt\n+++ b/a.txt\n"
                  "@@ -1 +1 @@\n-a\n+b\n")
    r = apply(state, repo, pf)
    assert r.returncode == 0, r.stderr
    for rel in ("sub/new.txt", "sub", "a.txt"):
        st = os.lstat(os.path.join(repo, rel))
        assert (st.st_uid, st.st_gid) == (1234, 2345), rel
    with open(os.path.join(repo, "a.txt")) as f:
        assert f.read() == "b\n"


# ---- through the daemon ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def repos(tmp_path_factory):
    p = tmp_path_factory.mktemp("rundiff-repos")
    os.chmod(p, 0o755)
    return p


@pytest.fixture(scope="module")
def d(tmp_path_factory, repos):
    yield from dm.serve(tmp_path_factory.mktemp("rundiff"), ["--run-repo-root", str(repos)])


@pytest.fixture(scope="module")
def alice(d):
    return d.tenant(dm.uniq("alice"))


def make_repo(repos, files, owner=(1000, 1000)):
    r = os.path.join(str(repos), uuid.uuid4().hex[:8])
    os.mkdir(r)
    for rel, data in files.items():
        write(r, rel, data)
    for top, dirs, fs in os.walk(r):
        for x in [top] + [os.path.join(top, f) for f in fs + dirs]:
            os.lchown(x, *owner)
    return r


def shell_run(client, repo, command):
    run = dm.run_start(client, {"agent": "shell", "prompt": command, "repo": {"path": repo}})
    done, _ = dm.run_wait(client, run["id"], limit_s=120)
    assert done["status"] == "succeeded", done
    return done


def test_apply_through_the_daemon(alice, repos):
    repo = make_repo(repos, {"a.txt": "a\n", "gone.txt": "g\n", "bin/tool": "#!/bin/sh\n"})
    before = snapshot(repo)
    done = shell_run(alice, repo, "echo b > a.txt; rm gone.txt; chmod +x bin/tool; mkdir -p n; "
                                  "printf 'x\\0y' > n/data.bin; ln -s /etc/shadow n/link")
    res = done["result"]
    assert snapshot(repo) == before, "the run wrote the host directory"
    assert sorted((f["path"], f["status"], f["binary"]) for f in res["changedFiles"]) == [
        ("a.txt", "modified", False), ("bin/tool", "modified", False), ("gone.txt", "deleted", False),
        ("n/data.bin", "added", True), ("n/link", "added", False)], res["changedFiles"]
    art = res["artifacts"][0]
    assert art["name"] == "diff.patch" and art["url"] == "/v1/runs/%s/artifacts/diff.patch" % done["id"]
    assert art["bytes"] == res["diffBytes"] and res["diffTruncated"] is False
    r = alice.post("/v1/runs/%s/apply" % done["id"])
    assert r.status == 200 and r.body["applied"] is True, r
    after = snapshot(repo)
    assert after["a.txt"] == ("file", b"b\n", False) and "gone.txt" not in after
    assert after["bin/tool"][2] is True and after["n/data.bin"] == ("file", b"x\0y", False)
    assert after["n/link"] == ("link", "/etc/shadow", False)
    for rel in ("a.txt", "n", "n/data.bin", "n/link"):
        st = os.lstat(os.path.join(repo, rel))
        assert (st.st_uid, st.st_gid) == (1000, 1000), rel
    # Applied again: every change conflicts now, nothing is written.
    r = alice.post("/v1/runs/%s/apply" % done["id"])
    dm.assert_problem(r, 409)
    assert "a.txt" in r.body["details"]["conflicts"], r.body
    assert snapshot(repo) == after


def test_a_tampered_patch_is_refused_by_the_apply_cell(alice, d, repos, hostdir):
    """Whatever diff.patch holds, the apply cell writes only inside the
    directory: the artifact is replaced by hostile patches on the host."""
    outside = os.path.join(hostdir, "outside")
    os.mkdir(outside)
    write(outside, "keep.txt", "k\n")
    repo = make_repo(repos, {"a.txt": "a\n"})
    os.symlink(outside, os.path.join(repo, "link"))
    done = shell_run(alice, repo, "echo b > a.txt")
    patch = os.path.join(str(d.state), "runs", done["id"], "diff.patch")
    assert os.path.isfile(patch)
    before, outside_before = snapshot(repo), snapshot(outside)
    named = {"dot-git": ".git/hooks/pre-commit", "dotdot": "../escape", "beyond-link": "link/evil",
             "link-then-through": "l2/x", "absolute": None}
    for name, path in named.items():
        with open(patch, "w") as f:
            f.write(HOSTILE[name])
        r = alice.post("/v1/runs/%s/apply" % done["id"])
        if path:
            dm.assert_problem(r, 409)
            assert path in r.body["details"]["conflicts"], (name, r.body)
        else:
            assert r.status in (400, 409), (name, r)
        assert "nothing was written" in r.body["detail"], r.body
        assert snapshot(repo) == before and snapshot(outside) == outside_before, name
    assert not os.path.exists("/etc/evil") and not os.path.exists(os.path.join(os.path.dirname(repo), "escape"))
    # A garbage patch is refused too.
    with open(patch, "wb") as f:
        f.write(b"\0\xff not a patch\n" * 100)
    r = alice.post("/v1/runs/%s/apply" % done["id"])
    assert r.status in (400, 409), r
    assert snapshot(repo) == before


def test_hostile_workspace_through_the_daemon(alice, repos):
    """An agent's .gitattributes, planted git config, odd names and a
    nested repository: the result stays valid JSON, bytes exact."""
    repo = make_repo(repos, {"crlf.txt": "a\r\n"})
    cmd = ("printf '* text eol=crlf filter=pwn diff=pwn\\n' > .gitattributes; "
           "printf '[filter \"pwn\"]\\n\\tclean = touch /tmp/pwned; cat\\n' > /etc/gitconfig; "
           "cp /etc/gitconfig /root/.gitconfig; printf 'a\\r\\nb\\r\\n' > crlf.txt; "
           "printf x > \"$(printf 'new\\nline')\"; printf y > \"$(printf 'bad\\377')\"; "
           "mkdir dep && cd dep && git init -q && echo d > d && git add d && "
           "git -c user.name=a -c user.email=a@b commit -qm x")
    done = shell_run(alice, repo, cmd)
    res = done["result"]
    paths = {f["path"] for f in res["changedFiles"]}
    assert {".gitattributes", "crlf.txt", "new\nline", "bad\ufffd", "dep"} <= paths, paths
    assert "+b\r\n" in res["diff"] or "+b\r" in res["diff"], res["diff"]
    json.dumps(res, ensure_ascii=False).encode("utf-8")


@pytest.fixture(scope="module")
def short(tmp_path_factory, repos):
    """A daemon whose ceiling on a process run (--limit run.timeoutMs) is
    8 s: the diff gets no longer."""
    yield from dm.serve(tmp_path_factory.mktemp("rundiff-short"),
                        ["--run-repo-root", str(repos), "--limit", "run.timeoutMs=8000"])


def test_a_diff_that_never_ends_is_killed(short, repos):
    """A workspace git would hash for ever (a sparse file of a terabyte):
    the diff is killed at its deadline, the run says why, nothing is left."""
    client = short.tenant(dm.uniq("slow"))
    repo = make_repo(repos, {"a.txt": "a\n"})
    run = dm.run_start(client, {"agent": "shell", "prompt": "truncate -s 1T huge.bin", "repo": {"path": repo}})

    def hashing():
        return [p for p in os.listdir("/proc") if p.isdigit() and _in_cell_of(p, short, (b"cell-rundiff", b"git"))]
    assert dm.wait_for(hashing, 60, 0.1), "git never seen hashing in the run's cell"
    done, _ = dm.run_wait(client, run["id"], limit_s=120)
    err = (done["result"] or {}).get("error") or {}
    assert done["status"] == "failed" and err.get("type") == "diff", done
    assert "did not finish within 8000 ms" in err.get("message", ""), err
    # No half patch is kept to serve, resume from or apply.
    assert not os.path.exists(os.path.join(str(short.state), "runs", run["id"], "diff.patch"))
    assert client.get("/v1/runs/%s/artifacts/diff.patch" % run["id"]).status == 404
    assert [c for c in client.get("/v1/cells").body["cells"] if c.get("run") == run["id"]] == []
    # No git or script of this daemon's cells is left hashing.
    assert not hashing()


def _in_cell_of(pid, daemon, needles):
    """Whether host process pid runs in a cell of daemon and its command
    line holds one of needles."""
    try:
        with open("/proc/%s/cmdline" % pid, "rb") as f:
            cmd = f.read()
        with open("/proc/%s/mountinfo" % pid) as f:
            mounts = f.read()
    except OSError:
        return False
    return str(daemon.state) in mounts and any(n in cmd for n in needles)


def test_a_patch_past_the_artifact_cap_is_cut_there(alice, repos):
    """56 MiB of random bytes make a ~71 MiB binary patch: the artifact is
    cut at 64 MiB (the script stopped there), the result says so."""
    repo = make_repo(repos, {"a.txt": "a\n"})
    done = shell_run(alice, repo, "head -c 58720256 /dev/urandom > big.bin")
    res = done["result"]
    art = res["artifacts"][0]
    assert res["diffBytes"] == art["bytes"] == 64 << 20, res["diffBytes"]
    assert art["truncated"] is True and res["diffTruncated"] is True
    assert len(res["diff"].encode()) <= 1 << 20
    assert res["changedFiles"] == [{"path": "big.bin", "status": "added", "binary": True}]
    r = alice.call("GET", "/v1/runs/%s/artifacts/diff.patch" % done["id"], timeout=120)
    assert r.status == 200 and len(r.raw) == 64 << 20 and r.raw.startswith(b"diff --git a/big.bin b/big.bin\n")
    # A cut patch is never applied (a prefix cut at a file's boundary would
    # apply, as part of the change).
    before = snapshot(repo)
    r = alice.post("/v1/runs/%s/apply" % done["id"])
    dm.assert_problem(r, 400)
    assert "cut" in r.body["detail"], r.body
    assert snapshot(repo) == before


def test_a_run_that_changes_nothing_has_an_empty_diff(alice, repos):
    repo = make_repo(repos, {"a.txt": "a\n"})
    res = shell_run(alice, repo, "cat a.txt >/dev/null")["result"]
    assert "error" not in res, res
    assert (res["diff"], res["diffBytes"], res["diffTruncated"], res["changedFiles"]) == ("", 0, False, [])
    assert res["artifacts"][0]["bytes"] == 0


def test_an_uploaded_workspace_the_agent_removed_is_all_deleted(alice):
    """An upload's copy is a plain directory of the cell: an agent that
    removes /workspace gets a diff deleting every file, not a failed diff."""
    import io
    import tarfile
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for name, data in {"a.txt": b"a\n", "sub/b.txt": b"b\n"}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    r = alice.call("POST", "/v1/runs/uploads", body=buf.getvalue(), headers={"Content-Type": "application/x-tar"})
    assert r.status == 201, r
    run = dm.run_start(alice, {"agent": "shell", "prompt": "cd / && rm -rf /workspace",
                               "repo": {"upload": r.body["upload"]}})
    done, _ = dm.run_wait(alice, run["id"], limit_s=120)
    res = done["result"]
    assert done["status"] == "succeeded" and "error" not in res, done
    assert sorted((f["path"], f["status"]) for f in res["changedFiles"]) == [
        ("a.txt", "deleted"), ("sub/b.txt", "deleted")], res["changedFiles"]


def _git(repo, *args):
    subprocess.run(["git", "-C", repo, "-c", "user.email=t@t", "-c", "user.name=t"] + list(args), check=True,
                   capture_output=True)


@pytest.mark.parametrize("bit", [None, "--assume-unchanged", "--skip-worktree"])
def test_a_git_base_seeds_the_index_yet_every_change_shows(state, hostdir, bit):
    # A git work tree's own index seeds tree A (rundiff.sh: seed), so git
    # trusts stat data: a change that keeps the size and puts the mtime
    # back, and files whose index entry says not to look, must still show.
    # The workspace is an overlay of the base, as a run's is.
    base = os.path.join(hostdir, "repo")
    os.mkdir(base)
    for name in ("same-size.txt", "flagged.txt", "gone.txt", "kept.txt"):
        write(base, name, "%s: 0123456789\n" % name)
    _git(base, "init", "-q")
    _git(base, "add", "-A")
    _git(base, "commit", "-qm", "base")
    if bit:
        _git(base, "update-index", bit, "flagged.txt")
    pre = ("cd %s && touch -r same-size.txt /tmp/ref && printf 'same-size.txt: 9876543210\\n' > same-size.txt"
           " && touch -r /tmp/ref same-size.txt && echo changed >> flagged.txt && rm gone.txt && echo n > new.txt"
           % WS)
    args = [CELL_BIN, "--state", state, "run", "--mount", "%s:%s:ro" % (base, BASE), "--overlay", "%s:%s" % (base, WS),
            "--", "/bin/sh", "-c", pre + '\nexec "$@"', "pre"] + script_argv("diff", BASE, WS)
    r = subprocess.run(args, capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert r.returncode == 0, (r.returncode, r.stderr[-2000:])
    entries, _, patch = parse(r.stdout)
    assert sorted((s, p) for s, p, _ in entries) == [("A", b"new.txt"), ("D", b"gone.txt"), ("M", b"flagged.txt"),
                                                     ("M", b"same-size.txt")], entries
    assert b"+same-size.txt: 9876543210" in patch and b"+changed" in patch, patch
    assert b".git/" not in patch
