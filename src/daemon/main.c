/* main.c: cell-daemon, the daemon behind `cell serve` (the lean `cell`
 * execs it, src/cli/serve.c): reads the serve options from the config file
 * and the command line (options.c) and hands over to srv_run(), which
 * returns only on SIGINT or SIGTERM.  It links everything the daemon needs
 * (libmicrohttpd, SQLite, OpenSSL, libinih, the egress and archive code),
 * which the `cell` CLI does not load.
 *
 *   cell-daemon [--state DIR] [SERVE OPTIONS...]   (cell serve --help) */
#include "cli/cli.h"
#include "daemon/options.h"
#include "server/server.h"

int main(int argc, char **argv)
{
    static daemon_config c;
    int rc = daemon_options_parse(&c, argc, argv, DAEMON_DEFAULT_CONFIG);
    cell_error err = { 0 };
    if (rc == 0 && !c.help && srv_options_check(&c.opt, &err) < 0)
        rc = cli_fail_err(CLI_EXIT_USAGE, &err);
    if (rc == 0 && !c.help && (rc = daemon_check_state(&c)) == 0) {
        if (srv_run(&c.opt, &err) < 0)
            rc = cli_fail_err(CLI_EXIT_INTERNAL, &err);
    }
    daemon_config_free(&c);
    return rc;
}
