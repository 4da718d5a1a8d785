/* agents.h: the agents a cell can run (agents.c) and their installs
 * (agentinstall.c), for the ACP proxy (acp.c). */
#ifndef CELL_SERVER_AGENTS_H
#define CELL_SERVER_AGENTS_H

#include "server/server_internal.h"

/* Where every cell the daemon boots sees the host-wide agent cache
 * (STATE/agents), read-only. */
#define AGENTS_CACHE_TARGET "/opt/cell-agents"

/* One of sandbox-agent 0.4.2's agent ids? */
int srv_agents_known(const char *id);
/* The path inside the cell that the proxy executes to start `id`; NULL
 * for agents cell cannot install. */
const char *srv_agents_launcher(const char *id);
/* Write the mock agent and its launcher into the cell unless the launcher
 * is there already (*already = 1) or `force`.  Takes the cell's io lock. */
int srv_agents_install_mock(scell *sc, int force, int *already, cell_error *err);
/* 400 unsupported_agent, as the reference words it. */
int srv_reply_unsupported_agent(sreq *r, const char *id);

/* An agent installed from npm (the table is in agents.c). */
typedef struct agents_package {
    const char *id;
    const char *packages[3];    /* "name@version", pinned; the ACP adapter first; NULL-terminated */
    const char *launcher;       /* the reference's agent_processes/<agent>-acp, in the cell */
    const char *exec;           /* what the launcher execs, relative to the cache dir */
    const char *args;           /* arguments before the client's ("" for none) */
    const char *unavailable;    /* why cell cannot install it, or NULL */
    const char *prelude;        /* sh lines the launcher runs before its exec (may `set --` args), or NULL */
} agents_package;
const agents_package *srv_agents_package_find(const char *id);

/* Write a file into the cell beside its path and rename it over (io held). */
int srv_agents_cell_write(cell *c, const char *path, mode_t mode, const void *data, size_t len, cell_error *err);

typedef void (*agents_progress_fn)(void *user, const char *line);

typedef struct agents_install_result {
    int     already;            /* launcher and cache were there: nothing written */
    int     ran_npm;            /* this call ran npm (else the cache had it) */
    int     npm_failed;         /* npm or the cache step failed: stderr has its tail */
    int     exit_code;          /* npm's, when it exited */
    char    version[64];
    char    source[16];         /* "builtin" | "npm" */
    char    key[160];           /* cache directory name */
    char    path[512];          /* what the launcher runs, as seen in the cell */
    json_t *stderr_tail;        /* npm's last stderr lines (owned; NULL if none) */
    uint64_t disk_limit;        /* npm filled its staging filesystem of this many bytes */
    json_t *budget;             /* the host budget could not hold the install cell: 409's details (owned) */
} agents_install_result;

enum {
    AGENTS_REINSTALL = 1,       /* write the launcher even if it is there */
    AGENTS_REFETCH   = 2,       /* run npm even if the cache has the agent */
};
/* Install `agent` for this cell: for npm agents, fill the host-wide cache
 * (unless it has the pinned packages already, or AGENTS_REFETCH) by running npm in
 * an install cell, then write the launcher into the cell.  One npm run per
 * cache key at a time: concurrent installs of one agent wait for each
 * other.  `who` (a token id) goes into the audit record.  progress (may be
 * NULL) gets npm's output lines.  Errors: EOPNOTSUPP (no npm install for
 * this agent), ECONNRESET (cell stopped), res->npm_failed (npm failed). */
int srv_agents_install(scell *sc, const char *agent, unsigned flags, const char *who, agents_progress_fn progress,
                   void *user, agents_install_result *res, cell_error *err);
void srv_agents_install_result_free(agents_install_result *res);
/* Fill res's version, source, key and path for an npm agent (no install). */
void srv_agents_describe(const agents_package *p, agents_install_result *res);
/* Reply with an install's error: 501 or 502 install_failed with npm's
 * stderr tail (and the disk limit it filled), 409 for a stopped cell or
 * budget_exceeded when the host budget cannot hold the install cell, ... */
int srv_agents_reply_install_error(sreq *r, const char *agent, const agents_install_result *res, const cell_error *e);
/* The same answer as JSON (problem+json's fields) and its status, for SSE. */
json_t *srv_agents_install_error_json(const char *agent, const agents_install_result *res, const cell_error *e,
                                  unsigned *status);

/* At daemon start: check --agent-registry, make STATE/agents, clear what
 * a crash left in STATE/agents-staging. */
int srv_agents_start(srv *s, cell_error *err);
/* STATE/agents (after srv_agents_start). */
const char *srv_agents_cache_root(void);
/* The cache's disk usage and directories, as of the last install. */
void srv_agents_cache_usage(uint64_t *bytes, size_t *dirs);
/* At daemon stop, before the cells go: wait for installs in progress
 * (they stop their npm once s->stopping is set). */
void srv_agents_shutdown(void);
/* Install threads of SSE installs (agents.c) count themselves here. */
void srv_agents_worker_begin(void);
void srv_agents_worker_end(void);

/* At daemon stop, after the cells halted: wait for the ACP readers and
 * drop every instance (acp.c). */
void srv_acp_shutdown(void);

#endif
