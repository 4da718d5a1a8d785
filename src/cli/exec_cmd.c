/* exec_cmd.c: `cell exec` and `cell shell`, as `docker exec` is: a process
 * started in a cell through the per-cell API (POST processes), its output
 * followed live as server-sent events (stdout and stderr kept apart, or the
 * terminal's one stream), this command's stdin sent as input requests,
 * signals and window sizes passed on, and the process's end as our exit
 * code.  The process is created with "backpressure", so the daemon holds it
 * back rather than drop output we have not been sent; a gap in the log's
 * sequence numbers (output dropped all the same) is reported, never hidden. */
#include "cli/cells_cmds.h"
#include "cli/opts.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

const char cli_exec_usage[] =
    "usage: cell exec [OPTIONS] ID [OPTIONS] [--] CMD [ARGS...]\n"
    "\n"
    "Run CMD in cell ID, as `docker exec` does: its stdout and stderr are\n"
    "written here as they come, each to ours, and its exit code is ours.\n"
    "\n"
    "options:\n"
    "  -i, --interactive     send our stdin to CMD, then end its input (without\n"
    "                        -i, CMD's stdin is empty)\n"
    "  -t, --tty             run CMD on a terminal (its stdout and stderr become\n"
    "                        one stream); with -i and our stdin a terminal, ours\n"
    "                        is put in raw mode and its size is passed on\n"
    "  -u, --user USER[:GROUP]\n"
    "                        user and group in the cell: names (looked up in the\n"
    "                        cell's /etc/passwd and /etc/group) or numbers from 0\n"
    "                        to 65535 (default root; without GROUP: a name's\n"
    "                        group in /etc/passwd, a UID's same number)\n"
    "  -e, --env NAME=VALUE  set an environment variable (repeatable)\n"
    "  -w, --workdir DIR     working directory (default: the cell's)\n"
    "  --cwd DIR             the same as --workdir\n"
    "  --timeout SECONDS     kill CMD after this long (exit 124)\n"
    "\n"
    "No output is dropped: the daemon holds CMD back while we have not written\n"
    "what came before (if output is lost all the same, e.g. by the daemon's\n"
    "memory limit, we say so and exit 125).  SIGINT, SIGTERM and SIGHUP here\n"
    "kill CMD.\n"
    "\n"
    "exit codes: CMD's own; 128+N when CMD was killed by signal N or we got\n"
    "signal N (141: our stdout was closed, e.g. by `| head`; CMD is killed);\n"
    "124 --timeout; 126 CMD cannot be executed or the working\n"
    "directory does not exist; 127 CMD not found; 1 the daemon refused the\n"
    "request (e.g. no such cell); 2 usage; 125 the daemon is unreachable or\n"
    "failed, or output was lost.  With --json CMD runs to completion in the\n"
    "daemon (no -i, -t), which answers {exitCode, timedOut, stdout, stderr,\n"
    "...}: each stream at most its maxOutputBytes, a cut one flagged\n"
    "(stdoutTruncated) and warned about.\n" DAEMON_NOTE;

const char cli_shell_usage[] =
    "usage: cell shell ID [--] [CMD [ARGS...]]\n"
    "\n"
    "Start CMD (default /bin/bash, or /bin/sh when the image has no bash) on a\n"
    "terminal in cell ID and connect it to this one (cell exec -i -t): the local\n"
    "terminal is put in raw mode until CMD exits, and window size changes are\n"
    "forwarded.  When stdin is not a terminal it is forwarded as is until EOF,\n"
    "and then EOF characters (^D) are sent until CMD exits.  SIGINT/SIGTERM/\n"
    "SIGHUP here kill CMD.\n"
    "\n"
    "exit codes: CMD's own; 128+N when CMD was killed by signal N or this\n"
    "command got signal N; 126 CMD cannot be executed; 127 CMD not found;\n"
    "1 the daemon refused (e.g. no such cell); 2 usage;\n"
    "125 the daemon is unreachable or failed.\n" DAEMON_NOTE;

/* Input goes in pieces of at most PIPE_BUF: the daemon writes each to a
 * non-blocking pipe at once or not at all, so a piece it gave up on after
 * the process left it unread for 5 s (a 409) is sent again, whole. */
#define XS_PIECE          4096
#define XS_EOF_REPEAT_MS  500

/* One process being run. */
struct xsess {
    client        *c;
    const char    *id;
    json_t        *body;            /* the POST processes request */
    const char    *what;            /* "exec" or "shell", for messages */
    char           proc[64];
    int            tty;             /* the process runs on a terminal */
    int            interactive;     /* our stdin goes to it */
    int            local_tty;       /* our stdin is a terminal: raw mode and resizes */
    int            out_fd;          /* its stdout (or terminal) goes here */
    int64_t        deadline_ms;     /* --timeout, or 0 */
    int            timed_out;
    struct termios saved;
    int            raw;
    atomic_int     stop;            /* aborts the log stream */
    pthread_t      thread;
    int            follow_rc;
    char          *logs_path;
    /* written by the log thread, read after it is joined */
    uint64_t       next_seq, lost;
    int            write_errno;
    unsigned char  pend[XS_PIECE];  /* input the process has not taken yet */
    size_t         pend_len;
};

/* Signals and the end of the log stream wake the main loop through this pipe. */
static int wake_fd[2] = { -1, -1 };

static void on_signal(int sig)
{
    unsigned char b = (unsigned char)sig;
    int saved = errno;
    if (write(wake_fd[1], &b, 1) < 0) {
        /* The pipe is full: the loop is already awake. */
    }
    errno = saved;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---- output: the log thread ------------------------------------------------------------- */
static void xs_entry(void *user, json_t *entry)
{
    struct xsess *s = user;
    if (s->write_errno)
        return;
    json_int_t seq = json_integer_value(json_object_get(entry, "sequence"));
    if (seq > 0 && (uint64_t)seq > s->next_seq)
        s->lost += (uint64_t)seq - s->next_seq;     /* entries the daemon dropped */
    if (seq > 0 && (uint64_t)seq >= s->next_seq)
        s->next_seq = (uint64_t)seq + 1;
    const char *stream = json_string_value(json_object_get(entry, "stream"));
    int fd = stream && strcmp(stream, "stderr") == 0 ? 2 : s->out_fd;
    errno = 0;
    if (cli_client_write_entry(fd, entry) < 0) {
        /* Our stdout is gone (e.g. `| head`): stop, and end the process. */
        s->write_errno = errno ? errno : EIO;
        atomic_store(&s->stop, 1);
    }
}

static void *xs_follow_main(void *arg)
{
    struct xsess *s = arg;
    s->follow_rc = cli_client_follow(s->c, s->logs_path, xs_entry, s, &s->stop);
    unsigned char end = 0;
    if (write(wake_fd[1], &end, 1) < 0) {
        /* Cannot happen with an empty pipe; the loop would then wait for stdin or a signal. */
    }
    return NULL;
}

/* Start the log thread with every signal blocked: they reach the main loop,
 * and a write to a closed stdout fails with EPIPE instead of killing us. */
static int start_follow(struct xsess *s)
{
    sigset_t all, prev;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &prev);
    int rc = pthread_create(&s->thread, NULL, xs_follow_main, s);
    pthread_sigmask(SIG_SETMASK, &prev, NULL);
    return rc == 0 ? 0 : cli_fail(CLI_EXIT_INTERNAL, "cannot start a thread: %s", strerror(rc));
}

/* ---- the terminal ------------------------------------------------------------------------ */
static void raw_on(struct xsess *s)
{
    /* Only for a terminal on both ends: without -t, our terminal's own line
     * editing and ^D make the lines and the end CMD reads. */
    if (!s->local_tty || !s->interactive || !s->tty || tcgetattr(0, &s->saved) < 0)
        return;
    struct termios t = s->saved;
    cfmakeraw(&t);
    if (tcsetattr(0, TCSADRAIN, &t) == 0)
        s->raw = 1;
}

static void raw_off(struct xsess *s)
{
    if (s->raw)
        tcsetattr(0, TCSADRAIN, &s->saved);
    s->raw = 0;
}

/* ---- requests about the process -------------------------------------------------------- */
static char *proc_path(struct xsess *s, const char *suffix)
{
    char fmt[128];
    snprintf(fmt, sizeof fmt, "/cells/%%s/v1/processes/%%s%s", suffix);
    return cli_client_pathf(fmt, s->id, s->proc);
}

/* METHOD processes/{id}SUFFIX with an optional body (taken); the answer in
 * *reply when asked for, else dropped.  0 or an exit code. */
static int xs_call(struct xsess *s, const char *method, const char *suffix, json_t *body, long *status, json_t **reply)
{
    char *path = proc_path(s, suffix);
    json_t *r = NULL;
    int rc = path ? cli_client_json_status(s->c, method, path, body, status, &r)
                  : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    json_decref(body);
    if (reply)
        *reply = r;
    else
        json_decref(r);
    return rc;
}

static void xs_resize(struct xsess *s)
{
    struct winsize ws;
    long status;
    if (s->tty && s->local_tty && ioctl(0, TIOCGWINSZ, &ws) == 0 && ws.ws_col && ws.ws_row)
        xs_call(s, "POST", "/terminal/resize", json_pack("{s:i, s:i}", "cols", ws.ws_col, "rows", ws.ws_row),
                &status, NULL);
}

/* Send s->pend (and, with eof, the end of the input); 0 when taken or the
 * process has exited, 1 when the process has not read it for 5 s (send it
 * again), or an exit code. */
static int xs_send(struct xsess *s, int eof)
{
    char *b64 = cli_client_b64_encode(s->pend, s->pend_len);
    json_t *body = b64 ? json_pack("{s:s, s:s}", "data", b64, "encoding", "base64") : NULL;
    free(b64);
    if (body && eof)
        json_object_set_new(body, "eof", json_true());
    if (!body)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    long status = 0;
    json_t *reply = NULL;
    int rc = xs_call(s, "POST", "/input", body, &status, &reply);
    const char *detail = cli_str_or(reply, "detail", "");
    if (rc == 0 && status == 409 && strstr(detail, "has not read"))
        rc = 1;
    else if (rc == 0 && status >= 300 && status != 409)   /* 409: it has exited; its end is on the log */
        rc = cli_fail(CLI_EXIT_INTERNAL, "%s: the daemon refused input (HTTP %ld): %s", s->what, status, detail);
    json_decref(reply);
    if (rc == 0)
        s->pend_len = 0;
    return rc;
}

/* The end of our stdin: a pipe's end for a process without a terminal;
 * a terminal has none, so ^D now and then until the process exits. */
static int xs_send_eof(struct xsess *s)
{
    if (s->tty) {
        s->pend[0] = 0x04;
        s->pend_len = 1;
    }
    int rc = xs_send(s, !s->tty);
    return rc == 1 ? 0 : rc;
}

/* One read of stdin into s->pend; 1 at EOF, 0 to go on, or an exit code. */
static int xs_read_input(struct xsess *s)
{
    ssize_t n = read(0, s->pend, sizeof s->pend);
    if (n < 0 && (errno == EINTR || errno == EAGAIN))
        return 0;
    if (n <= 0)
        return 1;
    s->pend_len = (size_t)n;
    return 0;
}

/* ---- the main loop ------------------------------------------------------------------------ */
/* A wake byte: 0 when the output ended, -1 to go on, or 128+N for our signal N. */
static int xs_woken(struct xsess *s)
{
    unsigned char b;
    if (read(wake_fd[0], &b, 1) != 1)
        return -1;
    if (b == 0)
        return 0;
    if (b == SIGWINCH)
        xs_resize(s);
    else if (b == SIGINT || b == SIGTERM || b == SIGHUP)
        return 128 + b;
    return -1;
}

static int xs_poll_ms(struct xsess *s, int stdin_open)
{
    int ms = stdin_open || !s->interactive || !s->tty || s->local_tty ? -1 : XS_EOF_REPEAT_MS;
    if (s->pend_len)
        ms = 0;
    if (s->deadline_ms && !s->timed_out) {
        int64_t left = s->deadline_ms - now_ms();
        left = left < 0 ? 0 : left;
        if (ms < 0 || left < ms)
            ms = (int)left;
    }
    return ms;
}

/* --timeout passed: kill the process; its end comes on the log. */
static void xs_check_deadline(struct xsess *s)
{
    long status;
    if (s->deadline_ms && !s->timed_out && now_ms() >= s->deadline_ms) {
        s->timed_out = 1;
        xs_call(s, "POST", "/kill", NULL, &status, NULL);
    }
}

/* Wait for the end of the output while forwarding stdin and signals; 0
 * when it ended, 128+N for our signal N, or an exit code. */
static int xs_loop(struct xsess *s)
{
    int stdin_open = s->interactive;
    for (;;) {
        int want_stdin = stdin_open && !s->pend_len;
        struct pollfd fds[2] = { { .fd = wake_fd[0], .events = POLLIN }, { .fd = want_stdin ? 0 : -1, .events = POLLIN } };
        int ready = poll(fds, 2, xs_poll_ms(s, stdin_open));
        if (ready < 0 && errno != EINTR)
            return cli_fail(CLI_EXIT_INTERNAL, "poll: %s", strerror(errno));
        xs_check_deadline(s);
        if (fds[0].revents) {
            int w = xs_woken(s);
            if (w >= 0)
                return w;
        }
        int rc = 0;
        if (fds[1].revents && (rc = xs_read_input(s)) == 1) {
            stdin_open = 0;
            rc = xs_send_eof(s);
        } else if (s->pend_len) {
            rc = xs_send(s, 0);
            rc = rc == 1 ? 0 : rc;
        } else if (ready == 0 && !stdin_open && s->interactive && s->tty && !s->local_tty) {
            rc = xs_send_eof(s);          /* ^D again: the last one may have been lost */
        }
        if (rc)
            return rc;
    }
}

/* ---- starting and ending ------------------------------------------------------------------ */
int cli_remote_is(client *c, const char *id, const char *path, const char *type)
{
    char *url = cli_client_pathf("/cells/%s/v1/fs/stat?path=%s", id, path);
    long status = 0;
    json_t *st = NULL;
    int rc = url ? cli_client_json_status(c, "GET", url, NULL, &status, &st) : -1;
    free(url);
    int match = rc == 0 && status == 200 && strcmp(cli_str_or(st, "entryType", ""), type) == 0;
    json_decref(st);
    return match;
}

int cli_remote_is_dir(client *c, const char *id, const char *path)
{
    return cli_remote_is(c, id, path, "directory");
}

/* A command that could not start exits as docker's would: the daemon
 * reports the spawn's errno as a 502 "... (os error N)". */
static int spawn_error(struct xsess *s, long status, json_t *reply)
{
    const char *detail = json_string_value(json_object_get(reply, "detail"));
    const char *os = status == 502 && detail ? strstr(detail, "(os error ") : NULL;
    int err = os ? atoi(os + 10) : 0;
    const char *cmd = cli_str_or(s->body, "command", "?"), *cwd = cli_str_or(s->body, "cwd", NULL);
    if ((err == ENOENT || err == ENOTDIR || err == EACCES) && cwd && !cli_remote_is_dir(s->c, s->id, cwd))
        return cli_fail(CLI_EXIT_CANNOT, "%s: the working directory %s is not a directory in cell %s", s->what, cwd,
                        s->id);
    if (err == ENOENT || err == ENOTDIR)
        return cli_fail(CLI_EXIT_NOTFOUND, "%s: %s: command not found in cell %s (no such file, or not in its PATH)",
                        s->what, cmd, s->id);
    if (err == EACCES || err == ENOEXEC || err == EPERM)
        return cli_fail(CLI_EXIT_CANNOT, "%s: %s: cannot be executed in cell %s: %s", s->what, cmd, s->id,
                        strerror(err));
    return cli_client_reply_error(s->c, status, reply, NULL);
}

static int xs_start(struct xsess *s)
{
    json_object_set_new(s->body, "tty", json_boolean(s->tty));
    json_object_set_new(s->body, "interactive", json_boolean(s->interactive));
    json_object_set_new(s->body, "backpressure", json_true());
    char *path = cli_client_pathf("/cells/%s/v1/processes", s->id);
    json_t *p = NULL;
    long status = 0;
    int rc = path ? cli_client_json_status(s->c, "POST", path, s->body, &status, &p)
                  : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    if (rc == 0 && (status < 200 || status >= 300))
        rc = spawn_error(s, status, p);
    if (rc == 0)
        snprintf(s->proc, sizeof s->proc, "%s", cli_str_or(p, "id", ""));
    json_decref(p);
    if (rc)
        return rc;
    s->next_seq = 1;
    s->logs_path = cli_client_pathf("/cells/%s/v1/processes/%s/logs?follow=true&stream=%s", s->id, s->proc,
                                s->tty ? "pty" : "combined");
    return s->logs_path ? 0 : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
}

/* The exited process's exit code (128+N for signal N), after its log ended. */
static int xs_exit_code(struct xsess *s)
{
    json_t *p = NULL;
    long status = 0;
    int rc = xs_call(s, "GET", "", NULL, &status, &p);
    if (rc == 0 && status != 200)
        rc = cli_client_reply_error(s->c, status, p, NULL);
    else if (rc == 0 && strcmp(cli_str_or(p, "status", ""), "exited") != 0)
        rc = cli_fail(CLI_EXIT_INTERNAL, "%s: the daemon ended the output of %s before it exited", s->what, s->proc);
    else if (rc == 0 && json_is_integer(json_object_get(p, "exitCode")))
        rc = (int)json_integer_value(json_object_get(p, "exitCode"));
    else if (rc == 0)
        rc = 128 + (int)(json_is_integer(json_object_get(p, "signal")) ? json_integer_value(json_object_get(p, "signal"))
                                                                       : SIGKILL);
    json_decref(p);
    if (rc != CLI_EXIT_INTERNAL)
        xs_call(s, "DELETE", "", NULL, &status, NULL);     /* its log leaves the daemon's memory */
    return rc;
}

static void set_handlers(struct sigaction *old, int restore)
{
    static const int sigs[] = { SIGINT, SIGTERM, SIGHUP, SIGWINCH };
    struct sigaction sa = { .sa_handler = on_signal };
    sigemptyset(&sa.sa_mask);
    for (size_t i = 0; i < 4; i++)
        sigaction(sigs[i], restore ? &old[i] : &sa, restore ? NULL : &old[i]);
}

/* How the run ended, as our exit code: what went wrong first, else the
 * process's own. */
static int xs_result(struct xsess *s, int rc)
{
    if (rc == 0 && s->follow_rc)
        rc = s->follow_rc;
    if (rc == 0 && s->write_errno)
        rc = s->write_errno == EPIPE ? 128 + SIGPIPE
                                     : cli_fail(CLI_EXIT_INTERNAL, "%s: writing the output: %s", s->what,
                                                strerror(s->write_errno));
    if (rc == 0)
        rc = xs_exit_code(s);
    if (s->lost)
        rc = cli_fail(CLI_EXIT_INTERNAL, "%s: %llu pieces of %s's output were lost in the daemon (its log.memory "
                      "limit): what was written here is incomplete", s->what, (unsigned long long)s->lost, s->proc);
    else if (s->timed_out && rc != CLI_EXIT_INTERNAL)
        rc = cli_fail(CLI_EXIT_TIMEOUT, "%s: %s timed out and was killed", s->what,
                      cli_str_or(s->body, "command", "the command"));
    return rc;
}

static int xs_run(struct xsess *s)
{
    int rc = xs_start(s);
    if (rc)
        return rc;
    struct sigaction old[4];
    set_handlers(old, 0);
    if ((rc = start_follow(s)) != 0) {
        set_handlers(old, 1);
        long status;
        xs_call(s, "POST", "/kill", NULL, &status, NULL);
        return rc;
    }
    if (!s->interactive && !s->tty)
        rc = xs_send(s, 1);                 /* no stdin: the process reads its end at once */
    raw_on(s);
    xs_resize(s);
    if (rc == 0)
        rc = xs_loop(s);
    if (rc != 0) {
        /* Our own end (a signal or a failure) ends the process too. */
        long status;
        xs_call(s, "POST", "/kill", NULL, &status, NULL);
        atomic_store(&s->stop, 1);
    } else if (s->write_errno) {
        long status;
        xs_call(s, "POST", "/kill", NULL, &status, NULL);
    }
    pthread_join(s->thread, NULL);
    raw_off(s);
    set_handlers(old, 1);
    return xs_result(s, rc);
}

static int xs_main(struct xsess *s)
{
    if (pipe2(wake_fd, O_CLOEXEC | O_NONBLOCK) < 0)
        return cli_fail(CLI_EXIT_INTERNAL, "pipe: %s", strerror(errno));
    fflush(stdout);
    int rc = xs_run(s);
    free(s->logs_path);
    s->logs_path = NULL;
    close(wake_fd[0]);
    close(wake_fd[1]);
    wake_fd[0] = wake_fd[1] = -1;
    return rc;
}

int cli_exec_to_fd(client *c, const char *id, const char *const *argv, int out_fd)
{
    json_t *body = json_pack("{s:s, s:[]}", "command", argv[0], "args");
    for (size_t i = 1; body && argv[i]; i++)
        json_array_append_new(json_object_get(body, "args"), json_string(argv[i]));
    if (!body)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    struct xsess s = { .c = c, .id = id, .body = body, .what = "cp", .out_fd = out_fd };
    int rc = xs_main(&s);
    json_decref(body);
    return rc;
}

/* ---- user names ------------------------------------------------------------------------- */
struct grab {
    char  *buf;
    size_t len;
};

static int grab_data(void *user, const char *p, size_t n)
{
    struct grab *g = user;
    if (g->len + n > (4u << 20))
        return -1;                          /* no passwd file is that big: the cell's is hostile */
    char *nb = realloc(g->buf, g->len + n + 1);
    if (!nb)
        return -1;
    memcpy(nb + g->len, p, n);
    g->buf = nb;
    g->len += n;
    g->buf[g->len] = '\0';
    return 0;
}

/* The third and fourth fields of NAME's line in the cell's FILE
 * (passwd: uid and gid; group: gid).  0, or an exit code (printed). */
static int lookup_name(client *c, const char *id, const char *file, const char *name, long *f3, long *f4)
{
    char *path = cli_client_pathf("/cells/%s/v1/fs/file?path=%s", id, file);
    struct grab g = { 0 };
    int rc = path ? cli_client_get_stream(c, path, grab_data, &g, NULL, file) : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    if (rc < 0)
        rc = cli_fail(CLI_EXIT_REFUSED, "exec: the cell's %s is over 4 MiB", file);
    size_t nl = strlen(name);
    int found = 0;
    for (char *line = g.buf, *next; rc == 0 && line && !found; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *f[5] = { line };
        int n = 1;
        for (char *q = line; n < 5 && (q = strchr(q, ':')); q++)
            *q = '\0', f[n++] = q + 1;
        if (n >= 4 && strlen(f[0]) == nl && strcmp(f[0], name) == 0) {
            *f3 = strtol(f[2], NULL, 10);
            *f4 = n >= 5 ? strtol(f[3], NULL, 10) : -1;
            found = 1;
        }
    }
    free(g.buf);
    if (rc == 0 && !found)
        rc = cli_fail(CLI_EXIT_REFUSED, "exec: no %s '%s' in cell %s's %s", strstr(file, "group") ? "group" : "user",
                      name, id, file);
    return rc;
}

static int all_digits(const char *s, size_t n)
{
    return n > 0 && strspn(s, "0123456789") >= n;
}

/* --user USER[:GROUP] as the API's "UID:GID": names are the cell's. */
static int resolve_user(client *c, const char *id, const char *spec, char *out, size_t size)
{
    const char *colon = strchr(spec, ':');
    size_t ul = colon ? (size_t)(colon - spec) : strlen(spec);
    char user[256], group[256];
    if (ul == 0 || ul >= sizeof user || (colon && (!colon[1] || strlen(colon + 1) >= sizeof group)))
        return cli_fail(CLI_EXIT_USAGE, "exec: --user '%s': expected USER[:GROUP], e.g. 1000 or nobody:nogroup", spec);
    snprintf(user, sizeof user, "%.*s", (int)ul, spec);
    snprintf(group, sizeof group, "%s", colon ? colon + 1 : "");
    long uid = -1, gid = -1, unused;
    int rc = 0;
    if (all_digits(user, ul))
        uid = strtol(user, NULL, 10);
    else
        rc = lookup_name(c, id, "/etc/passwd", user, &uid, &gid);
    if (rc == 0 && *group)
        rc = all_digits(group, strlen(group)) ? (gid = strtol(group, NULL, 10), 0)
                                              : lookup_name(c, id, "/etc/group", group, &gid, &unused);
    if (rc)
        return rc;
    if (gid < 0)
        gid = uid;
    snprintf(out, size, "%ld:%ld", uid, gid);
    return 0;
}

/* ---- cell exec ------------------------------------------------------------------------- */
struct exec_args {
    const char *id, *user;
    json_t     *body;       /* the request: command, args, env, cwd */
    double      timeout;
    int         tty, interactive;
};

const struct option cli_exec_options[] = {
    { "interactive", no_argument, NULL, 'i' },     { "tty", no_argument, NULL, 't' },
    { "user", required_argument, NULL, 'u' },      { "env", required_argument, NULL, 'e' },
    { "cwd", required_argument, NULL, 'w' },       { "workdir", required_argument, NULL, 'w' },
    { "timeout", required_argument, NULL, 'T' },   { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

/* Options up to the first operand (getopt_long in "+" mode, so that CMD's
 * own options stay CMD's); 0, -1 after --help, or an exit code. */
static int exec_getopt(int argc, char **argv, struct exec_args *x)
{
    opterr = 0;
    optind = 0;                 /* glibc and musl: start afresh on this argv */
    int o;
    while ((o = getopt_long(argc, argv, "+:itu:e:w:h", cli_exec_options, NULL)) != -1) {
        switch (o) {
        case 'i': x->interactive = 1; break;
        case 't': x->tty = 1; break;
        case 'u': x->user = optarg; break;
        case 'w': json_object_set_new(x->body, "cwd", json_string(optarg)); break;
        case 'e':
            if (cli_add_env(json_object_get(x->body, "env"), optarg))
                return CLI_EXIT_USAGE;
            break;
        case 'T':
            if (cli_parse_seconds("--timeout", optarg, &x->timeout))
                return CLI_EXIT_USAGE;
            break;
        case 'h': return fputs(cli_exec_usage, stdout), -1;
        default: return cli_getopt_fail("exec", o, argc, argv);
        }
    }
    return 0;
}

/* [OPTIONS] ID [OPTIONS] [--] CMD [ARGS...] */
static int parse_exec(int argc, char **argv, struct exec_args *x)
{
    int rc = exec_getopt(argc, argv, x);
    if (rc)
        return rc;
    if (optind >= argc)
        return cli_fail(CLI_EXIT_USAGE, "exec: missing cell ID (usage: cell exec [OPTIONS] ID [--] CMD [ARGS...])");
    x->id = argv[optind];
    /* Options after the ID too (`cell exec ID --env A=1 -- CMD`): argv from the ID on. */
    argv += optind;
    argc -= optind;
    if ((rc = exec_getopt(argc, argv, x)) != 0)
        return rc;
    if (optind >= argc)
        return cli_fail(CLI_EXIT_USAGE, "exec: missing CMD (usage: cell exec [OPTIONS] ID [--] CMD [ARGS...])");
    json_object_set_new(x->body, "command", json_string(argv[optind]));
    json_t *args = json_array();
    for (int i = optind + 1; i < argc; i++)
        json_array_append_new(args, json_string(argv[i]));
    json_object_set_new(x->body, "args", args);
    if (json_object_size(json_object_get(x->body, "env")) == 0)
        json_object_del(x->body, "env");
    return 0;
}

/* --json: processes/run, the daemon's buffered answer printed as is. */
static int exec_json(client *c, struct exec_args *x)
{
    if (x->timeout > 0)
        json_object_set_new(x->body, "timeoutMs", json_integer((json_int_t)(x->timeout * 1000 + 0.999)));
    char *path = cli_client_pathf("/cells/%s/v1/processes/run", x->id);
    json_t *res = NULL;
    long status = 0;
    int rc = path ? cli_client_json_status(c, "POST", path, x->body, &status, &res)
                  : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    if (rc == 0 && (status < 200 || status >= 300)) {
        struct xsess s = { .c = c, .id = x->id, .body = x->body, .what = "exec" };
        rc = spawn_error(&s, status, res);
    } else if (rc == 0) {
        json_t *code = json_object_get(res, "exitCode");
        rc = json_is_true(json_object_get(res, "timedOut")) ? CLI_EXIT_TIMEOUT
           : json_is_integer(code)                          ? (int)json_integer_value(code)
                                                            : 128 + SIGKILL;
        if (json_is_true(json_object_get(res, "stdoutTruncated")) || json_is_true(json_object_get(res, "stderrTruncated")))
            cli_fail(0, "exec: --json: the output was cut at the daemon's maxOutputBytes (stdoutTruncated, "
                        "stderrTruncated); without --json it streams whole");
        cli_print_json(json_incref(res));
    }
    json_decref(res);
    return rc;
}

static int do_exec(client *c, struct cli_global *g, void *arg)
{
    struct exec_args *x = arg;
    char user[64];
    int rc = x->user ? resolve_user(c, x->id, x->user, user, sizeof user) : 0;
    if (rc)
        return rc;
    if (x->user)
        json_object_set_new(x->body, "user", json_string(user));
    if (g->json)
        return exec_json(c, x);
    if (x->tty && x->interactive && isatty(0)) {
        const char *term = getenv("TERM");
        json_t *env = json_object_get(x->body, "env");
        if (term && *term && !json_object_get(env, "TERM")) {
            if (!env)
                json_object_set_new(x->body, "env", env = json_object());
            json_object_set_new(env, "TERM", json_string(term));
        }
    }
    struct xsess s = { .c = c, .id = x->id, .body = x->body, .what = "exec", .tty = x->tty,
                       .interactive = x->interactive, .local_tty = isatty(0), .out_fd = 1,
                       .deadline_ms = x->timeout > 0 ? now_ms() + (int64_t)(x->timeout * 1000 + 0.999) : 0 };
    return xs_main(&s);
}

int cli_exec(struct cli_global *g, int argc, char **argv)
{
    struct exec_args x = { .body = json_pack("{s:{}}", "env") };
    if (!x.body)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    int rc = parse_exec(argc, argv, &x);
    if (rc == 0 && g->json && (x.tty || x.interactive))
        rc = cli_fail(CLI_EXIT_USAGE, "exec: --json runs CMD to completion in the daemon: no -i or -t");
    if (rc == 0)
        rc = cli_with_client(g, do_exec, &x);
    json_decref(x.body);
    return rc < 0 ? 0 : rc;
}

/* ---- cell shell --------------------------------------------------------------------------- */
/* /bin/bash if the image has it, else /bin/sh. */
static const char *default_shell(client *c, const char *id)
{
    return cli_remote_is(c, id, "/bin/bash", "file") ? "/bin/bash" : "/bin/sh";
}

static int do_shell(client *c, struct cli_global *g, void *arg)
{
    (void)g;
    char **argv = arg;
    json_t *body = json_pack("{s:s, s:[]}", "command", argv[1] ? argv[1] : default_shell(c, argv[0]), "args");
    for (int i = 2; body && argv[1] && argv[i]; i++)
        json_array_append_new(json_object_get(body, "args"), json_string(argv[i]));
    const char *term = getenv("TERM");
    if (body && isatty(0) && term && *term)
        json_object_set_new(body, "env", json_pack("{s:s}", "TERM", term));
    if (!body)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    struct xsess s = { .c = c, .id = argv[0], .body = body, .what = "shell", .tty = 1, .interactive = 1,
                       .local_tty = isatty(0), .out_fd = 1 };
    int rc = xs_main(&s);
    json_decref(body);
    return rc;
}

int cli_shell(struct cli_global *g, int argc, char **argv)
{
    static const struct option opts[] = { { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
    opterr = 0;
    optind = 0;
    int o = getopt_long(argc, argv, "+h", opts, NULL);
    if (o == 'h') {
        fputs(cli_shell_usage, stdout);
        return 0;
    }
    if (o != -1)
        return cli_bad_option("shell", optopt ? (char[3]){ '-', (char)optopt, 0 } : argv[optind - 1]);
    if (optind >= argc)
        return cli_fail(CLI_EXIT_USAGE, "shell: missing cell ID (see cell shell --help)");
    if (g->json)    /* as exec refuses --json with -t */
        return cli_fail(CLI_EXIT_USAGE, "shell: --json: a terminal session has no JSON form; `cell exec --json ID "
                        "CMD` runs CMD to completion and prints its output as JSON");
    int i = optind;
    /* argv[i] is the ID; an optional "--" before CMD. */
    if (i + 1 < argc && strcmp(argv[i + 1], "--") == 0) {
        argv[i + 1] = argv[i];
        i++;
    }
    return cli_with_client(g, do_shell, argv + i);
}
