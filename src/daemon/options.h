/* options.h: cell-daemon's options.  One table (daemon_options[] in
 * options.c) describes each option once: its long name, which is also its
 * key in the config file, whether it takes a value or repeats, and the
 * setter that checks and stores it.  `cell serve --help` is
 * src/cli/serve_usage.c (the lean `cell` prints it too, without this
 * table); test_daemon_opts checks that it names every option.
 *
 * To add an option: a row in daemon_options[] (a generic setter with an
 * offsetof() into daemon_config, or a setter of its own), its field in
 * server_options, and its lines in serve_usage.c and etc/cell.conf. */
#ifndef CELL_DAEMON_OPTIONS_H
#define CELL_DAEMON_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

#include "server/server.h"

#define DAEMON_MAX_ALLOW      16   /* --allow-tenant-dest values */
#define DAEMON_MAX_WARM       8    /* --warm values (images) */
#define DAEMON_MAX_REPO_ROOTS 16   /* --run-repo-root values */

typedef struct daemon_config {
    server_options opt;
    const char *allow[DAEMON_MAX_ALLOW + 1];
    size_t      n_allow;
    const char *warm[DAEMON_MAX_WARM + 1];
    size_t      n_warm;
    const char *repo_roots[DAEMON_MAX_REPO_ROOTS + 1];
    size_t      n_roots;
    int         init;          /* --init: make the state directory if it is missing */
    int         help;          /* --help was given (and printed) */
} daemon_config;

struct daemon_option;
/* Check `value` and store it in c.  `value` is NULL for a flag without an
 * argument on the command line.  `label` names the option in messages
 * ("--listen" on the command line).  0, or an exit code after printing why. */
typedef int (*daemon_setter)(daemon_config *c, const struct daemon_option *o, const char *label,
                             const char *value);

enum {
    DAEMON_OPT_REPEAT = 1,      /* may be given more than once; each adds a value */
};

typedef struct daemon_option {
    const char   *name;         /* --NAME on the command line */
    int           has_arg;      /* getopt_long's no_argument or required_argument */
    unsigned      flags;        /* DAEMON_OPT_* */
    daemon_setter set;
    size_t        field;        /* offsetof(daemon_config, ...) for the generic setters */
    unsigned long long min, max; /* daemon_set_count's range */
} daemon_option;

/* The table, ended by a row whose name is NULL. */
extern const daemon_option daemon_options[];

/* Generic setters for table rows: a string (may be empty), a non-empty
 * string, a flag (int, 1; "true"/"false" and the like as a value), a
 * whole number within [min, max] (unsigned), a size (uint64_t, "1G"). */
int daemon_set_string(daemon_config *c, const daemon_option *o, const char *label, const char *value);
int daemon_set_nonempty(daemon_config *c, const daemon_option *o, const char *label, const char *value);
int daemon_set_flag(daemon_config *c, const daemon_option *o, const char *label, const char *value);
int daemon_set_count(daemon_config *c, const daemon_option *o, const char *label, const char *value);
int daemon_set_size(daemon_config *c, const daemon_option *o, const char *label, const char *value);

/* Parse cell-daemon's command line into c (zeroed by the caller).  0 to
 * run the daemon, else the exit code (0 after --help, c->help set). */
int daemon_options_parse(daemon_config *c, int argc, char **argv);

#endif
