/* routes.c: the daemon's two route tables: the control plane (/v1/...) and
 * the per-cell plane (/cells/{cell}/v1/...), compatible with sandbox-agent 0.4. */
#include "server/handlers.h"
#include "server/metrics.h"

#define CELL_ROUTE(m, p, fn, flags) { m, "/cells/{cell}/v1" p, fn, NULL, ROUTE_CELL | (flags) }

const route control_routes[] = {
    { "GET",    "/v1/health",               h_health,        NULL, ROUTE_PUBLIC | ROUTE_NO_AUDIT },
    { "GET",    "/openapi.json",            openapi_serve,   NULL, ROUTE_PUBLIC | ROUTE_NO_AUDIT },
    { "GET",    "/healthz",                 h_healthz,       NULL, ROUTE_PUBLIC | ROUTE_NO_AUDIT },
    { "GET",    "/readyz",                  h_readyz,        NULL, ROUTE_PUBLIC | ROUTE_NO_AUDIT },
    { "GET",    "/metrics",                 h_metrics,       NULL, ROUTE_ADMIN | ROUTE_METRICS | ROUTE_NO_AUDIT },
    { "POST",   "/v1/cells",                h_cells_create,  NULL, 0 },
    { "GET",    "/v1/cells",                h_cells_list,    NULL, 0 },
    { "GET",    "/v1/cells/{id}",           h_cells_get,     NULL, 0 },
    { "DELETE", "/v1/cells/{id}",           h_cells_delete,  NULL, 0 },
    { "POST",   "/v1/cells/{id}/stop",      h_cells_stop,    NULL, 0 },
    { "POST",   "/v1/cells/{id}/start",     h_cells_start,   NULL, 0 },
    { "PUT",    "/v1/cells/{id}/policy",    h_cells_policy,  NULL, 0 },
    { "POST",   "/v1/lanes",                h_lanes_create,  NULL, 0 },
    { "GET",    "/v1/lanes",                h_lanes_list,    NULL, 0 },
    { "GET",    "/v1/lanes/{name}",         h_lanes_get,     NULL, 0 },
    { "DELETE", "/v1/lanes/{name}",         h_lanes_delete,  NULL, 0 },
    { "GET",    "/v1/lanes/{name}/export",  h_lanes_export,  NULL, 0 },
    { "POST",   "/v1/lanes/{name}/commit",  h_lanes_commit,  NULL, 0 },
    { "POST",   "/v1/lanes/{name}/import",  h_lanes_import,  h_lanes_import_body, ROUTE_STREAM_BODY },
    { "GET",    "/v1/images",               h_images_ls,     NULL, 0 },
    { "GET",    "/v1/images/{name}",        h_images_show,   NULL, 0 },
    { "DELETE", "/v1/images/{name}",        h_images_delete, NULL, 0 },  /* a tenant its commits */
    { "POST",   "/v1/images/{name}/import", h_images_import, h_images_import_body, ROUTE_ADMIN | ROUTE_STREAM_BODY },
    { "PUT",    "/v1/images/{name}/tenants", h_images_share, NULL, ROUTE_ADMIN },
    { "GET",    "/v1/images/{name}/export", h_images_export, NULL, 0 },
    { "POST",   "/v1/images/{name}/build",  h_images_build,  NULL, ROUTE_ADMIN },
    { "GET",    "/v1/audit",                h_audit,         NULL, 0 },
    { "POST",   "/v1/tokens",               h_tokens_create, NULL, ROUTE_ADMIN },
    { "GET",    "/v1/tokens",               h_tokens_list,   NULL, ROUTE_ADMIN },
    { "DELETE", "/v1/tokens/{id}",          h_tokens_revoke, NULL, ROUTE_ADMIN },
    { "GET",    "/v1/tenants",              h_tenants_list,  NULL, ROUTE_ADMIN },
    { "GET",    "/v1/tenants/{name}",       h_tenants_get,   NULL, 0 },
    { "PUT",    "/v1/tenants/{name}",       h_tenants_put,   NULL, ROUTE_ADMIN },
    { "GET",    "/v1/limits",               h_limits,        NULL, ROUTE_ADMIN },
    { "POST",   "/v1/secrets",              h_secrets_create, NULL, 0 },
    { "GET",    "/v1/secrets",              h_secrets_list,  NULL, 0 },
    { "DELETE", "/v1/secrets/{name}",       h_secrets_delete, NULL, 0 },
    { "POST",   "/v1/runs",                 h_runs_create,   NULL, 0 },
    { "GET",    "/v1/runs",                 h_runs_list,     NULL, 0 },
    { "POST",   "/v1/runs/uploads",         h_runs_upload,   h_runs_upload_body, ROUTE_STREAM_BODY },
    { "GET",    "/v1/runs/{id}",            h_runs_get,      NULL, 0 },
    { "DELETE", "/v1/runs/{id}",            h_runs_delete,   NULL, 0 },
    { "GET",    "/v1/runs/{id}/events",     h_runs_events,   NULL, ROUTE_EVENTS },
    { "POST",   "/v1/runs/{id}/permissions/{req}", h_runs_permission, NULL, 0 },
    { "POST",   "/v1/runs/{id}/apply",      h_runs_apply,    NULL, 0 },
    { "GET",    "/v1/runs/{id}/artifacts/{name}", h_runs_artifact, NULL, 0 },
};
const size_t n_control_routes = sizeof control_routes / sizeof control_routes[0];

const route agent_routes[] = {
    CELL_ROUTE("GET",    "/health",                          h_cell_health, ROUTE_NO_AUDIT),
    CELL_ROUTE("GET",    "/processes/config",                h_proc_config, 0),
    CELL_ROUTE("POST",   "/processes/config",                h_proc_config, 0),
    CELL_ROUTE("POST",   "/processes/run",                   h_proc_run, 0),
    CELL_ROUTE("POST",   "/processes",                       h_proc_create, 0),
    CELL_ROUTE("GET",    "/processes",                       h_proc_list, 0),
    CELL_ROUTE("GET",    "/processes/{id}",                  h_proc_get, 0),
    CELL_ROUTE("DELETE", "/processes/{id}",                  h_proc_delete, 0),
    CELL_ROUTE("GET",    "/processes/{id}/logs",             h_proc_logs, ROUTE_EVENTS),
    CELL_ROUTE("POST",   "/processes/{id}/input",            h_proc_input, 0),
    CELL_ROUTE("POST",   "/processes/{id}/stop",             h_proc_stop, 0),
    CELL_ROUTE("POST",   "/processes/{id}/kill",             h_proc_kill, 0),
    CELL_ROUTE("POST",   "/processes/{id}/terminal/resize",  h_proc_resize, 0),
    CELL_ROUTE("GET",    "/processes/{id}/terminal/ws",      h_proc_terminal_ws, ROUTE_EVENTS),
    CELL_ROUTE("GET",    "/fs/file",                         h_fs_read, 0),
    { "PUT",  "/cells/{cell}/v1/fs/file",         h_fs_write,  h_fs_write_body,  ROUTE_CELL | ROUTE_STREAM_BODY },
    CELL_ROUTE("GET",    "/fs/entries",                      h_fs_entries, 0),
    CELL_ROUTE("GET",    "/fs/stat",                         h_fs_stat, 0),
    CELL_ROUTE("POST",   "/fs/mkdir",                        h_fs_mkdir, 0),
    CELL_ROUTE("POST",   "/fs/move",                         h_fs_move, 0),
    CELL_ROUTE("DELETE", "/fs/entry",                        h_fs_delete, 0),
    { "POST", "/cells/{cell}/v1/fs/upload-batch", h_fs_upload, h_fs_upload_body, ROUTE_CELL | ROUTE_STREAM_BODY },
    /* Agents (agents.c), ACP sessions (acp.c), config (agentcfg.c); desktop: a later issue. */
    CELL_ROUTE("GET",    "/agents",                          h_agents_list, 0),
    CELL_ROUTE("GET",    "/agents/{agent}",                  h_agents_get, 0),
    CELL_ROUTE("POST",   "/agents/{agent}/install",          h_agents_install, 0),
    CELL_ROUTE("GET",    "/acp",                             h_acp_list, 0),
    CELL_ROUTE("GET",    "/acp/{server}",                    h_acp_get, ROUTE_EVENTS),
    CELL_ROUTE("POST",   "/acp/{server}",                    h_acp_post, 0),
    CELL_ROUTE("DELETE", "/acp/{server}",                    h_acp_delete, 0),
    CELL_ROUTE("GET",    "/config/mcp",                      h_config_mcp_get, 0),
    CELL_ROUTE("PUT",    "/config/mcp",                      h_config_mcp_put, 0),
    CELL_ROUTE("DELETE", "/config/mcp",                      h_config_mcp_delete, 0),
    CELL_ROUTE("GET",    "/config/skills",                   h_config_skills_get, 0),
    CELL_ROUTE("PUT",    "/config/skills",                   h_config_skills_put, 0),
    CELL_ROUTE("DELETE", "/config/skills",                   h_config_skills_delete, 0),
    CELL_ROUTE("GET",    "/desktop/*",                       h_not_implemented, 0),
    CELL_ROUTE("POST",   "/desktop/*",                       h_not_implemented, 0),
    CELL_ROUTE("DELETE", "/desktop/*",                       h_not_implemented, 0),
};
const size_t n_agent_routes = sizeof agent_routes / sizeof agent_routes[0];

int h_not_implemented(sreq *r)
{
    return reply_problem(r, 501, "not_implemented",
                         "%s %s is not implemented by cell yet (agents, ACP sessions, config and desktop "
                         "come in a later release)", r->method, r->url);
}
