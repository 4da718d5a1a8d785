/* admin.c: the daemon's own endpoints: health, the tenant's audit log,
 * tokens and tenant quotas (admin tokens only, except reading your own tenant). */
#include "server/handlers.h"

#include <stdio.h>
#include <string.h>

int srv_h_health(sreq *r)
{
    return srv_reply_json(r, 200, json_pack("{s:s, s:I}", "status", "ok",
                                        "uptimeMs", (json_int_t)(srv_now_ms() - r->s->started_ms)));
}

static int query_int(sreq *r, const char *key, int64_t min, int64_t max, int64_t *out)
{
    int present;
    long long n = 0;
    if (srv_req_query_integer(r, key, &n, &present) < 0 || (present && (n < min || n > max))) {
        srv_reply_problem(r, 400, "invalid_request", "query parameter \"%s\" must be an integer between %lld and %lld",
                      key, (long long)min, (long long)max);
        return -1;
    }
    if (present)
        *out = n;
    return 0;
}

/* Newest first in pages of `limit`: a full page's "cursor" is passed back
 * as ?cursor= for the next older one.  Filters are applied while the files
 * are read backwards, so memory is bounded by the page, not the log. */
int srv_h_audit(sreq *r)
{
    int64_t since = 0, limit = 100, cursor = 0;
    if (query_int(r, "since", 0, INT64_MAX, &since) < 0 ||
        query_int(r, "limit", 1, STORE_AUDIT_MAX_RECORDS, &limit) < 0 ||
        query_int(r, "cursor", 1, INT64_MAX, &cursor) < 0)
        return MHD_YES;
    const char *kind = srv_req_query(r, "kind"), *cell_id = srv_req_query(r, "cell");
    if (kind && strcmp(kind, "request") != 0 && strcmp(kind, "process") != 0 && strcmp(kind, "cell") != 0 &&
        strcmp(kind, "net") != 0 && strcmp(kind, "run") != 0)
        return srv_reply_problem(r, 400, "invalid_request", "query parameter \"kind\" must be request, process, cell, "
                             "net or run");
    if (cell_id && strlen(cell_id) > 63)
        return srv_reply_problem(r, 400, "invalid_request", "query parameter \"cell\" must be a cell id");
    /* Allow/deny as records write it: a net record's "verdict" (the egress
     * engine's) or a request record's "decision" (a run's permission
     * answer).  The store compares them as it does kind and cell, so a
     * record with neither never matches. */
    const char *decision = srv_req_query(r, "decision");
    if (decision && strcmp(decision, "allow") != 0 && strcmp(decision, "deny") != 0)
        return srv_reply_problem(r, 400, "invalid_request", "query parameter \"decision\" must be allow or deny "
                                 "(a record's \"verdict\" or \"decision\")");
    store_audit_query q = { .tenant = r->tok.tenant, .kind = kind, .cell = cell_id, .decision = decision,
                            .since_ms = since,
                            .before_seq = (uint64_t)cursor, .limit = (size_t)limit };
    json_t *records = NULL;
    uint64_t next = 0;
    cell_error e = { 0 };
    if (store_audit_find(r->s->st, &q, &records, &next, &e) < 0)
        return srv_reply_error(r, &e);
    json_t *body = json_pack("{s:o}", "records", records);
    if (body && next)
        json_object_set_new(body, "cursor", json_sprintf("%llu", (unsigned long long)next));
    return srv_reply_json(r, 200, body);
}

static json_t *token_json(const store_token *t)
{
    return json_pack("{s:s, s:s, s:s, s:b, s:i, s:I, s:b}", "id", t->id, "tenant", t->tenant, "label", t->label,
                     "admin", t->admin, "rate", (int)t->rate, "createdAtMs", (json_int_t)t->created,
                     "revoked", t->revoked);
}

int srv_h_tokens_create(sreq *r)
{
    json_t *body;
    const char *tenant = NULL, *label = "";
    int admin = 0;
    int64_t rate = r->s->opt.token_rate;
    if (srv_req_json(r, &body) < 0)
        return MHD_YES;
    if (srv_req_check_fields(r, body, "", "tenant", "label", "admin", "rate", NULL) < 0 ||
        srv_json_get_str(r, body, "tenant", 1, &tenant) < 0 || srv_json_get_str(r, body, "label", 0, &label) < 0 ||
        srv_json_get_bool(r, body, "admin", &admin) < 0 || srv_json_get_int(r, body, "rate", 0, 0, 1000000, &rate) < 0)
        goto out;
    if (!util_valid_name(tenant)) {
        srv_reply_problem(r, 400, "invalid_request", "field \"tenant\" must be 1-63 of A-Z a-z 0-9 _ . -");
        goto out;
    }
    if (strlen(label) > 63) {
        srv_reply_problem(r, 400, "invalid_request", "field \"label\" must be at most 63 bytes");
        goto out;
    }
    store_token t;
    char bearer[128];
    cell_error e = { 0 };
    if (store_token_create(r->s->st, tenant, label, admin, (uint32_t)rate, &t, bearer, sizeof bearer, &e) < 0) {
        srv_reply_error(r, &e);
        goto out;
    }
    srv_req_audit(r, "created_token", json_string(t.id));
    json_t *o = token_json(&t);
    json_object_set_new(o, "token", json_string(bearer));
    srv_reply_json(r, 201, o);
out:
    json_decref(body);
    return MHD_YES;
}

int srv_h_tokens_list(sreq *r)
{
    store_token *toks = NULL;
    size_t n = 0;
    cell_error e = { 0 };
    if (store_token_list(r->s->st, &toks, &n, &e) < 0)
        return srv_reply_error(r, &e);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, token_json(&toks[i]));
    free(toks);
    return srv_reply_json(r, 200, json_pack("{s:o}", "tokens", arr));
}

int srv_h_tokens_revoke(sreq *r)
{
    const char *id = srv_router_param(&r->m, "id");
    cell_error e = { 0 };
    /* An unknown or already revoked token is not found: a second DELETE
     * (or the loser of two at once) is a 404 with no "revoked_token". */
    if (store_token_revoke(r->s->st, id, &e) < 0)
        return e.code == ENOENT ? srv_reply_problem(r, 404, "not_found", "token %s (unknown or already revoked)", id)
                                : srv_reply_error(r, &e);
    srv_req_audit(r, "revoked_token", json_string(id));
    srv_conns_revoke_token(r, id);      /* its open streams and connections end too */
    return srv_reply_empty(r, 204);
}

static json_t *tenant_json(srv *s, const store_tenant *t)
{
    size_t cells = 0, lanes = 0;
    uint64_t memory = 0, disk = 0;
    uint64_t mem_reserved, pids;
    srv_registry_usage(s, t->name, &cells, &memory);
    srv_limits_usage(s, t->name, &mem_reserved, &pids);
    store_lane_count(s->st, t->name, &lanes, &disk, NULL);
    uint64_t images = srv_images_tenant_bytes(s, t->name); /* counted in "disk" with the lanes */
    return json_pack("{s:s, s:{s:i, s:I, s:i, s:I, s:I}, s:{s:i, s:I, s:i, s:I, s:I, s:I}}", "name", t->name,
                     "quota", "maxCells", (int)t->max_cells, "maxMemory", (json_int_t)t->max_memory,
                     "maxLanes", (int)t->max_lanes, "maxDisk", (json_int_t)t->max_disk,
                     "maxPids", (json_int_t)t->max_pids,
                     "usage", "cells", (int)cells, "memory", (json_int_t)memory, "lanes", (int)lanes,
                     "disk", (json_int_t)(disk + images), "images", (json_int_t)images, "pids", (json_int_t)pids);
}

int srv_h_tenants_list(sreq *r)
{
    store_tenant *ts = NULL;
    size_t n = 0;
    cell_error e = { 0 };
    if (store_tenant_list(r->s->st, &ts, &n, &e) < 0)
        return srv_reply_error(r, &e);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, tenant_json(r->s, &ts[i]));
    free(ts);
    return srv_reply_json(r, 200, json_pack("{s:o}", "tenants", arr));
}

int srv_h_tenants_get(sreq *r)
{
    const char *name = srv_router_param(&r->m, "name");
    store_tenant t;
    cell_error e = { 0 };
    /* Your own tenant, or any for an admin; others look unknown. */
    if ((!r->tok.admin && strcmp(name, r->tok.tenant) != 0) || store_tenant_get(r->s->st, name, &t, &e) < 0)
        return srv_reply_problem(r, 404, "not_found", "tenant %s", name);
    return srv_reply_json(r, 200, tenant_json(r->s, &t));
}

int srv_h_tenants_put(sreq *r)
{
    const char *name = srv_router_param(&r->m, "name");
    json_t *body;
    if (!util_valid_name(name))
        return srv_reply_problem(r, 400, "invalid_request", "tenant name must be 1-63 of A-Z a-z 0-9 _ . -");
    if (srv_req_json(r, &body) < 0)
        return MHD_YES;
    store_tenant t;
    cell_error e = { 0 };
    if (store_tenant_ensure(r->s->st, name, &e) < 0 || store_tenant_get(r->s->st, name, &t, &e) < 0) {
        json_decref(body);
        return srv_reply_error(r, &e);
    }
    int64_t cells = t.max_cells, lanes = t.max_lanes, pids = t.max_pids;
    uint64_t memory = t.max_memory, disk = t.max_disk;
    if (srv_req_check_fields(r, body, "", "maxCells", "maxMemory", "maxLanes", "maxDisk", "maxPids", NULL) < 0 ||
        srv_json_get_int(r, body, "maxCells", 0, 0, 1000000, &cells) < 0 ||
        srv_json_get_int(r, body, "maxLanes", 0, 0, 1000000, &lanes) < 0 ||
        srv_json_get_int(r, body, "maxPids", 0, 0, UINT32_MAX, &pids) < 0 ||
        srv_json_get_size(r, body, "maxMemory", &memory) < 0 || srv_json_get_size(r, body, "maxDisk", &disk) < 0) {
        json_decref(body);
        return MHD_YES;
    }
    json_decref(body);
    t.max_cells = (uint32_t)cells;
    t.max_lanes = (uint32_t)lanes;
    t.max_pids = (uint32_t)pids;
    t.max_memory = memory;
    t.max_disk = disk;
    if (store_tenant_set_quota(r->s->st, &t, &e) < 0)
        return srv_reply_error(r, &e);
    return srv_reply_json(r, 200, tenant_json(r->s, &t));
}
