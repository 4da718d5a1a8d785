/* oci_log.c: --log FILE and --log-format text|json as runc writes them.
 * containerd's shim reads the last "error" line of the JSON log to report
 * why a command failed, so every error goes there as well as to stderr. */
#include "oci/oci.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

static int log_fd = -1;
static int log_json;
static int log_debug;

int oci_log_open(const char *path, int json, int debug, cell_error *err)
{
    log_json = json;
    log_debug = debug;
    if (!path)
        return 0;
    log_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0)
        return util_fail_errno(err, "--log: cannot open %s", path);
    return 0;
}

int oci_log_debug_on(void)
{
    return log_debug;
}

static void log_line(const char *level, const char *msg)
{
    char stamp[64];
    struct timespec ts;
    struct tm tm;
    if (clock_gettime(CLOCK_REALTIME, &ts) < 0 || !gmtime_r(&ts.tv_sec, &tm) ||
        !strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm))
        snprintf(stamp, sizeof stamp, "1970-01-01T00:00:00");
    char full[96];
    snprintf(full, sizeof full, "%s.%09ldZ", stamp, (long)ts.tv_nsec);
    if (log_json) {
        json_t *o = json_pack("{s:s, s:s, s:s}", "level", level, "msg", msg, "time", full);
        char *line = o ? json_dumps(o, JSON_COMPACT) : NULL;
        json_decref(o);
        if (line) {
            size_t n = strlen(line);
            line[n] = '\n'; /* over the NUL: one write, so concurrent writers never interleave */
            (void)!util_write_all(log_fd, line, n + 1);
        }
        free(line);
        return;
    }
    char buf[2048];
    int n = snprintf(buf, sizeof buf, "time=\"%s\" level=%s msg=\"%s\"\n", full, level, msg);
    if (n > 0)
        (void)!util_write_all(log_fd, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

void oci_log(const char *level, const char *fmt, ...)
{
    if (strcmp(level, "debug") == 0 && !log_debug)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log_fd >= 0)
        log_line(level, msg);
    else if (strcmp(level, "error") != 0)
        fprintf(stderr, "cell-oci: %s: %s\n", level, msg);
}

void oci_log_error(const cell_error *err)
{
    fprintf(stderr, "cell-oci: %s\n", err->message);
    if (log_fd >= 0)
        log_line("error", err->message);
}
