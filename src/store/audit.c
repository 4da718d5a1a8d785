/* audit.c: the append-only audit log STATE/audit.log, one JSON object per
 * line, and the reader that returns a tenant's newest records. */
#include "store/store.h"

#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include "util/util.h"

/* Records are not fsync()ed one by one: a written line sits in the page
 * cache and survives a kill -9 of the daemon, which is the failure that
 * matters for an audit of API calls; only a power loss can cost the last
 * few lines, and an fsync per request would put a disk flush on every
 * request's path.  The database, which must survive power loss, is where
 * state lives. */

#define AUDIT_CHUNK     (64u << 10)
/* store_audit_read stops at records this much older than `since`: lines are
 * appended in time order, except for a wall clock step or a caller that
 * stamps "ts_ms" itself at the start of a slow request. */
#define AUDIT_SLACK_MS  (5 * 60 * 1000)

struct store_audit {
    int             fd;
    /* One write() per record keeps concurrent appends whole (O_APPEND);
     * the lock only orders the repair after a short write (disk full) so
     * that no other record lands on the torn line. */
    pthread_mutex_t lock;
    char            path[4096];
};

int store_audit_init(store_audit **out, const char *state_dir, cell_error *err)
{
    store_audit *a = calloc(1, sizeof *a);
    if (!a)
        return util_fail(err, ENOMEM, "audit: out of memory");
    a->fd = -1;
    if (pthread_mutex_init(&a->lock, NULL) != 0) {
        free(a);
        return util_fail(err, ENOMEM, "audit: cannot create mutex");
    }
    if (util_path(a->path, sizeof a->path, err, "%s/audit.log", state_dir) < 0)
        goto fail;
    a->fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (a->fd < 0) {
        util_fail_errno(err, "open %s", a->path);
        goto fail;
    }
    struct stat st;
    if (fstat(a->fd, &st) < 0) {
        util_fail_errno(err, "stat %s", a->path);
        goto fail;
    }
    if (!S_ISREG(st.st_mode)) {
        util_fail(err, EINVAL, "%s is not a regular file", a->path);
        goto fail;
    }
    if ((st.st_mode & 077) && fchmod(a->fd, 0600) < 0) {
        util_fail_errno(err, "chmod %s", a->path);
        goto fail;
    }
    /* A power loss can leave a torn last line; end it, so that the next
     * record starts a line of its own instead of being glued to it. */
    char last;
    if (st.st_size > 0) {
        if (pread(a->fd, &last, 1, st.st_size - 1) != 1) {
            util_fail_errno(err, "read %s", a->path);
            goto fail;
        }
        if (last != '\n' && write(a->fd, "\n", 1) != 1) {
            util_fail_errno(err, "write %s", a->path);
            goto fail;
        }
    }
    *out = a;
    return 0;
fail:
    store_audit_fini(a);
    return -1;
}

void store_audit_fini(store_audit *a)
{
    if (!a)
        return;
    if (a->fd >= 0)
        close(a->fd);
    pthread_mutex_destroy(&a->lock);
    free(a);
}

static void format_ts(char *buf, size_t size, int64_t ms)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03dZ", (int)(ms % 1000));
}

int store_audit_append(store *s, json_t *record)
{
    if (!s || !json_is_object(record) || !json_is_string(json_object_get(record, "tenant"))) {
        errno = EINVAL;
        return -1;
    }
    json_t *ts = json_object_get(record, "ts"), *ts_ms = json_object_get(record, "ts_ms");
    if ((ts && !json_is_string(ts)) || (ts_ms && !json_is_integer(ts_ms))) {
        errno = EINVAL;
        return -1;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t ms = (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000;
    char stamp[40];
    format_ts(stamp, sizeof stamp, ms);

    /* A new object with the stamps first, then the record's keys (which win
     * over the stamps if the caller set its own): the caller's object is
     * left as it was. */
    json_auto_t *line = json_pack("{s:s, s:I}", "ts", stamp, "ts_ms", (json_int_t)ms);
    if (!line || json_object_update(line, record) < 0) {
        errno = ENOMEM;
        return -1;
    }
    _cleanup_free_ char *text = json_dumps(line, JSON_COMPACT);
    if (!text) {
        errno = ENOMEM;
        return -1;
    }
    size_t len = strlen(text);
    if (len + 1 > STORE_AUDIT_MAX_LINE) {
        errno = EMSGSIZE;
        return -1;
    }
    /* json_dumps escapes control characters, so the text is one line. */
    char *p = realloc(text, len + 2);
    if (!p) {
        errno = ENOMEM;
        return -1;
    }
    text = p;
    text[len++] = '\n';
    text[len] = '\0';

    store_audit *a = store_audit_of(s);
    pthread_mutex_lock(&a->lock);
    ssize_t n;
    do
        n = write(a->fd, text, len);
    while (n < 0 && errno == EINTR);
    int saved = n < 0 ? errno : ENOSPC;
    if (n > 0 && (size_t)n < len) {
        /* End the torn line; the reader skips it. */
        ssize_t r = write(a->fd, "\n", 1);
        (void)r;
    }
    pthread_mutex_unlock(&a->lock);
    if (n < 0 || (size_t)n != len) {
        errno = saved;
        return -1;
    }
    return 0;
}

/* What store_audit_read gathers, newest first. */
typedef struct audit_scan {
    const char *tenant;
    int64_t     since_ms, stop_below;
    size_t      limit;
    json_t    **found;
    size_t      n, cap;
    int         done;
} audit_scan;

/* Take one line; returns -1 only when out of memory. */
static int scan_line(audit_scan *sc, const char *line, size_t len)
{
    if (len == 0)
        return 0;
    json_t *rec = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *tenant = json_object_get(rec, "tenant"), *ts_ms = json_object_get(rec, "ts_ms");
    if (!json_is_object(rec) || !json_is_string(tenant) || !json_is_integer(ts_ms)) {
        json_decref(rec);
        return 0; /* torn or foreign line */
    }
    int64_t ts = (int64_t)json_integer_value(ts_ms);
    if (ts < sc->stop_below)
        sc->done = 1;
    if (ts < sc->since_ms || (sc->tenant && strcmp(json_string_value(tenant), sc->tenant) != 0)) {
        json_decref(rec);
        return 0;
    }
    if (sc->n == sc->cap) {
        size_t ncap = sc->cap ? sc->cap * 2 : 64;
        json_t **p = realloc(sc->found, ncap * sizeof *p);
        if (!p) {
            json_decref(rec);
            return -1;
        }
        sc->found = p;
        sc->cap = ncap;
    }
    sc->found[sc->n++] = rec;
    if (sc->limit && sc->n >= sc->limit)
        sc->done = 1;
    return 0;
}

int store_audit_read(store *s, const char *tenant, int64_t since_ms, size_t limit, json_t **out_array,
                     cell_error *err)
{
    if (!s || !out_array)
        return util_fail(err, EINVAL, "store_audit_read: missing argument");
    store_audit *a = store_audit_of(s);
    _cleanup_close_ int fd = open(a->path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return util_fail_errno(err, "open %s", a->path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return util_fail_errno(err, "stat %s", a->path);

    audit_scan sc = { .tenant = tenant, .since_ms = since_ms, .limit = limit };
    sc.stop_below = since_ms > INT64_MIN + AUDIT_SLACK_MS ? since_ms - AUDIT_SLACK_MS : INT64_MIN;
    /* Read backwards in chunks.  buf[0, have) holds the file's bytes just
     * after `pos` that are not yet consumed: the end of a line whose start
     * lies before pos.  A line longer than any record can be (not ours) is
     * dropped rather than grown without bound. */
    _cleanup_free_ char *buf = NULL;
    size_t have = 0, bufcap = 0;
    int skipping = 0, rc = -1;
    off_t pos = st.st_size;
    while (pos > 0 && !sc.done) {
        size_t n = pos > (off_t)AUDIT_CHUNK ? AUDIT_CHUNK : (size_t)pos;
        pos -= (off_t)n;
        if (have + n > bufcap) {
            char *p = realloc(buf, have + n);
            if (!p) {
                util_fail(err, ENOMEM, "read %s: out of memory", a->path);
                goto out;
            }
            buf = p;
            bufcap = have + n;
        }
        memmove(buf + n, buf, have);
        ssize_t got = pread(fd, buf, n, pos);
        if (got < 0 || (size_t)got != n) {
            if (got >= 0)
                errno = EIO; /* truncated under us */
            util_fail_errno(err, "read %s", a->path);
            goto out;
        }
        have += n;
        size_t end = have;
        for (size_t i = have; i > 0 && !sc.done; i--) {
            if (buf[i - 1] != '\n')
                continue;
            if (!skipping && scan_line(&sc, buf + i, end - i) < 0) {
                util_fail(err, ENOMEM, "read %s: out of memory", a->path);
                goto out;
            }
            skipping = 0;
            end = i - 1;
        }
        have = end;
        if (have > STORE_AUDIT_MAX_LINE) {
            skipping = 1;
            have = 0;
        }
    }
    if (pos == 0 && !sc.done && !skipping && scan_line(&sc, buf, have) < 0) {
        util_fail(err, ENOMEM, "read %s: out of memory", a->path);
        goto out;
    }
    json_t *arr = json_array();
    if (!arr) {
        util_fail(err, ENOMEM, "read %s: out of memory", a->path);
        goto out;
    }
    for (size_t i = sc.n; i > 0; i--) {
        if (json_array_append(arr, sc.found[i - 1]) < 0) {
            json_decref(arr);
            util_fail(err, ENOMEM, "read %s: out of memory", a->path);
            goto out;
        }
    }
    *out_array = arr;
    rc = 0;
out:
    for (size_t i = 0; i < sc.n; i++)
        json_decref(sc.found[i]);
    free(sc.found);
    return rc;
}
