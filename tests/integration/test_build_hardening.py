"""The binaries CI tests are built hardened (issue 9): PIE, full RELRO with
immediate binding, no executable stack, stack protector, and, outside the
sanitizer builds, _FORTIFY_SOURCE's checked libc calls.  readelf reads the
ELF headers; nothing here runs the binaries."""
import os
import subprocess

import pytest

from conftest import CELL_BIN

# cell-egress (the egress helper) is embedded in cell and exec'd from a memfd;
# the copy beside it is the same bytes; so are the plugins (libcell-*.so,
# dlopen()ed from a memfd).  `cell serve` execs cell-daemon.
BINARIES = [CELL_BIN] + [os.path.join(os.path.dirname(CELL_BIN), n)
                         for n in ("cell-init", "cell-egress", "cell-daemon", "libcell-net.so", "libcell-archive.so",
                                   "libcell-vfs.so")]


def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True, check=True).stdout


def sanitized(path):
    return "libasan" in readelf("-d", path) or "libtsan" in readelf("-d", path)


@pytest.mark.parametrize("path", BINARIES, ids=os.path.basename)
def test_pie_relro_now_noexecstack(path):
    header = readelf("-h", path)
    assert "DYN (" in header, f"{path} is not position-independent:\n{header}"
    segments = readelf("-l", path)
    assert "GNU_RELRO" in segments, f"{path} has no RELRO segment"
    stack = [line for line in segments.splitlines() if "GNU_STACK" in line]
    assert stack and "RWE" not in stack[0], f"{path} has an executable stack: {stack}"
    dynamic = readelf("-d", path)
    assert "BIND_NOW" in dynamic or "NOW" in dynamic, f"{path} is not linked with -z now"


@pytest.mark.parametrize("path", BINARIES, ids=os.path.basename)
def test_stack_protector_and_fortify(path):
    symbols = readelf("-s", path)
    assert "__stack_chk_fail" in symbols, f"{path} has no stack protector"
    if sanitized(path):
        pytest.skip("sanitizer builds leave out _FORTIFY_SOURCE")
    checked = [s for s in ("__snprintf_chk", "__memcpy_chk", "__read_chk", "__sprintf_chk", "__vsnprintf_chk")
               if s in symbols]
    assert checked, f"{path} calls no fortified libc function (_FORTIFY_SOURCE missing?)"
