"""Differential tests (issue 15): the same bundle run by runc and by
build/cell-oci (`run`, foreground), compared.  Plain programs give the
same output and exit code.  The confinement is never weaker in cell-oci:
capability sets a subset of runc's, no_new_privs and the seccomp mode at
least runc's, every maskedPaths entry unreadable, every readonlyPaths
entry read-only (or masked).  Skipped while cell-oci is not built (the
runc-only half would compare runc with itself)."""
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
