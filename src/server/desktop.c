/* desktop.c: a cell's virtual desktop, as sandbox-agent 0.4.2 serves it at
 * /v1/desktop/...: status, start/stop, screenshots, mouse and keyboard input,
 * windows, clipboard, app launch and recordings.
 *
 * Why it looks like this: everything graphical runs INSIDE the cell, as the
 * cell's own (hidden) processes spawned through procs.c: Xvfb, openbox, and
 * one short-lived tool per request (xdotool, ImageMagick's convert, xprop,
 * xclip, ffmpeg).  They count against the cell's memory, pids and CPU, see
 * only the cell's files, and die with it.  The X server listens only on its
 * socket file in the cell's private /tmp (-nolisten tcp -nolisten local: no
 * TCP, no abstract socket, which would be reachable from every process of
 * the cell's network namespace anyway and from nothing outside it).  The
 * daemon never connects to X itself: it only reads the tools' pipes, so a
 * hostile cell can at worst lie in its own screenshots.
 *
 * One lock per desktop serializes its operations (input must not
 * interleave, and start/stop must not race each other).  Request input is
 * passed to the tools as separate argv entries, never through a shell. */
#include "server/desktop.h"
#include "server/handlers.h"
#include "server/slog.h"

#include <fcntl.h>
#include <math.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#define DK_DIR            "/tmp/.cell-desktop"
#define DK_DEFAULT_WIDTH  1440           /* the reference's defaults */
#define DK_DEFAULT_HEIGHT 900
#define DK_DEFAULT_DPI    96
#define DK_DEFAULT_DISPLAY 99
#define DK_MAX_WIDTH      7680           /* 8K: a bigger framebuffer is a memory bomb, not a desktop */
#define DK_MAX_HEIGHT     4320
#define DK_MAX_DPI        1200
#define DK_MAX_DISPLAY    9999
#define DK_START_MS       15000          /* Xvfb and the window manager each, to be ready */
#define DK_INPUT_MS       5000           /* one input or query tool */
#define DK_SHOT_MS        10000          /* one screenshot */
#define DK_STOP_MS        2000           /* SIGTERM to SIGKILL */
/* A screenshot's stdout: its pixels (region or screen, times scale, at
 * most 8K's) at 4 bytes each, plus room for the format's headers.  A PNG
 * of noise from an 8-bit screen is 2.9 bytes a pixel, a JPEG or WebP at
 * quality 100 2.8-2.9 (measured with ImageMagick 6 on 640x480 noise). */
#define DK_SHOT_BPP       4u
#define DK_SHOT_HEADERS   (1u << 20)
#define DK_QUERY_MAX      (1u << 20)     /* a tool's stdout otherwise */
#define DK_TEXT_MAX       65536          /* keyboard/type and clipboard text */
#define DK_TYPE_MAX_MS    120000         /* text length x delay */
#define DK_CLICKS_MAX     100            /* clickCount, scroll steps */
#define DK_RECORDINGS_MAX 32
#define DK_REC_BLOCK      (64u * 1024)   /* a download's buffer in the daemon, all it holds of the file */
#define DK_APPS_MAX       64
/* POST open's defaults (dk_open): a browser entry xdg-open finds through
 * XDG_CONFIG_DIRS and XDG_DATA_DIRS set for it alone. */
#define DK_XDG_DIR        DK_DIR "/xdg"
#define DK_TARGET_MAX     8192           /* POST open: a long URL, not a document */
#define DK_READY_WORD     "cell-desktop-ready"

/* The window manager's start ($1 the display).  Where the image has no
 * fontconfig configuration (the host image: no /etc/fonts), fontconfig's
 * built-in one scans all of /usr/share/fonts to build its cache at the
 * first start in a cell, about 2 s at load 5 for openbox's titles alone:
 * it gets one font directory, DejaVu where there is one, and its cache in
 * DK_DIR, built here while Xvfb starts.  Then it waits for the daemon's
 * word on stdin that X accepts clients. */
#define DK_WM_SCRIPT \
    "if [ -z \"$FONTCONFIG_FILE\" ] && [ ! -e /etc/fonts/fonts.conf ]; then\n" \
    "  f=/usr/share/fonts/truetype/dejavu; [ -d $f ] || f=/usr/share/fonts\n" \
    "  printf '<?xml version=\"1.0\"?>\\n<fontconfig><dir>%s</dir><cachedir>%s</cachedir>' \"$f\" " \
    "\"" DK_DIR "/fontconfig\" >" DK_DIR "/fonts.conf &&\n" \
    "  printf '<alias><family>sans</family><prefer><family>DejaVu Sans</family></prefer></alias></fontconfig>\\n' " \
    ">>" DK_DIR "/fonts.conf && export FONTCONFIG_FILE=" DK_DIR "/fonts.conf &&\n" \
    "  { ! command -v fc-cache >/dev/null 2>&1 || fc-cache >/dev/null 2>&1; }\n" \
    "fi\n" \
    "read -r go || exit 1\n" \
    "export DISPLAY=$1; exec openbox --sm-disable --startup 'echo " DK_READY_WORD "'"

/* What the desktop needs in the cell's image, and the Debian package of each. */
static const struct dk_dep { const char *bin, *pkg; } dk_required[] = {
    { "Xvfb", "xvfb" }, { "openbox", "openbox" }, { "xdotool", "xdotool" },
    { "convert", "imagemagick" }, { "xprop", "x11-utils" }, { "xwininfo", "x11-utils" },
};
#define DK_N_REQUIRED (sizeof dk_required / sizeof dk_required[0])

typedef enum { DK_INACTIVE, DK_STARTING, DK_ACTIVE, DK_STOPPING, DK_FAILED } dk_state;
static const char *const dk_state_name[] = { "inactive", "starting", "active", "stopping", "failed" };

/* A long-running process of the desktop: its stdout stays ours (Xvfb's
 * -displayfd, openbox's startup word, ffmpeg's stdin), stderr goes to a
 * log file in the cell. */
typedef struct dk_child {
    const char *name;
    sproc      *p;
    int         fds[3];
    char        log[96];
    int         listed;                 /* a launched app: stays in /processes (srv_procs_put) */
} dk_child;

typedef struct dk_app {
    dk_child        c;
    char            id[32];
    struct dk_app  *next;
} dk_app;

typedef struct dk_rec {
    dk_child        c;
    char            id[32];
    char            path[96];
    int64_t         started_ms, ended_ms;
    int64_t         bytes;
    int             status;             /* 0 recording, 1 completed, 2 failed */
    struct dk_rec  *next;
} dk_rec;

struct desktop {
    pthread_mutex_t lock;
    dk_state state;
    int      display, width, height, dpi;
    int64_t  started_ms;                /* wall clock, for startedAt */
    int64_t  boot_ms;                   /* the cell's boot it runs in: a restarted cell lost it */
    dk_child xvfb, wm;
    json_t  *last_error;                /* {code, message} */
    dk_app  *apps;
    dk_rec  *recs;
    unsigned next_rec;
    int      streaming;                 /* POST stream/start's flag (reset by stop): see dk_stream */
};

/* ---- problems, as the reference words them ----------------------------------
 * application/problem+json with the reference's type, title, `code` and its
 * extensions (missingDependencies, installCommand, processes) at the top. */
typedef struct dk_problem {
    unsigned    status;
    const char *code, *title;
    char        msg[768];
    json_t     *ext;                    /* owned: extra members */
} dk_problem;

static void dk_set(dk_problem *pb, unsigned status, const char *code, const char *title, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));
static void dk_set(dk_problem *pb, unsigned status, const char *code, const char *title, const char *fmt, ...)
{
    pb->status = status;
    pb->code = code;
    pb->title = title;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pb->msg, sizeof pb->msg, fmt, ap);
    va_end(ap);
}

#define DK_INVALID(pb, ...)   dk_set(pb, 400, "desktop_invalid_action", "Desktop Invalid Action", __VA_ARGS__)
#define DK_INACTIVE_P(pb, ...) dk_set(pb, 409, "desktop_runtime_inactive", "Desktop Runtime Inactive", __VA_ARGS__)
#define DK_FAILED_P(pb, ...)  dk_set(pb, 503, "desktop_runtime_failed", "Desktop Runtime Failed", __VA_ARGS__)
#define DK_INPUT_P(pb, ...)   dk_set(pb, 502, "desktop_input_failed", "Desktop Input Failed", __VA_ARGS__)
#define DK_SHOT_P(pb, ...)    dk_set(pb, 502, "desktop_screenshot_failed", "Desktop Screenshot Failed", __VA_ARGS__)

/* jansson refuses invalid UTF-8: a tool's stderr may hold any bytes. */
static void dk_ascii(char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s >= 0x80 || (unsigned char)*s < 0x20)
            *s = (*s == '\n' || *s == '\t') ? ' ' : '?';
}

static int dk_reply_problem(sreq *r, dk_problem *pb)
{
    dk_ascii(pb->msg);
    json_t *body = json_pack("{s:s+, s:s, s:i, s:s, s:s}", "type", "urn:sandbox-agent:error:", pb->code, "title",
                             pb->title, "status", (int)pb->status, "detail", pb->msg, "code", pb->code);
    if (!body) {
        json_decref(pb->ext);
        return MHD_NO;
    }
    if (pb->ext)
        json_object_update(body, pb->ext);
    json_decref(pb->ext);
    pb->ext = NULL;
    return srv_reply_problem_body(r, pb->status, body, pb->msg);
}

/* ---- running tools in the cell ---------------------------------------------- */
typedef struct dk_out {
    char   *out;                        /* stdout, NUL-terminated, at most cap bytes */
    size_t  len, room;                  /* room: allocated bytes of out */
    char    err[1024];                  /* the start of stderr */
    size_t  err_len;
    int     status, exited, timed_out, truncated;
} dk_out;

static void dk_out_free(dk_out *o)
{
    free(o->out);
    o->out = NULL;
}

static int dk_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* Read what fd has now into o (stdout) or o->err; 0 at EOF, 1 more may come. */
static int dk_drain(int fd, dk_out *o, int is_err, size_t cap)
{
    for (;;) {
        char buf[16384];
        ssize_t n = read(fd, buf, sizeof buf);
        if (n == 0)
            return 0;
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 1 : 0;
        if (is_err) {
            size_t take = sizeof o->err - 1 - o->err_len;
            take = take < (size_t)n ? take : (size_t)n;
            memcpy(o->err + o->err_len, buf, take);
            o->err_len += take;
            o->err[o->err_len] = '\0';
            continue;
        }
        size_t take = cap - o->len < (size_t)n ? cap - o->len : (size_t)n;
        if (take < (size_t)n)
            o->truncated = 1;
        if (take && o->len + take + 1 > o->room) {
            /* Doubling, not one read at a time: a screenshot of tens of
             * MiB would otherwise be copied over and over (quadratic where
             * realloc cannot grow in place, as under ASan). */
            size_t room = o->room < sizeof buf ? sizeof buf : o->room;
            while (room < o->len + take + 1)
                room *= 2;
            if (room > cap + 1)
                room = cap + 1;
            char *grown = realloc(o->out, room);
            if (!grown)
                return errno = ENOMEM, -1;
            o->out = grown;
            o->room = room;
        }
        if (take) {
            memcpy(o->out + o->len, buf, take);
            o->len += take;
            o->out[o->len] = '\0';
        }
    }
}

/* Run argv in the cell (cwd /), feed it `in`, collect stdout (at most cap
 * bytes) and the start of stderr until it exits or timeout_ms passes (then
 * it is killed).  A tool that daemonizes (xclip keeps the selection) keeps
 * the pipes open after its parent exits: the exit ends the wait too. */
static int dk_exec(scell *sc, const char *const *argv, const void *in, size_t in_len, size_t cap, int64_t timeout_ms,
                   dk_out *o, cell_error *err)
{
    memset(o, 0, sizeof *o);
    if (!(o->out = calloc(1, 1)))
        return util_fail(err, ENOMEM, "out of memory");
    o->room = 1;
    int fds[3];
    sproc *p = srv_procs_spawn_piped_at(sc, argv, "/", fds, err);
    if (!p) {
        dk_out_free(o);
        return -1;
    }
    if (!in_len) {
        close(fds[0]);
        fds[0] = -1;
    }
    int rc = 0;
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0 && dk_nonblock(fds[i]) < 0)
            rc = util_fail_errno(err, "fcntl");
    size_t written = 0;
    int64_t deadline = srv_now_ms() + timeout_ms;
    while (rc == 0 && (fds[1] >= 0 || fds[2] >= 0)) {
        int64_t left = deadline - srv_now_ms();
        if (left <= 0) {
            o->timed_out = 1;
            break;
        }
        struct pollfd pf[3];
        for (int i = 0; i < 3; i++)
            pf[i] = (struct pollfd){ .fd = fds[i], .events = i == 0 ? POLLOUT : POLLIN };
        int n = poll(pf, 3, left < 100 ? (int)left : 100);
        if (n < 0 && errno != EINTR) {
            rc = util_fail_errno(err, "poll");
            break;
        }
        if (n == 0) {
            int st;
            if (srv_procs_wait_exit(p, 0, &st)) {           /* exited, pipes held by a child of it */
                for (int i = 1; i < 3; i++)
                    if (fds[i] >= 0)
                        dk_drain(fds[i], o, i == 2, cap);
                break;
            }
            continue;
        }
        if (fds[0] >= 0 && pf[0].revents) {
            /* POLLERR or POLLHUP without POLLOUT: the tool closed its stdin. */
            ssize_t w = pf[0].revents & POLLOUT ? write(fds[0], (const char *)in + written, in_len - written)
                                                : (errno = EPIPE, -1);
            if (w > 0)
                written += (size_t)w;
            if (w < 0 && errno == EAGAIN)
                continue;
            if (w < 0 || written == in_len) {           /* done, or the tool stopped reading */
                close(fds[0]);
                fds[0] = -1;
            }
        }
        for (int i = 1; i < 3; i++)
            if (fds[i] >= 0 && pf[i].revents) {
                int more = dk_drain(fds[i], o, i == 2, cap);
                if (more < 0) {
                    rc = util_fail(err, ENOMEM, "out of memory");
                    break;
                }
                if (!more) {
                    close(fds[i]);
                    fds[i] = -1;
                }
            }
    }
    for (int i = 0; i < 3; i++)
        if (fds[i] >= 0)
            close(fds[i]);
    if (o->timed_out || rc < 0 || !srv_procs_wait_exit(p, deadline, &o->status)) {
        o->timed_out = rc == 0;
        srv_procs_signal(p, SIGKILL);
        srv_procs_wait_exit(p, srv_now_ms() + DK_STOP_MS, &o->status);
    } else {
        o->exited = 1;
    }
    srv_procs_release(p);
    if (rc < 0)
        dk_out_free(o);
    return rc;
}

static int dk_ok(const dk_out *o)
{
    return o->exited && WIFEXITED(o->status) && WEXITSTATUS(o->status) == 0;
}

/* Why a tool failed, in words: its stderr's first line or its status. */
static void dk_why(const dk_out *o, char *out, size_t size)
{
    if (o->timed_out)
        snprintf(out, size, "timed out");
    else if (o->err_len)
        snprintf(out, size, "%.*s", (int)strcspn(o->err, "\n"), o->err);
    else if (WIFSIGNALED(o->status))
        snprintf(out, size, "killed by signal %d", WTERMSIG(o->status));
    else
        snprintf(out, size, "exit status %d", WEXITSTATUS(o->status));
}

/* ---- the per-cell record ---------------------------------------------------- */
static struct desktop *dk_get(scell *sc)
{
    pthread_mutex_lock(&sc->plock);
    struct desktop *d = sc->desktop;
    if (!d && (d = calloc(1, sizeof *d))) {
        pthread_mutex_init(&d->lock, NULL);
        d->display = DK_DEFAULT_DISPLAY;
        sc->desktop = d;
    }
    pthread_mutex_unlock(&sc->plock);
    return d;
}

static void dk_child_clear(dk_child *c)
{
    for (int i = 0; i < 3; i++)
        if (c->p && c->fds[i] >= 0)
            close(c->fds[i]);
    if (c->p && c->listed)
        srv_procs_put(c->p);
    else if (c->p)
        srv_procs_release(c->p);
    c->p = NULL;
}

/* SIGTERM its process group, then SIGKILL; forget it. */
static void dk_child_stop(dk_child *c)
{
    if (!c->p)
        return;
    int st;
    if (!srv_procs_wait_exit(c->p, 0, &st)) {
        srv_procs_signal(c->p, SIGTERM);
        if (!srv_procs_wait_exit(c->p, srv_now_ms() + DK_STOP_MS, &st)) {
            srv_procs_signal(c->p, SIGKILL);
            srv_procs_wait_exit(c->p, srv_now_ms() + DK_STOP_MS, &st);
        }
    }
    dk_child_clear(c);
}

static int dk_child_running(dk_child *c, int *status)
{
    int st = 0;
    if (!c->p)
        return 0;
    int exited = srv_procs_wait_exit(c->p, 0, &st);
    if (status)
        *status = st;
    return !exited;
}

void srv_desktop_free(scell *sc)
{
    struct desktop *d = sc->desktop;
    if (!d)
        return;
    sc->desktop = NULL;
    dk_child_clear(&d->xvfb);
    dk_child_clear(&d->wm);
    while (d->apps) {
        dk_app *a = d->apps;
        d->apps = a->next;
        dk_child_clear(&a->c);
        free(a);
    }
    while (d->recs) {
        dk_rec *x = d->recs;
        d->recs = x->next;
        dk_child_clear(&x->c);
        free(x);
    }
    json_decref(d->last_error);
    pthread_mutex_destroy(&d->lock);
    free(d);
}

/* Every desktop process down (apps, recordings, the window manager, then
 * the X server: X clients the apps started exit with their server). */
static void dk_stop_all(struct desktop *d)
{
    for (dk_app *a = d->apps; a; a = a->next)
        dk_child_stop(&a->c);
    while (d->apps) {
        dk_app *a = d->apps;
        d->apps = a->next;
        free(a);
    }
    for (dk_rec *x = d->recs; x; x = x->next)
        if (x->c.p) {
            dk_child_stop(&x->c);
            x->status = 2;
            x->ended_ms = srv_now_ms();
        }
    dk_child_stop(&d->wm);
    dk_child_stop(&d->xvfb);
    d->streaming = 0;
}

static void dk_fail(struct desktop *d, const dk_problem *pb)
{
    json_decref(d->last_error);
    char msg[sizeof pb->msg];
    snprintf(msg, sizeof msg, "%s", pb->msg);
    dk_ascii(msg);
    d->last_error = json_pack("{s:s, s:s}", "code", pb->code, "message", msg);
    dk_stop_all(d);
    d->state = DK_FAILED;
}

static int64_t dk_cell_boot(scell *sc)
{
    pthread_mutex_lock(&sc->s->lock);
    int64_t b = sc->started_ms;
    pthread_mutex_unlock(&sc->s->lock);
    return b;
}

/* Bring the recorded state up to date with the processes: a cell that was
 * stopped and started again has no desktop; one whose X server or window
 * manager died has failed. */
static void dk_refresh(scell *sc, struct desktop *d)
{
    if (d->state != DK_ACTIVE)
        return;
    char sink[4096];
    while (read(d->xvfb.fds[1], sink, sizeof sink) > 0)
        ;
    while (read(d->wm.fds[1], sink, sizeof sink) > 0)
        ;
    if (dk_cell_boot(sc) != d->boot_ms) {
        dk_stop_all(d);
        d->state = DK_INACTIVE;
        return;
    }
    dk_child *dead = NULL;
    int st = 0;
    if (!dk_child_running(&d->xvfb, &st))
        dead = &d->xvfb;
    else if (!dk_child_running(&d->wm, &st))
        dead = &d->wm;
    if (!dead)
        return;
    dk_problem pb = { 0 };
    if (WIFSIGNALED(st))
        DK_FAILED_P(&pb, "%s exited (signal %d)", dead->name, WTERMSIG(st));
    else
        DK_FAILED_P(&pb, "%s exited with status %d", dead->name, WEXITSTATUS(st));
    dk_fail(d, &pb);
}

/* The required tools missing from the cell's image, as a JSON array of
 * names (NULL if the check itself could not run). */
static json_t *dk_missing(scell *sc)
{
    /* argv: sh -c SCRIPT sh BIN...; the names are arguments, not script text. */
    const char *full[5 + DK_N_REQUIRED];
    full[0] = "sh", full[1] = "-c";
    full[2] = "for b in \"$@\"; do command -v \"$b\" >/dev/null 2>&1 || echo \"$b\"; done";
    full[3] = "sh";
    for (size_t i = 0; i < DK_N_REQUIRED; i++)
        full[4 + i] = dk_required[i].bin;
    full[4 + DK_N_REQUIRED] = NULL;
    dk_out o;
    cell_error e = { 0 };
    json_t *missing = json_array();
    if (dk_exec(sc, full, NULL, 0, 4096, DK_INPUT_MS, &o, &e) < 0) {
        /* No shell in the image (ENOENT): nothing of the desktop is there either. */
        if (e.code != ENOENT) {
            json_decref(missing);
            return NULL;
        }
        for (size_t i = 0; i < DK_N_REQUIRED; i++)
            json_array_append_new(missing, json_string(dk_required[i].bin));
        return missing;
    }
    if (!o.exited && !dk_ok(&o)) {
        dk_out_free(&o);
        json_decref(missing);
        return NULL;
    }
    for (char *line = strtok(o.out, "\n"); line; line = strtok(NULL, "\n"))
        for (size_t i = 0; i < DK_N_REQUIRED; i++)
            if (strcmp(line, dk_required[i].bin) == 0)
                json_array_append_new(missing, json_string(line));
    dk_out_free(&o);
    return missing;
}

/* "apt-get install -y PKG..." for the missing tools (NULL if none). */
static char *dk_install_command(json_t *missing)
{
    if (!json_array_size(missing))
        return NULL;
    char buf[256] = "apt-get install -y";
    size_t i;
    json_t *v;
    json_array_foreach(missing, i, v)
        for (size_t k = 0; k < DK_N_REQUIRED; k++)
            if (strcmp(json_string_value(v), dk_required[k].bin) == 0) {
                char word[40];
                snprintf(word, sizeof word, " %s", dk_required[k].pkg);
                size_t len = strlen(buf), wl = strlen(word);
                int have = 0;                           /* one package, several tools */
                for (const char *p = strstr(buf, word); p && !have; p = strstr(p + 1, word))
                    have = p[wl] == '\0' || p[wl] == ' ';
                if (!have)
                    snprintf(buf + len, sizeof buf - len, "%s", word);
            }
    return strdup(buf);
}

static json_t *dk_child_json(const dk_child *c)
{
    json_t *o = json_pack("{s:s, s:b, s:s}", "name", c->name, "running", dk_child_running((dk_child *)c, NULL), "logPath",
                          c->log);
    pthread_mutex_lock(&c->p->cell->plock);
    pid_t pid = c->p->pid;
    pthread_mutex_unlock(&c->p->cell->plock);
    json_object_set_new(o, "pid", json_integer(pid));
    return o;
}

static json_t *dk_processes(struct desktop *d)
{
    json_t *a = json_array();
    if (d->xvfb.p)
        json_array_append_new(a, dk_child_json(&d->xvfb));
    if (d->wm.p)
        json_array_append_new(a, dk_child_json(&d->wm));
    return a;
}

static void dk_iso_time(int64_t ms, char *out, size_t size)
{
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&t, &tm);
    char base[32];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, size, "%s.%03dZ", base, (int)(ms % 1000));
}

/* A 503 naming the missing tools and the command that installs them. */
static void dk_missing_problem(dk_problem *pb, json_t *missing, struct desktop *d)
{
    char names[256] = "";
    size_t i;
    json_t *v;
    json_array_foreach(missing, i, v) {
        size_t len = strlen(names);
        snprintf(names + len, sizeof names - len, "%s%s", i ? ", " : "", json_string_value(v));
    }
    char *cmd = dk_install_command(missing);
    dk_set(pb, 503, "desktop_dependencies_missing", "Desktop Dependencies Missing",
           "Desktop dependencies are not installed in this cell's image: %s. Run `%s` in the image (or use the "
           "`desktop` image: cell image build desktop)", names, cmd ? cmd : "");
    pb->ext = json_pack("{s:O, s:s, s:o}", "missingDependencies", missing, "installCommand", cmd ? cmd : "",
                        "processes", dk_processes(d));
    free(cmd);
}

/* ---- the X tools ------------------------------------------------------------- */
/* argv for `env DISPLAY=:N TOOL ARGS...` in the cell, in out[] (room for
 * n_args + 3), pointing into disp. */
static void dk_argv(const struct desktop *d, char disp[24], const char **out, const char *const *args)
{
    snprintf(disp, 24, "DISPLAY=:%d", d->display);
    size_t n = 0;
    out[n++] = "env";
    out[n++] = disp;
    for (; *args; args++)
        out[n++] = *args;
    out[n] = NULL;
}

/* Run an X tool against the desktop; on failure pb is set (502 `kind`). */
static int dk_tool(scell *sc, struct desktop *d, const char *const *args, const void *in, size_t in_len, size_t cap,
                   int64_t timeout_ms, dk_out *o, dk_problem *pb, int shot)
{
    const char *argv[64];
    size_t n = 0;
    while (args[n])
        n++;
    if (n + 3 > sizeof argv / sizeof argv[0]) {
        DK_INVALID(pb, "too many arguments");
        return -1;
    }
    char disp[24];
    dk_argv(d, disp, argv, args);
    cell_error e = { 0 };
    if (dk_exec(sc, argv, in, in_len, cap, timeout_ms, o, &e) < 0) {
        if (e.code == ECONNRESET)
            DK_INACTIVE_P(pb, "the cell stopped");
        else if (shot)
            DK_SHOT_P(pb, "failed to run %s in the cell: %s", args[0], e.message);
        else
            DK_INPUT_P(pb, "failed to run %s in the cell: %s", args[0], e.message);
        return -1;
    }
    if (!dk_ok(o)) {
        char why[512];
        dk_why(o, why, sizeof why);
        if (shot)
            DK_SHOT_P(pb, "desktop screenshot command failed: %s", why);
        else
            DK_INPUT_P(pb, "desktop %s command failed: %s", args[0], why);
        dk_out_free(o);
        return -1;
    }
    return 0;
}

/* Run an X tool whose output does not matter. */
static int dk_run(scell *sc, struct desktop *d, const char *const *args, dk_problem *pb)
{
    dk_out o;
    if (dk_tool(sc, d, args, NULL, 0, DK_QUERY_MAX, DK_INPUT_MS, &o, pb, 0) < 0)
        return -1;
    dk_out_free(&o);
    return 0;
}

/* Value of KEY= in xdotool's --shell output. */
static const char *dk_shell_value(const char *text, const char *key, char *out, size_t size)
{
    size_t klen = strlen(key);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL)
        if (strncmp(line, key, klen) == 0 && line[klen] == '=') {
            snprintf(out, size, "%.*s", (int)strcspn(line + klen + 1, "\n"), line + klen + 1);
            return out;
        }
    return NULL;
}

static json_t *dk_mouse_position(scell *sc, struct desktop *d, dk_problem *pb)
{
    const char *args[] = { "xdotool", "getmouselocation", "--shell", NULL };
    dk_out o;
    if (dk_tool(sc, d, args, NULL, 0, DK_QUERY_MAX, DK_INPUT_MS, &o, pb, 0) < 0)
        return NULL;
    char x[32], y[32], screen[32], win[32];
    json_t *res = NULL;
    if (dk_shell_value(o.out, "X", x, sizeof x) && dk_shell_value(o.out, "Y", y, sizeof y)) {
        res = json_pack("{s:I, s:I}", "x", (json_int_t)atoll(x), "y", (json_int_t)atoll(y));
        if (dk_shell_value(o.out, "SCREEN", screen, sizeof screen))
            json_object_set_new(res, "screen", json_integer(atoll(screen)));
        if (dk_shell_value(o.out, "WINDOW", win, sizeof win))
            json_object_set_new(res, "window", json_string(win));
    } else {
        DK_INPUT_P(pb, "unable to parse xdotool mouse position");
    }
    dk_out_free(&o);
    return res;
}

/* The managed windows (_NET_CLIENT_LIST) with geometry, title and focus:
 * one script run, fixed text; window ids come from the X server.  The
 * geometry is xwininfo's absolute position: xdotool's getwindowgeometry
 * counts a reparenting window manager's frame offset twice. */
static const char dk_windows_script[] =
    "active=$(xdotool getactivewindow 2>/dev/null)\n"
    "ids=$(xprop -root -notype _NET_CLIENT_LIST 2>/dev/null | sed -n 's/.*# //p' | tr -d ',')\n"
    "for w in $ids; do\n"
    "  d=$(printf '%d' \"$w\")\n"
    "  g=$(xwininfo -id \"$d\" 2>/dev/null) || continue\n"
    "  printf 'WIN=%s\\nACTIVE=%s\\n' \"$d\" \"$([ \"$d\" = \"$active\" ] && echo 1 || echo 0)\"\n"
    "  printf '%s\\n' \"$g\" | sed -n -e 's/^ *Absolute upper-left X: *//p' | sed 's/^/X=/'\n"
    "  printf '%s\\n' \"$g\" | sed -n -e 's/^ *Absolute upper-left Y: *//p' | sed 's/^/Y=/'\n"
    "  printf '%s\\n' \"$g\" | sed -n -e 's/^ *Width: *//p' | sed 's/^/WIDTH=/'\n"
    "  printf '%s\\n' \"$g\" | sed -n -e 's/^ *Height: *//p' | sed 's/^/HEIGHT=/'\n"
    "  printf 'TITLE=%s\\n' \"$(xdotool getwindowname \"$d\" 2>/dev/null | head -n 1)\"\n"
    "done\n";

static json_t *dk_windows(scell *sc, struct desktop *d, dk_problem *pb)
{
    const char *args[] = { "sh", "-c", dk_windows_script, NULL };
    dk_out o;
    if (dk_tool(sc, d, args, NULL, 0, DK_QUERY_MAX, DK_INPUT_MS, &o, pb, 0) < 0)
        return NULL;
    json_t *list = json_array();
    json_t *cur = NULL;
    for (char *line = strtok(o.out, "\n"); line; line = strtok(NULL, "\n")) {
        char *eq = strchr(line, '=');
        if (!eq)
            continue;
        *eq = '\0';
        const char *k = line, *v = eq + 1;
        if (strcmp(k, "WIN") == 0) {
            cur = json_pack("{s:s, s:s, s:b, s:i, s:i, s:i, s:i}", "id", v, "title", "", "isActive", 0, "x", 0, "y",
                            0, "width", 0, "height", 0);
            json_array_append_new(list, cur);
        } else if (!cur) {
            continue;
        } else if (strcmp(k, "X") == 0 || strcmp(k, "Y") == 0) {
            json_object_set_new(cur, k[0] == 'X' ? "x" : "y", json_integer(atoll(v)));
        } else if (strcmp(k, "WIDTH") == 0 || strcmp(k, "HEIGHT") == 0) {
            json_object_set_new(cur, k[0] == 'W' ? "width" : "height", json_integer(atoll(v)));
        } else if (strcmp(k, "ACTIVE") == 0) {
            json_object_set_new(cur, "isActive", json_boolean(strcmp(v, "1") == 0));
        } else if (strcmp(k, "TITLE") == 0) {
            char title[512];
            snprintf(title, sizeof title, "%s", v);
            json_t *t = json_string(title);
            if (!t) {
                dk_ascii(title);
                t = json_string(title);
            }
            json_object_set_new(cur, "title", t ? t : json_string(""));
        }
    }
    dk_out_free(&o);
    return list;
}

/* The screen's size as the X server reports it. */
static int dk_geometry(scell *sc, struct desktop *d, dk_problem *pb)
{
    const char *args[] = { "xdotool", "getdisplaygeometry", NULL };
    dk_out o;
    if (dk_tool(sc, d, args, NULL, 0, 4096, DK_INPUT_MS, &o, pb, 0) < 0)
        return -1;
    int w, h;
    int ok = sscanf(o.out, "%d %d", &w, &h) == 2 && w > 0 && h > 0;
    dk_out_free(&o);
    if (!ok) {
        DK_FAILED_P(pb, "unable to parse the display geometry");
        return -1;
    }
    d->width = w;
    d->height = h;
    return 0;
}

/* ---- status ------------------------------------------------------------------- */
/* Status JSON.  missing: the dependency check's result (borrowed; NULL: not run). */
static json_t *dk_status_json(scell *sc, struct desktop *d, json_t *missing)
{
    const char *state = dk_state_name[d->state];
    if (d->state != DK_ACTIVE && missing && json_array_size(missing))
        state = "install_required";
    json_t *o = json_pack("{s:s}", "state", state);
    json_object_set_new(o, "missingDependencies", missing ? json_incref(missing) : json_array());
    char *cmd = dk_install_command(missing);
    if (cmd)
        json_object_set_new(o, "installCommand", json_string(cmd));
    free(cmd);
    json_object_set_new(o, "processes", dk_processes(d));
    if (d->state == DK_ACTIVE) {
        char disp[24], when[40];
        snprintf(disp, sizeof disp, ":%d", d->display);
        json_object_set_new(o, "display", json_string(disp));
        json_object_set_new(o, "resolution", json_pack("{s:i, s:i, s:i}", "width", d->width, "height", d->height,
                                                       "dpi", d->dpi));
        dk_iso_time(d->started_ms, when, sizeof when);
        json_object_set_new(o, "startedAt", json_string(when));
        dk_problem pb = { 0 };
        json_t *w = dk_windows(sc, d, &pb);
        json_object_set_new(o, "windows", w ? w : json_array());
    }
    if (d->last_error && d->state != DK_ACTIVE)
        json_object_set_new(o, "lastError", json_incref(d->last_error));
    else if (missing && json_array_size(missing) && d->state != DK_ACTIVE)
        json_object_set_new(o, "lastError", json_pack("{s:s, s:s}", "code", "desktop_dependencies_missing",
                                                      "message", "Desktop dependencies are not installed"));
    return o;
}

/* ---- the gate every action passes -------------------------------------------
 * 0 with the desktop active; else -1 and pb says why (503 tools missing,
 * 409 not started, 503 failed). */
static int dk_ready(scell *sc, struct desktop *d, dk_problem *pb)
{
    dk_refresh(sc, d);
    if (d->state == DK_ACTIVE)
        return 0;
    json_t *missing = dk_missing(sc);
    if (missing && json_array_size(missing)) {
        dk_missing_problem(pb, missing, d);
    } else if (d->state == DK_FAILED) {
        const char *m = json_string_value(json_object_get(d->last_error, "message"));
        DK_FAILED_P(pb, "%s", m ? m : "Desktop runtime is unhealthy");
    } else {
        DK_INACTIVE_P(pb, "Desktop runtime has not been started: POST /v1/desktop/start first");
    }
    json_decref(missing);
    return -1;
}

/* ---- request input ---------------------------------------------------------- */
/* An optional integer query parameter in [min, max]; -1 with pb set. */
static int dk_query_int(sreq *r, const char *key, long min, long max, long *out, int *present, dk_problem *pb)
{
    long long n = 0;
    if (srv_req_query_integer(r, key, &n, present) < 0 || (*present && (n < min || n > max))) {
        DK_INVALID(pb, "query parameter %s must be an integer from %ld to %ld", key, min, max);
        return -1;
    }
    if (*present)
        *out = (long)n;
    return 0;
}

static int dk_query_bool(sreq *r, const char *key, int *out, dk_problem *pb)
{
    const char *v = srv_req_query(r, key);
    if (!v)
        return 0;
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
        *out = 1;
    else if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
        *out = 0;
    else {
        DK_INVALID(pb, "query parameter %s must be true or false", key);
        return -1;
    }
    return 0;
}

/* A body member that must be a JSON integer (null/absent: not present). */
static int dk_int(json_t *body, const char *key, int required, long min, long max, long *out, int *present,
                  dk_problem *pb)
{
    json_t *v = json_object_get(body, key);
    if (present)
        *present = 0;
    if (!v || json_is_null(v)) {
        if (required) {
            DK_INVALID(pb, "field \"%s\" is required", key);
            return -1;
        }
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < min || json_integer_value(v) > max) {
        DK_INVALID(pb, "field \"%s\" must be an integer from %ld to %ld", key, min, max);
        return -1;
    }
    *out = (long)json_integer_value(v);
    if (present)
        *present = 1;
    return 0;
}

static int dk_str(json_t *body, const char *key, int required, size_t max, const char **out, dk_problem *pb)
{
    json_t *v = json_object_get(body, key);
    *out = NULL;
    if (!v || json_is_null(v)) {
        if (required) {
            DK_INVALID(pb, "field \"%s\" is required", key);
            return -1;
        }
        return 0;
    }
    if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
        DK_INVALID(pb, "field \"%s\" must be a string without NUL characters", key);
        return -1;
    }
    if (json_string_length(v) > max) {
        DK_INVALID(pb, "field \"%s\" is longer than %zu bytes", key, max);
        return -1;
    }
    *out = json_string_value(v);
    return 0;
}

/* A point on the screen: x and y inside it. */
static int dk_point(struct desktop *d, long x, long y, dk_problem *pb)
{
    if (x < 0 || y < 0 || x >= d->width || y >= d->height) {
        DK_INVALID(pb, "coordinates (%ld, %ld) are outside the %dx%d screen", x, y, d->width, d->height);
        return -1;
    }
    return 0;
}

static int dk_xy(json_t *body, const char *kx, const char *ky, int required, long *x, long *y, int *present,
                 dk_problem *pb)
{
    int px = 0, py = 0;
    if (dk_int(body, kx, required, -(1L << 30), 1L << 30, x, &px, pb) < 0 ||
        dk_int(body, ky, required, -(1L << 30), 1L << 30, y, &py, pb) < 0)
        return -1;
    if (px != py) {
        DK_INVALID(pb, "give both %s and %s, or neither", kx, ky);
        return -1;
    }
    *present = px;
    return 0;
}

/* "left" (default), "middle", "right" -> 1, 2, 3. */
static int dk_button(json_t *body, const char **out, dk_problem *pb)
{
    json_t *v = json_object_get(body, "button");
    if (!v || json_is_null(v)) {
        *out = "1";
        return 0;
    }
    const char *s = json_string_value(v);
    if (s && strcmp(s, "left") == 0)
        *out = "1";
    else if (s && strcmp(s, "middle") == 0)
        *out = "2";
    else if (s && strcmp(s, "right") == 0)
        *out = "3";
    else {
        DK_INVALID(pb, "field \"button\" must be one of: left, middle, right");
        return -1;
    }
    return 0;
}

/* ---- handlers ------------------------------------------------------------------
 * Each runs with the desktop's lock held, and returns 0 after filling *res
 * (a JSON reply, 200) or -1 with pb set; binary replies are made in place
 * (then *res stays NULL and the handler returns 1). */
typedef struct dk_ctx {
    sreq           *r;
    scell          *sc;
    struct desktop *d;
    json_t         *body;               /* POST bodies (an object), else NULL */
    const route_match *m;
    json_t         *res;
    dk_problem      pb;
} dk_ctx;

static int dk_status(dk_ctx *c)
{
    dk_refresh(c->sc, c->d);
    json_t *missing = c->d->state == DK_ACTIVE ? json_array() : dk_missing(c->sc);
    c->res = dk_status_json(c->sc, c->d, missing);
    json_decref(missing);
    return 0;
}

/* Spawn a long-running desktop process: `sh -c` makes DK_DIR, sends stderr
 * to its log and execs argv (which comes from us, not the request, except
 * an app's argv, passed as arguments, never as script text). */
static int dk_spawn(scell *sc, dk_child *c, const char *name, const char *log, const char *const *argv,
                    int keep_stdin, dk_problem *pb)
{
    const char *full[72];
    size_t n = 0;
    full[n++] = "sh";
    full[n++] = "-c";
    full[n++] = keep_stdin ? "log=$1; shift; mkdir -p \"${log%/*}\" && exec \"$@\" 2>>\"$log\""
                           : "log=$1; shift; mkdir -p \"${log%/*}\" && exec \"$@\" </dev/null 2>>\"$log\"";
    full[n++] = "sh";
    full[n++] = log;
    for (; *argv && n < sizeof full / sizeof full[0] - 1; argv++)
        full[n++] = *argv;
    full[n] = NULL;
    memset(c, 0, sizeof *c);
    c->name = name;
    snprintf(c->log, sizeof c->log, "%s", log);
    cell_error e = { 0 };
    c->p = srv_procs_spawn_piped_at(sc, full, "/", c->fds, &e);
    if (!c->p) {
        if (e.code == ECONNRESET)
            DK_INACTIVE_P(pb, "the cell stopped");
        else
            DK_FAILED_P(pb, "failed to spawn %s: %s", name, e.message);
        return -1;
    }
    return 0;
}

/* Wait for a line on the child's stdout (its readiness); the line into out. */
static int dk_wait_line(dk_child *c, char *out, size_t size, int64_t timeout_ms)
{
    size_t len = 0;
    int64_t deadline = srv_now_ms() + timeout_ms;
    out[0] = '\0';
    for (;;) {
        int64_t left = deadline - srv_now_ms();
        if (left <= 0)
            return -1;
        struct pollfd pf = { .fd = c->fds[1], .events = POLLIN };
        int n = poll(&pf, 1, (int)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        ssize_t got = read(c->fds[1], out + len, 1);    /* a line of a few bytes, once */
        if (got <= 0)
            return -1;
        if (out[len] == '\n') {
            out[len] = '\0';
            return 0;
        }
        if (len + 2 < size)                             /* a longer line is cut, not an error */
            len++;
        out[len] = '\0';
    }
}

/* How a child that should be running ended, in words ("" if it runs):
 * an X server killed by SIGKILL at start is most often the cell's memory
 * limit (the framebuffer is width x height x 4 bytes). */
static void dk_ended(dk_child *c, char *out, size_t size)
{
    int st = 0;
    out[0] = '\0';
    if (!c->p || dk_child_running(c, &st))
        return;
    if (WIFSIGNALED(st))
        snprintf(out, size, " (%s was killed by signal %d%s)", c->name, WTERMSIG(st),
                 WTERMSIG(st) == SIGKILL ? ": out of the cell's memory?" : "");
    else
        snprintf(out, size, " (%s exited with status %d)", c->name, WEXITSTATUS(st));
}

/* The end of a log file in the cell, for an error message. */
static void dk_log_tail(scell *sc, const char *log, char *out, size_t size)
{
    const char *argv[] = { "tail", "-n", "3", log, NULL };
    dk_out o;
    cell_error e = { 0 };
    out[0] = '\0';
    if (dk_exec(sc, argv, NULL, 0, 4096, DK_INPUT_MS, &o, &e) < 0)
        return;
    snprintf(out, size, "%s", o.out);
    dk_ascii(out);
    dk_out_free(&o);
}

static int dk_start(dk_ctx *c)
{
    struct desktop *d = c->d;
    long width = DK_DEFAULT_WIDTH, height = DK_DEFAULT_HEIGHT, dpi = DK_DEFAULT_DPI, display = DK_DEFAULT_DISPLAY;
    if (dk_int(c->body, "width", 0, 1, DK_MAX_WIDTH, &width, NULL, &c->pb) < 0 ||
        dk_int(c->body, "height", 0, 1, DK_MAX_HEIGHT, &height, NULL, &c->pb) < 0 ||
        dk_int(c->body, "dpi", 0, 1, DK_MAX_DPI, &dpi, NULL, &c->pb) < 0 ||
        dk_int(c->body, "displayNum", 0, 1, DK_MAX_DISPLAY, &display, NULL, &c->pb) < 0)
        return -1;
    /* Accepted and not used: the reference's stream (WebRTC) and state options. */
    const char *ignored;
    if (dk_str(c->body, "stateDir", 0, 4096, &ignored, &c->pb) < 0 ||
        dk_str(c->body, "webrtcPortRange", 0, 64, &ignored, &c->pb) < 0)
        return -1;
    dk_refresh(c->sc, d);
    if (d->state == DK_ACTIVE)
        return dk_status(c);
    json_t *missing = dk_missing(c->sc);
    if (!missing) {
        DK_FAILED_P(&c->pb, "could not check the desktop's dependencies in the cell");
        return -1;
    }
    if (json_array_size(missing)) {
        dk_missing_problem(&c->pb, missing, d);
        json_decref(missing);
        return -1;
    }
    json_decref(missing);
    dk_stop_all(d);                                     /* what a failed start left */
    json_decref(d->last_error);
    d->last_error = NULL;
    d->state = DK_STARTING;
    d->display = (int)display;
    d->dpi = (int)dpi;
    d->boot_ms = dk_cell_boot(c->sc);

    char disp[24], screen[48], dpis[24], line[64], tail[600];
    snprintf(disp, sizeof disp, ":%d", d->display);
    snprintf(screen, sizeof screen, "%ldx%ldx24", width, height);
    snprintf(dpis, sizeof dpis, "%ld", dpi);
    /* -displayfd 1: Xvfb writes the display number to stdout once it
     * accepts clients, so readiness is a read, not a poll of the socket. */
    const char *xargv[] = { "Xvfb", disp, "-screen", "0", screen, "-dpi", dpis, "-nolisten", "tcp", "-nolisten",
                            "local", "-displayfd", "1", NULL };
    if (dk_spawn(c->sc, &d->xvfb, "Xvfb", DK_DIR "/xvfb.log", xargv, 0, &c->pb) < 0)
        goto fail;
    /* The window manager's start runs while Xvfb starts: its font cache is
     * built, then it waits on its stdin, where the word that X is ready
     * comes (a read, no polling of the socket). */
    const char *wargv[] = { "sh", "-c", DK_WM_SCRIPT, "sh", disp, NULL };
    if (dk_spawn(c->sc, &d->wm, "openbox", DK_DIR "/openbox.log", wargv, 1, &c->pb) < 0)
        goto fail;
    if (dk_wait_line(&d->xvfb, line, sizeof line, DK_START_MS) < 0 || atoi(line) != d->display) {
        char how[96];
        dk_log_tail(c->sc, DK_DIR "/xvfb.log", tail, sizeof tail);
        dk_ended(&d->xvfb, how, sizeof how);
        DK_FAILED_P(&c->pb, "Xvfb did not start on display %s%s: %s", disp, how, tail[0] ? tail : "no output");
        goto fail;
    }
    /* X is ready: openbox may start (its stdin, closed after the word, is
     * not read by it); it runs its --startup command once it manages the screen. */
    if (write(d->wm.fds[0], "x\n", 2) != 2) {
        char how[96];
        dk_ended(&d->wm, how, sizeof how);
        DK_FAILED_P(&c->pb, "openbox did not start%s: its stdin: %s", how, strerror(errno));
        goto fail;
    }
    close(d->wm.fds[0]);
    d->wm.fds[0] = -1;
    /* Its messages come first on the same stdout: skip to the word. */
    int64_t wm_deadline = srv_now_ms() + DK_START_MS;
    int ready = 0;
    while (!ready && dk_wait_line(&d->wm, line, sizeof line, wm_deadline - srv_now_ms()) == 0)
        ready = strcmp(line, DK_READY_WORD) == 0;
    if (!ready) {
        char how[96];
        dk_log_tail(c->sc, DK_DIR "/openbox.log", tail, sizeof tail);
        dk_ended(&d->wm, how, sizeof how);
        DK_FAILED_P(&c->pb, "openbox did not start%s: %s", how, tail[0] ? tail : "no output");
        goto fail;
    }
    /* The screen is what Xvfb was told (-screen 0 WxHx24): no tool run
     * reads it back here (GET display/info does). */
    d->width = (int)width;
    d->height = (int)height;
    /* Their stdout stays open (a closed pipe would SIGPIPE them) and is
     * drained at each request (dk_refresh), so it never fills. */
    if (dk_nonblock(d->xvfb.fds[1]) < 0 || dk_nonblock(d->wm.fds[1]) < 0) {
        DK_FAILED_P(&c->pb, "fcntl: %s", strerror(errno));
        goto fail;
    }
    d->state = DK_ACTIVE;
    d->started_ms = srv_now_ms();
    srv_slog(SLOG_INFO, SLOG_F("cell", c->sc->id), "desktop started on %s (%dx%d)", disp, d->width, d->height);
    return dk_status(c);
fail:
    dk_fail(d, &c->pb);
    return -1;
}

static int dk_stop(dk_ctx *c)
{
    dk_stop_all(c->d);
    c->d->state = DK_INACTIVE;
    json_decref(c->d->last_error);
    c->d->last_error = NULL;
    return dk_status(c);
}

static int dk_display_info(dk_ctx *c)
{
    if (dk_ready(c->sc, c->d, &c->pb) < 0 || dk_geometry(c->sc, c->d, &c->pb) < 0)
        return -1;
    char disp[24];
    snprintf(disp, sizeof disp, ":%d", c->d->display);
    c->res = json_pack("{s:s, s:{s:i, s:i, s:i}}", "display", disp, "resolution", "width", c->d->width, "height",
                       c->d->height, "dpi", c->d->dpi);
    return 0;
}

/* ceil() without libm (the daemon does not link it): for sizes, well
 * inside a long. */
static double dk_ceil(double v)
{
    long n = (long)v;
    return (double)(n + ((double)n < v));
}

/* GET screenshot and screenshot/region: ImageMagick reads the root window
 * (x:root) and crops, draws the pointer, scales and encodes in one run. */
static int dk_screenshot(dk_ctx *c, int region)
{
    struct desktop *d = c->d;
    dk_problem *pb = &c->pb;
    const char *fmt = srv_req_query(c->r, "format");
    if (!fmt)
        fmt = "png";
    const char *mime = strcmp(fmt, "png") == 0 ? "image/png" : strcmp(fmt, "jpeg") == 0 ? "image/jpeg"
                     : strcmp(fmt, "webp") == 0 ? "image/webp" : NULL;
    if (!mime) {
        DK_INVALID(pb, "query parameter format must be one of: png, jpeg, webp");
        return -1;
    }
    long quality = 0, x = 0, y = 0, w = 0, h = 0;
    int has_quality, px, py, pw, ph, cursor = 0;
    double scale = 1.0;
    const char *scale_s = srv_req_query(c->r, "scale");
    if (dk_query_int(c->r, "quality", 1, 100, &quality, &has_quality, pb) < 0 ||
        dk_query_bool(c->r, "showCursor", &cursor, pb) < 0)
        return -1;
    if (scale_s) {
        char *end;
        errno = 0;
        scale = strtod(scale_s, &end);
        if (!*scale_s || *end || errno || !isfinite(scale) || scale < 0.01 || scale > 4.0) {
            DK_INVALID(pb, "query parameter scale must be a number from 0.01 to 4");
            return -1;
        }
    }
    if (region) {
        if (dk_query_int(c->r, "x", 0, DK_MAX_WIDTH, &x, &px, pb) < 0 ||
            dk_query_int(c->r, "y", 0, DK_MAX_HEIGHT, &y, &py, pb) < 0 ||
            dk_query_int(c->r, "width", 1, DK_MAX_WIDTH, &w, &pw, pb) < 0 ||
            dk_query_int(c->r, "height", 1, DK_MAX_HEIGHT, &h, &ph, pb) < 0)
            return -1;
        if (!px || !py || !pw || !ph) {
            DK_INVALID(pb, "query parameters x, y, width and height are required");
            return -1;
        }
    }
    if (dk_ready(c->sc, d, pb) < 0)
        return -1;
    if (region && (x + w > d->width || y + h > d->height)) {
        DK_INVALID(pb, "region %ldx%ld+%ld+%ld is not inside the %dx%d screen", w, h, x, y, d->width, d->height);
        return -1;
    }
    /* The image's size bounds what convert may answer (DK_SHOT_BPP). */
    double out_w = dk_ceil((region ? w : d->width) * scale), out_h = dk_ceil((region ? h : d->height) * scale);
    if (out_w * out_h > (double)DK_MAX_WIDTH * DK_MAX_HEIGHT) {
        DK_INVALID(pb, "query parameter scale %g makes a %.0fx%.0f image: more pixels than %dx%d, use a smaller "
                   "scale or a region", scale, out_w, out_h, DK_MAX_WIDTH, DK_MAX_HEIGHT);
        return -1;
    }
    /* +1 a side: ImageMagick's rounding of a percentage. */
    size_t cap = (size_t)((out_w + 1) * (out_h + 1)) * DK_SHOT_BPP + DK_SHOT_HEADERS;
    char crop[64], draw[160], resize[32], qual[24], out[24];
    const char *args[24];
    size_t n = 0;
    args[n++] = "convert";
    args[n++] = "x:root";
    if (region) {
        snprintf(crop, sizeof crop, "%ldx%ld+%ld+%ld", w, h, x, y);
        args[n++] = "-crop";
        args[n++] = crop;
        args[n++] = "+repage";
    }
    if (cursor) {
        /* X screenshots never hold the pointer: draw an arrow where it is. */
        json_t *pos = dk_mouse_position(c->sc, d, pb);
        if (!pos)
            return -1;
        long mx = (long)json_integer_value(json_object_get(pos, "x")) - x;
        long my = (long)json_integer_value(json_object_get(pos, "y")) - y;
        json_decref(pos);
        snprintf(draw, sizeof draw, "polygon %ld,%ld %ld,%ld %ld,%ld %ld,%ld", mx, my, mx, my + 16, mx + 4, my + 12,
                 mx + 11, my + 11);
        args[n++] = "-fill";
        args[n++] = "white";
        args[n++] = "-stroke";
        args[n++] = "black";
        args[n++] = "-draw";
        args[n++] = draw;
    }
    if (scale != 1.0) {
        snprintf(resize, sizeof resize, "%.4f%%", scale * 100.0);
        args[n++] = "-resize";
        args[n++] = resize;
    }
    if (has_quality) {
        snprintf(qual, sizeof qual, "%ld", quality);
        args[n++] = "-quality";
        args[n++] = qual;
    }
    snprintf(out, sizeof out, "%s:-", fmt);
    args[n++] = out;
    args[n] = NULL;
    dk_out o;
    if (dk_tool(c->sc, d, args, NULL, 0, cap, DK_SHOT_MS, &o, pb, 1) < 0)
        return -1;
    static const unsigned char png_sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n' };
    int valid = strcmp(fmt, "png") == 0 ? o.len >= 8 && memcmp(o.out, png_sig, 8) == 0
              : strcmp(fmt, "jpeg") == 0 ? o.len >= 3 && (unsigned char)o.out[0] == 0xff && (unsigned char)o.out[1] == 0xd8
              : o.len >= 12 && memcmp(o.out, "RIFF", 4) == 0 && memcmp(o.out + 8, "WEBP", 4) == 0;
    if (!valid || o.truncated) {
        DK_SHOT_P(pb, "desktop screenshot did not return %s bytes", fmt);
        dk_out_free(&o);
        return -1;
    }
    struct MHD_Response *resp = MHD_create_response_from_buffer(o.len, o.out, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        dk_out_free(&o);
        DK_SHOT_P(pb, "out of memory");
        return -1;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, mime);
    srv_reply_response(c->r, 200, resp);
    return 1;
}

static int dk_position(dk_ctx *c)
{
    if (dk_ready(c->sc, c->d, &c->pb) < 0)
        return -1;
    return (c->res = dk_mouse_position(c->sc, c->d, &c->pb)) ? 0 : -1;
}

/* Run xdotool ARGS, then answer the pointer's position. */
static int dk_input_then_position(dk_ctx *c, const char *const *args)
{
    if (dk_run(c->sc, c->d, args, &c->pb) < 0)
        return -1;
    return (c->res = dk_mouse_position(c->sc, c->d, &c->pb)) ? 0 : -1;
}

static int dk_move(dk_ctx *c)
{
    long x, y;
    int has;
    if (dk_xy(c->body, "x", "y", 1, &x, &y, &has, &c->pb) < 0 || dk_ready(c->sc, c->d, &c->pb) < 0 ||
        dk_point(c->d, x, y, &c->pb) < 0)
        return -1;
    char xs[24], ys[24];
    snprintf(xs, sizeof xs, "%ld", x);
    snprintf(ys, sizeof ys, "%ld", y);
    const char *args[] = { "xdotool", "mousemove", xs, ys, NULL };
    return dk_input_then_position(c, args);
}

static int dk_click(dk_ctx *c)
{
    long x, y, count = 1;
    int has;
    const char *button;
    if (dk_xy(c->body, "x", "y", 1, &x, &y, &has, &c->pb) < 0 || dk_button(c->body, &button, &c->pb) < 0 ||
        dk_int(c->body, "clickCount", 0, 1, DK_CLICKS_MAX, &count, NULL, &c->pb) < 0 ||
        dk_ready(c->sc, c->d, &c->pb) < 0 || dk_point(c->d, x, y, &c->pb) < 0)
        return -1;
    char xs[24], ys[24], ns[24];
    snprintf(xs, sizeof xs, "%ld", x);
    snprintf(ys, sizeof ys, "%ld", y);
    snprintf(ns, sizeof ns, "%ld", count);
    const char *args[] = { "xdotool", "mousemove", "--sync", xs, ys, "click", "--repeat", ns, button, NULL };
    return dk_input_then_position(c, args);
}

static int dk_button_action(dk_ctx *c, const char *action)
{
    long x = 0, y = 0;
    int has;
    const char *button;
    if (dk_xy(c->body, "x", "y", 0, &x, &y, &has, &c->pb) < 0 || dk_button(c->body, &button, &c->pb) < 0 ||
        dk_ready(c->sc, c->d, &c->pb) < 0 || (has && dk_point(c->d, x, y, &c->pb) < 0))
        return -1;
    char xs[24], ys[24];
    snprintf(xs, sizeof xs, "%ld", x);
    snprintf(ys, sizeof ys, "%ld", y);
    /* No --sync: it waits for the pointer to move, which it never does
     * when it is already there and a window holds the pressed button's
     * grab (the up then hung until the time limit).  One xdotool's fake
     * events are queued in order, and mouse/move has never synced. */
    const char *moved[] = { "xdotool", "mousemove", xs, ys, action, button, NULL };
    const char *still[] = { "xdotool", action, button, NULL };
    return dk_input_then_position(c, has ? moved : still);
}

static int dk_drag(dk_ctx *c)
{
    long sx, sy, ex, ey;
    int has;
    const char *button;
    if (dk_xy(c->body, "startX", "startY", 1, &sx, &sy, &has, &c->pb) < 0 ||
        dk_xy(c->body, "endX", "endY", 1, &ex, &ey, &has, &c->pb) < 0 || dk_button(c->body, &button, &c->pb) < 0 ||
        dk_ready(c->sc, c->d, &c->pb) < 0 || dk_point(c->d, sx, sy, &c->pb) < 0 || dk_point(c->d, ex, ey, &c->pb) < 0)
        return -1;
    char a[4][24];
    snprintf(a[0], 24, "%ld", sx);
    snprintf(a[1], 24, "%ld", sy);
    snprintf(a[2], 24, "%ld", ex);
    snprintf(a[3], 24, "%ld", ey);
    const char *args[] = { "xdotool", "mousemove", "--sync", a[0], a[1], "mousedown", button, "mousemove", "--sync",
                           a[2], a[3], "mouseup", button, NULL };
    return dk_input_then_position(c, args);
}

static int dk_scroll(dk_ctx *c)
{
    long x, y, dx = 0, dy = 0;
    int has;
    if (dk_xy(c->body, "x", "y", 1, &x, &y, &has, &c->pb) < 0 ||
        dk_int(c->body, "deltaX", 0, -DK_CLICKS_MAX, DK_CLICKS_MAX, &dx, NULL, &c->pb) < 0 ||
        dk_int(c->body, "deltaY", 0, -DK_CLICKS_MAX, DK_CLICKS_MAX, &dy, NULL, &c->pb) < 0)
        return -1;
    if (!dx && !dy) {
        DK_INVALID(&c->pb, "deltaX or deltaY must be non-zero");
        return -1;
    }
    if (dk_ready(c->sc, c->d, &c->pb) < 0 || dk_point(c->d, x, y, &c->pb) < 0)
        return -1;
    /* X wheel buttons: 4 up, 5 down, 6 left, 7 right; one click a step. */
    char xs[24], ys[24], ny[24], nx[24];
    snprintf(xs, sizeof xs, "%ld", x);
    snprintf(ys, sizeof ys, "%ld", y);
    snprintf(ny, sizeof ny, "%ld", labs(dy));
    snprintf(nx, sizeof nx, "%ld", labs(dx));
    const char *args[16];
    size_t n = 0;
    args[n++] = "xdotool", args[n++] = "mousemove", args[n++] = "--sync", args[n++] = xs, args[n++] = ys;
    if (dy)
        args[n++] = "click", args[n++] = "--repeat", args[n++] = ny, args[n++] = dy > 0 ? "5" : "4";
    if (dx)
        args[n++] = "click", args[n++] = "--repeat", args[n++] = nx, args[n++] = dx > 0 ? "7" : "6";
    args[n] = NULL;
    return dk_input_then_position(c, args);
}

static int dk_ok_reply(dk_ctx *c)
{
    c->res = json_pack("{s:b}", "ok", 1);
    return 0;
}

static int dk_type(dk_ctx *c)
{
    const char *text;
    long delay = 10;
    if (dk_str(c->body, "text", 1, DK_TEXT_MAX, &text, &c->pb) < 0 ||
        dk_int(c->body, "delayMs", 0, 0, 1000, &delay, NULL, &c->pb) < 0)
        return -1;
    if (!*text) {
        DK_INVALID(&c->pb, "text must not be empty");
        return -1;
    }
    if ((long long)strlen(text) * delay > DK_TYPE_MAX_MS) {
        DK_INVALID(&c->pb, "typing %zu bytes %ld ms apart takes longer than %d s: send less text or a smaller "
                   "delayMs", strlen(text), delay, DK_TYPE_MAX_MS / 1000);
        return -1;
    }
    if (dk_ready(c->sc, c->d, &c->pb) < 0)
        return -1;
    char ds[24];
    snprintf(ds, sizeof ds, "%ld", delay);
    const char *args[] = { "xdotool", "type", "--delay", ds, "--", text, NULL };
    dk_out o;
    if (dk_tool(c->sc, c->d, args, NULL, 0, DK_QUERY_MAX, DK_INPUT_MS + (int64_t)strlen(text) * delay * 2, &o,
                &c->pb, 0) < 0)
        return -1;
    dk_out_free(&o);
    return dk_ok_reply(c);
}

/* A key name for xdotool: printable ASCII, no spaces (xdotool would read
 * several keys), at most 64 bytes. */
static int dk_key(json_t *body, const char **key, dk_problem *pb)
{
    if (dk_str(body, "key", 1, 64, key, pb) < 0)
        return -1;
    if (!**key) {
        DK_INVALID(pb, "key must not be empty");
        return -1;
    }
    for (const char *p = *key; *p; p++)
        if (*p <= ' ' || *p > '~') {
            DK_INVALID(pb, "key must be one X keysym name like \"Return\", \"a\" or \"ctrl+c\" (printable "
                       "ASCII, no spaces)");
            return -1;
        }
    return 0;
}

static int dk_press(dk_ctx *c)
{
    const char *key;
    if (dk_key(c->body, &key, &c->pb) < 0)
        return -1;
    json_t *mods = json_object_get(c->body, "modifiers");
    if (mods && !json_is_null(mods) && !json_is_object(mods)) {
        DK_INVALID(&c->pb, "field \"modifiers\" must be an object like {\"ctrl\": true}");
        return -1;
    }
    char combo[160] = "";
    static const char *const names[][2] = { { "ctrl", "ctrl" }, { "alt", "alt" }, { "shift", "shift" },
                                            { "cmd", "super" } };
    for (size_t i = 0; i < 4; i++) {
        json_t *v = json_object_get(mods, names[i][0]);
        if (v && !json_is_null(v) && !json_is_boolean(v)) {
            DK_INVALID(&c->pb, "modifiers.%s must be true or false", names[i][0]);
            return -1;
        }
        if (json_is_true(v)) {
            size_t len = strlen(combo);
            snprintf(combo + len, sizeof combo - len, "%s+", names[i][1]);
        }
    }
    size_t len = strlen(combo);
    snprintf(combo + len, sizeof combo - len, "%s", key);
    if (dk_ready(c->sc, c->d, &c->pb) < 0)
        return -1;
    const char *args[] = { "xdotool", "key", "--", combo, NULL };
    return dk_run(c->sc, c->d, args, &c->pb) < 0 ? -1 : dk_ok_reply(c);
}

static int dk_key_action(dk_ctx *c, const char *action)
{
    const char *key;
    if (dk_key(c->body, &key, &c->pb) < 0 || dk_ready(c->sc, c->d, &c->pb) < 0)
        return -1;
    const char *args[] = { "xdotool", action, "--", key, NULL };
    return dk_run(c->sc, c->d, args, &c->pb) < 0 ? -1 : dk_ok_reply(c);
}

static int dk_windows_list(dk_ctx *c)
{
    if (dk_ready(c->sc, c->d, &c->pb) < 0)
        return -1;
    json_t *w = dk_windows(c->sc, c->d, &c->pb);
    if (!w)
        return -1;
    c->res = json_pack("{s:o}", "windows", w);
    return 0;
}

/* The listed window with this id (decimal, or 0x hex), or NULL (404 set). */
static json_t *dk_find_window(dk_ctx *c, const char *id)
{
    char *end;
    errno = 0;
    unsigned long v = strtoul(id, &end, 0);
    if (!*id || *end || errno || *id == '-' || v > 0xffffffffUL) {
        DK_INVALID(&c->pb, "window id must be a number like 4194305 or 0x400001");
        return NULL;
    }
    char dec[24];
    snprintf(dec, sizeof dec, "%lu", v);
    json_t *list = dk_windows(c->sc, c->d, &c->pb);
    if (!list)
        return NULL;
    size_t i;
    json_t *w;
    json_array_foreach(list, i, w)
        if (strcmp(json_string_value(json_object_get(w, "id")), dec) == 0) {
            json_incref(w);
            json_decref(list);
            return w;
        }
    json_decref(list);
    dk_set(&c->pb, 404, "not_found", "Not Found", "no window %s on the desktop (GET /v1/desktop/windows lists them)",
           id);
    return NULL;
}

static int dk_focused(dk_ctx *c)
{
    if (dk_ready(c->sc, c->d, &c->pb) < 0)
        return -1;
    json_t *list = dk_windows(c->sc, c->d, &c->pb);
    if (!list)
        return -1;
    size_t i;
    json_t *w;
    json_array_foreach(list, i, w)
        if (json_is_true(json_object_get(w, "isActive"))) {
            c->res = json_incref(w);
            json_decref(list);
            return 0;
        }
    json_decref(list);
    dk_set(&c->pb, 404, "not_found", "Not Found", "no window is focused");
    return -1;
}

/* focus, move, resize: xdotool on the window, then its fresh record. */
static int dk_window_action(dk_ctx *c, const char *what)
{
    const char *id = srv_router_param(c->m, "wid");
    long a = 0, b = 0;
    int has;
    if (strcmp(what, "move") == 0 && dk_xy(c->body, "x", "y", 1, &a, &b, &has, &c->pb) < 0)
        return -1;
    if (strcmp(what, "resize") == 0 &&
        (dk_int(c->body, "width", 1, 1, DK_MAX_WIDTH, &a, NULL, &c->pb) < 0 ||
         dk_int(c->body, "height", 1, 1, DK_MAX_HEIGHT, &b, NULL, &c->pb) < 0))
        return -1;
    if (strcmp(what, "move") == 0 && (labs(a) > DK_MAX_WIDTH || labs(b) > DK_MAX_HEIGHT)) {
        DK_INVALID(&c->pb, "x and y must be within -%d..%d and -%d..%d", DK_MAX_WIDTH, DK_MAX_WIDTH, DK_MAX_HEIGHT,
                   DK_MAX_HEIGHT);
        return -1;
    }
    if (dk_ready(c->sc, c->d, &c->pb) < 0)
        return -1;
    json_t *w = dk_find_window(c, id);
    if (!w)
        return -1;
    char wid[24], as[24], bs[24];
    snprintf(wid, sizeof wid, "%s", json_string_value(json_object_get(w, "id")));
    json_decref(w);
    snprintf(as, sizeof as, "%ld", a);
    snprintf(bs, sizeof bs, "%ld", b);
    const char *focus[] = { "xdotool", "windowactivate", "--sync", wid, NULL };
    const char *move[] = { "xdotool", "windowmove", "--sync", wid, as, bs, NULL };
    const char *size[] = { "xdotool", "windowsize", "--sync", wid, as, bs, NULL };
    const char *const *args = what[0] == 'f' ? focus : what[0] == 'm' ? move : size;
    if (dk_run(c->sc, c->d, args, &c->pb) < 0)
        return -1;
    return (c->res = dk_find_window(c, wid)) ? 0 : -1;
}

/* Clipboard: xclip, an optional tool (503 naming it when absent). */
static int dk_selection(const char *s, const char **out, dk_problem *pb)
{
    if (!s || strcmp(s, "clipboard") == 0)
        *out = "clipboard";
    else if (strcmp(s, "primary") == 0)
        *out = "primary";
    else if (strcmp(s, "secondary") == 0)
        *out = "secondary";
    else {
        DK_INVALID(pb, "selection must be one of: clipboard, primary, secondary");
        return -1;
    }
    return 0;
}

static int dk_need(dk_ctx *c, const char *bin, const char *pkg)
{
    const char *argv[] = { "sh", "-c", "command -v \"$1\" >/dev/null 2>&1", "sh", bin, NULL };
    dk_out o;
    cell_error e = { 0 };
    if (dk_exec(c->sc, argv, NULL, 0, 1024, DK_INPUT_MS, &o, &e) == 0) {
        int ok = dk_ok(&o);
        dk_out_free(&o);
        if (ok)
            return 0;
    }
    dk_set(&c->pb, 503, "desktop_dependencies_missing", "Desktop Dependencies Missing",
           "Desktop dependencies are not installed in this cell's image: %s. Run `apt-get install -y %s` in the "
           "image", bin, pkg);
    c->pb.ext = json_pack("{s:[s], s:s+}", "missingDependencies", bin, "installCommand", "apt-get install -y ", pkg);
    return -1;
}

static int dk_clipboard_get(dk_ctx *c)
{
    const char *sel;
    if (dk_selection(srv_req_query(c->r, "selection"), &sel, &c->pb) < 0 || dk_ready(c->sc, c->d, &c->pb) < 0 ||
        dk_need(c, "xclip", "xclip") < 0)
        return -1;
    const char *args[] = { "xclip", "-selection", sel, "-o", NULL };
    dk_out o;
    cell_error e = { 0 };
    const char *argv[8];
    char disp[24];
    dk_argv(c->d, disp, argv, args);
    if (dk_exec(c->sc, argv, NULL, 0, DK_TEXT_MAX, DK_INPUT_MS, &o, &e) < 0) {
        DK_INPUT_P(&c->pb, "failed to run xclip: %s", e.message);
        return -1;
    }
    /* An empty selection is an error to xclip; it is empty text to clients. */
    json_t *text = dk_ok(&o) ? srv_procs_lossy_string((const unsigned char *)o.out, o.len) : json_string("");
    dk_out_free(&o);
    c->res = json_pack("{s:s, s:o}", "selection", sel, "text", text);
    return 0;
}

static int dk_clipboard_set(dk_ctx *c)
{
    const char *sel, *text, *s;
    if (dk_str(c->body, "selection", 0, 32, &s, &c->pb) < 0 || dk_selection(s, &sel, &c->pb) < 0 ||
        dk_str(c->body, "text", 1, DK_TEXT_MAX, &text, &c->pb) < 0 || dk_ready(c->sc, c->d, &c->pb) < 0 ||
        dk_need(c, "xclip", "xclip") < 0)
        return -1;
    /* xclip forks a child that owns the selection until another owner
     * takes it or X goes away (the desktop's stop). */
    const char *args[] = { "xclip", "-selection", sel, "-i", NULL };
    dk_out o;
    if (dk_tool(c->sc, c->d, args, text, strlen(text), DK_QUERY_MAX, DK_INPUT_MS, &o, &c->pb, 0) < 0)
        return -1;
    dk_out_free(&o);
    /* xclip's parent exits before its child owns the selection: answer
     * once a read gives the text back, so a GET right after sees it. */
    const char *check[] = { "xclip", "-selection", sel, "-o", NULL };
    int64_t deadline = srv_now_ms() + DK_INPUT_MS;
    for (;;) {
        dk_problem ignored = { 0 };
        int same = 0;
        if (dk_tool(c->sc, c->d, check, NULL, 0, DK_TEXT_MAX + 1, DK_INPUT_MS, &o, &ignored, 0) == 0) {
            same = o.len == strlen(text) && memcmp(o.out, text, o.len) == 0;
            dk_out_free(&o);
        }
        json_decref(ignored.ext);
        if (same)
            return dk_ok_reply(c);
        if (srv_now_ms() >= deadline) {
            DK_INPUT_P(&c->pb, "the %s selection did not take the text (xclip)", sel);
            return -1;
        }
    }
}

/* Start argv (env: its environment) as a launched app of the desktop: a
 * listed process of owner "desktop" (its output in GET /processes/{id}/logs),
 * stopped with the desktop and gone with the cell.  c->res is the
 * reference's {processId, pid}; *pid its pid.  The caller checked dk_ready. */
static int dk_app_start(dk_ctx *c, const char *const *argv, const char *const *env, pid_t *pid)
{
    /* Exited apps are dropped here (they stay in /processes), so the list
     * holds at most DK_APPS_MAX running ones. */
    unsigned apps = 0;
    for (dk_app **pp = &c->d->apps; *pp;) {
        dk_app *a = *pp;
        if (dk_child_running(&a->c, NULL)) {
            apps++;
            pp = &a->next;
            continue;
        }
        *pp = a->next;
        dk_child_clear(&a->c);
        free(a);
    }
    if (apps >= DK_APPS_MAX) {
        dk_set(&c->pb, 409, "conflict", "Conflict", "%u desktop apps are running already (the most there may be)",
               apps);
        return -1;
    }
    dk_app *a = calloc(1, sizeof *a);
    if (!a) {
        DK_FAILED_P(&c->pb, "out of memory");
        return -1;
    }
    cell_error e = { 0 };
    a->c.name = "app";
    a->c.listed = 1;
    a->c.fds[0] = a->c.fds[1] = a->c.fds[2] = -1;
    a->c.p = srv_procs_start_desktop(c->sc, argv, env, &e);
    if (!a->c.p) {
        free(a);
        if (e.code == ECONNRESET)
            DK_INACTIVE_P(&c->pb, "the cell stopped");
        else
            DK_FAILED_P(&c->pb, "failed to launch %s: %s", argv[0], e.message);
        return -1;
    }
    snprintf(a->id, sizeof a->id, "%s", a->c.p->id);
    a->next = c->d->apps;
    c->d->apps = a;
    pthread_mutex_lock(&c->sc->plock);
    *pid = a->c.p->pid;
    pthread_mutex_unlock(&c->sc->plock);
    c->res = json_pack("{s:s, s:i}", "processId", a->id, "pid", (int)*pid);
    return c->res ? 0 : (DK_FAILED_P(&c->pb, "out of memory"), -1);
}

/* POST launch {app, args, wait}: the app as a process of the desktop, with
 * DISPLAY set; wait: until it maps a window (its _NET_WM_PID). */
static int dk_launch(dk_ctx *c)
{
    const char *app;
    int wait = 0;
    json_t *args = json_object_get(c->body, "args");
    if (dk_str(c->body, "app", 1, 4096, &app, &c->pb) < 0)
        return -1;
    if (!*app) {
        DK_INVALID(&c->pb, "app must not be empty");
        return -1;
    }
    json_t *wv = json_object_get(c->body, "wait");
    if (wv && !json_is_null(wv) && !json_is_boolean(wv)) {
        DK_INVALID(&c->pb, "field \"wait\" must be true or false");
        return -1;
    }
    wait = json_is_true(wv);
    if (args && !json_is_null(args) && (!json_is_array(args) || json_array_size(args) > 48)) {
        DK_INVALID(&c->pb, "field \"args\" must be an array of at most 48 strings");
        return -1;
    }
    const char *argv[56];
    size_t n = 0;
    char denv[24];
    snprintf(denv, sizeof denv, "DISPLAY=:%d", c->d->display);
    argv[n++] = app;
    size_t i;
    json_t *v;
    json_array_foreach(args, i, v) {
        if (!json_is_string(v) || strlen(json_string_value(v)) != json_string_length(v)) {
            DK_INVALID(&c->pb, "args[%zu] must be a string without NUL characters", i);
            return -1;
        }
        argv[n++] = json_string_value(v);
    }
    argv[n] = NULL;
    if (dk_ready(c->sc, c->d, &c->pb) < 0)
        return -1;
    const char *check[] = { "sh", "-c", "command -v \"$1\" >/dev/null 2>&1", "sh", app, NULL };
    dk_out o;
    cell_error e = { 0 };
    int found = dk_exec(c->sc, check, NULL, 0, 1024, DK_INPUT_MS, &o, &e) == 0 && dk_ok(&o);
    if (o.out)
        dk_out_free(&o);
    if (!found) {
        dk_set(&c->pb, 404, "not_found", "Not Found", "application %s not found in the cell (not on PATH)", app);
        return -1;
    }
    const char *env[] = { denv, NULL };
    pid_t pid;
    if (dk_app_start(c, argv, env, &pid) < 0)
        return -1;
    if (wait) {
        char ps[24];
        snprintf(ps, sizeof ps, "%d", (int)pid);
        const char *search[] = { "timeout", "10", "xdotool", "search", "--sync", "--onlyvisible", "--pid", ps, NULL };
        dk_problem ignored = { 0 };
        if (dk_tool(c->sc, c->d, search, NULL, 0, 4096, DK_START_MS, &o, &ignored, 0) == 0) {
            char first[32];
            snprintf(first, sizeof first, "%.*s", (int)strcspn(o.out, "\n"), o.out);
            if (first[0])
                json_object_set_new(c->res, "windowId", json_string(first));
            dk_out_free(&o);
        }
        json_decref(ignored.ext);
    }
    return 0;
}

/* The local path a target of POST open names ("" for a URL of another
 * scheme): an absolute or relative path, or a file:// URL without
 * percent-escapes (with them, xdg-open's own check speaks). */
static const char *dk_open_path(const char *target)
{
    size_t scheme = strspn(target, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789+.-");
    if (strncmp(target, "file://", 7) == 0)
        return strchr(target + 7, '%') || target[7] != '/' ? "" : target + 7;
    if (scheme && target[scheme] == ':' && ((target[0] | 0x20) >= 'a' && (target[0] | 0x20) <= 'z'))
        return "";                                      /* https:, mailto:, ... */
    return target;
}

/* POST open {target}: `xdg-open TARGET` in the cell, as the reference does:
 * a launched app of the desktop (owner "desktop", in /processes, stopped
 * with the desktop), answered at once with {processId, pid}; xdg-open picks
 * the handler (the browser for a URL, the MIME type's app for a file) and
 * its exit status is the process's.  Beyond the reference: a target that
 * xdg-open would take as an option, an empty one and control characters
 * are refused (400), and a file that does not exist in the cell is a 404
 * rather than a process that fails.  The target is one argv entry, never
 * shell text; paths are the cell's (its root is all xdg-open sees). */
static int dk_open(dk_ctx *c)
{
    const char *target;
    if (dk_str(c->body, "target", 1, DK_TARGET_MAX, &target, &c->pb) < 0)
        return -1;
    if (!*target) {
        DK_INVALID(&c->pb, "field \"target\" must not be empty: give a URL or a file path in the cell");
        return -1;
    }
    if (target[0] == '-') {
        DK_INVALID(&c->pb, "field \"target\" must not start with '-' (xdg-open would read it as an option): "
                           "write ./%s for a file", target);
        return -1;
    }
    for (const unsigned char *p = (const unsigned char *)target; *p; p++)
        if (*p < 0x20 || *p == 0x7f) {
            DK_INVALID(&c->pb, "field \"target\" must not contain control characters (byte %u at %zu)", *p,
                       (size_t)(p - (const unsigned char *)target));
            return -1;
        }
    if (dk_ready(c->sc, c->d, &c->pb) < 0)
        return -1;
    /* One run in the cell checks that xdg-open is there (3) and the file is
     * (4), and writes the desktop's defaults once: http, https and HTML
     * open in chromium with --no-sandbox, which it needs as the cell's root
     * (the cell is the sandbox), run without Debian's /usr/bin/chromium
     * wrapper, which stops where /etc/chromium.d is missing (the host
     * image).  They come after the user's own ~/.config/mimeapps.list, and
     * an image without chromium falls through to its other handlers. */
    const char *path = dk_open_path(target);
    const char *check[] = {
        "sh", "-c",
        "command -v xdg-open >/dev/null 2>&1 || exit 3; [ -z \"$1\" ] || [ -e \"$1\" ] || exit 4\n"
        "d=" DK_XDG_DIR "; [ -f $d/mimeapps.list ] && exit 0; mkdir -p $d/applications || exit 5\n"
        "printf '[Desktop Entry]\\nType=Application\\nName=Chromium\\nExec=/usr/lib/chromium/chromium --no-sandbox "
        "--no-first-run --disable-dev-shm-usage %%U\\n' >$d/applications/cell-browser.desktop || exit 5\n"
        "printf '[Default Applications]\\nx-scheme-handler/http=cell-browser.desktop\\n"
        "x-scheme-handler/https=cell-browser.desktop\\ntext/html=cell-browser.desktop\\n' >$d/mimeapps.list.new && "
        "mv $d/mimeapps.list.new $d/mimeapps.list || exit 5",
        "sh", path, NULL };
    dk_out o;
    cell_error e = { 0 };
    if (dk_exec(c->sc, check, NULL, 0, 1024, DK_INPUT_MS, &o, &e) < 0) {
        DK_FAILED_P(&c->pb, "could not check the target in the cell: %s", e.message);
        return -1;
    }
    int code = o.exited && WIFEXITED(o.status) ? WEXITSTATUS(o.status) : -1;
    dk_out_free(&o);
    if (code == 3) {
        dk_set(&c->pb, 503, "desktop_dependencies_missing", "Desktop Dependencies Missing",
               "Desktop dependencies are not installed in this cell's image: xdg-open. Run `apt-get install -y "
               "xdg-utils` in the image");
        c->pb.ext = json_pack("{s:[s], s:s}", "missingDependencies", "xdg-open", "installCommand",
                              "apt-get install -y xdg-utils");
        return -1;
    }
    if (code == 4) {
        dk_set(&c->pb, 404, "not_found", "Not Found", "target %s does not exist in the cell", path);
        return -1;
    }
    if (code != 0) {
        DK_FAILED_P(&c->pb, "could not check the target in the cell (the check's status %d)", code);
        return -1;
    }
    char denv[24];
    snprintf(denv, sizeof denv, "DISPLAY=:%d", c->d->display);
    const char *argv[] = { "xdg-open", target, NULL };
    const char *env[] = { denv, "XDG_CONFIG_DIRS=" DK_XDG_DIR ":/etc/xdg",
                          "XDG_DATA_DIRS=" DK_XDG_DIR ":/usr/local/share:/usr/share", NULL };
    pid_t pid;
    return dk_app_start(c, argv, env, &pid);
}

/* ---- recordings: ffmpeg x11grab in the cell, files in DK_DIR -------------------- */
static json_t *dk_rec_json(const dk_rec *x)
{
    static const char *const st[] = { "recording", "completed", "failed" };
    char when[40], file[64];
    dk_iso_time(x->started_ms, when, sizeof when);
    snprintf(file, sizeof file, "%s.mp4", x->id);
    json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:I}", "id", x->id, "fileName", file, "startedAt", when, "status",
                          st[x->status], "bytes", (json_int_t)x->bytes);
    if (x->ended_ms) {
        dk_iso_time(x->ended_ms, when, sizeof when);
        json_object_set_new(o, "endedAt", json_string(when));
    }
    return o;
}

static dk_rec *dk_rec_find(dk_ctx *c)
{
    const char *id = srv_router_param(c->m, "rid");
    for (dk_rec *x = c->d->recs; x; x = x->next)
        if (strcmp(x->id, id) == 0)
            return x;
    dk_set(&c->pb, 404, "not_found", "Not Found", "no desktop recording %s", id);
    return NULL;
}

static int64_t dk_file_size(scell *sc, const char *path)
{
    const char *argv[] = { "stat", "-c", "%s", path, NULL };
    dk_out o;
    cell_error e = { 0 };
    if (dk_exec(sc, argv, NULL, 0, 64, DK_INPUT_MS, &o, &e) < 0)
        return 0;
    int64_t n = dk_ok(&o) ? atoll(o.out) : 0;
    dk_out_free(&o);
    return n;
}

static int dk_rec_start(dk_ctx *c)
{
    long fps = 30;
    if (dk_int(c->body, "fps", 0, 1, 60, &fps, NULL, &c->pb) < 0 || dk_ready(c->sc, c->d, &c->pb) < 0 ||
        dk_need(c, "ffmpeg", "ffmpeg") < 0)
        return -1;
    unsigned n = 0;
    for (dk_rec *x = c->d->recs; x; x = x->next) {
        if (x->c.p && dk_child_running(&x->c, NULL)) {
            dk_set(&c->pb, 409, "conflict", "Conflict", "recording %s is still active: stop it first", x->id);
            return -1;
        }
        n++;
    }
    if (n >= DK_RECORDINGS_MAX) {
        dk_set(&c->pb, 409, "conflict", "Conflict", "%u recordings are kept (the most there may be): delete one",
               n);
        return -1;
    }
    dk_rec *x = calloc(1, sizeof *x);
    if (!x) {
        DK_FAILED_P(&c->pb, "out of memory");
        return -1;
    }
    snprintf(x->id, sizeof x->id, "rec_%u", ++c->d->next_rec);
    snprintf(x->path, sizeof x->path, DK_DIR "/recordings/%s.mp4", x->id);
    char size[32], rate[24], input[24], log[96];
    snprintf(size, sizeof size, "%dx%d", c->d->width & ~1, c->d->height & ~1);
    snprintf(rate, sizeof rate, "%ld", fps);
    snprintf(input, sizeof input, ":%d", c->d->display);
    snprintf(log, sizeof log, DK_DIR "/recordings/%s.log", x->id);
    /* stdin stays ours: "q" ends the recording cleanly (a playable file). */
    const char *argv[] = { "ffmpeg", "-nostats", "-loglevel", "error", "-f", "x11grab", "-video_size", size,
                           "-framerate", rate, "-i", input, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt",
                           "yuv420p", "-movflags", "+faststart", "-y", x->path, NULL };
    if (dk_spawn(c->sc, &x->c, "ffmpeg", log, argv, 1, &c->pb) < 0) {
        free(x);
        return -1;
    }
    x->started_ms = srv_now_ms();
    x->next = c->d->recs;
    c->d->recs = x;
    c->res = dk_rec_json(x);
    return 0;
}

static int dk_rec_stop(dk_ctx *c)
{
    dk_rec *x = c->d->recs;
    while (x && !x->c.p)
        x = x->next;
    if (!x) {
        dk_set(&c->pb, 409, "conflict", "Conflict", "no desktop recording is active");
        return -1;
    }
    int st = 0;
    if (x->c.fds[0] >= 0 && write(x->c.fds[0], "q", 1) != 1)
        srv_slog(SLOG_WARN, SLOG_F("cell", c->sc->id), "desktop recording %s: cannot send q: %s", x->id, strerror(errno));
    int exited = srv_procs_wait_exit(x->c.p, srv_now_ms() + 10000, &st);
    if (!exited)
        dk_child_stop(&x->c);
    else
        dk_child_clear(&x->c);
    x->ended_ms = srv_now_ms();
    x->bytes = dk_file_size(c->sc, x->path);
    x->status = exited && WIFEXITED(st) && WEXITSTATUS(st) == 0 && x->bytes > 0 ? 1 : 2;
    c->res = dk_rec_json(x);
    return 0;
}

static int dk_rec_list(dk_ctx *c)
{
    json_t *a = json_array();
    for (dk_rec *x = c->d->recs; x; x = x->next)
        json_array_insert_new(a, 0, dk_rec_json(x));
    c->res = json_pack("{s:o}", "recordings", a);
    return 0;
}

static int dk_rec_get(dk_ctx *c)
{
    dk_rec *x = dk_rec_find(c);
    return x ? (c->res = dk_rec_json(x), 0) : -1;
}

/* GET recordings/{rid}/download streams the file from a transfer process
 * in the cell (cell_file_read_nofollow) to the client, one DK_REC_BLOCK at
 * a time as the client takes it: the daemon holds one block, the cell's
 * transfer process waits on its pipe when the client is slow, and the
 * desktop's lock is not held while the bytes move (only for the open).
 * What the agent in the cell may have put in place of a finished
 * recording is checked before the status line where it can be: a symlink
 * anywhere in the path (ELOOP), a device, FIFO or directory (init opens
 * regular files only), a size other than the one the recording had when
 * it stopped.  At most that many bytes go out; a file that shrinks or
 * grows while it is sent ends the response short of its Content-Length
 * (a broken transfer the client sees), never padded or extended. */
typedef struct dk_dl {
    cell_xfer x;
    uint64_t  size;                     /* the recording's at its stop: the Content-Length */
    srv      *s;
    char      token_id[16];             /* who asked: a revocation ends the body (conns.c) */
} dk_dl;

/* The next bytes of the transfer, or <= 0; a revocation ends the wait for
 * a slow cell (conns.c), not the transfer's stall limit. */
static ssize_t dk_dl_next(dk_dl *dl, char *buf, size_t len)
{
    if (srv_conns_wait_readable(dl->s, dl->token_id, dl->x.fd) <= 0)
        return -1;
    return cell_xfer_read(&dl->x, buf, len, NULL);
}

static ssize_t dk_dl_read(void *cls, uint64_t pos, char *buf, size_t max)
{
    dk_dl *dl = cls;
    if (pos >= dl->size)
        return MHD_CONTENT_READER_END_OF_STREAM;
    uint64_t left = dl->size - pos;
    ssize_t n = dk_dl_next(dl, buf, max < left ? max : (size_t)left);
    if (n <= 0)                                         /* shorter than at its stop, or the transfer failed */
        return MHD_CONTENT_READER_END_WITH_ERROR;
    if ((uint64_t)n == left) {
        /* The last bytes go out only if the file ends here and the
         * transfer process says the read went well. */
        char more;
        if (dk_dl_next(dl, &more, 1) != 0 || cell_xfer_end(&dl->x, NULL) < 0)
            return MHD_CONTENT_READER_END_WITH_ERROR;
    }
    return n;
}

static void dk_dl_free(void *cls)
{
    dk_dl *dl = cls;
    cell_xfer_end(&dl->x, NULL);                        /* the transfer process gets EPIPE if it still writes */
    free(dl);
}

static int dk_rec_download(dk_ctx *c)
{
    dk_rec *x = dk_rec_find(c);
    if (!x)
        return -1;
    if (x->status != 1) {
        dk_set(&c->pb, 409, "conflict", "Conflict", "recording %s is %s", x->id,
               x->status == 0 ? "still active" : "failed");
        return -1;
    }
    dk_dl *dl = calloc(1, sizeof *dl);
    if (!dl) {
        DK_FAILED_P(&c->pb, "out of memory");
        return -1;
    }
    dl->size = (uint64_t)x->bytes;
    dl->s = c->r->s;
    snprintf(dl->token_id, sizeof dl->token_id, "%s", c->r->authed ? c->r->tok.id : "");
    cell_error e = { 0 };
    if (WITH_CELL(c->sc, &e, cell_file_read_nofollow(c->sc->c, x->path, &dl->x, &e)) < 0) {
        free(dl);
        if (e.code == ECONNRESET)
            DK_INACTIVE_P(&c->pb, "the cell stopped");
        else if (e.code == ENOENT)
            dk_set(&c->pb, 404, "not_found", "Not Found", "the file of recording %s (%s) is gone from the cell",
                   x->id, x->path);
        else if (e.code == ELOOP || e.code == EINVAL || e.code == EISDIR || e.code == EXDEV)
            dk_set(&c->pb, 409, "conflict", "Conflict", "the file of recording %s (%s) is no longer a regular file "
                   "in the cell: a symlink, device, FIFO or directory was put in its place (%s)", x->id, x->path,
                   e.message);
        else
            DK_FAILED_P(&c->pb, "cannot read recording %s in the cell: %s", x->id, e.message);
        return -1;
    }
    if (dl->x.size != dl->size) {
        dk_set(&c->pb, 409, "conflict", "Conflict", "recording %s changed in the cell after it stopped: %lld bytes "
               "then, %llu now", x->id, (long long)x->bytes, (unsigned long long)dl->x.size);
        dk_dl_free(dl);
        return -1;
    }
    struct MHD_Response *resp = MHD_create_response_from_callback(dl->size, DK_REC_BLOCK, dk_dl_read, dl,
                                                                  dk_dl_free);
    if (!resp) {
        dk_dl_free(dl);
        DK_FAILED_P(&c->pb, "out of memory");
        return -1;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "video/mp4");
    srv_reply_response(c->r, 200, resp);
    return 1;
}

static int dk_rec_delete(dk_ctx *c)
{
    dk_rec *x = dk_rec_find(c);
    if (!x)
        return -1;
    if (x->c.p) {
        dk_set(&c->pb, 409, "conflict", "Conflict", "recording %s is still active: stop it first", x->id);
        return -1;
    }
    const char *argv[] = { "rm", "-f", x->path, NULL };
    dk_out o;
    cell_error e = { 0 };
    if (dk_exec(c->sc, argv, NULL, 0, 1024, DK_INPUT_MS, &o, &e) == 0)
        dk_out_free(&o);
    for (dk_rec **pp = &c->d->recs; *pp; pp = &(*pp)->next)
        if (*pp == x) {
            *pp = x->next;
            break;
        }
    free(x);
    srv_reply_empty(c->r, 204);
    return 1;
}

/* ---- the reference's WebRTC stream, without WebRTC ---------------------------
 * sandbox-agent streams the desktop over WebRTC (neko): POST stream/start
 * enables it, GET stream/status says {active}, and the SDK's
 * connectDesktopStream() then opens the signaling WebSocket and negotiates a
 * peer connection.  This daemon has no WebRTC (no STUN/TURN, no UDP ports):
 * start/stop/status keep the reference's bookkeeping and shapes, with
 * `liveView`, the path of what does carry the screen (GET /desktop/live, a
 * WebSocket of JPEG frames and JSON input, desktop_live.c); the signaling
 * itself answers 501 naming it.  So an SDK client's calls before connecting
 * work and its connect fails with that reason, never with a silent stream. */
static int dk_stream_reply(dk_ctx *c)
{
    char live[96];
    snprintf(live, sizeof live, "/cells/%s/v1/desktop/live", c->sc->id);
    c->res = json_pack("{s:b, s:s}", "active", c->d->streaming && c->d->state == DK_ACTIVE, "liveView", live);
    return c->res ? 0 : (DK_FAILED_P(&c->pb, "out of memory"), -1);
}

static int dk_stream(dk_ctx *c, int on)
{
    dk_refresh(c->sc, c->d);
    if (on > 0) {
        /* The reference's answer to a start before the desktop's. */
        if (c->d->state != DK_ACTIVE) {
            dk_set(&c->pb, 409, "conflict", "Conflict", "conflict: desktop runtime is not active");
            c->pb.ext = json_pack("{s:{s:s}}", "details", "message", "desktop runtime is not active");
            return -1;
        }
        c->d->streaming = 1;
    } else if (on == 0) {
        c->d->streaming = 0;
    }
    return dk_stream_reply(c);
}

static int dk_signaling(dk_ctx *c)
{
    dk_set(&c->pb, 501, "not_implemented", "Not Implemented",
           "WebRTC signaling (GET /v1/desktop/stream/signaling) is not implemented by cell: it has no WebRTC "
           "(no STUN/TURN, no UDP ports). The live view is a WebSocket at GET /cells/%s/v1/desktop/live "
           "(JPEG frames out, JSON input in; docs/desktop.md)", c->sc->id);
    return -1;
}

/* ---- routing -----------------------------------------------------------------
 * routes.c lists every desktop route (srv_h_desktop for each); the matched
 * pattern's tail and the method name the operation here. */
enum dk_op {
    OP_STATUS, OP_START, OP_STOP, OP_INFO, OP_SHOT, OP_REGION, OP_POS, OP_MOVE, OP_CLICK, OP_DOWN, OP_UP, OP_DRAG,
    OP_SCROLL, OP_TYPE, OP_PRESS, OP_KDOWN, OP_KUP, OP_WINDOWS, OP_FOCUSED, OP_WFOCUS, OP_WMOVE, OP_WRESIZE,
    OP_CLIP_GET, OP_CLIP_SET, OP_LAUNCH, OP_OPEN, OP_REC_START, OP_REC_STOP, OP_RECS, OP_REC, OP_REC_DL, OP_REC_DEL,
    OP_STREAM_STATUS, OP_STREAM_START, OP_STREAM_STOP, OP_SIGNALING,
};
static const struct { const char *method, *tail; enum dk_op op; } dk_table[] = {
    { "GET", "/status", OP_STATUS },                 { "POST", "/start", OP_START },
    { "POST", "/stop", OP_STOP },                    { "GET", "/display/info", OP_INFO },
    { "GET", "/screenshot", OP_SHOT },               { "GET", "/screenshot/region", OP_REGION },
    { "GET", "/mouse/position", OP_POS },            { "POST", "/mouse/move", OP_MOVE },
    { "POST", "/mouse/click", OP_CLICK },            { "POST", "/mouse/down", OP_DOWN },
    { "POST", "/mouse/up", OP_UP },                  { "POST", "/mouse/drag", OP_DRAG },
    { "POST", "/mouse/scroll", OP_SCROLL },          { "POST", "/keyboard/type", OP_TYPE },
    { "POST", "/keyboard/press", OP_PRESS },         { "POST", "/keyboard/down", OP_KDOWN },
    { "POST", "/keyboard/up", OP_KUP },              { "GET", "/windows", OP_WINDOWS },
    { "GET", "/windows/focused", OP_FOCUSED },       { "POST", "/windows/{wid}/focus", OP_WFOCUS },
    { "POST", "/windows/{wid}/move", OP_WMOVE },     { "POST", "/windows/{wid}/resize", OP_WRESIZE },
    { "GET", "/clipboard", OP_CLIP_GET },            { "POST", "/clipboard", OP_CLIP_SET },
    { "POST", "/launch", OP_LAUNCH },                { "POST", "/open", OP_OPEN },
    { "POST", "/recording/start", OP_REC_START },    { "POST", "/recording/stop", OP_REC_STOP },
    { "GET", "/recordings", OP_RECS },               { "GET", "/recordings/{rid}", OP_REC },
    { "GET", "/recordings/{rid}/download", OP_REC_DL }, { "DELETE", "/recordings/{rid}", OP_REC_DEL },
    { "GET", "/stream/status", OP_STREAM_STATUS },   { "POST", "/stream/start", OP_STREAM_START },
    { "POST", "/stream/stop", OP_STREAM_STOP },      { "GET", "/stream/signaling", OP_SIGNALING },
};
#define DK_N_ROUTES (sizeof dk_table / sizeof dk_table[0])

static int dk_dispatch(dk_ctx *c, enum dk_op op)
{
    switch (op) {
    case OP_STATUS:    return dk_status(c);
    case OP_START:     return dk_start(c);
    case OP_STOP:      return dk_stop(c);
    case OP_INFO:      return dk_display_info(c);
    case OP_SHOT:      return dk_screenshot(c, 0);
    case OP_REGION:    return dk_screenshot(c, 1);
    case OP_POS:       return dk_position(c);
    case OP_MOVE:      return dk_move(c);
    case OP_CLICK:     return dk_click(c);
    case OP_DOWN:      return dk_button_action(c, "mousedown");
    case OP_UP:        return dk_button_action(c, "mouseup");
    case OP_DRAG:      return dk_drag(c);
    case OP_SCROLL:    return dk_scroll(c);
    case OP_TYPE:      return dk_type(c);
    case OP_PRESS:     return dk_press(c);
    case OP_KDOWN:     return dk_key_action(c, "keydown");
    case OP_KUP:       return dk_key_action(c, "keyup");
    case OP_WINDOWS:   return dk_windows_list(c);
    case OP_FOCUSED:   return dk_focused(c);
    case OP_WFOCUS:    return dk_window_action(c, "focus");
    case OP_WMOVE:     return dk_window_action(c, "move");
    case OP_WRESIZE:   return dk_window_action(c, "resize");
    case OP_CLIP_GET:  return dk_clipboard_get(c);
    case OP_CLIP_SET:  return dk_clipboard_set(c);
    case OP_LAUNCH:    return dk_launch(c);
    case OP_REC_START: return dk_rec_start(c);
    case OP_REC_STOP:  return dk_rec_stop(c);
    case OP_RECS:      return dk_rec_list(c);
    case OP_REC:       return dk_rec_get(c);
    case OP_REC_DL:    return dk_rec_download(c);
    case OP_REC_DEL:   return dk_rec_delete(c);
    case OP_OPEN:      return dk_open(c);
    case OP_STREAM_STATUS: return dk_stream(c, -1);
    case OP_STREAM_START:  return dk_stream(c, 1);
    case OP_STREAM_STOP:   return dk_stream(c, 0);
    case OP_SIGNALING: return dk_signaling(c);
    }
    dk_set(&c->pb, 500, "internal", "Internal", "unknown desktop operation %d", (int)op);
    return -1;
}

int srv_h_desktop(sreq *r)
{
    const char *pattern = r->m.route ? r->m.route->pattern : "";
    const char *tail = strstr(pattern, "/v1/desktop");
    tail = tail ? tail + strlen("/v1/desktop") : "";
    size_t i = 0;
    while (i < DK_N_ROUTES && (strcmp(dk_table[i].tail, tail) != 0 || strcmp(dk_table[i].method, r->method) != 0))
        i++;
    if (i == DK_N_ROUTES)                               /* routes.c and dk_table disagree */
        return srv_reply_problem(r, 500, "internal", "no desktop operation for %s %s", r->method, pattern);
    dk_ctx c = { .r = r, .sc = r->cell, .m = &r->m };
    if (strcmp(r->method, "POST") == 0 && r->body_len) {
        if (srv_req_json(r, &c.body) < 0)
            return MHD_YES;
    }
    if (!c.body)
        c.body = json_object();
    c.d = dk_get(r->cell);
    if (!c.d) {
        json_decref(c.body);
        return srv_reply_problem(r, 500, "internal", "out of memory");
    }
    pthread_mutex_lock(&c.d->lock);
    int rc = dk_dispatch(&c, dk_table[i].op);
    pthread_mutex_unlock(&c.d->lock);
    json_decref(c.body);
    if (rc < 0)
        return dk_reply_problem(r, &c.pb);
    if (rc > 0)
        return MHD_YES;
    return srv_reply_json(r, 200, c.res ? c.res : json_object());
}

/* ---- for the live view (desktop_live.c) ----------------------------------------
 * The live view keeps its own socket and frame source; it only asks where
 * the desktop is and applies input exactly as the HTTP routes do. */
int srv_desktop_live_target(scell *sc, int *display, int *width, int *height)
{
    struct desktop *d = dk_get(sc);
    if (!d)
        return -1;
    pthread_mutex_lock(&d->lock);
    dk_refresh(sc, d);
    int active = d->state == DK_ACTIVE;
    if (active) {
        *display = d->display;
        *width = d->width;
        *height = d->height;
    }
    pthread_mutex_unlock(&d->lock);
    return active ? 0 : -1;
}

int srv_desktop_input(scell *sc, const char *tail, json_t *body, char *msg, size_t size)
{
    size_t i = 0;
    while (i < DK_N_ROUTES && (strcmp(dk_table[i].method, "POST") != 0 || strcmp(dk_table[i].tail, tail) != 0))
        i++;
    /* Only pointer and keyboard input: nothing that needs the request (c.r). */
    if (i == DK_N_ROUTES || dk_table[i].op < OP_MOVE || dk_table[i].op > OP_KUP) {
        snprintf(msg, size, "%s is not a desktop input", tail);
        return 400;
    }
    dk_ctx c = { .sc = sc, .body = body };
    if (!(c.d = dk_get(sc))) {
        snprintf(msg, size, "out of memory");
        return 500;
    }
    pthread_mutex_lock(&c.d->lock);
    int rc = dk_dispatch(&c, dk_table[i].op);
    pthread_mutex_unlock(&c.d->lock);
    json_decref(c.res);
    if (rc >= 0)
        return 0;
    snprintf(msg, size, "%s", c.pb.msg);
    dk_ascii(msg);
    json_decref(c.pb.ext);
    return (int)c.pb.status;
}
