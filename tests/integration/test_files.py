"""Paths as the CLI takes them: --mount sources (host paths, symlinks
followed on the host), --mount/--tmpfs targets and --cwd (paths inside the
cell: absolute, no '..', not inside the runtime's /proc, /dev, /sys), and
what a bad one reports.
"""
import os
import subprocess

import pytest

from conftest import DEBIAN


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


@pytest.fixture
def src(hostdir):
    """hostdir/real/{file,sub/} and symlinks to it."""
    real = os.path.join(hostdir, "real")
    os.makedirs(os.path.join(real, "sub"))
    write(os.path.join(real, "file"), "real-content\n")
    os.symlink(real, os.path.join(hostdir, "abs-link"))
    os.symlink("real", os.path.join(hostdir, "rel-link"))
    os.symlink("abs-link", os.path.join(hostdir, "link-to-link"))
    os.symlink(os.path.join(real, "file"), os.path.join(hostdir, "file-link"))
    return hostdir


# ---- sources ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["real", "abs-link", "rel-link", "link-to-link"])
def test_mount_source_symlinks_are_followed_on_the_host(run, src, name):
    r = run(["run", "--mount", "%s:/w" % os.path.join(src, name), "--", "sh", "-c",
             "cat /w/file; echo new > /w/written; test -d /w/sub && echo sub"])
    assert (r.returncode, r.stdout) == (0, "real-content\nsub\n"), r.stderr
    with open(os.path.join(src, "real", "written")) as f:
        assert f.read() == "new\n"


def test_relative_mount_source_is_relative_to_the_callers_cwd(run, src):
    for spec in ("./real:/w", "real:/w", "rel-link/../real:/w"):
        r = run(["run", "--mount", spec, "--", "cat", "/w/file"], cwd=src)
        assert (r.returncode, r.stdout) == (0, "real-content\n"), (spec, r.stderr)


def test_file_mount_through_a_symlink(run, src):
    r = run(["run", "--mount", "%s/file-link:/opt/app/conf" % src, "--", "sh", "-c",
             "cat /opt/app/conf; test -f /opt/app/conf && echo is-file"])
    assert (r.returncode, r.stdout) == (0, "real-content\nis-file\n"), r.stderr
    # Over an existing file of the image.
    r = run(["run", "--mount", "%s/real/file:/etc/hostname" % src, "--", "cat", "/etc/hostname"])
    assert (r.returncode, r.stdout) == (0, "real-content\n"), r.stderr


def test_file_source_onto_a_directory_is_refused(run, src):
    r = run(["run", "--mount", "%s/real/file:/etc" % src, "--", "echo", "RAN"])
    assert r.returncode == 125 and "RAN" not in r.stdout
    assert "/etc" in r.stderr, r.stderr


@pytest.mark.parametrize("source", ["/nonexistent-cell-test/dir", "{src}/dangling", "{src}/real/file/x"])
def test_missing_mount_source_is_refused_with_its_path(run, src, source):
    os.symlink("/nonexistent-cell-test/target", os.path.join(src, "dangling"))
    path = source.format(src=src)
    r = run(["run", "--mount", "%s:/w" % path, "--", "echo", "RAN"])
    assert r.returncode == 125 and "RAN" not in r.stdout
    assert path in r.stderr, r.stderr
    assert "does not exist" in r.stderr or "not a directory" in r.stderr.lower(), r.stderr


def test_read_only_mount(run, src):
    r = run(["run", "--mount", "%s/real:/w:ro" % src, "--", "sh", "-c",
             "cat /w/file; echo x > /w/file; echo x > /w/new; rm /w/file; echo end"])
    assert r.stdout == "real-content\nend\n", r.stdout
    assert r.stderr.count("Read-only file system") >= 3, r.stderr
    with open(os.path.join(src, "real", "file")) as f:
        assert f.read() == "real-content\n"
    assert sorted(os.listdir(os.path.join(src, "real"))) == ["file", "sub"]


def test_read_only_mount_is_read_only_below_host_submounts(run, src):
    sub = os.path.join(src, "real", "sub")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "cell-it-sub", sub], check=True)
    try:
        write(os.path.join(sub, "inner"), "inner\n")
        r = run(["run", "--mount", "%s/real:/w:ro" % src, "--", "sh", "-c",
                 "cat /w/sub/inner; echo x > /w/sub/inner && echo WROTE; touch /w/sub/new && echo CREATED; echo end"])
        assert r.stdout == "inner\nend\n", (r.stdout, r.stderr)
        with open(os.path.join(sub, "inner")) as f:
            assert f.read() == "inner\n"
    finally:
        subprocess.run(["umount", sub], check=True)


def test_rw_mount_changes_reach_the_host_directory(run, src):
    real = os.path.join(src, "real")
    r = run(["run", "--mount", "%s:/w" % real, "--", "sh", "-c",
             "echo more >> /w/file; mkdir /w/newdir; echo n > /w/newdir/n; rm -r /w/sub; ls /w"])
    assert (r.returncode, r.stdout) == (0, "file\nnewdir\n"), r.stderr
    assert sorted(os.listdir(real)) == ["file", "newdir"]
    with open(os.path.join(real, "file")) as f:
        assert f.read() == "real-content\nmore\n"


# ---- targets --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("target", ["/a/../b", "/..", "/w/..", "/w/../../etc", "/w/./../x"])
def test_mount_target_with_dotdot_is_refused(run, src, target):
    for opt in (["--mount", "%s/real:%s" % (src, target)], ["--tmpfs", target]):
        r = run(["run"] + opt + ["--", "echo", "RAN"])
        assert r.returncode == 125 and "RAN" not in r.stdout, (opt, r.stdout, r.stderr)
        assert "'..'" in r.stderr and target in r.stderr, r.stderr


@pytest.mark.parametrize("target", ["w", "./w", "w/x", ""])
def test_relative_mount_target_is_refused(run, src, target):
    r = run(["run", "--tmpfs", target, "--", "echo", "RAN"])
    assert r.returncode in (2, 125) and "RAN" not in r.stdout, (r.stdout, r.stderr)
    if target:
        assert "absolute" in r.stderr, r.stderr


@pytest.mark.parametrize("target", ["/proc", "/proc/x", "/proc/sys", "/dev", "/dev/shm", "/dev/x", "/sys",
                                    "/sys/fs/cgroup", "/"])
def test_mount_target_in_runtime_trees_is_refused(run, src, target):
    for opt in (["--mount", "%s/real:%s" % (src, target)], ["--tmpfs", target]):
        r = run(["run"] + opt + ["--", "echo", "RAN"])
        assert r.returncode == 125 and "RAN" not in r.stdout, (opt, r.stdout, r.stderr)
        assert target in r.stderr, r.stderr


@pytest.mark.parametrize("target", ["//proc/x", "/./dev/x", "//sys", "/./sys/kernel", "//", "/.", "/./"])
def test_non_canonical_spellings_of_runtime_trees_are_refused(run, src, target):
    """The same directories spelled with '//' or '/./' must not slip past the
    check: they resolve to the same place in the cell."""
    r = run(["run", "--mount", "%s/real:%s" % (src, target), "--", "sh", "-c",
             "echo RAN; grep -c ' %s/real ' /proc/self/mountinfo" % src])
    assert r.returncode == 125 and "RAN" not in r.stdout, (target, r.stdout, r.stderr)


@pytest.mark.parametrize("target", ["/procfs", "/devices", "/system", "/a..b", "/...", "/.w", "/w/x.."])
def test_lookalike_targets_are_accepted(run, src, target):
    r = run(["run", "--mount", "%s/real:%s" % (src, target), "--", "cat", target + "/file"])
    assert (r.returncode, r.stdout) == (0, "real-content\n"), (target, r.stderr)


def test_nested_targets_are_created(run, src):
    r = run(["run", "--mount", "%s/real:/deep/er/w" % src, "--tmpfs", "/deep/er/w/sub/t", "--", "sh", "-c",
             "cat /deep/er/w/file; df -k /deep/er/w/sub/t | tail -1 | tr -s ' ' | cut -d' ' -f2"])
    assert (r.returncode, r.stdout) == (0, "real-content\n65536\n"), r.stderr
    # The mount point for the tmpfs was created in the host directory.
    assert os.path.isdir(os.path.join(src, "real", "sub", "t"))


@pytest.mark.debian
def test_target_below_an_absolute_symlink_of_the_image(dstate, run):
    """Debian's /var/run is a symlink to /run: a target below it must be
    created where the cell sees it, /run/app."""
    r = run(["run", "--image", DEBIAN, "--tmpfs", "/var/run/app:2M", "--", "sh", "-c",
             "df -k /run/app | tail -1 | tr -s ' ' | cut -d' ' -f2"], state=dstate)
    assert (r.returncode, r.stdout) == (0, "2048\n"), r.stderr


# ---- --cwd ------------------------------------------------------------------------------------------------------


def test_cwd_nonexistent_is_a_clear_error(run):
    r = run(["run", "--cwd", "/no/such/dir", "--", "echo", "RAN"])
    assert r.returncode != 0 and "RAN" not in r.stdout
    assert "/no/such/dir" in r.stderr and "working directory" in r.stderr, r.stderr
    assert "No such file or directory" in r.stderr


@pytest.mark.parametrize("cwd, words", [
    ("tmp", ["absolute"]),
    ("/tmp/../etc", ["'..'"]),
    ("/etc/passwd", ["/etc/passwd", "Not a directory"]),
])
def test_bad_cwd_is_refused(run, cwd, words):
    r = run(["run", "--cwd", cwd, "--", "echo", "RAN"])
    assert r.returncode != 0 and "RAN" not in r.stdout
    for w in words:
        assert w in r.stderr, r.stderr


def test_cwd_not_accessible_to_the_user(run):
    r = run(["run", "--user", "1000", "--cwd", "/root", "--", "echo", "RAN"])
    assert r.returncode != 0 and "RAN" not in r.stdout
    assert "/root" in r.stderr and "Permission denied" in r.stderr, r.stderr


def test_cwd_inside_a_mount(run, src):
    r = run(["run", "--mount", "%s/real:/w" % src, "--cwd", "/w/sub", "--", "sh", "-c", "pwd; ls ../file"])
    assert (r.returncode, r.stdout) == (0, "/w/sub\n../file\n"), r.stderr
