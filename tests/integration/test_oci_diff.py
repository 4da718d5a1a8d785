"""Differential tests (issue 15): the same bundle run by runc and by
build/cell-oci (`run`, foreground), compared.  Plain programs give the
same output and exit code.  The confinement is never weaker in cell-oci:
capability sets a subset of runc's, no_new_privs and the seccomp mode at
least runc's, every maskedPaths entry unreadable, every readonlyPaths
entry read-only (or masked).  Skipped while cell-oci is not built (the
runc-only half would compare runc with itself)."""
import os

import pytest

import oci

pytestmark = pytest.mark.skipif(oci.runtime_missing("cell-oci") is not None,
                                reason=oci.runtime_missing("cell-oci") or "")


@pytest.fixture
def both(tmp_path):
    rts = [oci.Runtime(n, tmp_path) for n in ("runc", "cell-oci")]
    yield rts
    for r in rts:
        r.cleanup()


def run_both(both, tmp_path, args, edit=None):
    """(runc's Result, cell-oci's Result) for one bundle spec; each runtime
    gets its own copy of the bundle (a runtime may write mount points into
    the rootfs)."""
    out = []
    for rt in both:
        b = oci.make_bundle(tmp_path / ("b-" + rt.name), args, edit=edit)
        out.append(rt.run("d1", b))
    return out


SAME = [
    ("exit code", ["sh", "-c", "echo out; echo err >&2; exit 3"], None),
    ("ids", ["sh", "-c", "id -u; id -g; id -G"], None),
    ("user", ["sh", "-c", "id -u; id -g; id -G"],
     lambda c: c["process"]["user"].update(uid=65534, gid=65534, additionalGids=[65534])),
    ("cwd", ["pwd"], lambda c: c["process"].update(cwd="/tmp")),
    ("env", ["env"], lambda c: c["process"].update(env=["PATH=/bin", "A=1", "B=two words"])),
    ("hostname", ["hostname"], None),
    ("args", ["echo", "a b", "", "c"], None),
    ("pid 1", ["sh", "-c", "echo $$"], None),
    ("rootfs", ["ls", "/bin/busybox", "/etc/passwd"], None),
]


@pytest.mark.parametrize("what,args,edit", SAME, ids=[s[0] for s in SAME])
def test_same_output_and_exit_code(both, tmp_path, what, args, edit):
    ref, got = run_both(both, tmp_path, args, edit)
    assert (got.rc, got.out) == (ref.rc, ref.out), (ref, got)


def status_fields(text):
    out = {}
    for line in text.splitlines():
        k, _, v = line.partition(":")
        out[k] = v.strip()
    return out


def test_capabilities_no_new_privs_seccomp_never_weaker(both, tmp_path):
    ref, got = run_both(both, tmp_path, ["cat", "/proc/self/status"])
    assert ref.rc == 0 and got.rc == 0, (ref, got)
    r, g = status_fields(ref.out), status_fields(got.out)
    for cap in ("CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"):
        extra = int(g[cap], 16) & ~int(r[cap], 16)
        assert extra == 0, "%s: cell-oci has %#x that runc does not (%s vs %s)" % (cap, extra, g[cap], r[cap])
    assert int(g["NoNewPrivs"]) >= int(r["NoNewPrivs"])
    assert int(g["Seccomp"]) >= int(r["Seccomp"])
    # A container is never less confined than a cell: cell's own filter is on
    assert int(g["Seccomp"]) == 2, g["Seccomp"]


def test_masked_paths_unreadable(both, tmp_path):
    masked = oci.runc_spec()["linux"]["maskedPaths"]
    script = "for p in %s; do printf '%%s %%s\\n' \"$p\" \"$(cat \"$p\" 2>/dev/null | wc -c)\"; done" % \
        " ".join(masked)
    ref, got = run_both(both, tmp_path, ["sh", "-c", script])
    assert ref.rc == 0 and got.rc == 0, (ref, got)
    sizes = dict(line.rsplit(" ", 1) for line in got.out.splitlines())
    assert set(sizes) == set(masked), got
    for p, n in sizes.items():
        assert int(n) == 0, "cell-oci: %s readable (%s bytes)" % (p, n)


def test_readonly_paths_read_only(both, tmp_path):
    """Each readonlyPaths entry that exists (this kernel has no
    /proc/sysrq-trigger, for one) is on a read-only mount."""
    ro = oci.runc_spec()["linux"]["readonlyPaths"]
    script = 'for p in %s; do [ -e "$p" ] && echo "exists $p"; done; cat /proc/self/mountinfo' % " ".join(ro)
    ref, got = run_both(both, tmp_path, ["sh", "-c", script])
    assert ref.rc == 0 and got.rc == 0, (ref, got)
    mounts, present = {}, []
    for line in got.out.splitlines():
        f = line.split()
        if f[0] == "exists":
            present.append(f[1])
        else:
            mounts[f[4]] = f[5].split(",")      # the last mount at a point wins
    assert present, got
    for p in present:
        # the path's own mount, or the closest one above it, is read-only
        q = p
        while q not in mounts:
            q = q.rsplit("/", 1)[0] or "/"
        assert "ro" in mounts[q], "cell-oci: %s is on %s (%s), not read-only" % (p, q, mounts[q])


def hook_facts(records, bundle, proc, init_pid):
    """Where each hook ran, as relations that hold for any run: "host" or
    "container" for each namespace, its cwd relative to the bundle, and the
    state it read with the pid as "init" (host pid) or "1"."""
    host = {n: os.readlink("/proc/self/ns/" + n) for n in ("mnt", "pid", "net")}
    facts = {}
    for kind, r in records.items():
        f = {}
        for n in ("mnt", "pid", "net"):
            f[n] = "host" if r[n] == host[n] else "container" if r[n] == proc[n] else r[n]
        f["cwd"] = r["cwd"].replace(bundle, "BUNDLE")
        st = dict(r["state"])
        assert st.pop("bundle") == bundle and st.pop("id") == "d1", (kind, r)
        st.pop("ociVersion")
        if "pid" in st:
            st["pid"] = "init" if st["pid"] == init_pid else st["pid"]
        f["state"] = st
        f["uid"] = r["uid"]
        facts[kind] = f
    return facts


def test_hooks_run_where_runc_runs_them(both, tmp_path):
    """One recording hook of each kind (oci.add_recording_hooks): each runs
    in the same namespaces as runc's (prestart, createRuntime, poststart,
    poststop: the host's; createContainer, startContainer: the
    container's), from the same directory, reading the same state.  The one
    difference is deliberate: runc 1.1 runs poststart during create (status
    "created"); cell-oci runs it in start, after the process started, as the
    runtime spec says (status "running"), so it comes last before poststop."""
    facts, orders = [], []
    for rt in both:
        bdir = str(tmp_path / ("b-" + rt.name))
        holder = {}
        def edit(c, bdir=bdir):
            holder["rec"] = oci.add_recording_hooks(c, bdir)
            c["annotations"] = {"io.example/pod": "p1"}
        b = oci.make_bundle(bdir, ["sh", "-c", "for n in mnt pid net; do echo $n $(readlink /proc/self/ns/$n); "
                                   "done"], edit=edit)
        pid_file = str(tmp_path / ("pid-" + rt.name))
        r = rt.run("d1", b, pid_file=pid_file)
        assert r.rc == 0, r
        proc = dict(line.split(" ", 1) for line in r.out.splitlines())
        records, order = oci.read_hook_records(holder["rec"])
        assert set(records) == set(oci.HOOK_KINDS), (rt.name, records, r)
        facts.append(hook_facts(records, b, proc, oci.read_pid_file(pid_file)))
        orders.append(order)
    ref, got = facts
    assert ref["poststart"]["state"]["status"] == "created"        # runc 1.1: at create
    assert got["poststart"]["state"]["status"] == "running"
    ref["poststart"]["state"]["status"] = got["poststart"]["state"]["status"]
    assert got == ref
    # spelled out, so that a runc that changes fails here, not silently
    for k in ("prestart", "createRuntime", "poststart", "poststop"):
        assert (got[k]["mnt"], got[k]["pid"], got[k]["net"]) == ("host",) * 3, (k, got[k])
    for k in ("createContainer", "startContainer"):
        assert (got[k]["mnt"], got[k]["pid"], got[k]["net"]) == ("container",) * 3, (k, got[k])
    assert got["createContainer"]["cwd"] == "BUNDLE/rootfs" and got["createRuntime"]["cwd"] == "BUNDLE"
    assert got["createRuntime"]["state"] == {"status": "creating", "pid": "init",
                                             "annotations": {"io.example/pod": "p1"}}
    assert got["createContainer"]["state"]["pid"] == 1 and "pid" not in got["poststop"]["state"]
    assert orders[1] == ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"]
    assert orders[0] == ["prestart", "createRuntime", "createContainer", "poststart", "startContainer", "poststop"]
