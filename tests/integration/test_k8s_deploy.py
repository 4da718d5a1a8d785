"""deploy/kubernetes (issue 15's Deployment): the manifests, the node
installer (cell-node.sh) and the node image (build-image.py).

Kubernetes itself does not run here (no kubelet or API server in Debian
12), so everything below the API server is tried:
- every manifest parses and the fields that must agree do: the
  RuntimeClass's handler is the runtime entry the installer writes, the
  DaemonSet mounts exactly the host directories the installer writes to
  and gives it the settings the script defaults to, the image is the one
  build-image.py names (a version tag, no `latest`), security contexts
  are explicit, the daemon's flags exist in `cell serve --help`, the
  examples' policies are JSON policies, the SandboxTemplate has
  agent-sandbox's fields;
- the installer run for real against a fake host root (a temporary
  directory standing for /, with Debian's containerd config.toml): the
  binary, oci.conf and the runtime entry installed, the rest of the config
  kept, a second run changing nothing (and restarting nothing), uninstall
  restoring the config byte for byte; an existing `imports`, a config
  edited after the install, the node's SystemdCgroup followed;
- bad input refused with a message naming the problem and nothing changed:
  a missing, garbled or directory config, a multi-line `imports`, a
  drop-in or oci.conf that are not the installer's, hostile settings;
- a private containerd started with the config the installer wrote runs a
  CRI pod with runtime_handler "cell" (the shipped, static cell-oci), and
  refuses a pod with an egress annotation when no node daemon answers at
  the socket oci.conf names (fail closed);
- the node image imported with `ctr images import` and the installer run
  inside it with `ctr run` (read-only root, the fake root bind-mounted);
- the DaemonSet's pod template turned into CRI requests as kubelet would
  (host network and pid, privileged, read-only root, its mounts and
  settings, host paths moved under a fake root): the pod installs the
  runtime, its node daemon answers /v1/pods on the socket oci.conf names
  with the node token it wrote, and the preStop command uninstalls.
"""
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import uuid

import pytest
import yaml

import criclient
import oci
from daemon import Client, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
DEPLOY = os.path.join(CHECKOUT, "deploy", "kubernetes")
SCRIPT = os.path.join(DEPLOY, "cell-node.sh")
BUILD = os.path.dirname(oci.CELL_BIN)
CRI = 'plugins."io.containerd.grpc.v1.cri"'

# /etc/containerd/config.toml as Debian 12's containerd 1.6.20 ships it
DEBIAN_CONFIG = """version = 2

[plugins]
  [plugins."io.containerd.grpc.v1.cri"]
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "/usr/lib/cni"
      conf_dir = "/etc/cni/net.d"
  [plugins."io.containerd.internal.v1.opt"]
    path = "/var/lib/containerd/opt"
"""


def load(name):
    with open(os.path.join(DEPLOY, name)) as f:
        return [d for d in yaml.safe_load_all(f) if d is not None]


def by_kind(docs, kind):
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, (kind, [d.get("kind") for d in docs])
    return found[0]


def script_defaults():
    """NAME -> default of every NAME=${NAME-...} / ${NAME:-...} setting at
    the top of cell-node.sh."""
    out = {}
    with open(SCRIPT) as f:
        for line in f:
            m = re.match(r"^([A-Z_]+)=\$\{\1:?-(.*)\}$", line.rstrip("\n"))
            if m:
                out[m.group(1)] = m.group(2)
    return out


def daemonset():
    return by_kind(load("cell-node.yaml"), "DaemonSet")


def node_container():
    cs = daemonset()["spec"]["template"]["spec"]["containers"]
    assert len(cs) == 1, cs
    return cs[0]


def ds_env():
    return {e["name"]: e["value"] for e in node_container()["env"]}


def read_text(path):
    """A file's text, or "" while it is not there."""
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


def sanitized(path):
    """A sanitizer build: the node image is made from release builds only
    (no static sanitizer runtimes)."""
    with open(path, "rb") as f:
        data = f.read()
    return any(m in data for m in (b"__asan_init", b"__tsan_init", b"__ubsan_handle"))


# ---- the manifests -------------------------------------------------------------------


def test_runtimeclass_names_the_installers_runtime_entry():
    rc = by_kind(load("runtimeclass.yaml"), "RuntimeClass")
    assert rc["apiVersion"] == "node.k8s.io/v1", rc
    assert rc["metadata"]["name"] == "cell" and rc["handler"] == "cell", rc
    # the handler is the containerd runtime the installer writes, by name
    assert ds_env()["RUNTIME_NAME"] == rc["handler"] == script_defaults()["RUNTIME_NAME"]
    # cell pods go only where the DaemonSet installed the runtime
    sel = rc["scheduling"]["nodeSelector"]
    ds_sel = daemonset()["spec"]["template"]["spec"]["nodeSelector"]
    assert sel and all(ds_sel.get(k) == v for k, v in sel.items()), (sel, ds_sel)
    od = rc["overhead"]["podFixed"]
    assert set(od) == {"cpu", "memory"} and all(isinstance(v, str) for v in od.values()), od


def test_daemonset_mounts_what_the_installer_writes_and_runs_the_daemon():
    docs = load("cell-node.yaml")
    ns = by_kind(docs, "Namespace")["metadata"]["name"]
    sa = by_kind(docs, "ServiceAccount")
    ds = daemonset()
    assert ds["apiVersion"] == "apps/v1" and ds["metadata"]["namespace"] == ns == sa["metadata"]["namespace"]
    spec = ds["spec"]["template"]["spec"]
    assert ds["spec"]["selector"]["matchLabels"].items() <= ds["spec"]["template"]["metadata"]["labels"].items()
    assert spec["serviceAccountName"] == sa["metadata"]["name"]
    # it talks to no API server: no token anywhere
    assert sa["automountServiceAccountToken"] is False and spec["automountServiceAccountToken"] is False
    assert spec["hostNetwork"] is True and spec["hostPID"] is True, spec
    c = node_container()
    env = ds_env()
    # the settings are the script's defaults, spelled out
    defaults = script_defaults()
    assert set(env) == set(defaults) - {"PAYLOAD"}, (set(env) ^ set(defaults))
    for k, v in env.items():
        assert v == defaults[k], (k, v, defaults[k])
    # the host directories the installer writes to, each mounted at
    # HOST_ROOT + its host path from a hostPath of that path: exactly those
    root = env["HOST_ROOT"]
    writes = {os.path.dirname(env["CONTAINERD_CONFIG"]), env["INSTALL_DIR"], os.path.dirname(env["OCI_CONFIG"])}
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: vols[m["name"]] for m in c["volumeMounts"]}
    host_mounts = {p[len(root):]: v for p, v in mounts.items() if p.startswith(root + "/")}
    assert set(host_mounts) == writes, (set(host_mounts), writes)
    for path, v in host_mounts.items():
        assert v["hostPath"]["path"] == path, (path, v)
    # containerd's directory must be there already; the others are made
    assert host_mounts[os.path.dirname(env["CONTAINERD_CONFIG"])]["hostPath"]["type"] == "Directory"
    # the daemon's state (socket, node token) at the same path as on the
    # host, where oci.conf tells cell-oci to look
    assert mounts[env["CELL_STATE"]]["hostPath"]["path"] == env["CELL_STATE"]
    # a read-only root: the installer's temporary files in a tmpfs
    assert "emptyDir" in mounts["/tmp"], mounts
    assert set(mounts) == {root + p for p in writes} | {env["CELL_STATE"], "/tmp"}, mounts
    # the entry point: run, and uninstall before the container stops
    assert c["command"] == ["/opt/cell/bin/cell-node"] and c["args"] == ["run"], c
    assert c["lifecycle"]["preStop"]["exec"]["command"] == ["/opt/cell/bin/cell-node", "uninstall"], c
    sc = c["securityContext"]
    for key in ("privileged", "allowPrivilegeEscalation", "runAsUser", "runAsNonRoot", "readOnlyRootFilesystem"):
        assert key in sc, "securityContext.%s is not explicit: %s" % (key, sc)
    assert sc["privileged"] is True and sc["readOnlyRootFilesystem"] is True and sc["runAsUser"] == 0, sc
    assert c["imagePullPolicy"] == "IfNotPresent", c


def test_image_is_the_one_build_image_makes():
    import importlib.util
    spec = importlib.util.spec_from_file_location("build_image", os.path.join(DEPLOY, "build-image.py"))
    bi = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bi)
    c = node_container()
    assert c["image"] == bi.default_ref(), (c["image"], bi.default_ref())
    tag = c["image"].rsplit(":", 1)[1]
    with open(os.path.join(CHECKOUT, "include", "cell.h")) as f:
        assert '#define CELL_VERSION_STRING "%s"' % tag in f.read(), tag
    # the image's entry point is the command the DaemonSet gives
    assert bi.image_config()["Entrypoint"] == c["command"], bi.image_config()


def all_images():
    """(file, image) of every container in every manifest."""
    out = []
    for root, _, files in os.walk(DEPLOY):
        for n in sorted(files):
            if not n.endswith(".yaml"):
                continue
            rel = os.path.relpath(os.path.join(root, n), DEPLOY)

            def walk(o):
                if isinstance(o, dict):
                    for k, v in o.items():
                        if k in ("containers", "initContainers"):
                            out.extend((rel, c["image"]) for c in v)
                        else:
                            walk(v)
                elif isinstance(o, list):
                    for v in o:
                        walk(v)
            for d in load(rel):
                walk(d)
    return out


def test_no_latest_tags_and_explicit_security_contexts():
    imgs = all_images()
    assert {f for f, _ in imgs} >= {"cell-node.yaml", "examples/pod.yaml", "examples/sandbox-template.yaml"}, imgs
    for f, img in imgs:
        last = img.rsplit("/", 1)[-1]
        assert ":" in last and not last.endswith(":latest") and "@" not in last or "@sha256:" in img, (f, img)
    for rel in ("examples/pod.yaml", "examples/sandbox-template.yaml"):
        for d in load(rel):
            pod = d["spec"] if d["kind"] == "Pod" else d["spec"].get("podTemplate", {}).get("spec")
            if pod is None:
                continue
            assert pod["runtimeClassName"] == "cell" and pod["automountServiceAccountToken"] is False, (rel, pod)
            for c in pod["containers"]:
                sc = c["securityContext"]
                assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], (rel, sc)


def check_policy(text):
    pol = json.loads(text)
    assert isinstance(pol, dict) and isinstance(pol["rules"], list) and pol["rules"], pol
    assert len(text.encode()) <= 64 << 10
    matchers = {"dns", "host", "tcp", "udp", "ip", "http", "decide"}
    for r in pol["rules"]:
        assert len(set(r) & matchers) == 1 and set(r) <= matchers | {"action"}, r
    # host rules need a dns rule (docs/egress.md)
    assert any("dns" in r for r in pol["rules"]), pol


def test_examples_carry_policies_on_cell_pods():
    pod = by_kind(load("examples/pod.yaml"), "Pod")
    check_policy(pod["metadata"]["annotations"]["cell.dev/egress-policy"])
    docs = load("examples/sandbox-template.yaml")
    tpl = by_kind(docs, "SandboxTemplate")
    # kubernetes-sigs/agent-sandbox's extensions API: spec.podTemplate
    # {metadata, spec}, networkPolicyManagement Managed|Unmanaged
    assert tpl["apiVersion"] == "extensions.agents.x-k8s.io/v1alpha1", tpl
    assert set(tpl["spec"]) <= {"podTemplate", "volumeClaimTemplates", "networkPolicy", "networkPolicyManagement",
                                "envVarsInjectionPolicy", "service"}, tpl["spec"]
    assert tpl["spec"]["networkPolicyManagement"] in ("Managed", "Unmanaged")
    pt = tpl["spec"]["podTemplate"]
    assert set(pt) == {"metadata", "spec"} and set(pt["metadata"]) <= {"labels", "annotations"}, pt
    check_policy(pt["metadata"]["annotations"]["cell.dev/egress-policy"])
    claim = by_kind(docs, "SandboxClaim")
    assert claim["apiVersion"] == tpl["apiVersion"]
    assert claim["spec"]["sandboxTemplateRef"]["name"] == tpl["metadata"]["name"]
    assert claim["metadata"]["namespace"] == tpl["metadata"]["namespace"]


def test_daemon_flags_exist():
    """Every option cell-node.sh's run gives `cell serve` is one it has."""
    with open(SCRIPT) as f:
        text = f.read()
    serve = text[text.index("exec cell serve"):]
    serve = serve[:serve.index('"$@"')]
    flags = set(re.findall(r"(--[a-z][a-z-]+)", serve))
    assert {"--pods", "--node-token-file", "--socket", "--state"} <= flags, flags
    r = subprocess.run([oci.CELL_BIN, "serve", "--help"], capture_output=True, text=True, timeout=30)
    usage = r.stdout + r.stderr
    for flag in flags:
        assert re.search(r"^\s+%s\b" % re.escape(flag), usage, re.M), "cell serve has no %s" % flag


# ---- the installer against a fake host root --------------------------------------------


def snapshot(root):
    """{relative path: (kind, mode, content digest or link)} of a tree."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", 0, os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), None)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), hashlib.sha256(f.read()).hexdigest())
    return out


class Node:
    """A fake host root (`root`, standing for /) and the installer run on
    it: HOST_ROOT=root, host commands run here (HOST_EXEC empty: the
    machine's containerd reads the config under root), the restart counted
    in root/restarts."""

    def __init__(self, base, payload, config=DEBIAN_CONFIG):
        self.root = str(base / "host")
        self.etc = os.path.join(self.root, "etc", "containerd")
        os.makedirs(self.etc)
        self.config = os.path.join(self.etc, "config.toml")
        if config is not None:
            with open(self.config, "w") as f:
                f.write(config)
            os.chmod(self.config, 0o640)
        self.restarts = str(base / "restarts")
        self.env = {"HOST_ROOT": self.root, "HOST_EXEC": "", "PAYLOAD": payload,
                    "CONTAINERD_RESTART": "echo restart >> " + self.restarts}

    def run(self, cmd, **env):
        e = dict(os.environ, **self.env)
        e.update(env)
        return subprocess.run(["sh", SCRIPT, cmd], env=e, capture_output=True, text=True, timeout=120)

    def ok(self, cmd, **env):
        r = self.run(cmd, **env)
        assert r.returncode == 0, (cmd, r.stdout, r.stderr)
        return r

    def restart_count(self):
        if not os.path.exists(self.restarts):
            return 0
        with open(self.restarts) as f:
            return len(f.read().split())

    def read(self, rel):
        with open(os.path.join(self.root, rel.lstrip("/"))) as f:
            return f.read()

    def dump(self):
        r = subprocess.run(["containerd", "--config", self.config, "config", "dump"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        return r.stdout


def runtime_options(dump, name="cell"):
    """{key: value} of [...runtimes.NAME.options] in a config dump."""
    out, inside = {}, False
    for line in dump.splitlines():
        t = line.strip()
        if t.startswith("["):
            inside = t == "[%s.containerd.runtimes.%s.options]" % (CRI, name)
        elif inside and " = " in t:
            k, v = t.split(" = ", 1)
            out[k] = v
    return out


@pytest.fixture(scope="module")
def payload(tmp_path_factory):
    """What the installer installs: a directory with cell-oci."""
    why = oci.runtime_missing("cell-oci")
    if why:
        pytest.skip(why)
    d = tmp_path_factory.mktemp("payload")
    shutil.copy2(oci.CELL_OCI_BIN, d / "cell-oci")
    return str(d)


@pytest.fixture
def node(tmp_path, payload):
    return Node(tmp_path, payload)


def test_install_is_idempotent_and_uninstall_restores(node, payload):
    before = snapshot(node.root)
    r = node.ok("install")
    assert "installed" in r.stdout and node.restart_count() == 1, r.stdout
    # the binary, oci.conf, the drop-in; the config keeps all it had
    with open(os.path.join(node.root, "opt/cell/bin/cell-oci"), "rb") as f, \
            open(os.path.join(payload, "cell-oci"), "rb") as g:
        assert f.read() == g.read()
    assert stat.S_IMODE(os.stat(os.path.join(node.root, "opt/cell/bin/cell-oci")).st_mode) == 0o755
    assert json.loads(node.read("/etc/cell/oci.conf")) == {
        "socket": "/var/lib/cell/cell.sock", "tokenFile": "/var/lib/cell/node.token", "pods": "annotated"}
    cfg = node.read("/etc/containerd/config.toml")
    assert cfg.startswith(DEBIAN_CONFIG + "\n" + BEGIN + "\n") and cfg.endswith("\n# END cell-node\n"), cfg
    block = cfg[len(DEBIAN_CONFIG):]
    assert "[%s.containerd.runtimes.cell]" % CRI in block and 'pod_annotations = ["cell.dev/*"]' in block
    assert stat.S_IMODE(os.stat(node.config).st_mode) == 0o640
    assert node.read("/etc/containerd/config.toml.cell-backup") == DEBIAN_CONFIG
    # containerd itself sees the entry, with the binary's host path, its
    # own root and the node's cgroup driver (Debian's: cgroupfs)
    opts = runtime_options(node.dump())
    assert opts["BinaryName"] == '"/opt/cell/bin/cell-oci"' and opts["Root"] == '"/run/cell-oci"', opts
    assert opts["SystemdCgroup"] == "false", opts
    # Debian's settings still there (containerd's default is /opt/cni/bin)
    assert 'bin_dir = "/usr/lib/cni"' in node.dump()
    installed = snapshot(node.root)

    r = node.ok("install")
    assert "nothing changed" in r.stdout, r.stdout
    assert snapshot(node.root) == installed and node.restart_count() == 1

    r = node.ok("uninstall")
    assert "restored" in r.stdout and node.restart_count() == 2, r.stdout
    after = snapshot(node.root)
    # opt/ and etc/cell are left as empty directories at most
    leftovers = {k: v for k, v in after.items() if k not in before and v[0] != "dir"}
    assert not leftovers and {k: v for k, v in after.items() if k in before} == before, (before, after)
    assert node.read("/etc/containerd/config.toml") == DEBIAN_CONFIG
    r = node.ok("uninstall")
    assert "nothing to do" in r.stdout and node.restart_count() == 2, r.stdout


def test_concurrent_installs_and_uninstalls(node):
    """Four installs at once end as one install (one restart), four
    uninstalls at once as one uninstall: they take turns (flock)."""
    before = snapshot(node.root)
    e = dict(os.environ, **node.env)
    for cmd, restarts in (("install", 1), ("uninstall", 2)):
        ps = [subprocess.Popen(["sh", SCRIPT, cmd], env=e, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
              for _ in range(4)]
        outs = [p.communicate(timeout=120) + (p.returncode,) for p in ps]
        assert all(rc == 0 for _, _, rc in outs), outs
        assert node.restart_count() == restarts, outs
        if cmd == "install":
            assert node.read("/etc/containerd/config.toml").count(BEGIN) == 1
            assert sum("nothing changed" in out for out, _, _ in outs) == 3, outs
    assert node.read("/etc/containerd/config.toml") == DEBIAN_CONFIG
    assert {k: v for k, v in snapshot(node.root).items() if k in before} == before


def test_why_not_a_drop_in(tmp_path, payload):
    """containerd 1.6 replaces a plugin's whole section with an imported
    file's: a drop-in with the CRI runtime table would take the node's CRI
    settings away.  So the installer edits the config itself, and keeps
    what the config imports."""
    cri_site = '[%s]\n  sandbox_image = "site.invalid/pause:3"\n' % CRI
    dropin = '[%s.containerd.runtimes.x.options]\n  BinaryName = "/x"\n' % CRI
    node = Node(tmp_path, payload, config='imports = ["dropin.toml"]\nversion = 2\n' + cri_site)
    with open(os.path.join(node.etc, "dropin.toml"), "w") as f:
        f.write("version = 2\n" + dropin)
    d = node.dump()
    assert runtime_options(d, "x") and "site.invalid/pause:3" not in d, d
    # an import of another plugin's settings is kept, with the node's CRI ones
    opt = '[plugins."io.containerd.internal.v1.opt"]\n  path = "/srv/containerd-opt"\n'
    config = 'imports = ["opt.toml"]\nversion = 2\n' + cri_site
    node = Node(tmp_path / "2", payload, config=config)
    with open(os.path.join(node.etc, "opt.toml"), "w") as f:
        f.write("version = 2\n" + opt)
    node.ok("install")
    d = node.dump()
    assert "/srv/containerd-opt" in d and "site.invalid/pause:3" in d, d
    assert runtime_options(d)["BinaryName"] == '"/opt/cell/bin/cell-oci"'
    node.ok("uninstall")
    assert node.read("/etc/containerd/config.toml") == config


def test_uninstall_after_the_config_was_edited_keeps_the_edit(node):
    node.ok("install")
    with open(node.config, "a") as f:
        f.write('[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "/etc/containerd/certs.d"\n')
    r = node.ok("uninstall")
    assert "changed since the install" in r.stdout and "cell-backup" in r.stdout, r.stdout
    cfg = node.read("/etc/containerd/config.toml")
    assert "cell-node" not in cfg and "cell-oci" not in cfg, cfg
    assert cfg == DEBIAN_CONFIG + '[plugins."io.containerd.grpc.v1.cri".registry]\n' \
                                  '  config_path = "/etc/containerd/certs.d"\n', cfg
    # the config before cell is kept for the operator
    assert node.read("/etc/containerd/config.toml.cell-backup") == DEBIAN_CONFIG


def test_systemd_cgroup_follows_the_nodes_runc(tmp_path, payload):
    cfg = DEBIAN_CONFIG + ('    [%s.containerd.runtimes.runc]\n      runtime_type = "io.containerd.runc.v2"\n'
                           '      [%s.containerd.runtimes.runc.options]\n        SystemdCgroup = true\n' % (CRI, CRI))
    node = Node(tmp_path, payload, config=cfg)
    node.ok("install")
    assert runtime_options(node.dump())["SystemdCgroup"] == "true"
    node.ok("uninstall")
    node.ok("install", SYSTEMD_CGROUP="false")
    assert runtime_options(node.dump())["SystemdCgroup"] == "false"


GARBLED = "version = 2\n[plugins\n"
FOREIGN = DEBIAN_CONFIG + '[%s.containerd.runtimes.cell]\n  runtime_type = "io.containerd.runsc.v1"\n' % CRI
BEGIN = ("# BEGIN cell-node: the RuntimeClass handler's runtime (deploy/kubernetes); "
         "cell-node uninstall removes this block")
# an import that replaces the CRI section: cell's entry would be lost
REPLACING = 'imports = ["cri.toml"]\n' + DEBIAN_CONFIG


@pytest.mark.parametrize("case", ["missing", "garbled", "directory", "foreign-runtime", "unterminated-block",
                                  "import-replaces-cri", "foreign-oci-conf", "relative-path", "quote-in-path",
                                  "bad-runtime-name", "no-host-root", "unknown-command"])
def test_bad_input_is_refused_and_nothing_changes(tmp_path, payload, case):
    config = {"missing": None, "directory": None, "garbled": GARBLED, "foreign-runtime": FOREIGN, "import-replaces-cri": REPLACING,
              "unterminated-block": DEBIAN_CONFIG + "\n" + BEGIN + "\n"}.get(case, DEBIAN_CONFIG)
    node = Node(tmp_path, payload, config=config)
    env, cmd = {}, "install"
    if case == "directory":
        os.makedirs(node.config)
    if case == "import-replaces-cri":
        with open(os.path.join(node.etc, "cri.toml"), "w") as f:
            f.write('version = 2\n[%s]\n  sandbox_image = "site.invalid/pause:3"\n' % CRI)
    if case == "foreign-oci-conf":
        os.makedirs(os.path.join(node.root, "etc", "cell"))
        with open(os.path.join(node.root, "etc", "cell", "oci.conf"), "w") as f:
            f.write('{"socket": "/run/other.sock", "tokenFile": "/run/other.token"}\n')
    env = {"relative-path": {"INSTALL_DIR": "opt/cell"}, "quote-in-path": {"INSTALL_DIR": '/opt/ce"ll'},
           "bad-runtime-name": {"RUNTIME_NAME": 'Cell"]'}, "no-host-root": {"HOST_ROOT": str(tmp_path / "nowhere")}
           }.get(case, {})
    if case == "unknown-command":
        cmd = "instal"
    before = snapshot(node.root)
    r = node.run(cmd, **env)
    assert r.returncode != 0, (case, r.stdout, r.stderr)
    want = {"missing": "no containerd config at /etc/containerd/config.toml",
            "garbled": "containerd cannot read /etc/containerd/config.toml",
            "directory": "is not a regular file",
            "foreign-runtime": 'containerd has a runtime "cell" already',
            "unterminated-block": "but not '# END cell-node' after it",
            "import-replaces-cri": "replaces its CRI section",
            "foreign-oci-conf": "/etc/cell/oci.conf exists and was not written by cell-node",
            "relative-path": "INSTALL_DIR=opt/cell must be an absolute path",
            "quote-in-path": "only letters, digits",
            "bad-runtime-name": "RUNTIME_NAME=",
            "no-host-root": "HOST_ROOT=",
            "unknown-command": "usage: cell-node install | uninstall | run"}[case]
    assert want in r.stderr, (case, r.stderr)
    if case == "garbled":
        # containerd's own reason comes with it
        assert "failed to load TOML" in r.stderr, r.stderr
    if case not in ("relative-path", "quote-in-path", "bad-runtime-name", "no-host-root", "unknown-command"):
        assert "nothing was changed" in r.stderr, r.stderr
    assert snapshot(node.root) == before and node.restart_count() == 0, case


# ---- the entry installed, run by containerd's CRI --------------------------------------


@pytest.fixture(scope="module")
def node_image():
    """make node-image in the build directory: (image tar, cell-oci-static);
    skipped for sanitizer builds (no static sanitizer runtimes)."""
    if not os.access(oci.CELL_BIN, os.X_OK):
        pytest.skip("%s is not built" % oci.CELL_BIN)
    if sanitized(oci.CELL_BIN):
        pytest.skip("a sanitizer build: the node image is made from release builds (make node-image)")
    build = os.path.relpath(BUILD, CHECKOUT) if BUILD.startswith(CHECKOUT + "/") else BUILD
    r = subprocess.run(["make", "-s", "BUILD=" + build, "node-image"], cwd=CHECKOUT, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    return os.path.join(BUILD, "cell-node-image.tar"), os.path.join(BUILD, "cell-oci-static")


@pytest.fixture(scope="module")
def shipped_oci(tmp_path_factory, payload, request):
    """The cell-oci the node gets: the static one of the node image, or the
    build's own in a sanitizer build."""
    if sanitized(oci.CELL_BIN):
        return payload
    _, static = request.getfixturevalue("node_image")
    d = tmp_path_factory.mktemp("shipped")
    shutil.copy2(static, d / "cell-oci")
    return str(d)


def test_containerd_runs_a_cri_pod_with_the_installed_entry(tmp_path, shipped_oci):
    """The host here is the machine (HOST_ROOT=/) and the node's paths are
    under tmp_path: the private containerd reads the config the installer
    edited, with the harness's private root, state and CNI."""
    if criclient.missing():
        pytest.skip(criclient.missing())
    if not os.path.exists("/usr/lib/cni/bridge"):
        pytest.skip("CNI plugins missing (scripts/install-deps.sh: containernetworking-plugins)")
    n = str(tmp_path / "node")
    ctd = oci.Containerd(tmp_path / "containerd", cri=True)
    ctd.runtimes = ("runc",)        # as a node before cell: runc only
    config = os.path.join(n, "etc", "containerd", "config.toml")
    os.makedirs(os.path.dirname(config))
    with open(config, "w") as f:
        f.write(ctd.config_text())
    env = dict(os.environ, HOST_ROOT="/", HOST_EXEC="", PAYLOAD=shipped_oci, CONTAINERD_CONFIG=config,
               INSTALL_DIR=n + "/opt/cell", OCI_CONFIG=n + "/etc/cell/oci.conf", CELL_STATE=n + "/var/lib/cell",
               RUNTIME_ROOT=n + "/run/cell-oci", CONTAINERD_RESTART="true")
    r = subprocess.run(["sh", SCRIPT, "install"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    ctd.config_file = config
    # cell-oci reads the installer's oci.conf (at its host path /etc/cell
    # on a node; here under tmp_path)
    ctd.env["CELL_OCI_CONFIG"] = n + "/etc/cell/oci.conf"
    cri, sids = None, []
    try:
        ctd.start()
        cri = criclient.CRI(ctd.sock)
        image = ctd.import_image("ocitest.invalid/busybox:1", oci.busybox_image_tar(), namespace=oci.CRI_NAMESPACE)

        def pod(name, annotations=None):
            return {"metadata": {"name": name, "uid": str(uuid.uuid4()), "namespace": "k8sdeploy"},
                    "hostname": name, "log_directory": str(tmp_path / "logs" / name),
                    "annotations": annotations or {}, "linux": {"cgroup_parent": ctd.cgroup_parent}}
        cfg = pod("plain")
        sid = cri.runtime("RunPodSandbox", {"config": cfg, "runtime_handler": "cell"}).pod_sandbox_id
        sids.append(sid)
        st = cri.runtime("PodSandboxStatus", {"pod_sandbox_id": sid}).status
        assert st.state == 0 and st.runtime_handler == "cell", st
        cid = cri.runtime("CreateContainer", {"pod_sandbox_id": sid, "sandbox_config": cfg, "config": {
            "metadata": {"name": "main"}, "image": {"image": image}, "log_path": "main.log",
            "command": ["sh", "-c", "echo hello from the installed runtime; sleep 100000"]}}).container_id
        cri.runtime("StartContainer", {"container_id": cid})
        log = os.path.join(cfg["log_directory"], "main.log")
        assert wait_for(lambda: "hello from the installed runtime" in read_text(log), timeout=20), read_text(log)
        # run by the installed cell-oci: its state is in the entry's Root
        assert os.path.isdir(os.path.join(n, "run", "cell-oci", oci.CRI_NAMESPACE, cid)), \
            os.listdir(os.path.join(n, "run", "cell-oci"))
        r = cri.runtime("ExecSync", {"container_id": cid, "cmd": ["cat", "/proc/self/status"], "timeout": 10},
                        timeout=30)
        assert r.exit_code == 0 and re.search(rb"^NoNewPrivs:\s+1$", r.stdout, re.M), r
        cri.runtime("StopContainer", {"container_id": cid, "timeout": 5})
        cri.runtime("RemoveContainer", {"container_id": cid})
        # a pod with an egress policy and no node daemon at the socket
        # oci.conf names: refused, never run unpoliced
        bad = pod("policed", {"cell.dev/egress-policy": json.dumps({"rules": []})})
        with pytest.raises(criclient.CRIError) as e:
            sids.append(cri.runtime("RunPodSandbox", {"config": bad, "runtime_handler": "cell"}).pod_sandbox_id)
        assert n + "/var/lib/cell/" in e.value.details and "cell.dev/egress-policy" in e.value.details, e.value
    finally:
        for sid in sids:
            cri.remove_pod(sid)
        if cri:
            cri.close()
        problems = ctd.stop()
    assert not problems, problems
    r = subprocess.run(["sh", SCRIPT, "uninstall"], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and not os.path.exists(n + "/opt/cell/bin/cell-oci"), r.stdout + r.stderr


# ---- the node image --------------------------------------------------------------------


def test_node_image_installs_and_uninstalls_from_inside(tmp_path, node_image):
    """The image imported with ctr and cell-node run in it as the DaemonSet
    runs it: privileged, read-only root with a tmpfs /tmp, in the host's
    pid namespace, the host's files at HOST_ROOT.  The fake root is bound
    at HOST_ROOT + its own path, so that its paths are the same for the
    installer and for host commands (nsenter into this test's mount
    namespace: pid 1 here is not the host's init)."""
    tar, static = node_image
    fake = str(tmp_path / "node")
    os.makedirs(fake + "/etc/containerd")
    config = fake + "/etc/containerd/config.toml"
    with open(config, "w") as f:
        f.write(DEBIAN_CONFIG)
    ctd = oci.Containerd(tmp_path / "containerd")
    me = os.getpid()
    env = {"CONTAINERD_CONFIG": config, "INSTALL_DIR": fake + "/opt/cell", "OCI_CONFIG": fake + "/etc/cell/oci.conf",
           "HOST_EXEC": "nsenter --target %d --mount -- /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin" % me,
           "CONTAINERD_RESTART": "echo restart >> %s/restarts" % fake}

    def cell_node(cmd, n):
        argv = ["run", "--rm", "--privileged", "--read-only", "--with-ns", "pid:/proc/%d/ns/pid" % me,
                "--mount", "type=bind,src=%s,dst=/host%s,options=rbind:rw" % (fake, fake),
                "--mount", "type=tmpfs,src=tmpfs,dst=/tmp,options=rw:nosuid:nodev"]
        for k, v in env.items():
            argv += ["--env", "%s=%s" % (k, v)]
        argv += ctd.run_args("runc") + [ref, "k8sdeploy-%d" % n, "/opt/cell/bin/cell-node", cmd]
        r = ctd.ctr(*argv, timeout=60)
        assert r.rc == 0, r
        return r
    try:
        ctd.start()
        r = ctd.ctr("images", "import", tar, timeout=60)
        assert r.rc == 0, r
        ref = node_container()["image"]
        assert ctd.ctr("images", "ls", "-q").check().out.split() == [ref]
        r = cell_node("install", 1)
        assert "installed" in r.out, r
        with open(static, "rb") as f:
            want = f.read()
        with open(fake + "/opt/cell/bin/cell-oci", "rb") as f:
            # stripped of its debug information in the image
            got = f.read()
        assert got[:4] == b"\x7fELF" and 0 < len(got) <= len(want), (len(got), len(want))
        # static: it needs nothing of the node
        r = oci.run_bounded(["ldd", fake + "/opt/cell/bin/cell-oci"])
        assert "statically linked" in r.out + r.err or "not a dynamic executable" in r.out + r.err, r
        r = oci.run_bounded([fake + "/opt/cell/bin/cell-oci", "--version"])
        assert r.rc == 0, r
        with open(config) as f:
            cfg = f.read()
        assert cfg.startswith(DEBIAN_CONFIG + "\n" + BEGIN + "\n") and 'BinaryName = "%s"' % (
            fake + "/opt/cell/bin/cell-oci") in cfg, cfg
        r = cell_node("install", 2)
        assert "nothing changed" in r.out, r
        cell_node("uninstall", 3)
        with open(config) as f:
            assert f.read() == DEBIAN_CONFIG
        with open(fake + "/restarts") as f:
            assert f.read().split() == ["restart", "restart"]
        assert not os.path.exists(fake + "/opt/cell/bin") and not os.path.exists(fake + "/etc/cell/oci.conf")
    finally:
        problems = ctd.stop()
    assert not problems, problems


# ---- the DaemonSet's pod, as kubelet would run it --------------------------------------


def cri_pod_of_daemonset(fake, tmp, host_exec):
    """cell-node.yaml's pod template as kubelet turns it into CRI requests
    (sandbox and container config), with every host path P moved to
    fake + P: the hostPath volumes, the settings naming host paths, and
    the mounts at HOST_ROOT + P.  HOST_EXEC enters this test's mount
    namespace (pid 1 here is not the host's init)."""
    spec = daemonset()["spec"]["template"]["spec"]
    c = node_container()
    env = ds_env()
    root = env["HOST_ROOT"]
    for k in ("CONTAINERD_CONFIG", "INSTALL_DIR", "OCI_CONFIG", "CELL_STATE", "RUNTIME_ROOT"):
        env[k] = fake + env[k]
    env["HOST_EXEC"] = host_exec
    env["CONTAINERD_RESTART"] = "echo restart >> %s/restarts" % fake
    vols = {v["name"]: v for v in spec["volumes"]}
    mounts = []
    for m in c["volumeMounts"]:
        v = vols[m["name"]]
        if "hostPath" in v:
            host = fake + v["hostPath"]["path"]
            os.makedirs(host, exist_ok=True)
            path = m["mountPath"]
            inside = root + fake + path[len(root):] if path.startswith(root + "/") else fake + path
        else:
            host = os.path.join(tmp, m["name"])
            os.makedirs(host, exist_ok=True)
            inside = m["mountPath"]
        mounts.append({"container_path": inside, "host_path": host})
    node = 2    # NamespaceMode NODE
    sc = c["securityContext"]
    sandbox = {"metadata": {"name": "cell-node-x", "uid": str(uuid.uuid4()), "namespace": "cell-system"},
               "log_directory": os.path.join(tmp, "logs"),
               "linux": {"security_context": {"namespace_options": {"network": node, "pid": node},
                                              "privileged": spec["hostPID"] and sc["privileged"]}}}
    container = {"metadata": {"name": c["name"]}, "image": {"image": c["image"]}, "command": c["command"],
                 "args": c["args"], "envs": [{"key": k, "value": v} for k, v in env.items()], "mounts": mounts,
                 "log_path": "cell-node.log",
                 "linux": {"security_context": {"privileged": sc["privileged"], "readonly_rootfs":
                                                sc["readOnlyRootFilesystem"], "run_as_user": {"value": sc["runAsUser"]},
                                                "namespace_options": {"network": node, "pid": node}}}}
    return sandbox, container, env


def test_daemonset_pod_installs_and_runs_the_node_daemon(tmp_path, node_image):
    """The node image run through containerd's CRI with the DaemonSet's
    pod spec (host network and pid, privileged, read-only root, its
    mounts and settings): it installs, and its node daemon answers on the
    socket oci.conf names, with the node token it wrote there; the
    preStop command uninstalls."""
    if criclient.missing():
        pytest.skip(criclient.missing())
    tar, _ = node_image
    fake = str(tmp_path / "node")
    os.makedirs(fake + "/etc/containerd")
    config = fake + "/etc/containerd/config.toml"
    with open(config, "w") as f:
        f.write(DEBIAN_CONFIG)
    me = os.getpid()
    sandbox, container, env = cri_pod_of_daemonset(
        fake, str(tmp_path), "nsenter --target %d --mount -- /usr/bin/env PATH=/usr/sbin:/usr/bin:/sbin:/bin" % me)
    ctd = oci.Containerd(tmp_path / "containerd", cri=True)
    cri, sid = None, None
    try:
        ctd.start()
        cri = criclient.CRI(ctd.sock)
        with open(tar, "rb") as f:
            ctd.import_image(container["image"]["image"], f.read(), namespace=oci.CRI_NAMESPACE, named=True)
        sandbox["linux"]["cgroup_parent"] = ctd.cgroup_parent
        sid = cri.runtime("RunPodSandbox", {"config": sandbox}).pod_sandbox_id
        cid = cri.runtime("CreateContainer", {"pod_sandbox_id": sid, "config": container,
                                              "sandbox_config": sandbox}).container_id
        cri.runtime("StartContainer", {"container_id": cid})
        state = env["CELL_STATE"]
        log = os.path.join(sandbox["log_directory"], "cell-node.log")

        def log_text():
            return read_text(log)
        assert wait_for(lambda: os.path.exists(os.path.join(state, "node.token")), timeout=30), log_text()
        assert BEGIN in read_text(config)
        conf = json.loads(read_text(fake + "/etc/cell/oci.conf"))
        assert conf["socket"] == state + "/cell.sock" and conf["tokenFile"] == state + "/node.token", conf
        token = read_text(conf["tokenFile"]).strip()
        assert re.fullmatch(r"cellnode_[0-9a-f]{32}", token), token
        cl = Client(None, None, token=token, unix=conf["socket"])
        assert wait_for(lambda: os.path.exists(conf["socket"]), timeout=20), log_text()
        r = cl.get("/v1/pods")
        assert r.status == 200 and r.body["pods"] == [], (r, log_text())
        # the node token is for /v1/pods only
        assert cl.get("/v1/cells").status in (401, 403)
        # preStop, as kubelet runs it
        pre = node_container()["lifecycle"]["preStop"]["exec"]["command"]
        r = cri.runtime("ExecSync", {"container_id": cid, "cmd": pre, "timeout": 60}, timeout=90)
        assert r.exit_code == 0 and b"uninstalled" in r.stdout, r
        with open(config) as f:
            assert f.read() == DEBIAN_CONFIG
        cri.runtime("StopContainer", {"container_id": cid, "timeout": 10})
        cri.runtime("RemoveContainer", {"container_id": cid})
    finally:
        if sid:
            cri.remove_pod(sid)
        if cri:
            cri.close()
        problems = ctd.stop()
    assert not problems, problems
