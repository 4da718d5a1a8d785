/* slog.c: the daemon's log lines, as text or JSON (slog.h). */
#include "server/slog.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SLOG_MAX_MSG 4096           /* longer messages are cut, marked with "..." */

/* Set before the daemon starts threads (srv_slog_init), read-only after. */
static int slog_format = SLOG_TEXT;
static int slog_journal;

int srv_slog_format_parse(const char *text, int *out)
{
    if (strcmp(text, "text") == 0)
        *out = SLOG_TEXT;
    else if (strcmp(text, "json") == 0)
        *out = SLOG_JSON;
    else
        return -1;
    return 0;
}

/* systemd sets JOURNAL_STREAM to "DEVICE:INODE" of the journal socket it
 * connected stderr to; a stderr redirected since (--log FILE, a shell's
 * 2>file) no longer matches it. */
static int stderr_is_journal(void)
{
    const char *js = getenv("JOURNAL_STREAM");
    unsigned long long dev, ino;
    char extra;
    struct stat st;
    if (!js || sscanf(js, "%llu:%llu%c", &dev, &ino, &extra) != 2 || fstat(STDERR_FILENO, &st) < 0)
        return 0;
    return (unsigned long long)st.st_dev == dev && (unsigned long long)st.st_ino == ino;
}

void srv_slog_init(int format)
{
    slog_format = format;
    slog_journal = stderr_is_journal();
}

static const char *level_name(int level)
{
    return level <= SLOG_ERROR ? "error" : level == SLOG_WARN ? "warn" : "info";
}

/* The whole line in one write(): lines of concurrent threads stay whole.
 * A failed write has nowhere to be reported (this is the report). */
static void write_line(int fd, const char *line, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, line, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        line += n, len -= (size_t)n;
    }
}

/* Text: control characters as \xHH (a newline in a tenant's string must
 * not start a line of its own); bytes above 0x7f are kept. */
static size_t escape_text(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (const unsigned char *p = (const unsigned char *)in; *p && o + 5 < size; p++) {
        if (*p < 0x20 || *p == 0x7f)
            o += (size_t)snprintf(out + o, size - o, "\\x%02x", *p);
        else
            out[o++] = (char)*p;
    }
    out[o] = '\0';
    return o;
}

static void emit_text(int level, const char *msg)
{
    char line[SLOG_MAX_MSG * 4 + 32];
    size_t n = 0;
    if (slog_journal)
        n = (size_t)snprintf(line, sizeof line, "<%d>", level);
    n += (size_t)snprintf(line + n, sizeof line - n, "cell daemon: ");
    n += escape_text(msg, line + n, sizeof line - n - 1);
    line[n++] = '\n';
    int fd = slog_journal || level < SLOG_INFO ? STDERR_FILENO : STDOUT_FILENO;
    write_line(fd, line, n);
}

/* A JSON string of s; bytes that are not UTF-8 (a path, a peer's text)
 * become '?' rather than losing the line. */
static json_t *json_text(const char *s)
{
    json_t *j = json_string(s);
    if (j)
        return j;
    char *copy = strdup(s);
    if (!copy)
        return NULL;
    for (char *p = copy; *p; p++)
        if ((unsigned char)*p >= 0x80)
            *p = '?';
    j = json_string(copy);
    free(copy);
    return j;
}

static void emit_json(int level, const char *const *fields, const char *msg)
{
    struct timespec now;
    struct tm tm;
    char ts[40], date[24];
    clock_gettime(CLOCK_REALTIME, &now);
    gmtime_r(&now.tv_sec, &tm);
    strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(ts, sizeof ts, "%s.%03ldZ", date, now.tv_nsec / 1000000);
    json_t *o = json_pack("{s:s, s:s, s:o*}", "ts", ts, "level", level_name(level), "msg", json_text(msg));
    /* A NULL value (a cell not known yet) leaves its key out. */
    for (size_t i = 0; o && fields && fields[i]; i += 2)
        if (fields[i + 1])
            json_object_set_new(o, fields[i], json_text(fields[i + 1]));
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return emit_text(level, msg);   /* out of memory: the text still says it */
    char prefix[8] = "";
    if (slog_journal)
        snprintf(prefix, sizeof prefix, "<%d>", level);
    size_t len = strlen(text);
    char *line = malloc(strlen(prefix) + len + 2);
    if (line) {
        int n = sprintf(line, "%s%s\n", prefix, text);
        write_line(STDERR_FILENO, line, (size_t)n);
    }
    free(line);
    free(text);
}

void srv_slog_va(int level, const char *const *fields, const char *fmt, va_list ap)
{
    char msg[SLOG_MAX_MSG];
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    if (n < 0)
        snprintf(msg, sizeof msg, "%s", fmt);
    else if ((size_t)n >= sizeof msg)
        memcpy(msg + sizeof msg - 4, "...", 4);
    size_t len = strlen(msg);
    while (len > 0 && msg[len - 1] == '\n')   /* callers' old fprintf habits */
        msg[--len] = '\0';
    if (slog_format == SLOG_JSON)
        emit_json(level, fields, msg);
    else
        emit_text(level, msg);
}

void srv_slog(int level, const char *const *fields, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    srv_slog_va(level, fields, fmt, ap);
    va_end(ap);
}
