/* rundiff.c: a run's diff and its apply (issue 12; runs.h).
 *
 * The diff is computed inside the run's cell, by git from the cell's image,
 * over the trees the agent had: the daemon never walks a tree the agent
 * wrote (symlinks, hard links, special files, millions of entries) and
 * never runs git on the host over it.  What comes back is as hostile as the
 * agent: it is read with bounded memory (the patch streams to its artifact
 * file, capped; the listings are capped), parsed strictly, and turned into
 * valid UTF-8 before it becomes JSON.  The script (rundiff.sh, embedded
 * below) says which git settings and attributes it neutralises and why.
 *
 * The apply runs in a short-lived cell of its own (host image, no network,
 * a throwaway root): the host directory bound read-write at /repo, the
 * patch handed over as stdin, git apply run as the directory's owner, so a patch can
 * write nothing that owner could not, and no path in it can reach outside
 * /repo (git apply refuses "..", .git components and paths beyond
 * symlinks; absolute symlinks in the directory resolve inside the cell). */
#include "server/rundiff.h"
#include "server/slog.h"

#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

extern const char srv_rundiff_sh_start[], srv_rundiff_sh_end[];
/* With the other blobs, away from .rodata (see src/init/blob.S); the
 * trailing NUL makes it a C string (the script holds none). */
__asm__(".section cell_blobs, \"a\"\n"
        ".global srv_rundiff_sh_start\n"
        "srv_rundiff_sh_start:\n"
        ".incbin \"src/server/rundiff.sh\"\n"
        ".global srv_rundiff_sh_end\n"
        "srv_rundiff_sh_end:\n"
        ".byte 0\n"
        ".previous\n");

#define RUNDIFF_PATH        "PATH=/usr/bin:/bin"   /* not /usr/local: a run cell's root is the agent's to write */
#define RUNDIFF_NO_GIT      3       /* the script's exit: the image has no git */
#define RUNDIFF_NO_APPLY    2       /* git apply --check refused the patch */
/* A diff of a big tree hashes every file; past this (or the operator's
 * ceiling on a process run in a cell, --limit run.timeoutMs, if lower) the
 * script is killed: a hostile tree (a sparse file of terabytes, millions
 * of files) must not hold the run, and its cell, forever. */
#define RUNDIFF_TIMEOUT_MS  (10 * 60 * 1000)
#define RUNDIFF_GRACE_MS    1000    /* output still read after the script exited */
#define RUNDIFF_TAIL        65536   /* output kept: the message, the conflicts git names */
#define RUNDIFF_CONFLICTS   100
#define APPLY_TIMEOUT_MS    (2 * 60 * 1000)
#define APPLY_MEMORY        (512ull << 20)
#define APPLY_PIDS          64
#define APPLY_DISK          (96ull << 20)   /* /tmp holds a copy of the patch (64 MiB at most) */
#define APPLY_REPO          "/repo"

/* ---- the reader of the script's output --------------------------------------------- */
enum { RD_HEAD, RD_NAMES, RD_NUMSTAT, RD_PATCH };

struct rundiff_reader {
    rundiff_limits lim;
    int      patch_fd;
    int      phase;
    char     head[64];
    size_t   head_len;
    uint64_t left;                  /* bytes of the current listing still to come */
    uint64_t numstat_len;           /* announced in the head */
    char    *list[2];               /* names, numstat: at most RUNDIFF_LIST_MAX each */
    size_t   list_len[2];
    int      list_cut[2];
    char    *inline_buf;            /* the first lim.inline_max bytes of the patch */
    size_t   inline_len;
    uint64_t patch_bytes;           /* written to the artifact */
    int      artifact_full;         /* more came than artifact_max */
};

rundiff_reader *srv_rundiff_reader_new(const rundiff_limits *lim, int patch_fd)
{
    rundiff_reader *rd = calloc(1, sizeof *rd);
    if (!rd)
        return NULL;
    rd->lim = *lim;
    rd->patch_fd = patch_fd;
    return rd;
}

void srv_rundiff_reader_free(rundiff_reader *rd)
{
    if (!rd)
        return;
    free(rd->list[0]);
    free(rd->list[1]);
    free(rd->inline_buf);
    free(rd);
}

/* Past every listing that is complete (or empty): an empty diff is the
 * header alone. */
static void reader_skip_empty(rundiff_reader *rd)
{
    while (rd->phase != RD_PATCH && rd->left == 0) {
        rd->phase++;
        rd->left = rd->phase == RD_NUMSTAT ? rd->numstat_len : 0;
    }
}

/* "cell-rundiff 1 N M": digits only, no sign, no leading spaces. */
static int reader_head(rundiff_reader *rd, cell_error *err)
{
    rd->head[rd->head_len] = '\0';
    const char *p = rd->head;
    if (strncmp(p, "cell-rundiff 1 ", 15) != 0)
        return util_fail(err, EPROTO, "the diff script's output does not start with its header");
    p += 15;
    uint64_t v[2];
    for (int i = 0; i < 2; i++) {
        if (*p < '0' || *p > '9')
            return util_fail(err, EPROTO, "the diff script's header is malformed");
        v[i] = 0;
        while (*p >= '0' && *p <= '9') {
            if (v[i] > (UINT64_MAX - 9) / 10)
                return util_fail(err, EPROTO, "the diff script's header is malformed");
            v[i] = v[i] * 10 + (uint64_t)(*p++ - '0');
        }
        if (*p++ != (i == 0 ? ' ' : '\0'))
            return util_fail(err, EPROTO, "the diff script's header is malformed");
    }
    rd->left = v[0];
    rd->numstat_len = v[1];
    rd->phase = RD_NAMES;
    reader_skip_empty(rd);
    return 0;
}

/* Keep what fits of a listing; the rest is counted and dropped. */
static int reader_list(rundiff_reader *rd, int which, const char *data, size_t n, cell_error *err)
{
    size_t room = RUNDIFF_LIST_MAX - rd->list_len[which];
    size_t keep = n < room ? n : room;
    if (keep) {
        if (!rd->list[which] && !(rd->list[which] = malloc(RUNDIFF_LIST_MAX)))
            return util_fail(err, ENOMEM, "out of memory");
        memcpy(rd->list[which] + rd->list_len[which], data, keep);
        rd->list_len[which] += keep;
    }
    if (keep < n)
        rd->list_cut[which] = 1;
    return 0;
}

static int reader_patch(rundiff_reader *rd, const char *data, size_t n, cell_error *err)
{
    if (rd->inline_len < rd->lim.inline_max) {
        size_t take = rd->lim.inline_max - rd->inline_len;
        take = n < take ? n : take;
        if (!rd->inline_buf && !(rd->inline_buf = malloc(rd->lim.inline_max)))
            return util_fail(err, ENOMEM, "out of memory");
        memcpy(rd->inline_buf + rd->inline_len, data, take);
        rd->inline_len += take;
    }
    uint64_t room = rd->lim.artifact_max - rd->patch_bytes;
    size_t put = n < room ? n : (size_t)room;
    if (put && rd->patch_fd >= 0 && util_write_all(rd->patch_fd, data, put) < 0)
        return util_fail_errno(err, "cannot write the run's diff.patch");
    rd->patch_bytes += put;
    if (put < n) {
        rd->artifact_full = 1;
        return 1;
    }
    return 0;
}

int srv_rundiff_reader_feed(rundiff_reader *rd, const void *data, size_t len, cell_error *err)
{
    const char *p = data;
    while (len > 0) {
        if (rd->artifact_full)
            return 1;
        if (rd->phase == RD_HEAD) {
            if (*p == '\n') {
                p++, len--;
                if (reader_head(rd, err) < 0)
                    return -1;
                continue;
            }
            if (rd->head_len == sizeof rd->head - 1)
                return util_fail(err, EPROTO, "the diff script's header is malformed");
            rd->head[rd->head_len++] = *p++;
            len--;
            continue;
        }
        if (rd->phase == RD_PATCH)
            return reader_patch(rd, p, len, err);
        size_t n = rd->left < len ? (size_t)rd->left : len;
        if (reader_list(rd, rd->phase == RD_NAMES ? 0 : 1, p, n, err) < 0)
            return -1;
        p += n, len -= n;
        rd->left -= n;
        reader_skip_empty(rd);
    }
    return rd->artifact_full ? 1 : 0;
}

/* ---- changedFiles from the listings ----------------------------------------------- */
/* The next NUL-terminated field of buf[*at..len), or NULL if none is whole
 * (the listing was cut there). */
static const char *next_field(const char *buf, size_t len, size_t *at, size_t *flen)
{
    if (*at >= len)
        return NULL;
    const char *f = buf + *at;
    const char *nul = memchr(f, '\0', len - *at);
    if (!nul)
        return NULL;
    *flen = (size_t)(nul - f);
    *at += *flen + 1;
    return f;
}

static const char *status_name(char c)
{
    switch (c) {
    case 'A': return "added";
    case 'D': return "deleted";
    case 'R': return "renamed";
    case 'C': return "added";       /* a copy: a new file */
    default:  return "modified";    /* M, T (type), and anything unexpected */
    }
}

/* One numstat record: "ADDED\tDELETED\tPATH\0" or, for a rename,
 * "ADDED\tDELETED\t\0OLD\0NEW\0".  *binary: counted as "-". */
static int numstat_next(const char *buf, size_t len, size_t *at, int *binary, const char **path, size_t *plen)
{
    size_t flen, olen;
    const char *f = next_field(buf, len, at, &flen);
    if (!f)
        return 0;
    const char *tab = memchr(f, '\t', flen);
    const char *tab2 = tab ? memchr(tab + 1, '\t', flen - (size_t)(tab + 1 - f)) : NULL;
    if (!tab2)
        return -1;
    *binary = tab - f == 1 && f[0] == '-';
    *path = tab2 + 1;
    *plen = flen - (size_t)(tab2 + 1 - f);
    if (*plen == 0) {               /* a rename: OLD and NEW follow */
        if (!next_field(buf, len, at, &olen) || !(*path = next_field(buf, len, at, plen)))
            return 0;
    }
    return 1;
}

static json_t *changed_files(rundiff_reader *rd, int *cut)
{
    json_t *files = json_array();
    const char *nb = rd->list[0], *sb = rd->list[1];
    size_t nat = 0, sat = 0, nlen = rd->list_len[0], slen = rd->list_len[1];
    int stat_ok = 1;
    *cut = rd->list_cut[0];
    while (files) {
        size_t slen_f, plen, olen = 0;
        const char *st = next_field(nb, nlen, &nat, &slen_f);
        if (!st)
            break;
        const char *old = NULL, *path = next_field(nb, nlen, &nat, &plen);
        if (path && slen_f > 0 && (st[0] == 'R' || st[0] == 'C')) {
            old = path, olen = plen;
            path = next_field(nb, nlen, &nat, &plen);
        }
        if (!path || slen_f == 0)
            break;                  /* cut, or not git's */
        if (json_array_size(files) == RUNDIFF_FILES_MAX) {
            *cut = 1;
            break;
        }
        /* The numstat record of the same change, in the same order: its
         * path must be this one, or no binary flag is believed from here. */
        int binary = 0;
        const char *spath;
        size_t splen;
        stat_ok = stat_ok && numstat_next(sb, slen, &sat, &binary, &spath, &splen) == 1 && splen == plen &&
                  memcmp(spath, path, plen) == 0;
        binary = stat_ok && binary;
        json_t *e = json_pack("{s:o, s:s, s:b}", "path", srv_procs_lossy_string((const unsigned char *)path, plen),
                              "status", status_name(st[0]), "binary", binary);
        if (e && old && st[0] == 'R')
            json_object_set_new(e, "oldPath", srv_procs_lossy_string((const unsigned char *)old, olen));
        if (!e || json_array_append_new(files, e) < 0)
            return json_decref(files), NULL;
    }
    return files;
}

/* The inline patch as JSON: a sequence cut at the end is dropped whole, the
 * rest's invalid UTF-8 becomes U+FFFD (the artifact has the exact bytes). */
static json_t *inline_diff(rundiff_reader *rd)
{
    size_t n = rd->inline_len;
    if (rd->patch_bytes > n) {      /* cut: back up over a partial sequence */
        size_t back = 0;
        while (back < 3 && back < n && ((unsigned char)rd->inline_buf[n - 1 - back] & 0xC0) == 0x80)
            back++;
        if (back < n) {
            unsigned char lead = (unsigned char)rd->inline_buf[n - 1 - back];
            size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
            if (need > back + 1 && lead >= 0xC0)
                n -= back + 1;
        }
    }
    return srv_procs_lossy_string((const unsigned char *)(rd->inline_buf ? rd->inline_buf : ""), n);
}

int srv_rundiff_reader_end(rundiff_reader *rd, const char *url, json_t *out, cell_error *err)
{
    if (rd->phase != RD_PATCH)
        return util_fail(err, EPROTO, "the diff script's output ended before its patch");
    int cut;
    json_t *files = changed_files(rd, &cut);
    json_t *diff = inline_diff(rd);
    json_t *art = json_pack("{s:s, s:I, s:b}", "name", "diff.patch", "bytes", (json_int_t)rd->patch_bytes,
                            "truncated", rd->artifact_full);
    if (art && url)
        json_object_set_new(art, "url", json_string(url));
    json_t *arts = art ? json_pack("[o]", art) : NULL;
    if (!files || !diff || !arts) {
        json_decref(files), json_decref(diff), json_decref(arts);
        return util_fail(err, ENOMEM, "out of memory");
    }
    /* Each _new steals its value, also when it fails. */
    int bad = json_object_set_new(out, "diff", diff) |
              json_object_set_new(out, "diffBytes", json_integer((json_int_t)rd->patch_bytes)) |
              json_object_set_new(out, "diffTruncated",
                                  json_boolean(rd->patch_bytes > rd->inline_len || rd->artifact_full)) |
              json_object_set_new(out, "changedFiles", files) |
              json_object_set_new(out, "changedFilesTruncated", json_boolean(cut)) |
              json_object_set_new(out, "artifacts", arts);
    return bad ? util_fail(err, ENOMEM, "out of memory") : 0;
}

/* ---- git apply's complaints -------------------------------------------------------- */
/* "error: patch failed: PATH:LINE", "error: PATH: REASON",
 * "error: invalid path 'PATH'", "error: affected file 'PATH' is beyond a
 * symbolic link". */
static const char *conflict_path(const char *line, size_t len, size_t *plen)
{
    static const char *const reasons[] = { ": patch does not apply", ": already exists in working directory",
                                           ": does not exist in index", ": No such file or directory",
                                           ": wrong type", ": does not match index", NULL };
    if (len < 7 || memcmp(line, "error: ", 7) != 0)
        return NULL;
    line += 7, len -= 7;
    if (len > 14 && memcmp(line, "patch failed: ", 14) == 0) {
        const char *colon = memrchr(line + 14, ':', len - 14);
        *plen = colon ? (size_t)(colon - line - 14) : len - 14;
        return line + 14;
    }
    const char *q1 = memchr(line, '\'', len), *q2 = q1 ? memrchr(line, '\'', len) : NULL;
    if (q1 && q2 > q1 && (strncmp(line, "invalid path '", 14) == 0 || strncmp(line, "affected file '", 15) == 0)) {
        *plen = (size_t)(q2 - q1 - 1);
        return q1 + 1;
    }
    for (const char *const *r = reasons; *r; r++) {
        size_t rl = strlen(*r);
        if (len > rl && memcmp(line + len - rl, *r, rl) == 0) {
            *plen = len - rl;
            return line;
        }
    }
    return NULL;
}

json_t *srv_rundiff_conflicts(const char *text, size_t len)
{
    json_t *paths = json_array();
    for (size_t at = 0; paths && at < len && json_array_size(paths) < RUNDIFF_CONFLICTS;) {
        const char *nl = memchr(text + at, '\n', len - at);
        size_t ll = nl ? (size_t)(nl - text - at) : len - at, plen;
        const char *p = conflict_path(text + at, ll, &plen);
        at += ll + 1;
        if (!p || plen == 0)
            continue;
        json_t *s = srv_procs_lossy_string((const unsigned char *)p, plen);
        size_t i;
        json_t *v;
        int seen = 0;
        json_array_foreach(paths, i, v) seen |= json_equal(v, s);
        if (!s || seen)
            json_decref(s);
        else
            json_array_append_new(paths, s);
    }
    return paths;
}

/* ---- running the script ----------------------------------------------------------- */
static const char *rundiff_script(void) { return srv_rundiff_sh_start; }

/* The last line of a stderr tail, for a message. */
static void last_line(const char *tail, size_t len, char *out, size_t size)
{
    while (len > 0 && (tail[len - 1] == '\n' || tail[len - 1] == '\r'))
        len--;
    const char *nl = memrchr(tail, '\n', len);
    size_t start = nl ? (size_t)(nl - tail) + 1 : 0, o = 0;
    for (size_t i = start; i < len && o + 1 < size; i++)
        out[o++] = tail[i] >= 0x20 && tail[i] < 0x7f ? tail[i] : '?';
    out[o] = '\0';
}

typedef struct tail_buf {
    char   data[RUNDIFF_TAIL];
    size_t len;
} tail_buf;

static void tail_add(tail_buf *t, const char *d, size_t n)
{
    if (n >= sizeof t->data) {
        memcpy(t->data, d + n - sizeof t->data, sizeof t->data);
        t->len = sizeof t->data;
        return;
    }
    if (t->len + n > sizeof t->data) {
        size_t drop = t->len + n - sizeof t->data;
        memmove(t->data, t->data + drop, t->len - drop);
        t->len -= drop;
    }
    memcpy(t->data + t->len, d, n);
    t->len += n;
}

static int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0 ? -1 : 0;
}

/* Read what a pipe has now into the reader (stdout) or the tail (stderr):
 * 0 at EOF (or the reader wants no more), 1 if more may come, -1 on the
 * reader's error. */
static int drain(int fd, rundiff_reader *rd, tail_buf *t, cell_error *err)
{
    char buf[65536];
    for (;;) {
        ssize_t n = read(fd, buf, sizeof buf);
        if (n < 0)
            return errno == EAGAIN || errno == EINTR ? 1 : 0;
        if (n == 0)
            return 0;
        if (!rd) {
            tail_add(t, buf, (size_t)n);
            continue;
        }
        int rc = srv_rundiff_reader_feed(rd, buf, (size_t)n, err);
        if (rc != 0)
            return rc > 0 ? 0 : -1;
    }
}

typedef struct diff_run {
    sproc   *proc;
    int      fds[3];
    int      killed;                /* we stopped it: the artifact was full */
    int      exited, status;
} diff_run;

/* Follow the script until its stdout and stderr end, the deadline passes
 * or it exited RUNDIFF_GRACE_MS ago (something it left holds the pipes). */
static int diff_follow(diff_run *dr, rundiff_reader *rd, tail_buf *t, int64_t timeout, cell_error *err)
{
    int open_fd[2] = { dr->fds[1], dr->fds[2] };
    int64_t exited_at = 0, deadline = srv_now_ms() + timeout;
    while (open_fd[0] >= 0 || open_fd[1] >= 0) {
        int64_t now = srv_now_ms();
        if (now >= deadline)
            return util_fail(err, ETIMEDOUT, "the diff did not finish within %lld ms (a huge or hostile tree?)",
                             (long long)timeout);
        if (!dr->exited && (dr->exited = srv_procs_wait_exit(dr->proc, now, &dr->status)))
            exited_at = now;
        if (dr->exited && now - exited_at >= RUNDIFF_GRACE_MS)
            break;
        struct pollfd pf[2] = { { .fd = open_fd[0], .events = POLLIN }, { .fd = open_fd[1], .events = POLLIN } };
        if (poll(pf, 2, 200) < 0 && errno != EINTR)
            return util_fail_errno(err, "poll");
        for (int i = 0; i < 2; i++) {
            if (open_fd[i] < 0 || !pf[i].revents)
                continue;
            int rc = drain(open_fd[i], i == 0 ? rd : NULL, t, err);
            if (rc < 0)
                return -1;
            if (rc == 0)
                open_fd[i] = -1;
            if (rc == 0 && i == 0 && rd->artifact_full) {
                srv_procs_signal(dr->proc, SIGKILL);   /* the rest is not wanted */
                dr->killed = 1;
            }
        }
    }
    return 0;
}

/* STATE/runs/<id>/diff.patch -> /v1/runs/<id>/artifacts/diff.patch. */
static void artifact_url(const char *patch_path, char *url, size_t size)
{
    url[0] = '\0';
    const char *slash = strrchr(patch_path, '/');
    if (!slash || slash - patch_path < RUN_ID_LEN + 1 || slash[-RUN_ID_LEN - 1] != '/')
        return;
    const char *id = slash - RUN_ID_LEN;
    for (int i = 0; i < RUN_ID_LEN; i++)
        if (!strchr("0123456789abcdef", id[i]) || !id[i])
            return;
    snprintf(url, size, "/v1/runs/%.*s/artifacts/%s", RUN_ID_LEN, id, slash + 1);
}

static int diff_outcome(diff_run *dr, const tail_buf *t, cell_error *err)
{
    char line[300];
    last_line(t->data, t->len, line, sizeof line);
    if (dr->killed)
        return 0;
    if (WIFEXITED(dr->status) && WEXITSTATUS(dr->status) == 0)
        return 0;
    if (WIFEXITED(dr->status) && WEXITSTATUS(dr->status) == RUNDIFF_NO_GIT)
        return util_fail(err, ENOENT, "the image has no git; the diff needs git");
    if (WIFEXITED(dr->status))
        return util_fail(err, EIO, "the diff failed (exit %d): %s", WEXITSTATUS(dr->status), line);
    return util_fail(err, EIO, "the diff was killed by signal %d: %s", WTERMSIG(dr->status), line);
}

/* PATCH.cut beside a patch cut at the artifact's cap: a valid prefix of a
 * patch (cut at a file's boundary) would apply, as part of the change. */
static int cut_path(const char *patch_path, char *out, size_t size, cell_error *err)
{
    return util_path(out, size, err, "%s.cut", patch_path);
}

static int mark_cut(const char *patch_path, int cut, cell_error *err)
{
    char path[PATH_MAX];
    if (cut_path(patch_path, path, sizeof path, err) < 0)
        return -1;
    if (!cut)
        return unlink(path) < 0 && errno != ENOENT ? util_fail_errno(err, "cannot remove %s", path) : 0;
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    return fd < 0 ? util_fail_errno(err, "cannot create %s", path) : 0;
}

int srv_rundiff_compute(scell *sc, const rundiff_limits *lim, const char *patch_path, json_t *out, cell_error *err)
{
    if (mark_cut(patch_path, 0, err) < 0)
        return -1;
    _cleanup_close_ int pfd = open(patch_path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (pfd < 0)
        return util_fail_errno(err, "cannot create %s", patch_path);
    rundiff_reader *rd = srv_rundiff_reader_new(lim, pfd);
    tail_buf *t = calloc(1, sizeof *t);
    if (!rd || !t) {
        srv_rundiff_reader_free(rd), free(t);
        return util_fail(err, ENOMEM, "out of memory");
    }
    /* /usr/bin/sh, not /bin/sh: the host image's /usr is the host's, read-only, while
     * the /bin symlink sits in the root layer the agent wrote. */
    const char *argv[] = { "/usr/bin/env", "-i", RUNDIFF_PATH, "/usr/bin/sh", "-c", rundiff_script(), "rundiff",
                           "diff", RUN_BASE, RUN_WORKSPACE, NULL };
    diff_run dr = { .fds = { -1, -1, -1 } };
    int rc = -1;
    /* From /: the cell's cwd (/workspace) may be gone, the agent removed it. */
    dr.proc = srv_procs_spawn_piped_at(sc, argv, "/", dr.fds, err);
    if (!dr.proc) {
        if (err && err->code == ENOENT)
            util_fail(err, ENOENT, "the image has no /usr/bin/env or /usr/bin/sh; the diff needs them and git");
    } else if (set_nonblock(dr.fds[1]) < 0 || set_nonblock(dr.fds[2]) < 0) {
        util_fail_errno(err, "fcntl");
    } else {
        close(dr.fds[0]);
        dr.fds[0] = -1;
        uint64_t ceiling = sc->s->opt.limits.run_timeout_ms;
        int64_t timeout = ceiling && ceiling < RUNDIFF_TIMEOUT_MS ? (int64_t)ceiling : RUNDIFF_TIMEOUT_MS;
        rc = diff_follow(&dr, rd, t, timeout, err);
        if (!dr.exited) {
            srv_procs_signal(dr.proc, SIGKILL);
            dr.exited = srv_procs_wait_exit(dr.proc, srv_now_ms() + 2000, &dr.status);
        }
        if (rc == 0 && !dr.exited)
            rc = util_fail(err, ETIMEDOUT, "the diff script did not exit");
        if (rc == 0)
            rc = diff_outcome(&dr, t, err);
        char url[128];
        artifact_url(patch_path, url, sizeof url);
        if (rc == 0)
            rc = srv_rundiff_reader_end(rd, url[0] ? url : NULL, out, err);
        if (rc == 0 && rd->artifact_full)
            rc = mark_cut(patch_path, 1, err);
    }
    for (int i = 0; i < 3; i++)
        if (dr.fds[i] >= 0)
            close(dr.fds[i]);
    if (dr.proc)
        srv_procs_release(dr.proc);
    srv_rundiff_reader_free(rd);
    free(t);
    /* No half patch is left to serve, resume from or apply. */
    if (rc < 0 && unlink(patch_path) < 0 && errno != ENOENT)
        srv_slog(SLOG_WARN, NULL, "cannot remove %s: %s", patch_path, strerror(errno));
    return rc;
}

/* ---- the apply cell ------------------------------------------------------------------ */
/* Follow git apply in the apply cell until it exits (its output into t). */
static int apply_follow(cell *c, pid_t pid, int fd, tail_buf *t, int *status, cell_error *err)
{
    int64_t deadline = srv_now_ms() + APPLY_TIMEOUT_MS;
    struct pollfd pf[2] = { { .fd = fd, .events = POLLIN }, { .fd = cell_event_fd(c), .events = POLLIN } };
    for (;;) {
        if (srv_now_ms() >= deadline)
            return util_fail(err, ETIMEDOUT, "git apply did not finish within %d s", APPLY_TIMEOUT_MS / 1000);
        if (poll(pf, 2, 250) < 0 && errno != EINTR)
            return util_fail_errno(err, "poll");
        if (pf[0].fd >= 0 && pf[0].revents && drain(pf[0].fd, NULL, t, err) == 0)
            pf[0].fd = -1;
        cell_exit ex;
        int r;
        while ((r = cell_wait_exit(c, 0, &ex, err)) == 1)
            if (ex.pid == pid) {
                *status = ex.status;
                if (pf[0].fd >= 0)
                    drain(fd, NULL, t, err);
                return 0;
            }
        if (r < 0)
            return -1;
    }
}

/* Run the script's apply in `c` as uid:gid, the patch (patch_fd) its stdin:
 * the owner need not be able to open the daemon's file, and nothing of the
 * state directory is mounted into the cell. */
static int apply_run(cell *c, uid_t uid, gid_t gid, int patch_fd, tail_buf *t, int *status, cell_error *err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return util_fail_errno(err, "pipe");
    const char *argv[] = { "/bin/sh", "-c", rundiff_script(), "rundiff", "apply", APPLY_REPO, NULL };
    static const char *const env[] = { RUNDIFF_PATH, "HOME=/nonexistent", "LC_ALL=C", NULL };
    cell_proc_spec spec = { .argv = argv, .env = env, .cwd = "/", .uid = uid, .gid = gid, .stdin_fd = patch_fd,
                            .stdout_fd = p[1], .stderr_fd = p[1] };
    pid_t pid;
    int rc = -1;
    if (set_nonblock(p[0]) < 0)
        util_fail_errno(err, "fcntl");
    else if (cell_spawn(c, &spec, &pid, NULL, err) == 0) {
        close(p[1]);
        p[1] = -1;
        rc = apply_follow(c, pid, p[0], t, status, err);
    }
    close(p[0]);
    if (p[1] >= 0)
        close(p[1]);
    return rc;
}

/* The directory's owner, checked again inside the cell: the bind is the
 * directory we looked at, not one swapped in since. */
static int apply_owner_check(cell *c, const struct stat *st, cell_error *err)
{
    cell_stat cs;
    if (cell_file_stat(c, APPLY_REPO, &cs, err) < 0)
        return -1;
    if (cs.uid != st->st_uid || cs.gid != st->st_gid || !S_ISDIR(cs.mode))
        return util_fail(err, EBUSY, "the repository directory changed while the apply cell booted");
    return 0;
}

static int apply_outcome(int status, const tail_buf *t, json_t **conflicts, cell_error *err)
{
    char line[300];
    last_line(t->data, t->len, line, sizeof line);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFEXITED(status) && WEXITSTATUS(status) == RUNDIFF_NO_APPLY) {
        *conflicts = srv_rundiff_conflicts(t->data, t->len);
        if (*conflicts && json_array_size(*conflicts) > 0)
            return util_fail(err, EEXIST, "the patch does not apply (nothing was written): %s", line);
        json_decref(*conflicts);
        *conflicts = NULL;
        return util_fail(err, EINVAL, "the patch is refused (nothing was written): %s", line);
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == RUNDIFF_NO_GIT)
        return util_fail(err, ENOENT, "the host image has no git; the apply needs git");
    return util_fail(err, EIO, "git apply failed: %s", line);
}

/* One apply at a time: two applies of runs to one directory must not
 * interleave their checks and writes. */
static pthread_mutex_t apply_lock = PTHREAD_MUTEX_INITIALIZER;

static int apply_in_cell(srv *s, const char *repo, const struct stat *st, int patch_fd, json_t **conflicts,
                         cell_error *err)
{
    cell_mount m = { .kind = CELL_MOUNT_BIND, .source = repo, .target = APPLY_REPO };
    cell_config cfg = { .image = "host", .hostname = "cell-apply", .mounts = &m, .n_mounts = 1,
                        .limits = { .memory = APPLY_MEMORY, .pids = APPLY_PIDS, .disk = APPLY_DISK } };
    json_t *budget = NULL;
    if (srv_limits_reserve(s, APPLY_MEMORY, APPLY_PIDS, "this apply", &budget, err) < 0) {
        json_decref(budget);
        return -1;
    }
    tail_buf *t = calloc(1, sizeof *t);
    cell *c = NULL;
    int status = 0, rc = t ? srv_registry_cell_create(s, &cfg, &c, err) : util_fail(err, ENOMEM, "out of memory");
    if (rc == 0)
        rc = apply_owner_check(c, st, err);
    if (rc == 0)
        rc = apply_run(c, st->st_uid, st->st_gid, patch_fd, t, &status, err);
    if (rc == 0)
        rc = apply_outcome(status, t, conflicts, err);
    if (c)
        srv_registry_cell_destroy(s, c);
    srv_limits_release(s, APPLY_MEMORY, APPLY_PIDS);
    free(t);
    return rc;
}

int srv_rundiff_apply(srv *s, const char *repo, const char *patch_path, json_t **conflicts, cell_error *err)
{
    *conflicts = NULL;
    char real_repo[PATH_MAX];
    if (!realpath(repo, real_repo))
        return util_fail_errno(err, "repository %s", repo);
    struct stat st, pst;
    if (stat(real_repo, &st) < 0)
        return util_fail_errno(err, "repository %s", real_repo);
    if (!S_ISDIR(st.st_mode))
        return util_fail(err, ENOTDIR, "repository %s is not a directory", real_repo);
    _cleanup_close_ int pfd = open(patch_path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (pfd < 0 || fstat(pfd, &pst) < 0 || !S_ISREG(pst.st_mode))
        return util_fail(err, ENOENT, "the run has no diff.patch");
    char cut[PATH_MAX];
    struct stat cst;
    if (cut_path(patch_path, cut, sizeof cut, err) < 0)
        return -1;
    if (lstat(cut, &cst) == 0)
        return util_fail(err, EINVAL, "the run's patch was cut at its size cap (diff.patch is marked truncated): it "
                         "cannot be applied whole; take the change from a kept cell or lane instead");
    /* Ids inside a cell are 0..65535, which the bind maps 1:1 to the host's. */
    if (st.st_uid > 65535 || st.st_gid > 65535)
        return util_fail(err, EPERM, "repository %s is owned by %u:%u, which a cell cannot act as (0..65535)",
                         real_repo, (unsigned)st.st_uid, (unsigned)st.st_gid);
    if (pst.st_size == 0)
        return 0;                   /* nothing changed: nothing to apply */
    pthread_mutex_lock(&apply_lock);
    int rc = apply_in_cell(s, real_repo, &st, pfd, conflicts, err);
    pthread_mutex_unlock(&apply_lock);
    return rc;
}
