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

#define DAEMON_MAX_LIST       16   /* values of a repeatable option at most */
#define DAEMON_DEFAULT_CONFIG "/etc/cell/cell.conf"
#define DAEMON_CONFIG_MAX     (1u << 20)  /* bytes of a config file */

/* The values of a repeatable option, NULL-terminated for server_options. */
typedef struct daemon_list {
    const char *v[DAEMON_MAX_LIST + 1];
    size_t      n;
} daemon_list;

typedef struct daemon_config {
    server_options opt;
    daemon_list allow;         /* --allow-tenant-dest */
    daemon_list warm;          /* --warm */
    daemon_list repo_roots;    /* --run-repo-root */
    daemon_list cors;          /* --cors-origin */
    int         init;          /* --init: make the state directory if it is missing */
    int         help;          /* --help was given (and printed) */
    const char *config;        /* --config FILE */
    int         no_config;     /* --no-config */
    char      **owned;         /* the config file's values (the options point into them) */
    size_t      n_owned;
} daemon_config;

struct daemon_option;
/* Check `value` and store it in c.  `value` is NULL for a flag without an
 * argument on the command line.  `label` names the option in messages
 * ("--listen" on the command line).  0, or an exit code after printing why. */
typedef int (*daemon_setter)(daemon_config *c, const struct daemon_option *o, const char *label,
                             const char *value);

enum {
    DAEMON_OPT_REPEAT  = 1,     /* may be given more than once; each adds a value */
    DAEMON_OPT_CMDLINE = 2,     /* command line only, no config-file key (--config, --init) */
};

typedef struct daemon_option {
    const char   *name;         /* --NAME on the command line */
    int           has_arg;      /* getopt_long's no_argument or required_argument */
    unsigned      flags;        /* DAEMON_OPT_* */
    daemon_setter set;
    size_t        field;        /* offsetof(daemon_config, ...) for the generic setters */
    unsigned long long min, max; /* daemon_set_count's range; max: a list's length */
} daemon_option;

/* The table, ended by a row whose name is NULL. */
extern const daemon_option daemon_options[];

/* Generic setters for table rows: a string (may be empty), a non-empty
 * string, a flag (int, 1; "true"/"false" and the like as a value), a
 * whole number within [min, max] (unsigned), a size (uint64_t, "1G";
 * within [min, max] unless max is 0), one
 * more value of a daemon_list (at most max). */
int daemon_set_string(daemon_config *c, const daemon_option *o, const char *label, const char *value);
int daemon_set_nonempty(daemon_config *c, const daemon_option *o, const char *label, const char *value);
int daemon_set_flag(daemon_config *c, const daemon_option *o, const char *label, const char *value);
int daemon_set_count(daemon_config *c, const daemon_option *o, const char *label, const char *value);
int daemon_set_size(daemon_config *c, const daemon_option *o, const char *label, const char *value);
int daemon_set_list(daemon_config *c, const daemon_option *o, const char *label, const char *value);

/* Parse cell-daemon's command line and its config file (--config FILE,
 * else DAEMON_DEFAULT_CONFIG if it exists, none with --no-config) into c
 * (zeroed by the caller): the file first, then the flags over it.  0 to
 * run the daemon, else the exit code after printing why (0 after --help,
 * c->help set).  `default_config` is DAEMON_DEFAULT_CONFIG but in tests. */
int daemon_options_parse(daemon_config *c, int argc, char **argv, const char *default_config);
/* Read one config file into c (daemon_options_parse does). */
int daemon_config_load(daemon_config *c, const char *path);
/* Refuse a state directory that holds no store (cell.db) unless --init:
 * a mistyped --state must not start an empty daemon.  0 or an exit code. */
int daemon_check_state(const daemon_config *c);
void daemon_config_free(daemon_config *c);

#endif
