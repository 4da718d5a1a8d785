/* slog.h: the daemon's one logging function.  Every line the daemon writes
 * about itself (the banner, warnings, failures of background work, 5xx
 * answers) goes through srv_slog(), in the format `cell serve --log-format`
 * picks:
 *   text  "cell daemon: MESSAGE" (info on stdout, warnings and errors on
 *         stderr, as before the option existed);
 *   json  one object per line on stderr: {"ts","level","msg", fields...}.
 * When stderr is the systemd journal (JOURNAL_STREAM names it), every line
 * goes to stderr with a "<N>" syslog priority prefix, which journald takes
 * as the entry's priority.  Lines are written with one write() each, so
 * threads do not interleave them, and a message's control characters are
 * escaped: a tenant-chosen string cannot forge a second line. */
#ifndef CELL_SERVER_SLOG_H
#define CELL_SERVER_SLOG_H

#include <stdarg.h>

/* syslog's priorities, which the journal prefix uses as they are. */
enum slog_level { SLOG_ERROR = 3, SLOG_WARN = 4, SLOG_INFO = 6 };
enum slog_format { SLOG_TEXT = 0, SLOG_JSON = 1 };

/* "text" or "json" into *out; -1 for anything else. */
int  srv_slog_format_parse(const char *text, int *out);
/* Set the format and look at JOURNAL_STREAM; before the daemon's threads. */
void srv_slog_init(int format);

/* Fields of a line: "key", "value" pairs, NULL-terminated, e.g.
 * srv_slog(SLOG_WARN, SLOG_F("cell", id), "cell %s: ...", id).  JSON lines
 * carry them as members (a NULL value is left out); text lines do not
 * (the message says it). */
#define SLOG_F(...) ((const char *const[]){ __VA_ARGS__, NULL })

void srv_slog(int level, const char *const *fields, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
void srv_slog_va(int level, const char *const *fields, const char *fmt, va_list ap) __attribute__((format(printf, 3, 0)));

#endif
