"""The interception CA of a policed cell: fresh per throwaway cell, kept
across the boots of a lane, and its private key never visible inside."""
import json
import os


def _policy(tmp_path):
    p = tmp_path / "policy.json"
    p.write_text(json.dumps({"rules": []}))
    return str(p)


def _ca_digest(run, policy, *extra):
    r = run(["run", *extra, "--policy", policy, "--", "sh", "-c",
             "sha256sum /etc/ssl/certs/cell-egress-ca.pem; grep -c 'BEGIN CERTIFICATE' /etc/ssl/certs/ca-certificates.crt"])
    assert r.returncode == 0, r.stderr
    digest, count = r.stdout.split()[0], int(r.stdout.split()[-1])
    return digest, count


def test_lane_keeps_its_ca_and_throwaway_cells_do_not(run, state, tmp_path):
    policy = _policy(tmp_path)
    assert run(["lane", "create", "ca-lane"]).returncode == 0
    first, n1 = _ca_digest(run, policy, "--lane", "ca-lane")
    second, n2 = _ca_digest(run, policy, "--lane", "ca-lane")
    assert first == second, "a lane's CA changed between boots"
    assert n1 == n2, "the bundle grew across boots of a lane (CA appended twice)"
    other, _ = _ca_digest(run, policy)
    assert other != first, "a throwaway cell reused a lane's CA"
    # The key stays on the host side of the lane, outside its upper dir.
    ca_dir = os.path.join(state, "lanes", "ca-lane", "egress-ca")
    assert oct(os.stat(os.path.join(ca_dir, "ca.key")).st_mode & 0o777) == "0o600"
    r = run(["run", "--lane", "ca-lane", "--policy", policy, "--", "sh", "-c",
             "grep -rl 'PRIVATE KEY' /etc /root /tmp /var /home /run 2>/dev/null | head -5; echo done"])
    assert r.stdout.strip().splitlines()[-1] == "done" and "PRIVATE KEY" not in r.stdout, r.stdout
    key = open(os.path.join(ca_dir, "ca.key")).read()
    assert key not in r.stdout
