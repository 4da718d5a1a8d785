"""CLI conventions (issue 14): options through getopt_long with the same
messages everywhere, global options (--json, --state, --url) anywhere on
the line but never inside the cell's own command line, `cell help X` equal
to `cell X --help` for every command, and every listing command's --json
in the API's own schema (docs/openapi.json).
"""
import json
import os
import re
import subprocess

import pytest

import daemon as dm
from conftest import CELL_BIN


@pytest.fixture(scope="module")
def d(cell):
    """One `cell serve` for the module, reached at STATE/cell.sock."""
    yield from dm.serve_cli("cell-it-conv-")


def cellp(*args, input=None, timeout=60):
    """`cell ARGS` exactly as given (no --state added), without the
    environment's daemon address or token."""
    env = dict(os.environ)
    for k in ("CELL_TOKEN", "CELL_URL", "CELL_STATE"):
        env.pop(k, None)
    return subprocess.run([CELL_BIN] + [str(a) for a in args], input=input, capture_output=True, text=True,
                          timeout=timeout, env=env, cwd="/")


def ok(r):
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    return r


@pytest.fixture(scope="module")
def cid(d):
    r = ok(cellp("--state", d.state, "create", "--memory=256M", "--env=GREETING=hi"))
    cell_id = r.stdout.strip()
    yield cell_id
    cellp("--state", d.state, "rm", cell_id)


# ---- global options anywhere -----------------------------------------------------------


def test_global_options_at_every_position(d, cid):
    s, sock = d.state, "unix:" + os.path.join(d.state, "cell.sock")
    lines = [
        ["--state", s, "--json", "ls"],
        ["--json", "--state=" + s, "ls"],
        ["--state", s, "ls", "--json"],
        ["ls", "--json", "--state", s],
        ["ls", "--state=" + s, "--json"],
        ["--json", "ls", "--state", s],
        ["ls", "--url", sock, "--state", s, "--json"],
        ["--url=" + sock, "ls", "--json", "--state", s],
    ]
    for line in lines:
        r = ok(cellp(*line))
        body = json.loads(r.stdout)
        dm.openapi_check(body, "CellListResponse")
        assert cid in [c["id"] for c in body["cells"]], line
    # Options of a subcommand and globals mixed, either order, either form.
    for line in (["token", "ls", "--json", "--state", s], ["--state", s, "token", "--json", "ls"],
                 ["audit", "--limit=3", "--json", "--state=" + s], ["audit", "--json", "--limit", "3", "--state", s]):
        r = ok(cellp(*line))
        assert isinstance(json.loads(r.stdout), dict), line


def test_a_value_of_a_command_option_is_never_a_global_option(d, cid):
    # --env takes the next argument: "--json" is its (bad) value, not --json.
    r = cellp("--state", d.state, "create", "--env", "--json")
    assert r.returncode == 2 and "--env '--json'" in r.stderr, r.stderr
    r = cellp("--state", d.state, "exec", "-e", "--json", cid, "true")
    assert r.returncode == 2 and "--env '--json'" in r.stderr, r.stderr
    # A missing value of a global option is named.
    for line in (["ls", "--state"], ["ls", "--url"], ["--state"], ["ls", "--json=1"]):
        r = cellp(*line)
        assert r.returncode == 2 and r.stdout == "", (line, r.stdout)
        assert "'" + line[-1].split("=")[0] + "'" in r.stderr, (line, r.stderr)


def test_exec_gives_the_line_after_cmd_to_cmd(d, cid):
    s = d.state
    # After CMD, --json and --state are echo's.
    r = ok(cellp("--state", s, "exec", cid, "echo", "--json", "--state", "/nowhere"))
    assert r.stdout == "--json --state /nowhere\n"
    r = ok(cellp("exec", cid, "--state", s, "echo", "--json"))
    assert r.stdout == "--json\n"
    # After "--" too.
    r = ok(cellp("--state", s, "exec", cid, "--", "echo", "--json"))
    assert r.stdout == "--json\n"
    # Before CMD (before or after ID) it is cell's: the JSON answer.
    for line in (["exec", "--json", cid, "echo", "hi"], ["exec", cid, "--json", "echo", "hi"],
                 ["exec", cid, "-e", "A=1", "--json", "--", "echo", "hi"]):
        r = ok(cellp("--state", s, *line))
        body = json.loads(r.stdout)
        assert body["exitCode"] == 0 and body["stdout"].startswith("hi"), body
    # shell: everything after ID is the command.
    r = ok(cellp("--state", s, "shell", cid, "echo", "--json"))
    assert "--json" in r.stdout


def test_run_gives_the_line_after_cmd_to_cmd(state):
    r = ok(cellp("run", "--state", state, "echo", "--json", "--state", "/nowhere"))
    assert r.stdout == "--json --state /nowhere\n"
    r = ok(cellp("--state", state, "run", "--", "echo", "--json"))
    assert r.stdout == "--json\n"
    # A value of run's own option is skipped: --hostname takes "h1", echo is CMD.
    r = ok(cellp("run", "--hostname", "h1", "--state=" + state, "cat", "/proc/sys/kernel/hostname"))
    assert r.stdout == "h1\n"


def test_run_json_is_exec_jsons_object(d, cid, state):
    """`cell run --json` (before or after run) captures CMD's output and
    prints exec --json's object (ProcessRunResponse), with the same exit
    codes as without it; it was accepted and ignored."""
    script = "echo out; echo err >&2; printf '\\377'; exit 3"
    for line in (["--json", "run"], ["run", "--json"], ["run", "--memory", "64M", "--json"]):
        r = cellp("--state", state, *line, "sh", "-c", script)
        assert r.returncode == 3, (line, r.returncode, r.stderr)
        body = json.loads(r.stdout)
        dm.openapi_check(body, "ProcessRunResponse")
        assert body["exitCode"] == 3 and body["timedOut"] is False, body
        assert body["stdout"] == "out\n\ufffd" and body["stderr"] == "err\n", body   # invalid UTF-8: U+FFFD
    # The same keys as exec --json gives for the same command.
    ex = cellp("--state", d.state, "exec", "--json", cid, "sh", "-c", script)
    assert ex.returncode == 3 and set(json.loads(ex.stdout)) == set(body), (ex.stdout, body)
    # stdin is still ours; a CMD killed by a signal: exitCode null, exit 128+N.
    r = cellp("--state", state, "run", "--json", "cat", input="in\n")
    assert r.returncode == 0 and json.loads(r.stdout)["stdout"] == "in\n", r
    r = cellp("--state", state, "run", "--json", "--", "sh", "-c", "echo x; kill -9 $$")
    assert r.returncode == 137 and json.loads(r.stdout)["exitCode"] is None, r
    assert json.loads(r.stdout)["stdout"] == "x\n", r.stdout
    # --timeout: timedOut, exit 124, what came before kept.
    r = cellp("--state", state, "run", "--json", "--timeout", "1", "--", "sh", "-c", "echo early; exec sleep 60")
    body = json.loads(r.stdout)
    assert r.returncode == 124 and body["timedOut"] is True and body["exitCode"] is None, r
    assert body["stdout"] == "early\n", body
    # Past 1 MiB a stream is cut, flagged and warned about; CMD still runs to its end.
    r = cellp("--state", state, "run", "--json", "--", "sh", "-c",
              "head -c 3000000 /dev/zero | tr '\\0' x; echo done >&2; exit 5")
    body = json.loads(r.stdout)
    assert r.returncode == 5 and body["stdoutTruncated"] is True and len(body["stdout"]) == 1 << 20, r.stderr
    assert body["stderr"] == "done\n" and not body["stderrTruncated"] and "stdoutTruncated" in r.stderr, body
    # CMD never ran: the error and its code, no object.
    r = cellp("--state", state, "run", "--json", "no-such-command-here")
    assert r.returncode == 127 and r.stdout == "" and "not found" in r.stderr, r
    # A terminal and a captured output exclude each other: refused, named.
    for line in (["run", "--json", "-t", "true"], ["--json", "run", "--tty", "true"]):
        r = cellp("--state", state, *line)
        assert r.returncode == 2 and r.stdout == "" and "--json" in r.stderr and "--tty" in r.stderr, r


def test_json_is_refused_where_there_is_no_json(d, cid, state, tmp_path):
    """cp, shell, lane export and image export have no JSON form: --json,
    anywhere on the line, is refused naming it (exit 2, nothing done)
    rather than ignored (a script asking for JSON got nothing, or a tar)."""
    s = d.state
    (tmp_path / "f").write_text("x")
    for line, what in ((["--json", "cp", tmp_path / "f", cid + ":/tmp/json-f"], "cp: --json"),
                       (["cp", "--json", cid + ":/etc/hostname", "-"], "cp: --json"),
                       (["shell", "--json", cid, "true"], "shell: --json"),
                       (["--json", "lane", "export", "nosuch"], "lane export: --json"),
                       (["lane", "export", "--json", "nosuch"], "lane export: --json"),
                       (["image", "export", "--json", "host", "-"], "image export: --json")):
        r = cellp("--state", s, *line)
        assert r.returncode == 2 and r.stdout == "" and what in r.stderr, (line, r)
    r = cellp("--state", s, "exec", cid, "test", "-e", "/tmp/json-f")
    assert r.returncode == 1, "cp --json copied all the same"
    # An existing FILE for image export is named as the reason, not "File exists".
    r = cellp("--state", state, "image", "export", "host", "/dev/null")
    assert r.returncode == 1 and "/dev/null exists: FILE must be a new file" in r.stderr, r


def test_serve_line_is_the_daemons():
    # Nothing is lifted from serve's line: the daemon parses it (and --json is not its).
    r = cellp("serve", "--json", "--state", "/nonexistent-cell-state")
    assert r.returncode != 0 and "--json" in r.stderr, r.stderr


# ---- --opt=value and --opt value -------------------------------------------------------


def test_option_value_forms_are_the_same(d, cid, tmp_path):
    s = d.state
    ten = dm.uniq("conv")
    a = json.loads(ok(cellp("--state", s, "--json", "token", "create", "--tenant", ten, "--label", "x", "--rate", "7")).stdout)
    b = json.loads(ok(cellp("--state", s, "--json", "token", "create", "--tenant=" + ten, "--label=x", "--rate=7")).stdout)
    for t in (a, b):
        dm.openapi_check(t, "TokenCreateResponse")
        assert (t["tenant"], t.get("label"), t.get("rate")) == (ten, "x", 7), t
    f = tmp_path / "v"
    f.write_text("s3cret\n")
    ok(cellp("--state", s, "secret", "set", "CONV_A", "--value-file", f))
    ok(cellp("--state", s, "secret", "set", "--value-file=%s" % f, "CONV_B"))
    names = [x["name"] for x in json.loads(ok(cellp("--state", s, "secret", "ls", "--json")).stdout)["secrets"]]
    assert "CONV_A" in names and "CONV_B" in names
    one = ok(cellp("--state", s, "audit", "--limit", "2", "--json")).stdout
    two = ok(cellp("--state", s, "audit", "--limit=2", "--json")).stdout
    assert len(json.loads(one)["records"]) == len(json.loads(two)["records"]) == 2
    cell = json.loads(ok(cellp("--state", s, "ls", "--json")).stdout)["cells"]
    assert [c["resources"]["memory"] for c in cell if c["id"] == cid] == [256 << 20]


# ---- bad options: exit 2, the option named ---------------------------------------------

BAD = [
    (["create", "--bogus"], "unknown option '--bogus'"),
    (["create", "--memory"], "option '--memory' needs a value"),
    (["create", "-x"], "unknown option '-x'"),
    (["create", "extra"], "'extra'"),
    (["ls", "--bogus"], "unknown option '--bogus'"),
    (["ls", "extra"], "'extra'"),
    (["start", "--bogus", "x"], "unknown option '--bogus'"),
    (["stop", "-q", "x"], "unknown option '-q'"),
    (["rm", "--force", "x"], "unknown option '--force'"),
    (["start"], "missing cell ID"),
    (["logs", "--stream"], "option '--stream' needs a value"),
    (["logs", "--follow=yes", "a", "b"], "option '--follow' takes no value"),
    (["logs", "--bogus", "a", "b"], "unknown option '--bogus'"),
    (["logs", "a", "b", "c"], "'c'"),
    (["audit", "--since"], "option '--since' needs a value"),
    (["audit", "--net=1"], "option '--net' takes no value"),
    (["audit", "--limit", "x"], "--limit 'x'"),
    (["policy", "--bogus"], "unknown option '--bogus'"),
    (["token", "create", "--tenant"], "option '--tenant' needs a value"),
    (["token", "create", "--bogus"], "unknown option '--bogus'"),
    (["token", "create"], "--tenant NAME is required"),
    (["token", "ls", "-x"], "unknown option '-x'"),
    (["token", "revoke", "--bogus", "x"], "unknown option '--bogus'"),
    (["secret", "set", "--value-file"], "option '--value-file' needs a value"),
    (["secret", "set", "--value=x", "N"], "no --value"),
    (["secret", "ls", "--bogus"], "unknown option '--bogus'"),
    (["secret", "rm", "-x", "N"], "unknown option '-x'"),
    (["agent", "--bogus"], "unknown option '--bogus'"),
    (["agent", "run", "--agent"], "option '--agent' needs a value"),
    (["agent", "run", "--json=1", "x"], "option '--json' takes no value"),
    (["agent", "runs", "--limit"], "option '--limit' needs a value"),
    (["agent", "runs", "--bogus"], "unknown option '--bogus'"),
    (["exec", "--bogus", "x", "true"], "unknown option"),
    (["exec", "-u"], "option '-u' needs a value"),
    (["cp", "--bogus", "a", "b:c"], "unknown option '--bogus'"),
    (["shell", "--bogus"], "unknown option '--bogus'"),
    (["run", "--bogus", "true"], "unknown option '--bogus'"),
    (["run", "-x", "true"], "unknown option '-x'"),
    (["run", "--memory"], "option '--memory' needs a value"),
    (["run", "--tty=1", "true"], "option '--tty' takes no value"),
    (["exec", "--tty=1", "x", "true"], "option '--tty' takes no value"),
    (["image", "import", "--bogus", "n", "f"], "unknown option '--bogus'"),
    (["image", "import", "n", "f", "--max-image-size"], "option '--max-image-size' needs a value"),
    (["image", "ls", "--bogus"], "unknown option '--bogus'"),
    (["image", "rm", "-q", "n"], "unknown option '-q'"),
    (["--bogus", "ls"], "unknown global option '--bogus'"),
    (["nosuch"], "unknown command 'nosuch'"),
    (["help", "nosuch"], "unknown command 'nosuch'"),
    (["help", "ls", "extra"], "'extra'"),
]


@pytest.mark.parametrize("args,words", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_options_exit_2_naming_the_option(args, words):
    # No daemon at this address: a usage error is found before connecting.
    r = cellp("--url", "unix:/nonexistent/cell.sock", *args)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert words in r.stderr, r.stderr
    assert r.stdout == "", r.stdout
    if "option" in words and "global" not in words:
        assert "--help" in r.stderr, r.stderr       # points at `cell CMD --help`


NOT_UTF8 = [
    (["token", "create", "--tenant", b"t\xff"], "--tenant"),
    (["token", "create", "--tenant=t", b"--label=\xc3("], "--label"),
    (["create", "--hostname", b"a\xfe"], "--hostname"),
    (["create", b"--image=\xff"], "--image"),
    (["create", "--lane", b"\xed\xa0\x80"], "--lane"),       # a UTF-16 surrogate
    (["create", b"--cwd=/\xc0\xaf"], "--cwd"),                # an overlong '/'
]


@pytest.mark.parametrize("args,opt", NOT_UTF8, ids=[o for _, o in NOT_UTF8])
def test_arguments_that_are_not_utf8_are_refused_by_name(args, opt):
    # Once such a value made the field vanish: --tenant then read as missing.
    argv = [os.fsencode(CELL_BIN), b"--url", b"unix:/nonexistent/cell.sock"]
    argv += [a if isinstance(a, bytes) else a.encode() for a in args]
    r = subprocess.run(argv, capture_output=True, timeout=30)
    assert r.returncode == 2 and r.stdout == b"", r
    assert (opt + ": the value is not valid UTF-8").encode() in r.stderr, r.stderr


# ---- cell help X == cell X --help ------------------------------------------------------

COMMANDS = [["run"], ["lane"], ["image"], ["serve"], ["create"], ["ls"], ["start"], ["stop"], ["rm"], ["exec"],
            ["shell"], ["cp"], ["logs"], ["audit"], ["policy"], ["token"], ["secret"], ["agent"],
            ["agent", "run"], ["agent", "runs"], ["image", "import"], ["image", "rm"], ["image", "ls"],
            ["token", "create"], ["secret", "set"]]


def listed(general):
    """The command names `cell help` lists ("  start ID | stop ID   ...")."""
    names = set()
    for line in general.splitlines():
        if re.match(r"  [a-z]", line):
            names.update(part.split()[0] for part in re.split(r"\s{3,}", line.strip())[0].split("|"))
    return names


@pytest.mark.parametrize("cmd", COMMANDS, ids=[" ".join(c) for c in COMMANDS])
def test_help_x_is_x_help(cmd):
    general = ok(cellp("help")).stdout
    assert cmd[0] in listed(general), cmd

    a = ok(cellp("help", *cmd))
    b = ok(cellp(*cmd, "--help"))
    assert a.stdout == b.stdout, (a.stdout[:300], b.stdout[:300])
    assert "cell " + cmd[0] in a.stdout.split("\n\n")[0], a.stdout[:300]     # its usage lines
    assert a.stdout != general
    if cmd[0] not in ("serve", "lane", "image"):     # store_cmds.c (lane, image) knows only --help
        assert ok(cellp(*cmd, "-h")).stdout == a.stdout


def test_help_of_a_subcommand_without_its_own_text_is_its_groups(tmp_path):
    # `cell help` never does what the subcommand does: no state dir is made,
    # no lane listed, no image built.
    st = tmp_path / "never"
    for group, sub in (("image", "build"), ("image", "export"), ("lane", "ls"), ("lane", "rm"), ("token", "revoke"),
                       ("secret", "rm"), ("policy", "set")):
        assert ok(cellp("--state", st, "help", group, sub)).stdout == ok(cellp("help", group)).stdout, (group, sub)
    assert not st.exists()
    for line, words in ((["help", "image", "nosuch"], "no subcommand 'nosuch'"), (["help", "ls", "x"], "'x'"),
                        (["help", "agent", "run", "x"], "'x'")):
        r = cellp(*line)
        assert r.returncode == 2 and words in r.stderr and r.stdout == "", (line, r.stderr)


def test_help_of_help_and_unknown():
    general = ok(cellp("help")).stdout
    assert ok(cellp("--help")).stdout == general == ok(cellp("help", "help")).stdout
    assert "anywhere up to a --" in general          # the global-option rule is documented
    r = cellp("help", "nosuch")
    assert r.returncode == 2 and "'nosuch'" in r.stderr and r.stdout == ""


# ---- --json is the API's schema --------------------------------------------------------


def test_listing_json_is_the_apis_schema(d, cid):
    s = d.state
    shapes = [
        (["ls"], "CellListResponse", "cells"),
        (["token", "ls"], "TokenListResponse", "tokens"),
        (["secret", "ls"], "SecretListResponse", "secrets"),
        (["agent", "runs", "ls"], "RunListResponse", "runs"),
        (["agent", "runs"], "RunListResponse", "runs"),
        (["audit"], "AuditResponse", "records"),
        (["audit", "--net"], "AuditResponse", "records"),
        (["image", "ls"], "ImageListResponse", "images"),
    ]
    for args, schema, key in shapes:
        for line in (["--json", *args], [*args, "--json"]):
            r = ok(cellp("--state", s, *line))
            body = json.loads(r.stdout)
            dm.openapi_check(body, schema)
            assert isinstance(body[key], list), (args, body)
    cells = json.loads(ok(cellp("--state", s, "ls", "--json")).stdout)["cells"]
    assert cid in [c["id"] for c in cells]
    images = json.loads(ok(cellp("--state", s, "image", "ls", "--json")).stdout)["images"]
    assert "host" in [i["name"] for i in images]
    records = json.loads(ok(cellp("--state", s, "audit", "--json")).stdout)["records"]
    assert records, "the module's requests are audited"


def test_logs_stream_forms_and_json(d, admin, cid):
    pid = dm.spawn(admin, cid, "sh", ["-c", "echo out; echo err >&2"])
    assert dm.wait_for(lambda: admin.get("/cells/%s/v1/processes/%s" % (cid, pid)).body.get("status") == "exited")
    s = d.state
    a = json.loads(ok(cellp("--state", s, "logs", cid, pid, "--stream=stdout", "--json")).stdout)
    b = json.loads(ok(cellp("--json", "logs", "--stream", "stdout", cid, pid, "--state", s)).stdout)
    for body in (a, b):
        dm.openapi_check(body, "ProcessLogsResponse")
    assert a["entries"] == b["entries"] and a["entries"], a
    assert ok(cellp("--state", s, "logs", cid, pid, "--stream=stderr")).stdout == "err\n"
    r = cellp("--state", s, "logs", cid, pid, "--stream=bogus")
    assert r.returncode == 2 and "--stream 'bogus'" in r.stderr
