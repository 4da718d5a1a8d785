#!/usr/bin/env python3
"""build-image.py: the node image of deploy/kubernetes (cell-node.yaml's
DaemonSet) as an OCI image layout tar, from a build directory, without
Docker: `make node-image` runs it.

    deploy/kubernetes/build-image.py --build build --output build/cell-node-image.tar

The image (one layer):
    /opt/cell/bin/cell, cell-daemon  the node daemon (cell serve --pods) and
                                     the CLI, with the shared libraries they,
                                     their embedded helpers and plugins load
                                     (ldd's closure, at the paths ldd names)
    /opt/cell/bin/cell-node          the entry point (cell-node.sh): install,
                                     uninstall, run
    /opt/cell/node/cell-oci          what install copies to the host: the
                                     static build (make's cell-oci-static),
                                     since the node need not have our libraries
    /bin/busybox and its applets     the installer's shell, awk, sed, nsenter;
    /bin/flock                       util-linux's (busybox-static has none)
    /etc/passwd, group, ssl certs    root only; the host's CA bundle for the
                                     egress engine's upstream TLS

The tar is written with tests/integration/ocibuild.py (the module the tests
build their images with); its index names the image --ref (default: the
image the DaemonSet names, localhost/cell/cell-node:VERSION, VERSION from
include/cell.h), so `ctr -n k8s.io images import` keeps that name.
"""
import argparse
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(CHECKOUT, "tests", "integration"))
import ocibuild  # noqa: E402

BUSYBOX = "/bin/busybox"
# what Debian's busybox-static lacks: flock (util-linux), the installer's lock
TOOLS = ("/usr/bin/flock",)
# the decide webhooks' client, which the daemon dlopen()s (ldd cannot see it)
DLOPENED = ("libcurl.so.4",)
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
# what the build directory must hold; the plugins and cell-egress are
# embedded in cell and cell-daemon, but the libraries they load must be here
PROGRAMS = ("cell", "cell-daemon")
LOADED = ("libcell-net.so", "libcell-archive.so", "libcell-vfs.so", "cell-egress", "cell-untar")
LDD_LINE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)$")


def version():
    with open(os.path.join(CHECKOUT, "include", "cell.h")) as f:
        m = re.search(r'^#define CELL_VERSION_STRING "([^"]+)"', f.read(), re.M)
    if not m:
        sys.exit("build-image: CELL_VERSION_STRING not found in include/cell.h")
    return m.group(1)


def default_ref():
    """The image the DaemonSet (cell-node.yaml) names."""
    return "localhost/cell/cell-node:" + version()


def ldd(path):
    """The libraries `path` loads, as ldd resolves them (the loader too)."""
    r = subprocess.run(["ldd", path], capture_output=True, text=True, timeout=60)
    if r.returncode != 0:
        sys.exit("build-image: ldd %s: %s" % (path, r.stderr.strip() or r.stdout.strip()))
    out = []
    for line in r.stdout.splitlines():
        m = LDD_LINE.match(line)
        if m:
            out.append(m.group(1))
        elif "=> not found" in line:
            sys.exit("build-image: %s needs %s, which is not installed" % (path, line.split()[0]))
    return out


def find_library(soname):
    """The path ldconfig knows `soname` by, or None."""
    r = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=60)
    for line in r.stdout.splitlines():
        f = line.strip().split(" => ")
        if len(f) == 2 and f[0].split()[0] == soname and "x86-64" in f[0]:
            return f[1]
    return None


def read(path):
    with open(path, "rb") as f:
        return f.read()


def stripped(path):
    """Our binary without its debug information (a third of its size):
    `strip --strip-debug` into memory; as built when strip is missing."""
    import shutil
    import tempfile
    if not shutil.which("strip"):
        return read(path)
    with tempfile.NamedTemporaryFile() as t:
        subprocess.run(["strip", "--strip-debug", "-o", t.name, path], check=True, timeout=60)
        return read(t.name)


def layer(build, script, static_oci):
    """The image's one layer, as ocibuild's entries."""
    libs = set()
    for name in PROGRAMS + LOADED:
        libs.update(ldd(os.path.join(build, name)))
    for tool in TOOLS:
        libs.update(ldd(tool))
    for soname in DLOPENED:
        path = find_library(soname)
        if path:
            libs.add(path)
            libs.update(ldd(path))
    ents = [("bin", "dir"), ("bin/busybox", "file", read(BUSYBOX), 0o755)]
    applets = subprocess.run([BUSYBOX, "--list"], capture_output=True, text=True, check=True, timeout=60).stdout.split()
    ents += [("bin/" + a, "sym", "busybox") for a in applets if a != "busybox" and "/bin/" + a not in
             [t.replace("/usr/bin/", "/bin/") for t in TOOLS]]
    ents += [("bin/" + os.path.basename(t), "file", read(t), 0o755) for t in TOOLS]
    dirs = {"etc", "etc/ssl", "etc/ssl/certs", "opt", "opt/cell", "opt/cell/bin", "opt/cell/node"}
    files = []
    for lib in sorted(libs):
        # at the path ldd names (the loader's default directories), the
        # symlink resolved: one regular file per soname
        rel = lib.lstrip("/")
        d = os.path.dirname(rel)
        while d:
            dirs.add(d)
            d = os.path.dirname(d)
        files.append((rel, "file", read(os.path.realpath(lib)), 0o755))
    ents += [(d, "dir") for d in sorted(dirs)]
    ents += files
    ents += [("opt/cell/bin/" + p, "file", stripped(os.path.join(build, p)), 0o755) for p in PROGRAMS]
    ents += [("opt/cell/bin/cell-node", "file", read(script), 0o755),
             ("opt/cell/node/cell-oci", "file", stripped(static_oci), 0o755),
             ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\n", 0o644),
             ("etc/group", "file", b"root:x:0:\n", 0o644),
             ("tmp", "dir", None, 0o1777), ("root", "dir", None, 0o700), ("host", "dir", None, 0o755),
             ("var", "dir"), ("var/lib", "dir"), ("var/lib/cell", "dir", None, 0o700), ("run", "dir"),
             ("proc", "dir"), ("sys", "dir"), ("dev", "dir")]
    if os.path.exists(CA_BUNDLE):
        ents.append((CA_BUNDLE.lstrip("/"), "file", read(CA_BUNDLE), 0o644))
    return ocibuild.tar_bytes(ents)


def image_config():
    return {"Entrypoint": ["/opt/cell/bin/cell-node"], "Cmd": ["run"], "WorkingDir": "/",
            "Env": ["PATH=/opt/cell/bin:/bin", "PAYLOAD=/opt/cell/node"],
            "Labels": {"org.opencontainers.image.title": "cell-node",
                       "org.opencontainers.image.version": version()}}


def main():
    ap = argparse.ArgumentParser(description="Build cell's Kubernetes node image (an OCI image layout tar).")
    ap.add_argument("--build", required=True, help="the build directory (make BUILD=DIR all cell-oci-static)")
    ap.add_argument("--output", required=True, help="the tar to write")
    ap.add_argument("--ref", default=default_ref(), help="the image name in the index (default %(default)s)")
    ap.add_argument("--gzip", action="store_true", help="gzip the layer (smaller, slower to build)")
    a = ap.parse_args()
    static_oci = os.path.join(a.build, "cell-oci-static")
    for need in PROGRAMS + LOADED + ("cell-oci-static",):
        if not os.path.exists(os.path.join(a.build, need)):
            sys.exit("build-image: %s is missing: run make BUILD=%s node-image" % (os.path.join(a.build, need), a.build))
    tar, digest = ocibuild.oci_archive([layer(a.build, os.path.join(HERE, "cell-node.sh"), static_oci)],
                                       image_config(), gz=a.gzip, ref=a.ref,
                                       platform={"architecture": "amd64", "os": "linux"})
    tmp = a.output + ".tmp"
    with open(tmp, "wb") as f:
        f.write(tar)
    os.rename(tmp, a.output)
    print("build-image: %s: %s (%s, %.1f MiB)" % (a.output, a.ref, digest, len(tar) / 1048576))


if __name__ == "__main__":
    main()
