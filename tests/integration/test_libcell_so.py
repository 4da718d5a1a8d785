"""build/libcell.so.0, libcell as a shared library (docs/libcell.md), and
build/libcell-public.a, its static form: each exports the functions of
include/cell.h and nothing else (the .so under a CELL_* version node); the
export check itself catches a leak; a program linked against either alone
boots cells with API v2 (libcell_so_smoke.c), and one that defines names
libcell uses inside links against the archive without a clash."""
import os
import subprocess

import pytest

from conftest import CELL_BIN, CHECKOUT

BUILD = os.path.dirname(CELL_BIN)
SO = os.path.join(BUILD, "libcell.so.0")
SMOKE = os.path.join(BUILD, "tests", "libcell_so_smoke")
ARCHIVE = os.path.join(BUILD, "libcell-public.a")
STATIC_SMOKE = os.path.join(BUILD, "tests", "libcell_static_smoke")
CHECK = os.path.join(CHECKOUT, "scripts", "check-exports.sh")
HEADER = os.path.join(CHECKOUT, "include", "cell.h")


def readelf(*args):
    return subprocess.run(["readelf", "-W", *args], capture_output=True, text=True, check=True).stdout


@pytest.fixture(scope="module")
def so():
    if not os.path.exists(SO):
        pytest.fail("%s not found: run `make`" % SO)
    return SO


def test_exports_are_exactly_the_public_api(so):
    r = subprocess.run(["bash", CHECK, so, HEADER], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "check-exports: ok" in r.stdout


def test_the_export_check_fails_on_a_leak(tmp_path):
    """A library that leaks an internal helper, exports an undeclared cell_
    symbol, has an unversioned one and lacks a declared function fails the
    check, naming each."""
    src = tmp_path / "leaky.c"
    src.write_text("int cell_version_number(void) { return 1; }\n"
                   "int util_fail(void) { return 2; }\n"
                   "int cell_init_blob_start(void) { return 3; }\n")
    header = tmp_path / "cell.h"
    header.write_text("int cell_version_number(void);\nconst char *cell_version(void);\n")
    lib = tmp_path / "libleaky.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-o", str(lib), str(src)], check=True)
    r = subprocess.run(["bash", CHECK, str(lib), str(header)], capture_output=True, text=True)
    assert r.returncode == 1, r.stdout
    out = r.stdout
    assert "outside the cell_ namespace" in out and "  util_fail" in out, out
    assert "without a CELL_* version" in out and "cell_version_number" in out, out
    assert "does not declare" in out and "  cell_init_blob_start" in out, out
    assert "does not export" in out and "  cell_version\n" in out, out


def test_so_is_versioned_and_hardened(so):
    dynamic = readelf("-d", so)
    assert "Library soname: [libcell.so.0]" in dynamic, dynamic
    assert "BIND_NOW" in dynamic or "(FLAGS)" in dynamic and "NOW" in dynamic, dynamic
    assert "GNU_RELRO" in readelf("-l", so)
    assert "CELL_0.2" in readelf("-V", so)
    # The owner's network and archive code is embedded and loaded on demand,
    # as in the lean cell: the .so itself needs none of their libraries.
    needed = [line for line in dynamic.splitlines() if "(NEEDED)" in line]
    for lib in ("libnftables", "libssl", "libcrypto", "libarchive", "libmicrohttpd", "libsqlite3", "libcurl"):
        assert not any(lib in line for line in needed), needed


def test_a_program_linked_against_the_so_boots_cells(cell, state, so):
    needed = readelf("-d", SMOKE)
    assert "[libcell.so.0]" in needed, needed
    r = subprocess.run([SMOKE, state], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cell without a policy: ok" in r.stdout and "cell with a policy: ok" in r.stdout, r.stdout
    assert r.stdout.splitlines()[0] == "libcell " + subprocess.run(
        [CELL_BIN, "--version"], capture_output=True, text=True, check=True).stdout.split()[1]


def test_static_archive_exports_only_the_api():
    r = subprocess.run(["bash", CHECK, ARCHIVE, HEADER], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_a_program_linked_with_the_static_archive_boots_cells(cell, state):
    r = subprocess.run([STATIC_SMOKE, state], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "cell with a policy: ok" in r.stdout, r.stdout
    assert "libcell.so" not in readelf("-d", STATIC_SMOKE)


def test_a_program_may_use_the_names_of_libcells_internals(tmp_path):
    """util_fail, util_path and runtime_check_cell_path are libcell's; a
    program of the same names links with libcell-public.a (they are local
    there): its own versions are the ones it calls, and libcell still calls
    its own (the setter's refusal of NULL goes through libcell's util_fail:
    -1, not the program's 7).  Against libcell.a the link fails."""
    src = tmp_path / "names.c"
    src.write_text('#include <stdio.h>\n#include "cell.h"\n'
                   "int util_fail(void) { return 7; }\n"
                   "int util_path(void) { return 8; }\n"
                   "int runtime_check_cell_path(void) { return 9; }\n"
                   'int main(void) { printf("%s %d %d\\n", cell_version(), cell_options_set_hostname(NULL, "x", NULL), '
                   "util_fail() + util_path() + runtime_check_cell_path()); return 0; }\n")
    exe = tmp_path / "names"
    # jansson and nettle: the image store's image.json, manifests and digests (issue 13).
    libs = subprocess.run(["pkg-config", "--libs", "libseccomp", "jansson", "nettle"], capture_output=True,
                          text=True).stdout.split()
    # A sanitizer build's archive needs its runtime.
    undefined = subprocess.run(["nm", "-u", ARCHIVE], capture_output=True, text=True, check=True).stdout
    san = (["-fsanitize=address,undefined"] if "__asan_" in undefined else
           ["-fsanitize=thread"] if "__tsan_" in undefined else [])
    r = subprocess.run(["cc", "-std=c17", *san, "-I", os.path.join(CHECKOUT, "include"), "-o", str(exe), str(src),
                        ARCHIVE, "-Wl,--as-needed"] + (libs or ["-lseccomp", "-ljansson", "-lnettle"]) + ["-lpthread"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    out = subprocess.run([str(exe)], capture_output=True, text=True, check=True).stdout
    assert out.split() == [subprocess.run([CELL_BIN, "--version"], capture_output=True, text=True,
                                          check=True).stdout.split()[1], "-1", "24"], out
