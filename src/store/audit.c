/* audit.c: the append-only audit log STATE/audit.log, one JSON object per
 * line, rotated by size into audit.log.1 .. audit.log.N (oldest); a limiter
 * that keeps one cell's flood from filling it; and the reader that returns a
 * tenant's newest records, reading the files backwards in bounded memory. */
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

/* The per-cell limiter.  In each window a cell's first AUDIT_CELL_BURST
 * records are written as they come; after that, identical records (equal
 * but for the stamps, source address, durations and byte counts) become one
 * record with a "count", written when the window ends, and records beyond
 * AUDIT_CELL_KINDS different ones are only counted, in one "audit_dropped"
 * record.  So a cell writes at most BURST + KINDS + 1 records per window,
 * whatever it does.  Requests are not limited here: each one is an API call
 * of a token, bounded by the token's rate. */
#define AUDIT_WINDOW_MS   1000
#define AUDIT_CELL_BURST  64
#define AUDIT_CELL_KINDS  64
/* What the coalesced records of one cell may hold in memory meanwhile. */
#define AUDIT_CELL_HELD   (256u << 10)

/* A read gathers at most this much record text (and at most
 * STORE_AUDIT_MAX_RECORDS records); the reply's cursor continues it. */
#define AUDIT_READ_BYTES  (8u << 20)

typedef struct audit_seen {
    char    *key;       /* the record without its varying fields */
    json_t  *rec;       /* its first occurrence in the window */
    uint64_t count;
} audit_seen;

typedef struct audit_cell {
    struct audit_cell *next;
    char      *tenant, *cell;
    int64_t    window_ms;           /* CLOCK_MONOTONIC start of the window */
    unsigned   written;             /* records written in this window */
    size_t     n_seen, held;
    audit_seen seen[AUDIT_CELL_KINDS];
    uint64_t   dropped;
} audit_cell;

struct store_audit {
    int             fd;
    /* One write() per record keeps concurrent appends whole (O_APPEND);
     * the lock orders the repair after a short write (disk full) so that no
     * other record lands on the torn line, and guards rotation, the
     * sequence numbers and the limiter. */
    pthread_mutex_t lock;
    char            path[4096];
    uint64_t        size;           /* of the current file */
    uint64_t        max_size;       /* rotate past this (0 = never) */
    unsigned        keep;           /* rotated files kept */
    uint64_t        seq;            /* of the last record written */
    audit_cell     *cells;
    int64_t         swept_ms;
    uint64_t        limited, failed; /* records the limiter dropped, writes that failed (GET /metrics) */
};

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void rotated_path(const store_audit *a, unsigned n, char *out, size_t size)
{
    if (n == 0)
        snprintf(out, size, "%s", a->path);
    else
        snprintf(out, size, "%s.%u", a->path, n);
}

/* The "seq" of the last whole line of fd, 0 if none carries one. */
static uint64_t last_seq(int fd)
{
    struct stat st;
    if (fstat(fd, &st) < 0 || st.st_size <= 0)
        return 0;
    size_t n = st.st_size > (off_t)STORE_AUDIT_MAX_LINE ? STORE_AUDIT_MAX_LINE : (size_t)st.st_size;
    _cleanup_free_ char *buf = malloc(n + 1);
    if (!buf || pread(fd, buf, n, st.st_size - (off_t)n) != (ssize_t)n)
        return 0;
    while (n > 0 && buf[n - 1] == '\n')
        n--;
    size_t start = n;
    while (start > 0 && buf[start - 1] != '\n')
        start--;
    json_auto_t *rec = json_loadb(buf + start, n - start, 0, NULL);
    json_t *seq = json_object_get(rec, "seq");
    return json_is_integer(seq) && json_integer_value(seq) > 0 ? (uint64_t)json_integer_value(seq) : 0;
}

static int open_current(store_audit *a, cell_error *err)
{
    a->fd = open(a->path, O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (a->fd < 0)
        return util_fail_errno(err, "open %s", a->path);
    struct stat st;
    if (fstat(a->fd, &st) < 0)
        return util_fail_errno(err, "stat %s", a->path);
    if (!S_ISREG(st.st_mode))
        return util_fail(err, EINVAL, "%s is not a regular file", a->path);
    if ((st.st_mode & 077) && fchmod(a->fd, 0600) < 0)
        return util_fail_errno(err, "chmod %s", a->path);
    a->size = (uint64_t)st.st_size;
    return 0;
}

int store_audit_init(store_audit **out, const char *state_dir, cell_error *err)
{
    store_audit *a = calloc(1, sizeof *a);
    if (!a)
        return util_fail(err, ENOMEM, "audit: out of memory");
    a->fd = -1;
    a->max_size = STORE_AUDIT_DEFAULT_MAX_SIZE;
    a->keep = STORE_AUDIT_DEFAULT_KEEP;
    if (pthread_mutex_init(&a->lock, NULL) != 0) {
        free(a);
        return util_fail(err, ENOMEM, "audit: cannot create mutex");
    }
    if (util_path(a->path, sizeof a->path, err, "%s/audit.log", state_dir) < 0 || open_current(a, err) < 0)
        goto fail;
    /* A power loss can leave a torn last line; end it, so that the next
     * record starts a line of its own instead of being glued to it. */
    char last;
    if (a->size > 0) {
        if (pread(a->fd, &last, 1, (off_t)a->size - 1) != 1) {
            util_fail_errno(err, "read %s", a->path);
            goto fail;
        }
        if (last != '\n') {
            if (write(a->fd, "\n", 1) != 1) {
                util_fail_errno(err, "write %s", a->path);
                goto fail;
            }
            a->size++;
        }
    }
    /* Sequence numbers go on from the newest record, in this file or, just
     * after a rotation, in the previous one. */
    a->seq = last_seq(a->fd);
    if (!a->seq) {
        char prev[4200];
        rotated_path(a, 1, prev, sizeof prev);
        _cleanup_close_ int fd = open(prev, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0)
            a->seq = last_seq(fd);
    }
    *out = a;
    return 0;
fail:
    store_audit_fini(a);
    return -1;
}

void store_audit_set_rotation(store *s, uint64_t max_size, unsigned keep)
{
    store_audit *a = store_audit_of(s);
    pthread_mutex_lock(&a->lock);
    a->max_size = max_size;
    a->keep = keep < 1 ? 1 : keep > STORE_AUDIT_MAX_KEEP ? STORE_AUDIT_MAX_KEEP : keep;
    pthread_mutex_unlock(&a->lock);
}

static void format_ts(char *buf, size_t size, int64_t ms)
{
    time_t sec = (time_t)(ms / 1000);
    struct tm tm;
    gmtime_r(&sec, &tm);
    size_t n = strftime(buf, size, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(buf + n, size - n, ".%03dZ", (int)(ms % 1000));
}

/* audit.log -> audit.log.1 -> ... -> audit.log.KEEP, which is dropped.  A
 * failure keeps writing to the file we have (a full log beats a lost one). */
static void rotate(store_audit *a)
{
    char from[4200], to[4200];
    for (unsigned n = a->keep; n > 0; n--) {
        rotated_path(a, n - 1, from, sizeof from);
        rotated_path(a, n, to, sizeof to);
        if (rename(from, to) < 0 && errno != ENOENT)
            return;
    }
    int old = a->fd;
    if (open_current(a, NULL) < 0) {
        if (a->fd >= 0)
            close(a->fd);
        a->fd = old;    /* still open on audit.log.1: keep appending there */
        return;
    }
    close(old);
}

/* Stamp the next sequence number on `line` and append it.  Called locked. */
static int write_line(store_audit *a, json_t *line)
{
    if (json_object_set_new(line, "seq", json_integer((json_int_t)(a->seq + 1))) < 0)
        return errno = ENOMEM, -1;
    _cleanup_free_ char *text = json_dumps(line, JSON_COMPACT);
    if (!text)
        return errno = ENOMEM, -1;
    size_t len = strlen(text);
    if (len + 1 > STORE_AUDIT_MAX_LINE)
        return errno = EMSGSIZE, -1;
    /* json_dumps escapes control characters, so the text is one line. */
    char *p = realloc(text, len + 2);
    if (!p)
        return errno = ENOMEM, -1;
    text = p;
    text[len++] = '\n';
    text[len] = '\0';
    ssize_t n;
    do
        n = write(a->fd, text, len);
    while (n < 0 && errno == EINTR);
    int saved = n < 0 ? errno : ENOSPC;
    if (n > 0 && (size_t)n < len) {
        /* End the torn line; the reader skips it. */
        if (write(a->fd, "\n", 1) == 1)
            a->size++;
    }
    if (n > 0)
        a->size += (uint64_t)n;
    if (n < 0 || (size_t)n != len)
        return errno = saved, -1;
    a->seq++;
    if (a->max_size && a->size >= a->max_size)
        rotate(a);
    return 0;
}

/* A new object with the stamps of `ms` first, then the record's keys (which
 * win over the stamps if the caller set its own). */
static json_t *stamped(json_t *record, int64_t ms)
{
    char stamp[40];
    format_ts(stamp, sizeof stamp, ms);
    json_t *line = json_pack("{s:s, s:I}", "ts", stamp, "ts_ms", (json_int_t)ms);
    if (line && json_object_update(line, record) < 0) {
        json_decref(line);
        return NULL;
    }
    return line;
}

/* ---- the per-cell limiter (called locked) ---------------------------------- */

/* What makes two records "the same" for coalescing: all but the fields that
 * differ between repetitions of one event. */
static char *limiter_key(json_t *line)
{
    static const char *const varying[] = { "ts", "ts_ms", "seq", "src", "durationMs", "bytesIn", "bytesOut" };
    json_auto_t *copy = json_copy(line);
    if (!copy)
        return NULL;
    for (size_t i = 0; i < sizeof varying / sizeof *varying; i++)
        json_object_del(copy, varying[i]);
    return json_dumps(copy, JSON_COMPACT | JSON_SORT_KEYS);
}

static void flush_cell(store_audit *a, audit_cell *c)
{
    for (size_t i = 0; i < c->n_seen; i++) {
        json_t *rec = c->seen[i].rec;
        json_object_set_new(rec, "count", json_integer((json_int_t)c->seen[i].count));
        json_object_set_new(rec, "windowMs", json_integer(AUDIT_WINDOW_MS));
        write_line(a, rec);
        json_decref(rec);
        free(c->seen[i].key);
    }
    c->n_seen = c->held = 0;
    if (c->dropped) {
        json_auto_t *rec = json_pack("{s:s, s:s, s:s, s:s, s:I, s:i}", "kind", "cell", "event", "audit_dropped",
                                     "tenant", c->tenant, "cell", c->cell, "dropped", (json_int_t)c->dropped,
                                     "windowMs", AUDIT_WINDOW_MS);
        struct timespec now;
        clock_gettime(CLOCK_REALTIME, &now);
        json_auto_t *line = rec ? stamped(rec, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000) : NULL;
        if (line)
            write_line(a, line);
    }
    c->dropped = 0;
    c->written = 0;
}

static void free_cell(audit_cell *c)
{
    free(c->tenant);
    free(c->cell);
    free(c);
}

/* End the windows that are over: write their coalesced records and forget
 * the cells (a quiet cell costs nothing). */
static void sweep(store_audit *a, int64_t now, int all)
{
    if (!all && now - a->swept_ms < AUDIT_WINDOW_MS)
        return;
    a->swept_ms = now;
    for (audit_cell **pp = &a->cells; *pp;) {
        audit_cell *c = *pp;
        if (all || now - c->window_ms >= AUDIT_WINDOW_MS) {
            flush_cell(a, c);
            *pp = c->next;
            free_cell(c);
        } else {
            pp = &c->next;
        }
    }
}

static audit_cell *cell_state(store_audit *a, const char *tenant, const char *cell_id, int64_t now)
{
    for (audit_cell *c = a->cells; c; c = c->next)
        if (strcmp(c->cell, cell_id) == 0 && strcmp(c->tenant, tenant) == 0)
            return c;
    audit_cell *c = calloc(1, sizeof *c);
    if (!c || !(c->tenant = strdup(tenant)) || !(c->cell = strdup(cell_id))) {
        if (c)
            free_cell(c);
        return NULL;
    }
    c->window_ms = now;
    c->next = a->cells;
    a->cells = c;
    return c;
}

/* 1: write `line` now, 0: the limiter took it (counted or coalesced). */
static int limiter_admit(store_audit *a, json_t *line)
{
    int64_t now = mono_ms();
    sweep(a, now, 0);
    const char *cell_id = json_string_value(json_object_get(line, "cell"));
    const char *kind = json_string_value(json_object_get(line, "kind"));
    if (!cell_id || (kind && strcmp(kind, "request") == 0))
        return 1;
    audit_cell *c = cell_state(a, json_string_value(json_object_get(line, "tenant")), cell_id, now);
    if (!c)
        return 1;
    if (now - c->window_ms >= AUDIT_WINDOW_MS) {
        flush_cell(a, c);
        c->window_ms = now;
    }
    if (c->written < AUDIT_CELL_BURST) {
        c->written++;
        return 1;
    }
    char *key = limiter_key(line);
    if (!key) {
        c->dropped++;
        a->limited++;
        return 0;
    }
    for (size_t i = 0; i < c->n_seen; i++) {
        if (strcmp(c->seen[i].key, key) == 0) {
            c->seen[i].count++;
            free(key);
            return 0;
        }
    }
    size_t size = 2 * strlen(key);      /* the key and, about as big, the record */
    if (c->n_seen < AUDIT_CELL_KINDS && c->held + size <= AUDIT_CELL_HELD) {
        c->seen[c->n_seen++] = (audit_seen){ .key = key, .rec = json_incref(line), .count = 1 };
        c->held += size;
        return 0;
    }
    free(key);
    c->dropped++;
    a->limited++;
    return 0;
}

void store_audit_fini(store_audit *a)
{
    if (!a)
        return;
    if (a->fd >= 0) {
        pthread_mutex_lock(&a->lock);
        sweep(a, mono_ms(), 1);
        pthread_mutex_unlock(&a->lock);
        close(a->fd);
    }
    pthread_mutex_destroy(&a->lock);
    free(a);
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
    /* The caller's object is left as it was. */
    json_t *line = stamped(record, (int64_t)now.tv_sec * 1000 + now.tv_nsec / 1000000);
    if (!line) {
        errno = ENOMEM;
        return -1;
    }
    store_audit *a = store_audit_of(s);
    pthread_mutex_lock(&a->lock);
    int rc = limiter_admit(a, line) ? write_line(a, line) : 0;
    int saved = errno;
    if (rc < 0)
        a->failed++;
    /* Dropped under the lock: the limiter may hold the record too, and the
     * thread that flushes it reads its refcount under this lock only
     * (jansson's decref reads it plainly: TSan saw the race). */
    json_decref(line);
    pthread_mutex_unlock(&a->lock);
    errno = saved;
    return rc;
}

void store_audit_drops(store *s, uint64_t *limited, uint64_t *failed)
{
    store_audit *a = s ? store_audit_of(s) : NULL;
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    *limited = a->limited;
    *failed = a->failed;
    pthread_mutex_unlock(&a->lock);
}

/* ---- reading ---------------------------------------------------------------- */

/* What a read gathers, newest first. */
typedef struct audit_scan {
    const store_audit_query *q;
    int64_t     stop_below;
    size_t      limit, bytes;
    char        tenant_pat[96], kind_pat[48], verdict_pat[48], decision_pat[48];
    json_t    **found;
    size_t      n, cap;
    int         done, full;
} audit_scan;

/* A cheap test before parsing: a record of tenant T contains "tenant":"T"
 * as json_dumps wrote it (names need no escaping).  Parsing decides. */
static int may_match(const audit_scan *sc, const char *line, size_t len)
{
    if (sc->tenant_pat[0] && !memmem(line, len, sc->tenant_pat, strlen(sc->tenant_pat)))
        return 0;
    if (sc->kind_pat[0] && !memmem(line, len, sc->kind_pat, strlen(sc->kind_pat)))
        return 0;
    if (sc->verdict_pat[0] && !memmem(line, len, sc->verdict_pat, strlen(sc->verdict_pat)) &&
        !memmem(line, len, sc->decision_pat, strlen(sc->decision_pat)))
        return 0;
    return 1;
}

static int field_is(json_t *rec, const char *key, const char *want)
{
    const char *v = json_string_value(json_object_get(rec, key));
    return !want || (v && strcmp(v, want) == 0);
}

/* Take one line; returns -1 only when out of memory. */
static int scan_line(audit_scan *sc, const char *line, size_t len)
{
    if (len == 0 || !may_match(sc, line, len))
        return 0;
    json_t *rec = json_loadb(line, len, JSON_REJECT_DUPLICATES, NULL);
    json_t *tenant = json_object_get(rec, "tenant"), *ts_ms = json_object_get(rec, "ts_ms");
    if (!json_is_object(rec) || !json_is_string(tenant) || !json_is_integer(ts_ms)) {
        json_decref(rec);
        return 0; /* torn or foreign line */
    }
    const store_audit_query *q = sc->q;
    int64_t ts = (int64_t)json_integer_value(ts_ms);
    json_t *seq = json_object_get(rec, "seq");
    if (ts < sc->stop_below)
        sc->done = 1;
    if (ts < q->since_ms || !field_is(rec, "tenant", q->tenant) || !field_is(rec, "kind", q->kind) ||
        !field_is(rec, "cell", q->cell) ||
        (q->decision && !field_is(rec, "verdict", q->decision) && !field_is(rec, "decision", q->decision)) ||
        (q->before_seq && !(json_is_integer(seq) && (uint64_t)json_integer_value(seq) < q->before_seq))) {
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
    sc->bytes += len;
    if (sc->n >= sc->limit || sc->bytes >= AUDIT_READ_BYTES)
        sc->done = sc->full = 1;
    return 0;
}

/* Scan one file from its end.  buf[0, have) holds the file's bytes just
 * after `pos` that are not yet consumed: the end of a line whose start lies
 * before pos.  A line longer than any record can be (not ours) is dropped
 * rather than grown without bound, so memory stays below two chunks plus
 * one line whatever the file's size. */
static int scan_file(audit_scan *sc, int fd, const char *path, cell_error *err)
{
    struct stat st;
    if (fstat(fd, &st) < 0)
        return util_fail_errno(err, "stat %s", path);
    _cleanup_free_ char *buf = NULL;
    size_t have = 0, bufcap = 0;
    int skipping = 0;
    off_t pos = st.st_size;
    while (pos > 0 && !sc->done) {
        size_t n = pos > (off_t)AUDIT_CHUNK ? AUDIT_CHUNK : (size_t)pos;
        pos -= (off_t)n;
        if (have + n > bufcap) {
            char *p = realloc(buf, have + n);
            if (!p)
                return util_fail(err, ENOMEM, "read %s: out of memory", path);
            buf = p;
            bufcap = have + n;
        }
        memmove(buf + n, buf, have);
        ssize_t got = pread(fd, buf, n, pos);
        if (got < 0 || (size_t)got != n) {
            if (got >= 0)
                errno = EIO; /* truncated under us */
            return util_fail_errno(err, "read %s", path);
        }
        have += n;
        size_t end = have;
        for (size_t i = have; i > 0 && !sc->done; i--) {
            if (buf[i - 1] != '\n')
                continue;
            if (!skipping && scan_line(sc, buf + i, end - i) < 0)
                return util_fail(err, ENOMEM, "read %s: out of memory", path);
            skipping = 0;
            end = i - 1;
        }
        have = end;
        if (have > STORE_AUDIT_MAX_LINE) {
            skipping = 1;
            have = 0;
        }
    }
    if (pos == 0 && !sc->done && !skipping && scan_line(sc, buf, have) < 0)
        return util_fail(err, ENOMEM, "read %s: out of memory", path);
    return 0;
}

int store_audit_find(store *s, const store_audit_query *q, json_t **out_array, uint64_t *next, cell_error *err)
{
    if (!s || !q || !out_array)
        return util_fail(err, EINVAL, "store_audit_find: missing argument");
    store_audit *a = store_audit_of(s);
    audit_scan sc = { .q = q };
    sc.limit = q->limit && q->limit < STORE_AUDIT_MAX_RECORDS ? q->limit : STORE_AUDIT_MAX_RECORDS;
    sc.stop_below = q->since_ms > INT64_MIN + AUDIT_SLACK_MS ? q->since_ms - AUDIT_SLACK_MS : INT64_MIN;
    if (q->tenant)
        snprintf(sc.tenant_pat, sizeof sc.tenant_pat, "\"tenant\":\"%s\"", q->tenant);
    if (q->kind)
        snprintf(sc.kind_pat, sizeof sc.kind_pat, "\"kind\":\"%s\"", q->kind);
    /* Both kinds of allow/deny record: a net record's engine "verdict" and
     * a run's permission answer, a request record's "decision". */
    if (q->decision) {
        snprintf(sc.verdict_pat, sizeof sc.verdict_pat, "\"verdict\":\"%s\"", q->decision);
        snprintf(sc.decision_pat, sizeof sc.decision_pat, "\"decision\":\"%s\"", q->decision);
    }
    /* Open every file under the lock, so that a rotation cannot make us read
     * one twice or miss one; the scan then runs without it. */
    int fds[STORE_AUDIT_MAX_KEEP + 1];
    char path[4200];
    size_t n_fds = 0;
    pthread_mutex_lock(&a->lock);
    sweep(a, mono_ms(), 1);     /* pending coalesced records first */
    for (unsigned i = 0; i <= a->keep; i++) {
        rotated_path(a, i, path, sizeof path);
        int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd >= 0)
            fds[n_fds++] = fd;
        else if (errno != ENOENT || i == 0)
            break;
    }
    pthread_mutex_unlock(&a->lock);
    int rc = n_fds ? 0 : util_fail_errno(err, "open %s", a->path);
    for (size_t i = 0; i < n_fds && rc == 0 && !sc.done; i++) {
        rotated_path(a, (unsigned)i, path, sizeof path);
        rc = scan_file(&sc, fds[i], path, err);
    }
    for (size_t i = 0; i < n_fds; i++)
        close(fds[i]);
    json_t *arr = rc == 0 ? json_array() : NULL;
    if (rc == 0 && !arr)
        rc = util_fail(err, ENOMEM, "read %s: out of memory", a->path);
    for (size_t i = sc.n; arr && i > 0; i--) {
        if (json_array_append(arr, sc.found[i - 1]) < 0) {
            json_decref(arr);
            arr = NULL;
            rc = util_fail(err, ENOMEM, "read %s: out of memory", a->path);
        }
    }
    /* A full page continues below its oldest record. */
    if (next) {
        json_t *seq = sc.full && sc.n ? json_object_get(sc.found[sc.n - 1], "seq") : NULL;
        *next = json_is_integer(seq) ? (uint64_t)json_integer_value(seq) : 0;
    }
    for (size_t i = 0; i < sc.n; i++)
        json_decref(sc.found[i]);
    free(sc.found);
    if (rc == 0)
        *out_array = arr;
    return rc;
}

int store_audit_read(store *s, const char *tenant, int64_t since_ms, size_t limit, json_t **out_array,
                     cell_error *err)
{
    store_audit_query q = { .tenant = tenant, .since_ms = since_ms, .limit = limit };
    return store_audit_find(s, &q, out_array, NULL, err);
}
