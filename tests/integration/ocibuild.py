"""Build OCI image layout tars and docker-archive tars in a test, from
busybox (busybox-static) and hand-made layers: what `skopeo copy ...
oci-archive:` and `docker save` write, made with tarfile and hashlib."""
import gzip
import hashlib
import io
import json
import tarfile

BUSYBOX = "/bin/busybox"
APPLETS = ("sh", "ls", "cat", "echo", "pwd", "id", "env", "stat", "test", "sleep", "readlink")


def tar_bytes(entries):
    """entries: (name, kind, arg, mode, uid, gid) with kind dir|file|sym|hard|chr|fifo;
    arg: file data, link target or (major, minor)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for e in entries:
            e = tuple(e) + (None,) * (6 - len(e))
            name, kind, arg, mode, uid, gid = e
            ti = tarfile.TarInfo(name)
            ti.uid, ti.gid = uid or 0, gid or 0
            ti.mode = mode if mode is not None else (0o755 if kind in ("dir", "file") else 0o777)
            data = None
            if kind == "dir":
                ti.type = tarfile.DIRTYPE
            elif kind == "file":
                data = arg or b""
                ti.size = len(data)
            elif kind == "sym":
                ti.type, ti.linkname = tarfile.SYMTYPE, arg
            elif kind == "hard":
                ti.type, ti.linkname = tarfile.LNKTYPE, arg
            elif kind == "fifo":
                ti.type = tarfile.FIFOTYPE
            elif kind == "chr":
                ti.type = tarfile.CHRTYPE
                ti.devmajor, ti.devminor = arg
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def sha(b):
    return hashlib.sha256(b).hexdigest()


def config_blob(layers, config, arch="amd64"):
    return json.dumps({"architecture": arch, "os": "linux", "config": config,
                       "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(l) for l in layers]}}).encode()


def zstd_compress(data):
    import subprocess
    return subprocess.run(["zstd", "-q", "-c"], input=data, capture_output=True, check=True).stdout


def oci_archive(layers, config, gz=False, platform=None, tamper=None, drop=None, index=None, zstd=False, ref=None):
    """An OCI image layout tar of uncompressed `layers` (gzip'ed if gz) and
    `config`; tamper(hex, data) -> data changes a blob after its digest was
    taken, drop names a digest left out; ref names the image in the index
    (the annotations `ctr images import` and skopeo read).  Returns (tar
    bytes, manifest digest)."""
    blobs, descs = {}, []
    for l in layers:
        b = gzip.compress(l, mtime=0) if gz else zstd_compress(l) if zstd else l
        blobs[sha(b)] = b
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar" +
                      ("+gzip" if gz else "+zstd" if zstd else ""),
                      "digest": "sha256:" + sha(b), "size": len(b)})
    cfg = config_blob(layers, config)
    blobs[sha(cfg)] = cfg
    man = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                      "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                 "digest": "sha256:" + sha(cfg), "size": len(cfg)},
                      "layers": descs}).encode()
    blobs[sha(man)] = man
    mdesc = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + sha(man),
             "size": len(man)}
    if platform:
        mdesc["platform"] = platform
    if ref:
        mdesc["annotations"] = {"io.containerd.image.name": ref,
                                "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1]}
    if index is None:
        index = json.dumps({"schemaVersion": 2, "manifests": [mdesc]}).encode()
    ents = [("oci-layout", "file", b'{"imageLayoutVersion":"1.0.0"}', 0o644), ("index.json", "file", index, 0o644),
            ("blobs", "dir"), ("blobs/sha256", "dir")]
    for h, b in blobs.items():
        if drop and drop == "sha256:" + h:
            continue
        ents.append(("blobs/sha256/" + h, "file", tamper(h, b) if tamper else b, 0o644))
    return tar_bytes(ents), "sha256:" + sha(man)


def docker_archive(layers, config):
    cfg = config_blob(layers, config)
    ents = [(sha(cfg) + ".json", "file", cfg, 0o644)]
    names = []
    for i, l in enumerate(layers):
        d = "%064x" % (i + 1)
        ents += [(d, "dir"), (d + "/layer.tar", "file", l, 0o644)]
        names.append(d + "/layer.tar")
    manifest = [{"Config": sha(cfg) + ".json", "RepoTags": ["test:latest"], "Layers": names}]
    ents.append(("manifest.json", "file", json.dumps(manifest).encode(), 0o644))
    return tar_bytes(ents)


def busybox_base():
    """busybox and its applet links, /etc with a user app (1234:1235), /a
    with files for the next layer to hide, /etc/gone for it to delete."""
    with open(BUSYBOX, "rb") as f:
        bb = f.read()
    ents = [("bin", "dir"), ("bin/busybox", "file", bb, 0o755)]
    ents += [("bin/" + a, "sym", "busybox") for a in APPLETS]
    ents += [("etc", "dir"),
             ("etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\napp:x:1234:1235::/home/app:/bin/sh\n", 0o644),
             ("etc/group", "file", b"root:x:0:\napp:x:1235:\nstaff:x:50:\n", 0o644),
             ("etc/gone", "file", b"delete me\n", 0o644),
             ("tmp", "dir", None, 0o1777), ("root", "dir", None, 0o700),
             ("a", "dir"), ("a/old", "file", b"old\n", 0o644), ("a/sub", "dir"),
             ("a/sub/deep", "file", b"deep\n", 0o644),
             ("home", "dir"), ("home/app", "dir", None, 0o755, 1234, 1235),
             ("home/app/owned", "file", b"mine\n", 0o600, 1234, 1235)]
    return tar_bytes(ents)


def whiteout_layer():
    """Deletes /etc/gone; makes /a opaque after adding a/early (kept: this
    layer's own), then adds a/new."""
    return tar_bytes([("etc", "dir"), ("etc/.wh.gone", "file", b""), ("a", "dir"),
                      ("a/early", "file", b"early\n", 0o644), ("a/.wh..wh..opq", "file", b""),
                      ("a/new", "file", b"new\n", 0o644)])


CONFIG = {"Env": ["PATH=/bin", "GREETING=hello from the image"], "WorkingDir": "/a",
          "Entrypoint": ["/bin/sh", "-c"], "Cmd": ["echo $GREETING; pwd; id -u"]}
