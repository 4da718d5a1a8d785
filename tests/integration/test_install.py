"""make install into a DESTDIR and what it installed, run from there
(README "Install", scripts/install.sh): the installed cell runs cells and
`cell serve` finds the installed cell-daemon; libcell links through its
pkg-config file; cell.service passes `systemd-analyze verify` and the daemon
tells $NOTIFY_SOCKET READY=1 only once its API answers; the man pages and
completions (scripts/gen-docs.py) cover every command and option the help
text names; make uninstall removes what install wrote and keeps the state
and an edited config."""
import os
import re
import shutil
import socket
import stat
import subprocess
import threading

import pytest

import daemon as dm
from conftest import CELL_BIN, CHECKOUT

BUILD = os.path.relpath(os.path.dirname(CELL_BIN), CHECKOUT)
PREFIX = "/usr"


def make(target, destdir, *extra):
    r = subprocess.run(["make", "-C", CHECKOUT, "BUILD=" + BUILD, "DESTDIR=" + str(destdir), "PREFIX=" + PREFIX,
                        *extra, target], capture_output=True, text=True, timeout=1800)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r.stdout + r.stderr


def files_under(root):
    out = set()
    for d, dirs, names in os.walk(root):
        for n in names:
            out.add(os.path.relpath(os.path.join(d, n), root))
    return out


@pytest.fixture(scope="module")
def dest(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("make install's tests run the installed cell: root only")
    root = tmp_path_factory.mktemp("destdir")
    out = make("install", root)
    # BUILD=... builds and installs from that directory, never build/.
    if BUILD != "build":
        assert not re.search(r"(^|[\s'=])build/", out), out
    return root


def usr(dest, *parts):
    return os.path.join(str(dest), PREFIX.lstrip("/"), *parts)


def installed_cell(dest):
    return usr(dest, "bin", "cell")


# ---- what is installed ------------------------------------------------------------------


def test_installs_the_programs_library_docs_unit_and_state(dest):
    def mode(*p):
        return stat.S_IMODE(os.lstat(usr(dest, *p)).st_mode)

    assert mode("bin", "cell") == 0o755 and mode("bin", "cell-daemon") == 0o755
    # cell-init, cell-egress, cell-untar and the plugins are embedded.
    assert sorted(os.listdir(usr(dest, "bin"))) == ["cell", "cell-daemon"]
    assert os.readlink(usr(dest, "lib", "libcell.so")) == "libcell.so.0"
    assert mode("lib", "libcell.so.0") == 0o755 and mode("lib", "libcell.a") == 0o644
    with open(usr(dest, "include", "cell.h")) as f, open(os.path.join(CHECKOUT, "include", "cell.h")) as g:
        assert f.read() == g.read()
    with open(usr(dest, "lib", "pkgconfig", "libcell.pc")) as f:
        pc = f.read()
    assert "prefix=/usr\n" in pc and "libdir=/usr/lib\n" in pc and "-lcell" in pc, pc
    man = os.listdir(usr(dest, "share", "man", "man1"))
    assert {"cell.1", "cell-run.1", "cell-serve.1", "cell-exec.1"} <= set(man), man
    assert os.path.isfile(usr(dest, "share", "bash-completion", "completions", "cell"))
    assert os.path.isfile(usr(dest, "share", "zsh", "site-functions", "_cell"))
    with open(usr(dest, "lib", "systemd", "system", "cell.service")) as f:
        unit = f.read()
    assert "\nType=notify\n" in unit and "\nExecStart=/usr/bin/cell serve" in unit, unit
    state = os.path.join(str(dest), "var", "lib", "cell")
    assert stat.S_IMODE(os.stat(state).st_mode) == 0o700 and os.listdir(state) == []
    example = os.path.join(CHECKOUT, "etc", "cell.conf")
    conf = os.path.join(str(dest), "etc", "cell", "cell.conf")
    assert os.path.exists(conf) == os.path.exists(example)
    if os.path.exists(example):
        with open(conf) as f, open(example) as g:
            assert f.read() == g.read()


def test_the_installed_cell_runs_cells_with_nothing_beside_it(dest, tmp_path):
    cell = installed_cell(dest)
    want = subprocess.run([CELL_BIN, "--version"], capture_output=True, text=True, check=True).stdout
    assert subprocess.run([cell, "--version"], capture_output=True, text=True, check=True).stdout == want
    r = subprocess.run([cell, "--state", str(tmp_path / "st"), "run", "--", "/bin/sh", "-c", "echo in-a-cell"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout == "in-a-cell\n", r


def test_libcell_links_through_pkg_config(dest, tmp_path):
    """A program built with `pkg-config --cflags --libs libcell` (shared) and
    `--static` (libcell.a) against the install, run against it."""
    src = tmp_path / "v.c"
    src.write_text('#include <cell.h>\n#include <stdio.h>\n'
                   'int main(void) { printf("%s\\n", cell_version()); return 0; }\n')
    env = dict(os.environ, PKG_CONFIG_PATH=usr(dest, "lib", "pkgconfig"), PKG_CONFIG_SYSROOT_DIR=str(dest))
    version = subprocess.run([CELL_BIN, "--version"], capture_output=True, text=True).stdout.split()[-1]
    def pkg_config(*args):
        return subprocess.run(["pkg-config", *args, "libcell"], env=env, capture_output=True, text=True,
                              check=True).stdout.split()

    for kind in ("shared", "static"):
        exe = tmp_path / kind
        if kind == "shared":
            flags = pkg_config("--cflags", "--libs")
        else:       # libcell.a by name (the .so would win over -lcell), then what it needs
            flags = pkg_config("--cflags") + [usr(dest, "lib", "libcell.a")] + [
                f for f in pkg_config("--static", "--libs") if f != "-lcell"]
        # A sanitizer build's library needs the program linked with the runtime.
        san = ["-fsanitize=address,undefined"] if dm.ASAN else []
        r = subprocess.run(["cc", *san, "-o", str(exe), str(src), *flags], capture_output=True, text=True)
        assert r.returncode == 0, (kind, flags, r.stderr)
        run_env = dict(os.environ, LD_LIBRARY_PATH=usr(dest, "lib"))
        r = subprocess.run([str(exe)], capture_output=True, text=True, env=run_env)
        assert r.returncode == 0 and r.stdout.strip() == version, (kind, r)
        if kind == "shared":
            ldd = subprocess.run(["ldd", str(exe)], capture_output=True, text=True, env=run_env).stdout
            assert usr(dest, "lib", "libcell.so.0") in ldd, ldd


# ---- systemd ------------------------------------------------------------------------------


def test_the_unit_verifies(dest, tmp_path):
    """systemd-analyze verify on the installed unit, its paths pointing into
    the DESTDIR (ExecStart must exist; Documentation= must name installed
    man pages); a unit with a mistake is caught the same way."""
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze not found (scripts/install-deps.sh installs systemd)")
    with open(usr(dest, "lib", "systemd", "system", "cell.service")) as f:
        unit = f.read().replace("=/usr/bin/", "=%s/" % usr(dest, "bin"))
    env = dict(os.environ, MANPATH=usr(dest, "share", "man"), SYSTEMD_LOG_COLOR="0")

    def verify(text):
        path = tmp_path / "cell.service"
        path.write_text(text)
        return subprocess.run(["systemd-analyze", "verify", str(path)], capture_output=True, text=True, env=env)

    r = verify(unit)
    assert r.returncode == 0 and r.stdout + r.stderr == "", r
    bad = verify(unit.replace("Type=notify", "Type=notfy").replace("man:cell-serve(1)", "man:cell-nothing(1)"))
    assert "notfy" in bad.stderr and "cell-nothing" in bad.stderr, bad


class Notifications:
    """A datagram socket standing in for systemd's $NOTIFY_SOCKET; on READY=1
    it asks the daemon's unix socket for /v1/health at once, no retry."""

    def __init__(self, addr, state):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(addr)
        self.sock.settimeout(60)
        self.state = state
        self.messages, self.health_at_ready = [], None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while True:
            try:
                msg = self.sock.recv(4096).decode()
            except OSError:
                return
            self.messages.append(msg)
            if "READY=1" in msg.split("\n"):
                self.health_at_ready = unix_get(os.path.join(self.state, "cell.sock"), "/v1/health")
            if "STOPPING=1" in msg.split("\n") or msg.startswith("STATUS=failed"):
                return

    def wait(self):
        self.thread.join(60)
        self.sock.close()
        return self.messages


def unix_get(path, url):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(10)
        s.connect(path)
        s.sendall(b"GET " + url.encode() + b" HTTP/1.1\r\nHost: cell\r\nConnection: close\r\n\r\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return data.decode(errors="replace")
            data += chunk
    except OSError as e:
        return "error: %s" % e
    finally:
        s.close()


@pytest.mark.parametrize("abstract", [True, False], ids=["abstract", "path"])
def test_ready_is_sent_once_the_api_answers(dest, tmp_path, monkeypatch, abstract):
    """The installed cell serve (which runs the installed cell-daemon) with
    NOTIFY_SOCKET set: READY=1 and a STATUS naming the socket arrive when the
    API already answers; SIGTERM brings STOPPING=1.  The daemon's children
    get no NOTIFY_SOCKET."""
    state = tmp_path / "state"
    state.mkdir()
    addr = "\0cell-notify-%d-%s" % (os.getpid(), tmp_path.name) if abstract else str(tmp_path / "notify")
    n = Notifications(addr, str(state))
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + addr[1:] if abstract else addr)
    monkeypatch.setattr(dm, "CELL_BIN", installed_cell(dest))
    with dm.served(state, unix_socket=True) as dd:
        cid = dd.client().post("/v1/cells", {}).body["id"]
        r = dd.client().post("/cells/%s/v1/processes/run" % cid,
                             {"command": "sh", "args": ["-c", "echo ${NOTIFY_SOCKET:-unset}"]})
        assert r.status == 200 and r.body["stdout"] == "unset\n", r
        assert os.readlink("/proc/%d/exe" % dd.proc.pid) == usr(dest, "bin", "cell-daemon")
    msgs = n.wait()
    assert len(msgs) == 2, msgs
    assert msgs[0].split("\n") == ["READY=1", "STATUS=serving on unix:%s/cell.sock and http://127.0.0.1:%d"
                                   % (state, dd.port)], msgs
    assert n.health_at_ready.startswith("HTTP/1.1 200") and '"status":"ok"' in n.health_at_ready, n.health_at_ready
    assert msgs[1].startswith("STOPPING=1\nSTATUS=stopping"), msgs


def test_a_failed_start_is_never_ready(tmp_path, monkeypatch):
    """A second daemon on a state another one holds: STATUS=failed with the
    reason and an ERRNO, no READY=1, a non-zero exit."""
    state = tmp_path / "state"
    state.mkdir()
    with dm.served(state) as first:
        addr = str(tmp_path / "notify")
        n = Notifications(addr, str(state))
        env = dict(os.environ, NOTIFY_SOCKET=addr)
        r = subprocess.run([CELL_BIN, "--state", str(state), "serve", "--no-config", "--listen", "", "--socket", ""],
                           capture_output=True, text=True, env=env, timeout=60)
        assert r.returncode != 0, r
        msgs = n.wait()
        assert first.running()
    assert len(msgs) == 1 and msgs[0].startswith("STATUS=failed: ") and "\nERRNO=" in msgs[0], msgs
    assert str(first.proc.pid) in msgs[0], msgs


@pytest.mark.parametrize("value", ["relative/notify", "@" + "x" * 200, "/nonexistent/notify", "@", ""])
def test_a_bad_notify_socket_does_not_stop_the_daemon(tmp_path, monkeypatch, value):
    monkeypatch.setenv("NOTIFY_SOCKET", value)
    with dm.served(tmp_path / "state") as dd:
        assert dd.client(admin=False).get("/v1/health").status == 200
    # Empty is unset, as for sd_notify(3); the others are reported.
    assert ("NOTIFY_SOCKET" in dd.stderr()) == (value != ""), dd.stderr()


def test_cells_work_under_no_new_privileges(dest, tmp_path, monkeypatch):
    """The unit's NoNewPrivileges=yes, as systemd applies it (setpriv), on
    the installed daemon with the installed config: a cell boots and runs a
    command as before."""
    wrapper = tmp_path / "cell-nnp"
    wrapper.write_text('#!/bin/sh\nexec setpriv --no-new-privs %s "$@"\n' % installed_cell(dest))
    wrapper.chmod(0o755)
    monkeypatch.setattr(dm, "CELL_BIN", str(wrapper))
    conf = os.path.join(str(dest), "etc", "cell", "cell.conf")
    with dm.served(tmp_path / "state", ["--config", conf] if os.path.exists(conf) else []) as dd:
        with open("/proc/%d/status" % dd.proc.pid) as f:
            assert "NoNewPrivs:\t1" in f.read()
        c = dd.client()
        cid = c.post("/v1/cells", {}).body["id"]
        r = c.post("/cells/%s/v1/processes/run" % cid, {"command": "id", "args": ["-u"]})
        assert r.status == 200 and r.body["exitCode"] == 0 and r.body["stdout"] == "0\n", r


# ---- man pages and completion ------------------------------------------------------------------

OPT_RE = re.compile(r"(?<![\w/$-])(--[a-z][a-z0-9-]*|-[a-zA-Z])(?![\w])")


def cell_help(*words):
    return subprocess.run([CELL_BIN, "help", *words], capture_output=True, text=True, check=True).stdout


def render(page):
    """The page as man shows it, one long line per paragraph (no hyphenation)."""
    r = subprocess.run(["groff", "-man", "-Tascii", "-P-c", "-rLL=400n", "-rHY=0", page],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return re.sub(r".\x08", "", r.stdout)


def test_each_man_page_names_every_option_of_its_help(dest):
    mandir = usr(dest, "share", "man", "man1")
    top = cell_help()
    commands = {w: [w] for w in re.findall(r"^  ([a-z]+)\b", top, re.M)}
    commands["agent run"] = ["agent", "run"]
    commands["agent runs"] = ["agent", "runs"]
    checked = 0
    for name, words in [("cell", [])] + sorted(commands.items()):
        text = cell_help(*words)
        if words and text == top:
            continue            # no help of its own: cell(1) has its lines
        page = os.path.join(mandir, "cell%s.1" % "".join("-" + w for w in words))
        with open(page) as f:
            src = f.read()
        if src.startswith(".so "):
            page = os.path.join(os.path.dirname(mandir), src.split()[1])
            assert cell_help(*words) == text
        shown = render(page)
        for opt in set(OPT_RE.findall(text)):
            assert re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(opt), shown), (page, opt)
        # Every line of the help, words and order, is on the page.
        flat = " ".join(shown.split()).lower()
        for line in text.splitlines():
            # (section headings are the page's, in capitals)
            if line.strip() and not line.startswith("usage:") and not re.match(r"^[a-z][^:]*:$", line):
                assert " ".join(line.split()[-3:]).lower() in flat, (page, line)
        checked += 1
    assert checked >= 15, checked


def complete_bash(script, *words):
    """COMPREPLY of _cell for `words` (the last one is the word at the cursor)."""
    prog = ('source "$1"; shift; COMP_WORDS=("$@"); COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); '
            '_cell cell "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; printf "%s\\n" "${COMPREPLY[@]}"')
    r = subprocess.run(["bash", "--norc", "-c", prog, "bash", script, "cell", *words],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not r.stderr, r
    return [w for w in r.stdout.split("\n") if w]


def help_options(text):
    """Options of a help text's items and usage lines (not its prose)."""
    out = set()
    for line in text.splitlines():
        if line.startswith(("usage:", "       cell")):
            out |= set(OPT_RE.findall(line))
        m = re.match(r"^  (-\S.*?)(\s{2,}|$)", line)
        if m:
            out |= set(OPT_RE.findall(m.group(1)))
    return out


def test_bash_completion_completes_commands_and_options(dest, tmp_path):
    script = usr(dest, "share", "bash-completion", "completions", "cell")
    top = cell_help()
    commands = set(re.findall(r"^  ([a-z]+)\b", top, re.M)) | {"stop", "rm"}
    assert set(complete_bash(script, "")) == commands
    assert complete_bash(script, "ru") == ["run"]
    assert complete_bash(script, "--state", "/x", "ser") == ["serve"]       # a global option's value skipped
    assert complete_bash(script, "--state", "=", "/x", "ser") == ["serve"]  # --state=/x, as bash splits it
    assert set(complete_bash(script, "--")) >= {"--state", "--json", "--url", "--version"}
    assert complete_bash(script, "serve", "--no-to") == [
        "--no-token", "--no-token-on-tcp-i-understand-anyone-local-is-admin"]
    assert set(complete_bash(script, "lane", "")) >= {"create", "ls", "rm", "export", "import"}
    assert complete_bash(script, "lane", "create", "x", "--im") == ["--image"]
    assert set(complete_bash(script, "token", "")) == {"create", "ls", "revoke"}
    assert "--tenant" in complete_bash(script, "token", "create", "--")
    assert set(complete_bash(script, "agent", "runs", "")) >= {"ls", "show", "events", "cancel", "apply"}
    assert "serve" in complete_bash(script, "help", "")
    # An option's value: a file where the help says FILE, nothing else.
    (tmp_path / "policy.json").write_text("{}")
    assert complete_bash(script, "run", "--policy", str(tmp_path / "pol")) == [str(tmp_path / "policy.json")]
    assert complete_bash(script, "run", "--policy", "=", str(tmp_path / "pol")) == [str(tmp_path / "policy.json")]
    assert complete_bash(script, "run", "--memory", "") == []
    # Every option of every command's help completes after that command.
    for cmd in sorted(commands):
        text = cell_help(cmd)
        if text == top:
            continue
        want = help_options(text) - {"--json", "--url"}
        got = set(complete_bash(script, cmd, "-"))
        for sub in complete_bash(script, cmd, ""):      # `secret set NAME [--value-file FILE]`
            if not os.path.exists(sub):
                got |= set(complete_bash(script, cmd, sub, "-"))
        assert want <= got, (cmd, want - got)


def complete_zsh(script, *words):
    """What the zsh function offers for `words`, compadd and _files stubbed."""
    if not shutil.which("zsh"):
        pytest.fail("zsh not found (scripts/install-deps.sh installs it)")
    prog = ('compadd() { [[ $1 == -- ]] && shift; print -l -- "$@"; }; _files() { print -- FILES; }; '
            'words=(cell "${@[2,-1]}"); CURRENT=${#words}; source "$1"')
    r = subprocess.run(["zsh", "-f", "-c", prog, "zsh", script, *words], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and not r.stderr, r
    return [w for w in r.stdout.split("\n") if w]


def test_zsh_completion_completes_commands_and_options(dest):
    """The zsh function with compadd and _files stubbed: what it offers."""
    script = usr(dest, "share", "zsh", "site-functions", "_cell")

    def complete(*words):
        return complete_zsh(script, *words)

    assert "run" in complete("") and "serve" in complete("")
    assert "--image" in complete("run", "--") and "--tty" in complete("run", "--")
    assert set(complete("lane", "")) >= {"create", "ls", "rm"}
    assert complete("run", "--policy", "") == ["FILES"]
    assert complete("run", "--", "ls", "") == ["FILES"]


# ---- uninstall (last: it removes the install the tests above use) ---------------------------


def test_every_command_has_a_man_page_and_completes(dest):
    """Each command of `cell help` has its own help, a man page made from it
    (or a .so to the page of the same text) and completes in bash and zsh."""
    mandir = usr(dest, "share", "man", "man1")
    bash = usr(dest, "share", "bash-completion", "completions", "cell")
    zsh = usr(dest, "share", "zsh", "site-functions", "_cell")
    commands = top_commands()
    assert {"run", "lane", "image", "serve", "create", "ls", "start", "stop", "rm", "exec", "cp", "token",
            "agent"} <= set(commands), commands
    offered_bash, offered_zsh = set(complete_bash(bash, "")), set(complete_zsh(zsh, ""))
    for cmd in commands:
        assert cmd in offered_bash and cmd in offered_zsh, cmd
        if cmd == "help":
            continue
        assert cell_help(cmd) != cell_help(), "`cell help %s` prints the general help, not its own" % cmd
        page = os.path.join(mandir, "cell-%s.1" % cmd)
        assert os.path.isfile(page), page
        with open(page) as f:
            src = f.read()
        if src.startswith(".so "):
            assert os.path.isfile(os.path.join(os.path.dirname(mandir), src.split()[1])), (page, src)
        else:
            assert '.TH "CELL-%s" "1"' % cmd.upper() in src, page


def test_uninstall_removes_what_install_wrote_but_the_state_and_an_edited_config(dest):
    state = os.path.join(str(dest), "var", "lib", "cell")
    with open(os.path.join(state, "cell.db"), "w") as f:
        f.write("a store")
    conf = os.path.join(str(dest), "etc", "cell", "cell.conf")
    edited = os.path.exists(conf)
    if edited:
        with open(conf, "a") as f:
            f.write("\n# edited by the operator\n")
    # A second install keeps the edited config and the state.
    out = make("install", dest)
    if edited:
        assert "kept" in out and open(conf).read().endswith("# edited by the operator\n")
    make("uninstall", dest)
    left = files_under(str(dest))
    assert left == {"var/lib/cell/cell.db"} | ({"etc/cell/cell.conf"} if edited else set()), left
    # An unedited config goes with the rest.
    if edited:
        os.unlink(conf)
        make("install", dest)
        make("uninstall", dest)
        assert files_under(str(dest)) == {"var/lib/cell/cell.db"}


def top_commands():
    """Every command word `cell help` lists: `start ID | stop ID | rm ID`
    and `token create|ls|revoke` included."""
    out = []
    for term in re.findall(r"^  ([a-z]\S*(?: \S+)*?)(?:\s{2,}|$)", cell_help(), re.M):
        for alt in term.split(" | "):
            word = alt.split()[0]
            if word not in out:
                out.append(word)
    return out
