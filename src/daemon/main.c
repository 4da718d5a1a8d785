/* main.c: cell-daemon, the daemon behind `cell serve` (the lean `cell`
 * execs it, src/cli/serve.c): parses the serve options (options.c) and
 * hands over to server_run(), which returns only on SIGINT or SIGTERM.  It
 * links everything the daemon needs (libmicrohttpd, SQLite, OpenSSL, the
 * egress and archive code), which the `cell` CLI does not load.
 *
 *   cell-daemon [--state DIR] [SERVE OPTIONS...]   (cell serve --help) */
#include "cli/cli.h"
#include "daemon/options.h"
#include "server/server.h"

int main(int argc, char **argv)
{
    static daemon_config c;
    int rc = daemon_options_parse(&c, argc, argv);
    if (rc || c.help)
        return rc;
    cell_error err = { 0 };
    if (server_run(&c.opt, &err) < 0)
        return cli_fail_err(CLI_EXIT_INTERNAL, &err);
    return 0;
}
