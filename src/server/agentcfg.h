/* agentcfg.h: the agent configuration a client stores in a cell
 * (/cells/{cell}/v1/config/mcp and /config/skills, agentcfg.c), and what
 * the ACP proxy does with it when it starts a session.
 *
 * Every file operation runs inside the cell through libcell's file calls
 * (a transfer process with the cell's root, credentials and seccomp
 * filter); the daemon never opens a file of the cell itself.  The files
 * are sandbox-agent 0.4.2's: <directory>/.sandbox-agent/config/mcp.json
 * and skills.json, one JSON object keyed by entry name. */
#ifndef CELL_SERVER_AGENTCFG_H
#define CELL_SERVER_AGENTCFG_H

#include <jansson.h>

#include "cell.h"

typedef struct scell scell;

/* Limits: a config file the cell planted is read at most this far; an
 * entry name is 1..AGENTCFG_NAME_MAX bytes without '/', NUL or control
 * characters and is not "." or "..". */
#define AGENTCFG_FILE_MAX (4u << 20)
#define AGENTCFG_NAME_MAX 128

/* Is `name` acceptable as an MCP or skill entry name? */
int srv_agentcfg_name_ok(const char *name);

/* The configured MCP servers of `directory` (a path inside the cell,
 * relative ones against /root) in ACP's session/new `mcpServers` shape:
 * a new JSON array (empty when nothing is configured), sorted by name,
 * without entries whose "enabled" is false.  Local servers become stdio
 * entries ({name, command, args, env:[{name,value}]}; a command given as
 * an array contributes its first element as the command and the rest as
 * leading args), remote ones {type:"http"|"sse", name, url,
 * headers:[{name,value}]} ("sse" when transport is "sse").  The proxy
 * calls this when the client's session/new has no (or an empty)
 * mcpServers.  Fails with EINVAL for an invalid config file, ECONNRESET
 * if the cell is stopped.  The scell form takes the cell's io lock; the
 * cell form expects the caller to hold it (or to own the cell alone). */
int srv_agentcfg_mcp_servers(scell *sc, const char *directory, json_t **out, cell_error *err);
int srv_agentcfg_cell_mcp_servers(cell *c, const char *directory, json_t **out, cell_error *err);

/* The project-relative directory an agent reads skills from
 * (".claude/skills" for claude, ...), or NULL for an unknown agent id. */
const char *srv_agentcfg_skill_dir(const char *agent);

/* Materialise the skills configured for `directory` into the agent's skill
 * directory, <directory>/<srv_agentcfg_skill_dir(agent)>/<skill>/, by copying
 * inside the cell.  Sources of type "local" name a directory in the cell
 * (relative ones against `directory`; "subpath" appended): with "skills",
 * each listed subdirectory is copied under its own name; without, the
 * directory itself if it holds SKILL.md (under the entry's name), else
 * each subdirectory that holds one.  Other source types (github, git, ...)
 * need the network and are reported as skipped.  A copy is bounded
 * (regular files and directories only, depth 8, 1024 files, 16 MiB);
 * an existing skill directory of the same name is replaced.
 * *report (may be NULL) gets an array of {name, source, status
 * ("installed"|"skipped"), path | reason}.  Fails with EINVAL for an
 * unknown agent or an invalid skills.json, E2BIG past the bounds. */
int srv_agentcfg_skills_materialise(scell *sc, const char *directory, const char *agent, json_t **report,
                                cell_error *err);
int srv_agentcfg_cell_skills_materialise(cell *c, const char *directory, const char *agent, json_t **report,
                                     cell_error *err);

/* Both, for one ACP `session/new` request's params (a JSON object the
 * caller owns and forwards afterwards): the directory is params.cwd (a
 * string; /root without one); when params.mcpServers is missing, null or
 * an empty array it becomes the configured servers; the skills of that
 * directory are materialised for `agent` (none for an agent without a
 * skill directory).  *report (may be NULL) gets the skills report.  On an
 * error params are unchanged: the proxy may forward them as they are. */
int srv_agentcfg_prepare_session_new(scell *sc, const char *agent, json_t *params, json_t **report, cell_error *err);
int srv_agentcfg_cell_prepare_session_new(cell *c, const char *agent, json_t *params, json_t **report,
                                      cell_error *err);

#endif
