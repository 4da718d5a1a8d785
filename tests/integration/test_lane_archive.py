"""`cell lane export` / `cell lane import`: round trips that reproduce an
overlay upper layer, and hostile tar streams that must be refused without
leaving anything behind.  Runs as root; CELL_BIN names the CLI (see
conftest.py, whose `state` fixture also checks for leftover cells)."""

import fcntl
import gzip
import hashlib
import io
import json
import os
import pathlib
import secrets
import stat
import subprocess
import tarfile

import pytest

from conftest import CELL_BIN


def cli(state, *args, stdin=subprocess.DEVNULL, timeout=120):
    return subprocess.run([CELL_BIN, "--state", str(state), *args], stdin=stdin, capture_output=True,
                          timeout=timeout)


def ok(proc):
    assert proc.returncode == 0, f"rc={proc.returncode} stderr={proc.stderr.decode(errors='replace')}"
    return proc


def export(state, name, path):
    with open(path, "wb") as out:
        proc = subprocess.run([CELL_BIN, "--state", str(state), "lane", "export", name], stdout=out,
                              stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, timeout=120)
    return proc


def import_(state, name, path, *extra):
    with open(path, "rb") as f:
        return cli(state, "lane", "import", name, *extra, stdin=f)


def lanes_dir(state):
    return state / "lanes"


def lane_names(state):
    return sorted(x["name"] for x in json.loads(ok(cli(state, "--json", "lane", "ls")).stdout)["lanes"])


@pytest.fixture
def state(state):
    """conftest's fresh state dir (whose teardown checks for leftover cells),
    as a Path, holding one empty lane "base"."""
    s = pathlib.Path(state)
    ok(cli(s, "lane", "create", "base"))  # also generates the host image
    return s


# ---- comparing layers --------------------------------------------------------

def snapshot(root, ignore_xattrs=()):
    """Everything an overlay upper layer means, keyed by relative path."""
    out, inodes = {}, {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = os.path.join(dirpath, n)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            rec = {"mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "mtime": st.st_mtime_ns}
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    rec["sha"] = hashlib.sha256(f.read()).hexdigest()
                if st.st_nlink > 1:
                    inodes.setdefault(st.st_ino, []).append(rel)
            elif stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                rec["rdev"] = st.st_rdev
            rec["xattrs"] = {k: os.getxattr(p, k, follow_symlinks=False)
                             for k in os.listxattr(p, follow_symlinks=False) if k not in ignore_xattrs}
            out[rel] = rec
    links = sorted(sorted(group) for group in inodes.values())
    return out, links


def assert_same(got, want):
    for path in sorted(set(got[0]) | set(want[0])):
        assert got[0].get(path) == want[0].get(path), path
    if want[1] is not None:
        assert got[1] == want[1]


def populate(upper):
    """Write a layer by hand, as a cell (and overlayfs) would have left it."""
    def p(*parts):
        return os.path.join(upper, *parts)

    os.makedirs(p("etc", "ssl"))
    os.makedirs(p("root"), exist_ok=True)
    os.chmod(p("root"), 0o700)
    os.makedirs(p("home", "agent", "deep", "a" * 60, "b" * 60, "c" * 60))  # > 100 chars: pax long names
    os.makedirs(p("srv", "empty"))
    with open(p("root", "note"), "w") as f:
        f.write("persisted\n")
    os.link(p("root", "note"), p("root", "note-link"))
    os.symlink("/etc/shadow", p("root", "shadow-link"))  # absolute, must never be followed on the host
    os.symlink("../../..", p("root", "up"))
    os.mknod(p("etc", "hostname"), stat.S_IFCHR | 0o000, os.makedev(0, 0))  # whiteout
    os.setxattr(p("etc", "ssl"), "trusted.overlay.opaque", b"y")  # opaque dir
    with open(p("etc", "ssl", "mine.pem"), "w") as f:
        f.write("cert\n")
    with open(p("root", "suid"), "wb") as f:
        f.write(b"\x7fELF fake")
    os.chmod(p("root", "suid"), 0o4755)
    with open(p("home", "agent", "work.txt"), "w") as f:
        f.write("x" * 100000)
    os.chown(p("home", "agent"), 1000, 1000)
    os.chown(p("home", "agent", "work.txt"), 1000, 1001)
    os.setxattr(p("home", "agent", "work.txt"), "user.origin", b"agent")
    os.setxattr(p("home", "agent", "work.txt"), "trusted.overlay.origin", b"\x00\xfb\x1d\x00")
    # security.* must not travel: export drops it (file capability, v2 format).
    os.setxattr(p("root", "suid"), "security.capability", bytes.fromhex("0000000201000000000000000000000000000000"))
    with open(p("home", "agent", "deep", "a" * 60, "b" * 60, "c" * 60, "leaf"), "w") as f:
        f.write("deep\n")
    with open(p("home", "agent", "caf\u00e9"), "w") as f:
        f.write("utf-8 name\n")
    with open(os.path.join(os.fsencode(p("home", "agent")), b"raw-\xff-name"), "w") as f:
        f.write("non-utf-8 name\n")
    with open(p("srv", "sparse"), "wb") as f:
        f.seek(4 << 20)
        f.write(b"end")
    open(p("srv", "empty-file"), "w").close()
    os.mkfifo(p("srv", "fifo"))  # a cell can make one; export leaves it out
    os.utime(p("root", "note"), ns=(1_600_000_000_123_456_789, 1_600_000_000_987_654_321))
    os.utime(p("srv", "empty"), ns=(1_500_000_000_000_000_001, 1_500_000_000_000_000_001))


def test_round_trip_of_a_layer_written_on_disk(state, tmp_path):
    up = lanes_dir(state) / "base" / "upper"
    populate(str(up))
    tar = tmp_path / "base.tar"
    ok(export(state, "base", tar))

    # The stream itself: relative names, numeric ids, a whiteout, no FIFO,
    # no security.* attribute, the symlink as a symlink.
    with tarfile.open(tar) as t:
        members = {m.name: m for m in t.getmembers()}
    assert all(not n.startswith(("/", "./")) and n != "." for n in members)
    assert members["etc/hostname"].ischr() and (members["etc/hostname"].devmajor,
                                                members["etc/hostname"].devminor) == (0, 0)
    assert members["etc/ssl"].pax_headers.get("SCHILY.xattr.trusted.overlay.opaque") == "y"
    assert members["root/shadow-link"].issym() and members["root/shadow-link"].linkname == "/etc/shadow"
    assert members["home/agent/work.txt"].uid == 1000 and members["home/agent/work.txt"].gid == 1001
    assert not members["home/agent/work.txt"].uname
    assert members["root/suid"].mode & stat.S_ISUID
    assert "srv/fifo" not in members
    assert not any(k.endswith("security.capability") for m in members.values() for k in m.pax_headers)
    assert {members["root/note"].islnk(), members["root/note-link"].islnk()} == {True, False}

    ok(import_(state, "copy", tar))
    assert lane_names(state) == ["base", "copy"]
    assert (lanes_dir(state) / "copy" / "image").read_text() == "host"
    assert sorted(os.listdir(lanes_dir(state) / "copy")) == ["image", "lock", "upper", "work"]

    want = snapshot(str(up), ignore_xattrs=("security.capability",))
    want[0].pop("srv/fifo")
    got = snapshot(str(lanes_dir(state) / "copy" / "upper"))
    assert_same(got, want)
    assert [".".join(x) for x in got[1]] == ["root/note.root/note-link"]


def test_round_trip_through_cells(state, tmp_path):
    """The real thing: a cell writes, the layer travels, another cell sees it."""
    ok(cli(state, "lane", "create", "work"))
    script = (
        "set -e; echo persisted > /root/note; ln /root/note /root/note-link; ln -s /etc/passwd /root/sl; "
        "rm /etc/hostname; cp /bin/true /root/suid; chmod u+s /root/suid; "
        "rm -rf /etc/ssl; mkdir /etc/ssl; echo mine > /etc/ssl/only; "
        "mkdir -p /home/agent; echo data > /home/agent/f; chown -R 1000:1000 /home/agent"
    )
    ok(cli(state, "run", "--lane", "work", "--", "sh", "-c", script))
    tar = tmp_path / "work.tar"
    ok(export(state, "work", tar))
    ok(import_(state, "again", tar))
    check = (
        "cat /root/note; cat /root/note-link; readlink /root/sl; "
        "[ \"$(stat -c %i /root/note)\" = \"$(stat -c %i /root/note-link)\" ] && echo same-inode; "
        "stat -c %A /root/suid; /root/suid && echo suid-runs; "
        "if [ -e /etc/hostname ]; then echo hostname-back; else echo hostname-gone; fi; "
        "ls /etc/ssl; stat -c %u:%g /home/agent/f"
    )
    out = ok(cli(state, "run", "--lane", "again", "--", "sh", "-c", check)).stdout.decode().split()
    assert out == ["persisted", "persisted", "/etc/passwd", "same-inode", "-rwsr-xr-x", "suid-runs",
                   "hostname-gone", "only", "1000:1000"]


def test_gzip_and_empty_lane(state, tmp_path):
    tar = tmp_path / "empty.tar"
    ok(export(state, "base", tar))
    ok(import_(state, "empty-copy", tar))
    assert os.listdir(lanes_dir(state) / "empty-copy" / "upper") == []

    populate(str(lanes_dir(state) / "base" / "upper"))
    ok(export(state, "base", tar))
    gz = tmp_path / "base.tar.gz"
    gz.write_bytes(gzip.compress(tar.read_bytes()))
    ok(import_(state, "from-gzip", gz))
    a = snapshot(str(lanes_dir(state) / "base" / "upper"), ignore_xattrs=("security.capability",))[0]
    a.pop("srv/fifo")
    assert_same(snapshot(str(lanes_dir(state) / "from-gzip" / "upper")), (a, None))


def test_import_binds_the_image(state, tmp_path):
    tar = tmp_path / "t.tar"
    ok(export(state, "base", tar))
    ok(import_(state, "on-host", tar, "--image", "host"))
    assert (lanes_dir(state) / "on-host" / "image").read_text() == "host"
    proc = import_(state, "on-nothing", tar, "--image", "no-such-image")
    assert proc.returncode != 0 and b"no-such-image" in proc.stderr
    proc = import_(state, "../evil", tar)
    assert proc.returncode != 0 and b"invalid lane name" in proc.stderr
    assert lane_names(state) == ["base", "on-host"]
    assert not [n for n in os.listdir(lanes_dir(state)) if n.startswith(".")]


def test_import_of_a_plain_gnu_tar(state, tmp_path):
    """`tar -C dir -c .` writes "./" names and a "." root entry."""
    src = tmp_path / "src"
    (src / "opt" / "tool").mkdir(parents=True)
    (src / "opt" / "tool" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(src / "opt" / "tool" / "run.sh", 0o755)
    tar = tmp_path / "gnu.tar"
    subprocess.run(["tar", "-C", str(src), "--numeric-owner", "-cf", str(tar), "."], check=True)
    ok(import_(state, "gnu", tar))
    f = lanes_dir(state) / "gnu" / "upper" / "opt" / "tool" / "run.sh"
    assert f.read_text() == "#!/bin/sh\necho hi\n" and os.stat(f).st_mode & 0o777 == 0o755
    assert os.stat(lanes_dir(state) / "gnu" / "upper").st_mode & 0o777 == 0o755


def test_export_refuses_ids_outside_the_cell_range(state, tmp_path):
    f = lanes_dir(state) / "base" / "upper" / "stray"
    f.write_text("made on the host")
    os.chown(f, 70000, 0)
    proc = export(state, "base", tmp_path / "x.tar")
    assert proc.returncode != 0
    assert b"lane 'base': 'stray' is owned by 70000:0" in proc.stderr


def test_export_unknown_lane_fails(state, tmp_path):
    proc = export(state, "nope", tmp_path / "x.tar")
    assert proc.returncode != 0
    assert b"no lane named 'nope'" in proc.stderr


def test_export_refuses_an_attached_lane(state, tmp_path):
    with open(lanes_dir(state) / "base" / "lock") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # what a running cell holds
        proc = export(state, "base", tmp_path / "x.tar")
    assert proc.returncode != 0
    assert b"lane 'base' is attached to a running cell" in proc.stderr
    ok(export(state, "base", tmp_path / "x.tar"))


def test_import_over_an_existing_lane_fails(state, tmp_path):
    (lanes_dir(state) / "base" / "upper" / "keep").write_text("mine")
    tar = tmp_path / "t.tar"
    ok(export(state, "base", tar))
    proc = import_(state, "base", tar)
    assert proc.returncode != 0
    assert b"lane 'base' already exists" in proc.stderr
    assert (lanes_dir(state) / "base" / "upper" / "keep").read_text() == "mine"
    assert sorted(os.listdir(lanes_dir(state))) == ["base"]


# ---- hostile streams ----------------------------------------------------------

def info(name, kind=tarfile.REGTYPE, **kw):
    ti = tarfile.TarInfo(name)
    ti.type = kind
    ti.mode = kw.pop("mode", 0o644)
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti


def build(path, entries):
    """entries: TarInfo or (TarInfo, bytes).  A few honest entries come
    first, so a refusal must also undo a partly extracted layer."""
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as t:
        t.addfile(info("etc", tarfile.DIRTYPE, mode=0o755))
        good = b"honest\n"
        t.addfile(info("etc/fine", size=len(good)), io.BytesIO(good))
        for e in entries:
            ti, data = e if isinstance(e, tuple) else (e, None)
            if data is not None:
                ti.size = len(data)
            t.addfile(ti, io.BytesIO(data) if data is not None else None)


def hostile(tmp_path, mark):
    """case -> (entries, what the error must say).  `mark` names every file
    an escape would create, so a stray one is found wherever it lands."""
    payload = b"pwned\n"
    up4 = "../../../.."  # from STATE/lanes/.x.tmp-N/upper up to STATE's parent
    return {
        "dotdot": ([(info(f"../{mark}"), payload)], "'..'"),
        "deep-dotdot": ([(info(f"etc/{up4}/../{mark}"), payload)], "'..'"),
        "absolute": ([(info(str(tmp_path / mark)), payload)], "absolute"),
        "block-device": ([info("dev/sda", tarfile.BLKTYPE, devmajor=8, devminor=0)], "block device"),
        "char-device": ([info("dev/null", tarfile.CHRTYPE, devmajor=1, devminor=3)], "character device"),
        "fifo": ([info("run/fifo", tarfile.FIFOTYPE)], "FIFO"),
        "slip-absolute": ([info("link", tarfile.SYMTYPE, linkname=str(tmp_path)),
                           (info(f"link/{mark}"), payload)], "symlink"),
        "slip-relative": ([info("link", tarfile.SYMTYPE, linkname=up4),
                           (info(f"link/{mark}"), payload)], "symlink"),
        "slip-dir": ([info("etc/d", tarfile.SYMTYPE, linkname="/"),
                      info(f"etc/d/{mark}", tarfile.DIRTYPE, mode=0o755)], "symlink"),
        "hardlink-absolute": ([info(mark, tarfile.LNKTYPE, linkname="/etc/passwd")], "absolute"),
        "hardlink-dotdot": ([info(mark, tarfile.LNKTYPE, linkname=f"{up4}/x")], "'..'"),
        "hardlink-via-symlink": ([info("link", tarfile.SYMTYPE, linkname="/etc"),
                                  info(mark, tarfile.LNKTYPE, linkname="link/passwd")], "symlink"),
        "uid-70000": ([(info("home/f", uid=70000), payload)], "70000"),
        "gid-70000": ([(info("home/f", gid=70000), payload)], "70000"),
        "file-capability": ([(info("bin/ping", pax_headers={
            "SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20\x00\x00"}), payload)],
            "security.capability"),
    }


HOSTILE = ["dotdot", "deep-dotdot", "absolute", "block-device", "char-device", "fifo", "slip-absolute",
           "slip-relative", "slip-dir", "hardlink-absolute", "hardlink-dotdot", "hardlink-via-symlink",
           "uid-70000", "gid-70000", "file-capability"]


def assert_nothing_left(state, tmp_path, mark="escape-", passwd_links=None):
    assert sorted(os.listdir(lanes_dir(state))) == ["base"]  # no lane, no .x.tmp-* dir
    assert lane_names(state) == ["base"]
    # Where a hostile entry would land: inside the state dir, next to it,
    # in the test's tmp dir, at / and in /etc.
    for top in (state, tmp_path):
        for dirpath, dirnames, filenames in os.walk(top):
            for n in dirnames + filenames:
                assert not n.startswith(mark), os.path.join(dirpath, n)
    for d in (state.parent, "/", "/etc"):
        assert not [n for n in os.listdir(d) if n.startswith(mark)], d
    if passwd_links is not None:
        assert os.stat("/etc/passwd").st_nlink == passwd_links  # no hard link to it was made


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_stream_is_refused(state, tmp_path, case):
    mark = "escape-" + secrets.token_hex(6)
    entries, why = hostile(tmp_path, mark)[case]
    tar = tmp_path / f"{case}.tar"
    build(tar, entries)
    links = os.stat("/etc/passwd").st_nlink
    proc = import_(state, "x", tar)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, err
    assert "lane 'x'" in err and why in err, err
    assert_nothing_left(state, tmp_path, mark, links)


def test_garbage_and_truncated_streams_are_refused(state, tmp_path):
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"this is not a tar stream\n" * 100)
    proc = import_(state, "x", junk)
    assert proc.returncode != 0 and b"lane 'x'" in proc.stderr
    assert_nothing_left(state, tmp_path)

    populate(str(lanes_dir(state) / "base" / "upper"))
    whole = tmp_path / "whole.tar"
    ok(export(state, "base", whole))
    cut = tmp_path / "cut.tar"
    data = whole.read_bytes()
    cut.write_bytes(data[: len(data) // 2 + 7])
    proc = import_(state, "x", cut)
    assert proc.returncode != 0 and b"lane 'x'" in proc.stderr
    assert_nothing_left(state, tmp_path)


def test_entry_names_in_errors_are_sanitized(state, tmp_path):
    tar = tmp_path / "esc.tar"
    build(tar, [info("dev/\x1b[2Jevil\nname", tarfile.BLKTYPE, devmajor=8, devminor=0)])
    proc = import_(state, "x", tar)
    assert proc.returncode != 0
    assert b"\x1b" not in proc.stderr and b"evil?name" in proc.stderr
    assert_nothing_left(state, tmp_path)


# ---- size-limited lanes: imports are bounded by the lane's size ------------------------------------------------------


def gzip_bomb(path, inflated, name="zeros"):
    """A .tar.gz of one file of `inflated` zero bytes, written streaming
    (a few hundred KiB on disk per 256 MiB)."""
    ti = tarfile.TarInfo(name)
    ti.size = inflated
    chunk = bytes(1 << 20)
    with gzip.open(path, "wb", compresslevel=9) as gz:
        gz.write(ti.tobuf(tarfile.PAX_FORMAT))
        for _ in range(inflated // len(chunk)):
            gz.write(chunk)
        gz.write(bytes(inflated % len(chunk) + (-inflated % 512) + 1024))


def test_sized_import_of_a_gzip_bomb_is_refused_and_leaves_nothing(state, tmp_path):
    """A small .tar.gz that inflates to 8x the lane's size: refused as soon as
    its header says so, with a message saying why, and no lane, temporary dir
    or loop device is left."""
    bomb = tmp_path / "bomb.tar.gz"
    gzip_bomb(bomb, 256 << 20)
    assert bomb.stat().st_size < (1 << 20)
    proc = import_(state, "bomb", bomb, "--size", "32M")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, err
    assert "lane 'bomb'" in err and "more than the lane's size of 33554432 bytes" in err, err
    assert_nothing_left(state, tmp_path)
    assert wait_for_no_loops(state)


def test_sized_import_stops_at_enospc(state, tmp_path):
    """A tar whose files add up to less than the lane's size but more than
    its filesystem holds (ext4 keeps some for itself) fails cleanly: ENOSPC."""
    tar = tmp_path / "many.tar"
    with tarfile.open(tar, "w", format=tarfile.PAX_FORMAT) as tf:
        data = b"y" * (3 << 20)
        for i in range(12):  # 36 MiB of data for a 32 MiB lane, in a 36 MiB stream
            ti = tarfile.TarInfo("f%02d" % i)
            ti.size = len(data)
            tf.addfile(ti, io.BytesIO(data))
    proc = import_(state, "full", tar, "--size", "40M")
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode != 0, err
    assert "No space left on device" in err and "lane 'full'" in err, err
    assert_nothing_left(state, tmp_path)


def test_round_trip_of_a_sized_lane(state, tmp_path):
    """Export and import of size-limited lanes: the layer goes through the
    mounted image, and survives a cell."""
    ok(cli(state, "lane", "create", "small", "--size", "32M"))
    ok(cli(state, "run", "--lane", "small", "--", "sh", "-c",
           "mkdir -p /root/d && echo kept > /root/d/note && chown 1000:1000 /root/d/note"))
    tar = tmp_path / "small.tar"
    ok(export(state, "small", tar))
    with tarfile.open(tar) as tf:
        note = tf.getmember("root/d/note")
        assert tf.extractfile(note).read() == b"kept\n" and (note.uid, note.gid) == (1000, 1000)
    ok(import_(state, "copy", tar, "--size", "24M"))
    lanes = {l["name"]: l for l in json.loads(ok(cli(state, "--json", "lane", "ls")).stdout)["lanes"]}
    assert lanes["copy"]["size"] == 24 << 20 and lanes["small"]["size"] == 32 << 20
    out = ok(cli(state, "run", "--lane", "copy", "--", "stat", "-c", "%u:%g %n", "/root/d/note")).stdout
    assert out == b"1000:1000 /root/d/note\n"
    proc = import_(state, "tiny", tar, "--size", "1M")
    assert proc.returncode != 0 and b"at least 16M" in proc.stderr
    assert wait_for_no_loops(state)
    for n in ("small", "copy"):
        ok(cli(state, "lane", "rm", n))


def wait_for_no_loops(state, timeout=10):
    import time
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        busy = []
        for dev in os.listdir("/sys/block"):
            try:
                with open("/sys/block/%s/loop/backing_file" % dev) as f:
                    if f.read().startswith(str(state)):
                        busy.append(dev)
            except OSError:
                pass
        if not busy:
            return True
        time.sleep(0.1)
    return False
