"""What a cell execs as its PID 1 (src/runtime/init_exe.c): the build's
cell-init beside the running `cell`, through a read-only detached mount,
when it is the embedded build; otherwise a sealed memfd copy.  Either way
nothing in the cell, and nothing through the cell's init, can write the
file the host keeps."""
import errno
import hashlib
import os
import shutil
import subprocess
import time

import pytest

from conftest import CELL_BIN

INIT_BESIDE = os.path.join(os.path.dirname(CELL_BIN), "cell-init")


def sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def cell_init_of(pid, timeout=30):
    """The host pid of the cell-init child of `cell run` process `pid`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/stat" % entry) as f:
                    stat = f.read()
            except OSError:
                continue
            comm = stat[stat.index("(") + 1:stat.rindex(")")]
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            if ppid == pid and comm in ("cell-init", "memfd:cell-init"):
                return int(entry)
        time.sleep(0.05)
    raise AssertionError("no cell-init under pid %d" % pid)


def running_cell(binary, state):
    """Start `binary run` with a command that waits; returns (proc, init pid)."""
    p = subprocess.Popen([binary, "--state", state, "run", "--", "/bin/sh", "-c", "echo up; sleep 60"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert p.stdout.readline() == "up\n", p.stderr.read() if p.poll() is not None else ""
        return p, cell_init_of(p.pid)
    except BaseException:
        stop(p)
        raise


def stop(p):
    p.terminate()
    p.communicate(timeout=60)


@pytest.mark.skipif(not os.path.exists(INIT_BESIDE), reason="no cell-init beside the cell binary")
def test_init_beside_the_binary_is_exec_d_read_only(state):
    before = sha256(INIT_BESIDE)
    p, init = running_cell(CELL_BIN, state)
    try:
        exe = "/proc/%d/exe" % init
        assert "memfd" not in os.readlink(exe)
        # Host root itself cannot write it through the cell's init: the
        # mount is read-only (and the file is busy while it runs).
        with pytest.raises(OSError) as e:
            os.open(exe, os.O_WRONLY)
        assert e.value.errno in (errno.EROFS, errno.ETXTBSY)
        # The cell's root cannot even name it (init is not dumpable).
        r = subprocess.run([CELL_BIN, "--state", state, "run", "--", "/bin/sh", "-c",
                            "readlink /proc/1/exe; echo x > /proc/1/exe && echo WROTE"],
                           capture_output=True, text=True, timeout=60)
        assert "WROTE" not in r.stdout and "cell-init" not in r.stdout, r
    finally:
        stop(p)
    assert sha256(INIT_BESIDE) == before


def copy_with_init(tmp_path, init_bytes, mode=0o755):
    d = tmp_path / "bin"
    d.mkdir()
    shutil.copy(CELL_BIN, d / "cell")
    (d / "cell-init").write_bytes(init_bytes)
    os.chmod(d / "cell-init", mode)
    return str(d / "cell")


def assert_runs_from_memfd(binary, state):
    p, init = running_cell(binary, state)
    try:
        assert os.readlink("/proc/%d/exe" % init).startswith("/memfd:cell-init"), os.readlink(
            "/proc/%d/exe" % init)
    finally:
        stop(p)


@pytest.mark.skipif(not os.path.exists(INIT_BESIDE), reason="no cell-init beside the cell binary")
def test_a_different_cell_init_beside_the_binary_is_not_run(state, tmp_path):
    """Same size, one byte of the build-id changed: not the embedded build."""
    data = bytearray(open(INIT_BESIDE, "rb").read())
    # The note header: namesz 4, descsz 20 (SHA-1), type NT_GNU_BUILD_ID, "GNU".
    note = data.find(b"\x04\0\0\0\x14\0\0\0\x03\0\0\0GNU\0")
    assert note > 0
    data[note + 16] ^= 0xff
    binary = copy_with_init(tmp_path, bytes(data))
    assert_runs_from_memfd(binary, state)


@pytest.mark.skipif(not os.path.exists(INIT_BESIDE), reason="no cell-init beside the cell binary")
def test_a_writable_cell_init_beside_the_binary_is_not_run(state, tmp_path):
    """The very build, but group-writable: anyone in that group could swap it."""
    binary = copy_with_init(tmp_path, open(INIT_BESIDE, "rb").read(), mode=0o775)
    assert_runs_from_memfd(binary, state)


def test_other_files_named_cell_init_are_not_run(state, tmp_path):
    binary = copy_with_init(tmp_path, open("/bin/true", "rb").read())
    assert_runs_from_memfd(binary, state)
