"""The link units (issue 11): the `cell` CLI loads libseccomp and libc only;
the owner's side of the egress engine (libnftables, OpenSSL...) and lane
export/import (libarchive) are plugins embedded in it, loaded from a sealed
memfd only when a cell has a policy or a lane is exported or imported; `cell
serve` execs cell-daemon, which links the rest.  Each test here fails if a
heavy library creeps back into a path that does not use it."""
import os
import select
import shutil
import subprocess
import tarfile

import pytest

from conftest import CELL_BIN

BUILD = os.path.dirname(CELL_BIN)
DAEMON = os.path.join(BUILD, "cell-daemon")
# What only the plugins and the daemon may load.
HEAVY = ("libnftables", "libnftnl", "libmnl", "libssl", "libcrypto", "libldns", "libmicrohttpd", "libsqlite3",
         "libcurl", "libgnutls", "libxml2", "libicu", "libstdc++", "libjansson")
# libarchive and what it brings: only the archive plugin loads them (lane
# export/import, `cell cp DIR ID:PATH`).
ARCHIVE = ("libarchive", "libxml2", "libicu", "libstdc++")


def ldd(path):
    out = subprocess.run(["ldd", path], capture_output=True, text=True, check=True).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def heavy_in(names, heavy=HEAVY):
    # A sanitizer build's runtime brings libstdc++ itself (libubsan needs it).
    sanitized = any(os.path.basename(n).startswith(("libasan", "libubsan")) for n in names)
    heavy = tuple(h for h in heavy if not (sanitized and h == "libstdc++"))
    return sorted(n for n in names for h in heavy if os.path.basename(n).startswith(h))


def test_cell_links_no_heavy_library():
    libs = ldd(CELL_BIN)
    assert heavy_in([n for n in libs if not n.startswith(ARCHIVE)]) == [], libs


def test_cell_links_no_libarchive():
    libs = ldd(CELL_BIN)
    assert heavy_in(libs, ARCHIVE) == [], libs


def test_daemon_links_the_server_but_loads_the_plugins():
    libs = ldd(DAEMON)
    for need in ("libmicrohttpd", "libsqlite3"):
        assert any(n.startswith(need) for n in libs), (need, libs)
    assert heavy_in(libs, ("libnftables", "libarchive", "libxml2", "libicu", "libstdc++", "libldns", "libssl",
                           "libfuse3")) == [], libs


def test_cell_and_libcell_link_no_libfuse():
    # Virtual filesystems load libcell-vfs.so (and libfuse) on first use.
    for binary in (CELL_BIN, os.path.join(os.path.dirname(CELL_BIN), "libcell.so.0")):
        assert heavy_in(ldd(binary), ("libfuse3",)) == [], binary


def start_cell(state, *args):
    """`cell run ... -- sh` that says "ready" and waits for its stdin to close."""
    p = subprocess.Popen([CELL_BIN, "--state", state, "run", *args, "--", "/bin/sh", "-c", "echo ready; read x; exit 0"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ready, _, _ = select.select([p.stdout], [], [], 60)
    line = p.stdout.readline() if ready else ""
    if line.strip() != "ready":
        p.kill()
        _, err = p.communicate(timeout=30)
        pytest.fail("cell run did not start: %r %r" % (line, err))
    return p


def mapped(pid):
    with open("/proc/%d/maps" % pid) as f:
        return {line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6}


def stop_cell(p):
    p.stdin.close()
    assert p.wait(timeout=60) == 0, p.stderr.read()


def test_cell_run_without_policy_maps_no_plugin(state):
    p = start_cell(state)
    try:
        maps = mapped(p.pid)
    finally:
        stop_cell(p)
    assert heavy_in([m for m in maps if not os.path.basename(m).startswith(ARCHIVE)]) == [], sorted(maps)
    assert not [m for m in maps if "libcell-" in m], sorted(maps)


def test_cell_run_without_policy_maps_no_libarchive(state):
    p = start_cell(state)
    try:
        maps = mapped(p.pid)
    finally:
        stop_cell(p)
    assert heavy_in(maps, ARCHIVE) == [], sorted(maps)


def test_cell_run_with_policy_loads_the_net_plugin_from_a_memfd(state, tmp_path):
    pol = tmp_path / "policy.json"
    pol.write_text('{"rules": []}')
    p = start_cell(state, "--policy", str(pol))
    try:
        maps = mapped(p.pid)
    finally:
        stop_cell(p)
    # Sealed memfd, not a file anyone could swap; its libraries come with it.
    assert [m for m in maps if m.startswith("/memfd:libcell-net.so")], sorted(maps)
    assert [m for m in maps if "libnftables" in m], sorted(maps)
    assert not [m for m in maps if "libcell-archive" in m], sorted(maps)


def test_a_lone_cell_binary_still_polices_and_exports(state, tmp_path):
    """A one-file install: the plugins are inside `cell`, nothing beside it."""
    lone = tmp_path / "bin" / "cell"
    lone.parent.mkdir()
    shutil.copy(CELL_BIN, lone)
    env = dict(os.environ, CELL_STATE=state)
    pol = tmp_path / "policy.json"
    pol.write_text('{"rules": []}')
    r = subprocess.run([str(lone), "run", "--policy", str(pol), "--", "/bin/sh", "-c", "echo hi > /dev/tcp/127.0.0.1/9 || echo refused"],
                       capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([str(lone), "lane", "create", "one"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    try:
        out = tmp_path / "one.tar"
        with open(out, "wb") as f:
            r = subprocess.run([str(lone), "lane", "export", "one"], stdout=f, stderr=subprocess.PIPE, timeout=60,
                               env=env)
        assert r.returncode == 0, r.stderr
        with tarfile.open(out) as t:
            t.getmembers()
        with open(out, "rb") as f:
            r = subprocess.run([str(lone), "lane", "import", "two"], stdin=f, capture_output=True, timeout=60,
                               env=env)
        assert r.returncode == 0, r.stderr
    finally:
        for name in ("one", "two"):
            subprocess.run([str(lone), "lane", "rm", name], capture_output=True, timeout=60, env=env)


def test_a_plugin_that_cannot_load_fails_closed(state, tmp_path):
    """A library the net plugin needs is broken: a policed cell must not
    start (let alone unpoliced); a cell without a policy never loads it."""
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "libnftables.so.1").write_bytes(b"not an ELF file")
    env = dict(os.environ, LD_LIBRARY_PATH=str(libs))
    pol = tmp_path / "policy.json"
    pol.write_text('{"rules": []}')
    mark = tmp_path / "ran"
    r = subprocess.run([CELL_BIN, "--state", state, "run", "--mount", "%s:/mark" % tmp_path, "--policy", str(pol),
                        "--", "/bin/sh", "-c", "touch /mark/ran"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0 and "libcell-net.so" in r.stderr, (r.returncode, r.stderr)
    assert not mark.exists()
    r = subprocess.run([CELL_BIN, "--state", state, "run", "--", "/bin/true"], capture_output=True, text=True,
                       timeout=60, env=env)
    assert r.returncode == 0, r.stderr


def test_a_bad_policy_is_refused_through_the_plugin(state, tmp_path):
    pol = tmp_path / "policy.json"
    for text in ("{bad", '{"rules": [{"allow": 5}]}', ""):
        pol.write_text(text)
        r = subprocess.run([CELL_BIN, "--state", state, "run", "--policy", str(pol), "--", "/bin/true"],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and "policy" in r.stderr, (text, r.returncode, r.stderr)


def test_serve_execs_the_daemon_in_the_same_process(tmp_path):
    r = subprocess.run([CELL_BIN, "serve", "--help"], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.startswith("usage: cell serve"), r
    # `cell help serve` prints the same text without the daemon.
    h = subprocess.run([CELL_BIN, "help", "serve"], capture_output=True, text=True, timeout=30,
                       env=dict(os.environ, CELL_DAEMON="/nonexistent/cell-daemon"))
    assert h.returncode == 0 and h.stdout == r.stdout
    p = subprocess.Popen([CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--init", "--listen", "", "--socket",
                          str(tmp_path / "s.sock")], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        exe = ""
        for _ in range(600):
            exe = os.readlink("/proc/%d/exe" % p.pid)
            if exe.endswith("cell-daemon") or p.poll() is not None:
                break
            select.select([], [], [], 0.05)
        assert os.path.realpath(exe) == os.path.realpath(DAEMON), exe
    finally:
        p.terminate()
        p.wait(timeout=60)


def test_idle_daemon_maps_no_plugin(tmp_path):
    sock = tmp_path / "s.sock"
    p = subprocess.Popen([CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--init", "--listen", "", "--socket",
                          str(sock), "--warm", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):
            if sock.exists() or p.poll() is not None:
                break
            select.select([], [], [], 0.05)
        assert sock.exists(), p.stderr.read() if p.poll() is not None else "no socket"
        maps = mapped(p.pid)
    finally:
        p.terminate()
        p.wait(timeout=60)
    assert heavy_in(maps, ("libnftables", "libarchive", "libxml2", "libicu", "libstdc++", "libldns", "libssl")) == [], \
        sorted(maps)
    assert not [m for m in maps if "libcell-" in m], sorted(maps)


@pytest.mark.parametrize("daemon,code", [("/nonexistent/cell-daemon", 127), ("/etc/hostname", 126), ("/", 126)])
def test_serve_names_a_daemon_it_cannot_run(tmp_path, daemon, code):
    r = subprocess.run([CELL_BIN, "--state", str(tmp_path), "serve", "--listen", ""], capture_output=True, text=True,
                       timeout=30, env=dict(os.environ, CELL_DAEMON=daemon))
    assert r.returncode == code, (r.returncode, r.stderr)
    assert daemon in r.stderr and "CELL_DAEMON" in r.stderr, r.stderr


def test_one_prefix_per_module():
    """What src/server's objects export starts with srv_ and src/store's
    with store_ (docs/architecture.md "Modules and dependencies"): a new
    external function with a prefix of its own fails here."""
    lib = os.path.join(BUILD, "libcellsrv.a")
    out = subprocess.run(["nm", "-g", "--defined-only", "-A", lib], capture_output=True, text=True,
                         check=True).stdout
    want = {"src/server/": "srv_", "src/store/": "store_", "src/agent/": "cell_mock_agent_"}
    objdir = os.path.join(BUILD, "obj")
    sources = {}
    for root, _, files in os.walk(objdir):
        for f in files:
            if f.endswith(".o"):
                sources.setdefault(f, []).append(os.path.relpath(os.path.join(root, f), objdir))
    bad, seen = [], 0
    for line in out.splitlines():
        parts = line.split()
        if len(parts) != 3 or parts[1] not in "TDBRVW":
            continue
        obj = parts[0].rsplit(":", 1)[0].split(":")[-1]
        paths = [p for p in sources.get(obj, []) if p.startswith("src/")]
        prefix = next((v for k, v in want.items() for p in paths if p.startswith(k)), None)
        assert prefix is not None, f"{obj}: no source under {sorted(want)} ({paths})"
        seen += 1
        if parts[2].startswith("__"):       # a sanitizer's own (__odr_asan.NAME)
            continue
        if not parts[2].startswith(prefix):
            bad.append(f"{obj}: {parts[2]} (want {prefix}*)")
    assert seen > 300, out[:2000]
    assert not bad, "\n".join(bad)
