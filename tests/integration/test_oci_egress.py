"""cell-oci's side of a pod's egress (src/oci/oci_egress.c; docs/oci.md "A
pod's egress policy"), called directly as containerd's shim calls it: the
annotation cell.dev/egress-policy and the oci.conf ($CELL_OCI_CONFIG) are
checked at create, errors naming them; with no node daemon configured or
reachable, a container that asks for a policy is refused (fail closed) and
nothing of it is left; one that does not ask, or a pod's non-sandbox
container, runs as before.  With a node daemon (cell serve --pods on its
unix socket), create registers the container (its own netns) and delete
unregisters it.  The CRI path is test_oci_cri_egress.py."""
import json
import os
import subprocess

import pytest

import daemon as dm
import oci

pytestmark = pytest.mark.skipif(oci.runtime_missing("cell-oci") is not None,
                                reason=oci.runtime_missing("cell-oci") or "")

ANNOTATION = "cell.dev/egress-policy"
POLICY = json.dumps({"rules": [{"tcp": {"to": "192.0.2.1/32", "ports": [80]}}]})


@pytest.fixture
def rt(tmp_path):
    yield from oci.runtime_fixture("cell-oci", tmp_path)


def bundle(tmp_path, annotations, netns_path=None):
    def edit(cfg):
        cfg["annotations"] = annotations
        if netns_path:
            for ns in cfg["linux"]["namespaces"]:
                if ns["type"] == "network":
                    ns["path"] = netns_path
    return oci.make_bundle(tmp_path / ("b" + os.urandom(3).hex()), ["sleep", "1000"], edit=edit)


def conf(tmp_path, monkeypatch, doc):
    path = tmp_path / "oci.conf"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    monkeypatch.setenv("CELL_OCI_CONFIG", str(path))
    return path


def refused(rt, tmp_path, annotations, needle, netns_path=None):
    cid = "e" + os.urandom(4).hex()
    r = rt.create(cid, bundle(tmp_path, annotations, netns_path))
    assert r.rc != 0 and needle in r.err, r
    assert not os.path.exists(os.path.join(rt.root, cid)), "a refused create left its state"
    return r


@pytest.mark.parametrize("doc, needle", [
    ("{", "not JSON"),
    ("[]", "must be a JSON object"),
    ({"socket": "/run/x.sock", "tokenFile": "/run/t", "color": 1}, 'unknown key "color"'),
    ({"socket": "x.sock", "tokenFile": "/run/t"}, 'key "socket" must be an absolute path'),
    ({"tokenFile": "/run/t"}, 'key "socket" is missing'),
    ({"socket": "/" + "s" * 200, "tokenFile": "/run/t"}, 'key "socket" must be an absolute path of at most'),
    ({"socket": "/run/x.sock", "tokenFile": 5}, 'key "tokenFile" must be'),
    ({"socket": "/run/x.sock", "tokenFile": "/run/t", "pods": "some"}, 'key "pods" must be'),
])
def test_a_bad_oci_conf_refuses_a_container_that_asks_for_a_policy(rt, tmp_path, monkeypatch, doc, needle):
    path = conf(tmp_path, monkeypatch, doc)
    r = refused(rt, tmp_path, {ANNOTATION: POLICY}, needle)
    assert ANNOTATION in r.err and str(path) in r.err


@pytest.mark.parametrize("policy, needle", [
    ("{not json", "not JSON"),
    ("[1]", "must be a JSON object"),
    ('{"rules": {}}', '"rules" must be an array'),
    (json.dumps({"rules": [], "pad": "x" * (65 << 10)}), "KiB"),
])
def test_a_bad_annotation_is_refused_naming_it(rt, tmp_path, monkeypatch, policy, needle):
    monkeypatch.setenv("CELL_OCI_CONFIG", str(tmp_path / "none.conf"))
    r = refused(rt, tmp_path, {ANNOTATION: policy}, needle)
    assert "annotation " + ANNOTATION in r.err


def test_no_daemon_configured_or_reachable_fails_closed(rt, tmp_path, monkeypatch):
    monkeypatch.setenv("CELL_OCI_CONFIG", str(tmp_path / "none.conf"))
    refused(rt, tmp_path, {ANNOTATION: POLICY}, "no node daemon is configured")
    tok = tmp_path / "token"
    tok.write_text("cellnode_" + "0" * 32 + "\n")
    conf(tmp_path, monkeypatch, {"socket": str(tmp_path / "nobody.sock"), "tokenFile": str(tok)})
    refused(rt, tmp_path, {ANNOTATION: POLICY}, "cannot connect to the node daemon")
    # "pods": "all" makes every sandbox (or own-netns container) ask
    conf(tmp_path, monkeypatch, {"socket": str(tmp_path / "nobody.sock"), "tokenFile": str(tok), "pods": "all"})
    refused(rt, tmp_path, {}, "cannot connect to the node daemon")


def test_without_a_policy_or_as_a_pods_container_it_runs(rt, tmp_path, monkeypatch):
    monkeypatch.setenv("CELL_OCI_CONFIG", str(tmp_path / "none.conf"))
    for i, ann in enumerate(({}, {ANNOTATION: POLICY, "io.kubernetes.cri.container-type": "container"})):
        cid = "ok%d" % i
        r = rt.create(cid, bundle(tmp_path, ann))
        assert r.rc == 0, r
        assert rt.delete(cid, force=True).rc == 0


def test_a_container_joining_another_netns_cannot_ask_for_a_policy(rt, tmp_path, monkeypatch):
    monkeypatch.setenv("CELL_OCI_CONFIG", str(tmp_path / "none.conf"))
    other = subprocess.Popen(["unshare", "--net", "sleep", "1000"], stdin=subprocess.DEVNULL)
    try:
        path = "/proc/%d/ns/net" % other.pid
        assert dm.wait_for(lambda: os.readlink(path) != os.readlink("/proc/self/ns/net"), 5)
        refused(rt, tmp_path, {ANNOTATION: POLICY}, "joins the network namespace", netns_path=path)
    finally:
        other.kill()
        other.wait()


def test_create_registers_and_delete_unregisters(rt, tmp_path, monkeypatch):
    d = dm.Daemon(tmp_path / "state", extra_args=["--pods", "--warm", "0"], unix_socket=True)
    d.start()
    try:
        conf(tmp_path, monkeypatch, {"socket": os.path.join(d.state, "cell.sock"),
                                     "tokenFile": os.path.join(d.state, "node.token")})
        r = rt.create("reg1", bundle(tmp_path, {ANNOTATION: POLICY}))
        assert r.rc == 0, r
        pods = d.client().get("/v1/pods").body["pods"]
        assert [p["id"] for p in pods] == ["reg1"] and pods[0]["auditId"] == "pod-reg1", pods
        assert os.path.exists(os.path.join(rt.root, "reg1", "egress.json"))
        helper = pods[0]["helperPid"]
        # a policy the daemon refuses fails create with the daemon's reason
        r = rt.create("reg2", bundle(tmp_path, {ANNOTATION: json.dumps({"rules": [{"tcp": {"ports": "x"}}]})}))
        assert r.rc != 0 and "refused the pod (HTTP 400)" in r.err and "rules[0]" in r.err, r
        assert rt.delete("reg1", force=True).rc == 0
        assert d.client().get("/v1/pods").body["pods"] == []
        assert dm.wait_for(lambda: not os.path.exists("/proc/%d" % helper), 10)
    finally:
        d.stop()
        d.check_sanitizer()
