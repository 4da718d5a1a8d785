/* serve.c: `cell serve` execs the daemon, cell-daemon (src/daemon/main.c),
 * which links the HTTP server, the store and everything they need: the
 * `cell` CLI stays small and quick to start.  The daemon is found next to
 * the running `cell` (/proc/self/exe), or at $CELL_DAEMON; the process
 * keeps its pid, so a supervisor or test that started `cell serve` is
 * talking to the daemon itself. */
#include "cli/cli.h"
#include "util/util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The daemon's path: $CELL_DAEMON, else cell-daemon beside this binary. */
static int daemon_path(char *out, size_t size)
{
    const char *env = getenv("CELL_DAEMON");
    if (env && *env)
        return snprintf(out, size, "%s", env) < (int)size ? 0 : cli_fail(CLI_EXIT_USAGE, "$CELL_DAEMON is too long");
    cell_error err = { 0 };
    if (util_exe_sibling(out, size, "cell-daemon", &err) < 0)
        return cli_fail(CLI_EXIT_INTERNAL, "serve: %s", err.message);
    return 0;
}

int cli_serve(struct cli_global *g, int argc, char **argv)
{
    char path[PATH_MAX];
    int rc = daemon_path(path, sizeof path);
    if (rc)
        return rc;
    /* cell-daemon [--state DIR] ARGS...: argv[0] (the word "serve") goes. */
    char **args = calloc((size_t)argc + 3, sizeof *args);
    if (!args)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    size_t n = 0;
    args[n++] = "cell-daemon";
    if (g->state_dir) {
        args[n++] = "--state";
        args[n++] = (char *)g->state_dir;
    }
    for (int i = 1; i < argc; i++)
        args[n++] = argv[i];
    execv(path, args);
    rc = cli_fail(errno == ENOENT ? CLI_EXIT_NOTFOUND : CLI_EXIT_CANNOT,
                  "serve: cannot run the daemon %s: %s (install cell-daemon next to cell, or set $CELL_DAEMON)", path,
                  strerror(errno));
    free(args);
    return rc;
}
