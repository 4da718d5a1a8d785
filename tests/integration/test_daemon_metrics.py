"""`cell serve`'s observability (src/server/metrics.c, slog.c): GET /metrics in
the Prometheus text format, GET /healthz and /readyz, and --log-format json.

What is tried: /metrics without a token (401), with a tenant's token (403)
and, under --metrics-public, without one (200) but then naming no tenant,
cell id or raw path; counters that move after creates, processes, failed
requests, unauthenticated floods and denied egress; route labels that stay
templates whatever paths and methods clients send (bounded cardinality);
the output read by the Prometheus client's own parser and a strict line
check; /healthz and /readyz without a token, tiny and saying nothing else,
/readyz's 503 naming what is not ready (a plugin whose library is broken);
JSON log lines that all parse, and journald's priority prefixes.
"""
import json
import os
import re
import threading

import pytest
from prometheus_client.parser import text_string_to_metric_families

import daemon as dm
from daemon import assert_problem, make_tenant_token, wait_for

FAMILIES = {
    "cell_build_info": "gauge",
    "cell_start_time_seconds": "gauge",
    "cell_cells": "gauge",
    "cell_processes_running": "gauge",
    "cell_cell_creates": "counter",
    "cell_cell_create_duration_seconds": "histogram",
    "cell_http_requests": "counter",
    "cell_egress_events": "counter",
    "cell_egress_bytes": "counter",
    "cell_egress_decide": "counter",
    "cell_audit_dropped": "counter",
    "cell_pool_ready": "gauge",
    "cell_pool_size": "gauge",
    "cell_pool_takes": "counter",
    "cell_pool_boots": "counter",
    "cell_runs": "gauge",
}

# A sample line: NAME{LABELS} VALUE, labels as the format says.
LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
SAMPLE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{' + LABEL + r'(,' + LABEL + r')*\})? '
                    r'(-?[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?|\+Inf|-Inf|NaN)$')


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    yield from dm.serve(tmp_path_factory.mktemp("metrics"), ["--log-format", "json"])


@pytest.fixture(scope="module")
def tenant(d, admin):
    tok, _ = make_tenant_token(admin, "metrics-tenant-7q2x")
    return d.client(tok, admin=False)


def scrape(c):
    r = c.get("/metrics")
    assert r.status == 200, r
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4"), r.headers
    return r.raw.decode()


def strict_check(text):
    """Every line is a HELP, a TYPE or a sample; each family has both once."""
    helped, typed = set(), set()
    assert text.endswith("\n")
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name not in helped, line
            helped.add(name)
        elif line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            assert kind in ("counter", "gauge", "histogram"), line
            assert name not in typed, line
            typed.add(name)
        else:
            assert SAMPLE.match(line), "not a valid sample line: %r" % line
    assert helped == typed


def families(text):
    strict_check(text)
    return {f.name: f for f in text_string_to_metric_families(text)}


def value(text, name, **labels):
    """The sample `name` with exactly these labels (0 if absent)."""
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and s.labels == labels:
                return s.value
    return 0


def total(text, name, **labels):
    """Sum of the samples `name` whose labels include these."""
    n = 0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                n += s.value
    return n


# ---- who may read it -------------------------------------------------------------------


def test_metrics_need_an_admin_token(d, anon, tenant):
    assert_problem(anon.get("/metrics"), 401, "token_invalid")
    assert_problem(anon.get("/metrics", token="not-a-token"), 401, "token_invalid")
    assert_problem(tenant.get("/metrics"), 403, "forbidden", "admin")
    assert_problem(anon.post("/metrics", {}), 405)


def test_metrics_parse_and_list_every_family(admin):
    text = scrape(admin)
    fams = families(text)
    for name, kind in FAMILIES.items():
        assert name in fams, (name, sorted(fams))
        assert fams[name].type == kind, (name, fams[name].type)
    with open(os.path.join(dm.CHECKOUT, "include", "cell.h")) as f:
        version = re.search(r'#define CELL_VERSION_STRING "([^"]+)"', f.read()).group(1)
    assert value(text, "cell_build_info", version=version) == 1


def test_no_tenant_cell_or_path_in_labels(d, admin, tenant):
    cid = None
    r = tenant.post("/v1/cells", {"resources": {"memory": "64M"}})
    assert r.status == 201, r
    cid = r.body["id"]
    try:
        assert tenant.get("/v1/cells/%s" % cid).status == 200
        assert tenant.get("/cells/%s/v1/processes" % cid).status == 200
        text = scrape(admin)
        for secret in ("metrics-tenant-7q2x", cid):
            assert secret not in text, secret
    finally:
        tenant.delete("/v1/cells/%s" % cid)


# ---- counters move -----------------------------------------------------------------------


def test_creates_processes_and_cells_by_state(admin, cells):
    before = scrape(admin)
    r = admin.post("/v1/cells", {"resources": {"memory": "64M"}})
    assert r.status == 201, r
    cid = r.body["id"]
    cells.append(cid)
    p = admin.post("/cells/%s/v1/processes" % cid, {"command": "sleep", "args": ["300"]})
    assert p.status == 200, p
    after = scrape(admin)
    assert value(after, "cell_cell_creates_total", result="ok") == value(before, "cell_cell_creates_total", result="ok") + 1
    assert value(after, "cell_cell_create_duration_seconds_count") == \
        value(before, "cell_cell_create_duration_seconds_count") + 1
    assert value(after, "cell_cell_create_duration_seconds_sum") > value(before, "cell_cell_create_duration_seconds_sum")
    assert value(after, "cell_cells", state="running") >= 1
    assert value(after, "cell_processes_running") >= 1
    assert value(after, "cell_http_requests_total", method="POST", route="/v1/cells", code="201") == \
        value(before, "cell_http_requests_total", method="POST", route="/v1/cells", code="201") + 1
    # Buckets are cumulative and end with the count.
    buckets = [s for f in text_string_to_metric_families(after) for s in f.samples
               if s.name == "cell_cell_create_duration_seconds_bucket"]
    counts = [s.value for s in buckets]
    assert counts == sorted(counts) and buckets[-1].labels["le"] == "+Inf"
    assert counts[-1] == value(after, "cell_cell_create_duration_seconds_count")
    admin.post("/cells/%s/v1/processes/%s/kill" % (cid, p.body["id"]))
    assert admin.delete("/v1/cells/%s" % cid).status == 204
    gone = scrape(admin)
    assert value(gone, "cell_processes_running") < value(after, "cell_processes_running")


def test_failed_requests_count_by_route_template_and_status(admin, tenant):
    before = scrape(admin)
    ids = ["nope%s" % os.urandom(4).hex() for _ in range(3)]
    for i in ids:
        assert_problem(tenant.get("/v1/cells/%s" % i), 404)
    junk = "/v1/%s/x" % os.urandom(6).hex()
    assert tenant.get(junk).status == 404
    assert tenant.call("BREW", "/v1/cells").status == 405
    assert tenant.call("BREWX%s" % os.urandom(3).hex().upper(), junk).status in (404, 405, 400, 501)
    assert_problem(tenant.get("/v1/cells", token="bad"), 401)
    # A request is counted when libmicrohttpd reports it completed, which
    # may come after its client has the answer: the scrape waits until the
    # last one (the 401) is in (under TSan it once was not yet).
    k401 = dict(method="GET", route="/v1/cells", code="401")
    want = value(before, "cell_http_requests_total", **k401) + 1
    assert wait_for(lambda: value(scrape(admin), "cell_http_requests_total", **k401) >= want, 10)
    after = scrape(admin)
    key = dict(method="GET", route="/v1/cells/{id}", code="404")
    assert value(after, "cell_http_requests_total", **key) == value(before, "cell_http_requests_total", **key) + 3
    key = dict(method="GET", route="unmatched", code="404")
    assert value(after, "cell_http_requests_total", **key) >= value(before, "cell_http_requests_total", **key) + 1
    key = dict(method="other", route="unmatched", code="405")
    assert value(after, "cell_http_requests_total", **key) >= value(before, "cell_http_requests_total", **key) + 1
    key = dict(method="GET", route="/v1/cells", code="401")
    assert value(after, "cell_http_requests_total", **key) == value(before, "cell_http_requests_total", **key) + 1
    for raw in ids + [junk, "BREW"]:
        assert raw not in after, raw
    # Every route label is a template of the tables or "unmatched".
    for f in text_string_to_metric_families(after):
        for s in f.samples:
            if s.name == "cell_http_requests_total":
                assert s.labels["route"] == "unmatched" or s.labels["route"].startswith(("/v1/", "/cells/{cell}/", "/")), s
                assert s.labels["method"] in ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "other"), s


def test_many_distinct_paths_do_not_grow_the_output(admin, anon):
    base = len(scrape(admin))
    for i in range(200):
        anon.get("/v1/cells/%d%s" % (i, os.urandom(8).hex()))
        anon.get("/totally/%d/unknown" % i)
    grown = len(scrape(admin))
    # New series may appear once (401 on /v1/cells/{id}, 404 unmatched), not per path.
    assert grown - base < 600, (base, grown)


def test_unauthenticated_flood_counts_as_audit_suppressed(admin, anon):
    before = value(scrape(admin), "cell_audit_dropped_total", reason="unauthenticated")

    def flood():
        for _ in range(20):
            anon.get("/v1/cells", token="wrong")

    threads = [threading.Thread(target=flood) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    after = value(scrape(admin), "cell_audit_dropped_total", reason="unauthenticated")
    assert after > before, (before, after)


def test_denied_egress_is_counted(admin, cells):
    r = admin.post("/v1/cells", {"resources": {"memory": "128M"}, "policy": {"rules": []}})
    assert r.status == 201, r
    cid = r.body["id"]
    cells.append(cid)
    before = value(scrape(admin), "cell_egress_events_total", event="connect", verdict="deny")
    script = ("import socket\nfor i in range(3):\n    s = socket.socket(); s.settimeout(5)\n"
              "    try: s.connect(('198.18.0.1', 9))\n    except OSError: pass\n    s.close()\nprint('done')\n")
    out = admin.post("/cells/%s/v1/processes/run" % cid, {"command": "/usr/bin/python3", "args": ["-c", script]})
    assert out.status == 200 and "done" in out.body["stdout"], out
    assert wait_for(lambda: value(scrape(admin), "cell_egress_events_total", event="connect", verdict="deny")
                    >= before + 3, 20)


# ---- health and readiness ------------------------------------------------------------------


def test_healthz_and_readyz_need_no_token_and_say_little(d, anon):
    r = anon.get("/healthz")
    assert r.status == 200 and r.raw == b"ok\n", r
    r = anon.get("/healthz", token="garbage")
    assert r.status == 200, r
    ready = wait_for(lambda: anon.get("/readyz").status == 200, 60)
    r = anon.get("/readyz")
    assert ready and r.status == 200 and r.raw == b"ok\n", r
    assert_problem(anon.post("/healthz", {}), 405)
    assert_problem(anon.call("DELETE", "/readyz"), 405)


def test_readyz_names_a_plugin_that_cannot_load(tmp_path, monkeypatch):
    """libarchive replaced by a broken file on LD_LIBRARY_PATH: the daemon
    starts (it loads plugins only when used), /readyz is 503 with the reason
    code and no path or library message."""
    libs = tmp_path / "libs"
    libs.mkdir()
    (libs / "libarchive.so.13").write_bytes(b"not an ELF file")
    monkeypatch.setenv("LD_LIBRARY_PATH", str(libs))
    with dm.served(tmp_path / "st", ["--warm", "0"]) as dd:
        anon = dd.client(admin=False)
        assert anon.get("/healthz").status == 200
        b = assert_problem(anon.get("/readyz"), 503, "not_ready")
        assert b["details"]["reasons"] == ["plugin_archive_unavailable"], b
        assert str(libs) not in json.dumps(b) and "ELF" not in json.dumps(b), b


# ---- --metrics-public --------------------------------------------------------------------


def test_metrics_public_needs_no_token_and_names_no_tenant(tmp_path):
    with dm.served(tmp_path / "st", ["--warm", "0", "--metrics-public"]) as dd:
        admin, anon = dd.client(), dd.client(admin=False)
        tok, _ = make_tenant_token(admin, "public-metrics-tenant-9zz")
        t = dd.client(tok, admin=False)
        r = t.post("/v1/cells", {"resources": {"memory": "64M"}})
        assert r.status == 201, r
        try:
            text = scrape(anon)
            families(text)
            assert "public-metrics-tenant-9zz" not in text and r.body["id"] not in text
            assert value(text, "cell_cells", state="running") == 1
            # The rest of the API still wants a token.
            assert_problem(anon.get("/v1/cells"), 401)
        finally:
            t.delete("/v1/cells/%s" % r.body["id"])


# ---- logs ----------------------------------------------------------------------------------


def json_lines(dd):
    lines = [l for l in dd.stderr().splitlines() if l.strip()]
    out = []
    for l in lines:
        o = json.loads(l)            # every line is one JSON object
        assert isinstance(o, dict) and {"ts", "level", "msg"} <= set(o), l
        assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", o["ts"]), l
        assert o["level"] in ("error", "warn", "info"), l
        out.append(o)
    return out


def test_json_logs_parse_line_by_line(d, admin):
    logs = json_lines(d)
    listen = [o for o in logs if o["msg"].startswith("listening on http://")]
    assert listen and listen[0]["listen"] == "127.0.0.1:%d" % d.port, logs
    assert any(o["msg"].startswith("state in ") and o["state"] == d.state for o in logs), logs
    assert dm._read(d.stdout_path) == "", "json logs go to stderr only"


def test_log_format_is_checked(tmp_path):
    import subprocess
    r = subprocess.run([dm.CELL_BIN, "--state", str(tmp_path / "st"), "serve", "--log-format", "xml"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "--log-format" in r.stderr and "text or json" in r.stderr, r


def test_journal_lines_carry_priorities(tmp_path, monkeypatch):
    """JOURNAL_STREAM names the daemon's stderr: every line goes there, with
    a <N> syslog priority journald reads (6 info, 4 warning)."""
    st = tmp_path / "st"
    st.mkdir()
    err = st / "daemon.stderr"
    err.write_bytes(b"")
    s = os.stat(err)
    monkeypatch.setenv("JOURNAL_STREAM", "%d:%d" % (s.st_dev, s.st_ino))
    with dm.served(st, ["--warm", "0"]) as dd:
        lines = [l for l in dd.stderr().splitlines() if l]
        assert any(l.startswith("<6>cell daemon: listening on http://") for l in lines), lines
        assert all(re.match(r"^<[346]>cell daemon: ", l) for l in lines), lines
        assert dm._read(dd.stdout_path) == ""
