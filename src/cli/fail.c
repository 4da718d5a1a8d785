/* fail.c: how the CLI and cell-daemon report a failure ("cell: <message>"
 * on stderr), one copy for both, so that callers of `cell serve` see the
 * same messages from the daemon as from the CLI. */
#include "cli/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int cli_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("cell: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return code;
}

int cli_fail_err(int code, const cell_error *err)
{
    return cli_fail(code, "%s", err->message[0] ? err->message : strerror(err->code));
}
