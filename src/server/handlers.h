/* handlers.h: every route handler, by file.  routes.c binds them to
 * methods and paths; nothing else calls them. */
#ifndef CELL_SERVER_HANDLERS_H
#define CELL_SERVER_HANDLERS_H

#include "server/server_internal.h"

/* cells.c: /v1/cells */
int srv_h_cells_create(sreq *r);
int srv_h_cells_list(sreq *r);
int srv_h_cells_get(sreq *r);
int srv_h_cells_delete(sreq *r);
int srv_h_cells_stop(sreq *r);
int srv_h_cells_start(sreq *r);
int srv_h_cells_policy(sreq *r);

/* lanes.c: /v1/lanes, /v1/images */
int srv_h_lanes_create(sreq *r);
int srv_h_lanes_list(sreq *r);
int srv_h_lanes_get(sreq *r);
int srv_h_lanes_delete(sreq *r);
int srv_h_lanes_export(sreq *r);
int srv_h_lanes_commit(sreq *r);
int srv_h_images_export(sreq *r);
int srv_h_lanes_import(sreq *r);
int srv_h_lanes_import_body(sreq *r, const char *data, size_t len);
int srv_h_images_build(sreq *r);
/* images.c: the image store (list with digests, import, delete) */
int srv_h_images_ls(sreq *r);
int srv_h_images_show(sreq *r);
int srv_h_images_delete(sreq *r);
int srv_h_images_import(sreq *r);
int srv_h_images_import_body(sreq *r, const char *data, size_t len);
int srv_h_images_share(sreq *r);
/* 1 if image `name` exists and r's token may see and use it (admins: all;
 * tenants: the builtins, the images they committed and those shared with
 * them); 0 otherwise: answer it as an unknown image. */
int srv_images_visible(sreq *r, const char *name);
/* Disk quota of images (maxDisk, with lanes and runs): the bytes of the
 * images made through the API for `tenant`; a check before an image is
 * made for r's tenant (403 replied, -1, when nothing is left; *left gets
 * what is) and one after (over the quota: the image removed, 403, -1). */
uint64_t srv_images_tenant_bytes(srv *s, const char *tenant);
int srv_images_quota_before(sreq *r, const char *name, uint64_t *left);
int srv_images_quota_after(sreq *r, const char *name);
/* lanes.c: the lock the disk quota checks of lanes and images share. */
void srv_lanes_quota_hold(void);
void srv_lanes_quota_release(void);

/* admin.c: health, audit, tokens, tenants */
int srv_h_health(sreq *r);
/* ui.c: the Inspector web UI (docs/ui.md). */
int srv_h_ui(sreq *r);
int srv_h_ui_redirect(sreq *r);
/* The UI's security headers (CSP, framing, referrer, isolation): request.c
 * adds them to every answer under /ui, a 404 or a redirect too. */
void srv_ui_security_headers(struct MHD_Response *resp);
int srv_h_audit(sreq *r);
int srv_h_tokens_create(sreq *r);
int srv_h_tokens_list(sreq *r);
int srv_h_tokens_revoke(sreq *r);
int srv_h_tenants_list(sreq *r);
int srv_h_tenants_get(sreq *r);
int srv_h_tenants_put(sreq *r);
/* limits.c: the operator's ceilings and the host budget (admin) */
int srv_h_limits(sreq *r);

/* secrets.c: /v1/secrets (values are write-only) */
int srv_h_secrets_create(sreq *r);
int srv_h_secrets_list(sreq *r);
int srv_h_secrets_delete(sreq *r);

/* procs.c: /cells/{cell}/v1/processes */
int srv_h_cell_health(sreq *r);
int srv_h_proc_config(sreq *r);
int srv_h_proc_run(sreq *r);
int srv_h_proc_create(sreq *r);
int srv_h_proc_list(sreq *r);
int srv_h_proc_get(sreq *r);
int srv_h_proc_logs(sreq *r);
int srv_h_proc_input(sreq *r);
int srv_h_proc_stop(sreq *r);
int srv_h_proc_kill(sreq *r);
int srv_h_proc_delete(sreq *r);
int srv_h_proc_resize(sreq *r);
/* terminal.c */
int srv_h_proc_terminal_ws(sreq *r);
/* The WebSocket handshake checks, shared with desktop_live.c: NULL when r is
 * a handshake we accept (accept filled in), else why not (answer 400);
 * whether a comma-separated header value lists token. */
const char *srv_terminal_check_handshake(sreq *r, char accept[29]);
int srv_terminal_has_token(const char *value, const char *token);
/* desktop_live.c: the desktop's live view over a WebSocket */
int srv_h_desktop_live(sreq *r);

/* fsapi.c: /cells/{cell}/v1/fs */
int srv_h_fs_read(sreq *r);
int srv_h_fs_write(sreq *r);
int srv_h_fs_write_body(sreq *r, const char *data, size_t len);
int srv_h_fs_entries(sreq *r);
int srv_h_fs_stat(sreq *r);
int srv_h_fs_mkdir(sreq *r);
int srv_h_fs_move(sreq *r);
int srv_h_fs_delete(sreq *r);
int srv_h_fs_upload(sreq *r);
int srv_h_fs_upload_body(sreq *r, const char *data, size_t len);

/* agentcfg.c: /cells/{cell}/v1/config/mcp and /config/skills */
int srv_h_config_mcp_get(sreq *r);
int srv_h_config_mcp_put(sreq *r);
int srv_h_config_mcp_delete(sreq *r);
int srv_h_config_skills_get(sreq *r);
int srv_h_config_skills_put(sreq *r);
int srv_h_config_skills_delete(sreq *r);

/* agents.c: /cells/{cell}/v1/agents */
int srv_h_agents_list(sreq *r);
int srv_h_agents_get(sreq *r);
int srv_h_agents_install(sreq *r);
/* acp.c: /cells/{cell}/v1/acp, the ACP proxy */
int srv_h_acp_list(sreq *r);
int srv_h_acp_get(sreq *r);
int srv_h_acp_post(sreq *r);
int srv_h_acp_delete(sreq *r);

/* runs.c: /v1/runs */
int srv_h_runs_create(sreq *r);
int srv_h_runs_list(sreq *r);
int srv_h_runs_get(sreq *r);
int srv_h_runs_delete(sreq *r);
int srv_h_runs_events(sreq *r);
int srv_h_runs_permission(sreq *r);
int srv_h_runs_apply(sreq *r);
int srv_h_runs_artifact(sreq *r);
int srv_h_runs_upload(sreq *r);
int srv_h_runs_upload_body(sreq *r, const char *data, size_t len);

/* pods.c: /v1/pods, the node endpoint (cell serve --pods).  srv_pods_start
 * reads or makes the node token and starts the watcher; srv_pods_stop stops
 * every pod's engine (after the listeners stopped).  srv_pods_node_token: the
 * bearer is the node token, on the unix socket (1), or not (0). */
int  srv_h_pods_create(sreq *r);
int  srv_h_pods_list(sreq *r);
int  srv_h_pods_get(sreq *r);
int  srv_h_pods_delete(sreq *r);
int  srv_h_pods_policy(sreq *r);
int  srv_pods_start(srv *s, cell_error *err);
void srv_pods_stop(srv *s);
int  srv_pods_node_token(sreq *r, const char *bearer);

/* desktop.c: every /cells/{cell}/v1/desktop/... route (the matched route
 * names the operation) */
int srv_h_desktop(sreq *r);

/* routes.c: what belongs to a later issue */
int srv_h_not_implemented(sreq *r);

/* cells.c: the JSON form of a cell, for the CLI and clients. */
json_t *srv_cell_json(scell *sc);

#endif
