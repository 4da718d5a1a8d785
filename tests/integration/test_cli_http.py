"""The CLI's own HTTP/1.1 client (src/cli/http1.c) against a fake daemon on
a unix socket that answers garbage, cuts answers short, sends huge headers
or endless bodies, closes early or refuses an upload without reading it:
every case must end with a clear message and exit code 125 (or the
refusal's 1), never a hang (each run is bounded by a subprocess timeout).
No root and no real daemon needed.
"""
import os

import pytest

from conftest import run_cell
from fakedaemon import RUN_TIMEOUT, fake_factory


@pytest.fixture
def fake():
    yield from fake_factory()


def reply(raw, keep=False):
    """An answer that sends `raw` and then closes (keep: waits for the next request)."""
    def answer(conn, head, fake):
        conn.sendall(raw)
        return keep
    return answer


def failed(r, words):
    assert r.returncode == 125, (r.returncode, r.stdout, r.stderr)
    assert r.stderr.startswith("cell: request to the cell daemon at unix:"), r.stderr
    assert words in r.stderr, r.stderr


# ---- broken answers ------------------------------------------------------------------------


def test_garbage_instead_of_http(fake):
    f = fake(reply(b"SSH-2.0-OpenSSH_9.2\r\nnot http at all\r\n\r\n"))
    failed(f.cli("ls"), "not HTTP/1.1")


def test_bad_chunk_size(fake):
    f = fake(reply(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nZZZ\r\n{}\r\n0\r\n\r\n"))
    failed(f.cli("ls"), "not HTTP/1.1")


@pytest.mark.parametrize("raw", [
    b"",                                                                        # closed without a word
    b"HTTP/1.1 200 OK\r\nContent-Le",                                           # inside the headers
    b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n{\"cells\": [",            # short body
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{\"cel",        # inside a chunk
    b"HTTP/1.1 100 Continue\r\n\r\n",                                           # only an interim answer
], ids=["nothing", "headers", "body", "chunk", "interim"])
def test_truncated_answer(fake, raw):
    f = fake(reply(raw))
    failed(f.cli("ls"), "the connection ended before a complete answer")


def test_huge_header_is_refused(fake):
    f = fake(reply(b"HTTP/1.1 200 OK\r\nX-Pad: " + b"a" * (1 << 20) + b"\r\nContent-Length: 2\r\n\r\n{}"))
    failed(f.cli("ls"), "headers are larger than")


def test_announced_body_over_the_cap_is_refused_unread(fake):
    # The connection stays open with no body: waiting for it would hang.
    def answer(conn, head, fake):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 300000000\r\n\r\n")
        conn.recv(1)            # until the CLI closes
        return False
    f = fake(answer)
    failed(f.cli("ls"), "larger than 256 MiB")


@pytest.mark.parametrize("chunked", [False, True], ids=["until-close", "chunked"])
def test_endless_body_is_cut_at_the_cap(fake, chunked):
    piece = b"[" * (1 << 20)
    framed = b"%x\r\n%s\r\n" % (len(piece), piece) if chunked else piece

    def answer(conn, head, fake):
        conn.sendall(b"HTTP/1.1 200 OK\r\n" + (b"Transfer-Encoding: chunked\r\n" if chunked else b"") + b"\r\n")
        while True:             # until the CLI stops reading (the send fails)
            conn.sendall(framed)
    f = fake(answer)
    failed(f.cli("ls"), "larger than 256 MiB")


def test_answers_that_are_not_json(fake):
    f = fake(reply(b"HTTP/1.1 500 Oops\r\nContent-Length: 9\r\n\r\nwent bang"))
    r = f.cli("ls")
    assert r.returncode == 125 and r.stderr == "cell: went bang\n", r.stderr
    f = fake(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nwent bang"))
    r = f.cli("ls")
    assert r.returncode == 125 and "is not JSON" in r.stderr, r.stderr


def test_problem_json_is_the_message(fake):
    body = b'{"type":"about:blank","title":"Not Found","status":404,"detail":"no cell zz"}'
    f = fake(reply(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/problem+json\r\n"
                   b"Content-Length: %d\r\n\r\n%s" % (len(body), body)))
    r = f.cli("rm", "zz")
    assert r.returncode == 1 and r.stderr.strip() == "cell: no cell zz", r.stderr


def test_interim_answers_are_skipped(fake):
    f = fake(reply(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n"
                   b"HTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\n{\"cells\": []}"))
    r = f.cli("--json", "ls")
    assert r.returncode == 0 and r.stdout == '{"cells":[]}\n', r


# ---- what the CLI sends ---------------------------------------------------------------------


def ok_204(conn, head, fake):
    conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
    return True


def test_path_parts_are_escaped_and_one_connection_is_reused(fake):
    f = fake(ok_204)
    r = f.cli("rm", "a/../b?c d", "%2e#x")
    assert r.returncode == 0, r.stderr
    lines = [h.split("\r\n") for h in f.heads]
    assert [l[0] for l in lines] == ["DELETE /v1/cells/a%2F..%2Fb%3Fc%20d HTTP/1.1",
                                     "DELETE /v1/cells/%252e%23x HTTP/1.1"], f.heads
    assert all("Authorization: Bearer tok" in l and "Host: localhost" in l for l in lines), f.heads
    assert f.connections == 1


def test_a_kept_connection_the_daemon_closed_is_replaced(fake):
    f = fake(lambda conn, head, fk: conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n") or False)
    r = f.cli("rm", "one", "two", "three")
    assert r.returncode == 0, r.stderr
    assert len(f.heads) == 3 and f.connections == 3


@pytest.mark.parametrize("raw", [b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n",
                                 b"HTTP/1.0 204 No Content\r\n\r\n",
                                 b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
                         ids=["connection-close", "http-1.0", "extra-answer"])
def test_a_connection_that_may_not_be_reused_is_not(fake, raw):
    # The fake keeps reading: a CLI that reused the connection would get its
    # next answer there (or the stray extra one) instead of a fresh connection.
    f = fake(reply(raw, keep=True))
    r = f.cli("rm", "one", "two")
    assert r.returncode == 0, r.stderr
    assert len(f.heads) == 2 and f.connections == 2


def test_token_with_a_line_break_is_refused(fake):
    f = fake(ok_204)
    r = f.cli("rm", "x", token="tok\r\nX-Tenant: admin")
    assert r.returncode == 2 and "control character" in r.stderr, r.stderr
    assert f.heads == []


def test_https_url_is_refused_clearly(fake):
    f = fake(ok_204)
    full = dict(os.environ, CELL_TOKEN="tok")
    r = run_cell(f.dir, ["--url", "https://127.0.0.1:1", "ls"], timeout=RUN_TIMEOUT, env=full)
    assert r.returncode == 2 and "TLS" in r.stderr, r.stderr


@pytest.mark.parametrize("url", ["http://", "http://:80", "http://[::1", "http://host:", "http://h?x"])
def test_malformed_urls_are_usage_errors(fake, url):
    f = fake(ok_204)
    full = dict(os.environ, CELL_TOKEN="tok")
    r = run_cell(f.dir, ["--url", url, "ls"], timeout=RUN_TIMEOUT, env=full)
    assert r.returncode == 2 and "--url" in r.stderr, r.stderr


# ---- uploads ----------------------------------------------------------------------------------


def refuse_upload(close_after):
    """fs/stat: not found; the PUT is refused at its headers, its body never read."""
    body = b'{"title":"Payload Too Large","status":413,"detail":"the file is too large"}'

    def answer(conn, head, fake):
        if head.startswith(b"GET "):
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
            return True
        assert b"Expect: 100-continue" in head
        conn.sendall(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        if not close_after:
            conn.recv(1)        # keeps the connection open, reading nothing, until the CLI closes
        return False
    return answer


@pytest.mark.parametrize("close_after", [False, True], ids=["stays-open", "closes"])
def test_upload_refused_before_its_body(fake, tmp_path, close_after):
    src = tmp_path / "big"
    src.write_bytes(os.urandom(16 << 20))   # far more than the socket buffers hold
    f = fake(refuse_upload(close_after))
    r = f.cli("cp", str(src), "c1:/tmp/big")
    assert r.returncode == 1 and "the file is too large" in r.stderr, (r.returncode, r.stderr)


def test_upload_sends_what_it_announced(fake, tmp_path):
    src = tmp_path / "small"
    src.write_bytes(b"x" * 100000)
    got = {}

    def answer(conn, head, fk):
        if head.startswith(b"GET "):
            conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}")
            return True
        conn.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
        body = b""
        while len(body) < 100000:
            more = conn.recv(65536)
            if not more:
                break
            body += more
        got["body"] = body
        conn.sendall(b"HTTP/1.1 204 No Content\r\n\r\n")
        return False
    f = fake(answer)
    r = f.cli("cp", str(src), "c1:/tmp/small")
    assert r.returncode == 0, r.stderr
    assert got["body"] == b"x" * 100000
    assert "Content-Length: 100000" in f.heads[-1] and f.heads[-1].startswith("PUT /cells/c1/v1/fs/file?path=%2Ftmp%2Fsmall ")


# ---- streams --------------------------------------------------------------------------------


def test_download_cut_short_leaves_no_file(fake, tmp_path):
    f = fake(reply(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"x" * 300))
    r = f.cli("cp", "c1:/tmp/f", str(tmp_path / "f"))
    failed(r, "the connection ended before a complete answer")
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


def test_endless_log_event_is_cut_at_the_cap(fake):
    def answer(conn, head, fk):
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\nevent: log\r\ndata: ")
        while True:             # one line that never ends
            conn.sendall(b"A" * (1 << 20))
    f = fake(answer)
    r = f.cli("logs", "c1", "proc_1", "--follow")
    assert r.returncode == 125 and "a log event from the daemon is too large" in r.stderr, r.stderr


def test_log_follow_prints_events_and_skips_the_rest(fake):
    events = (b": keepalive\r\n\r\nevent: log\r\nid: 1\r\n"
              b'data: {"data":"aGVsbG8K","encoding":"base64"}\r\n\r\n'
              b"data: not json\n\n"
              b'event: log\ndata: {"data":"d29ybGQK","encoding":"base64"}\n\n')
    body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(events), events)
    f = fake(reply(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n" + body))
    r = f.cli("logs", "c1", "proc_1", "--follow")
    assert r.returncode == 0 and r.stdout == "hello\nworld\n", r
