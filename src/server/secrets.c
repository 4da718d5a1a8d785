/* secrets.c: /v1/secrets: a tenant's credentials for host-side injection.
 * Values go in and are never answered, echoed in errors, or audited. */
#include "server/handlers.h"
#include "server/slog.h"

#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#define NAME_RULE "1-63 of A-Z a-z 0-9 _ . - (not starting with . or -)"

static json_t *secret_json(const store_secret_info *i)
{
    return json_pack("{s:s, s:I}", "name", i->name, "createdAtMs", (json_int_t)i->created);
}

/* The request body held the value: wipe the buffer http.c will free. */
static void wipe_body(sreq *r)
{
    if (r->body && r->body_len)
        OPENSSL_cleanse(r->body, r->body_len);
}

/* Wipe the value's copy inside the parsed body, then drop the body. */
static void drop_body(json_t *body)
{
    json_t *v = json_object_get(body, "value");
    if (json_is_string(v) && json_string_length(v))
        OPENSSL_cleanse((char *)json_string_value(v), json_string_length(v));
    json_decref(body);
}

/* The count check and the put that follows are one step per daemon. */
static pthread_mutex_t count_lock = PTHREAD_MUTEX_INITIALIZER;

/* 0 if the tenant may store `name` (a replacement, or a new one under
 * --limit secrets), -2 after a 403, -1 on a store error. */
static int secrets_room(sreq *r, const char *name, cell_error *e)
{
    store_secret_info *all = NULL;
    size_t n = 0;
    if (store_secret_list(r->s->st, r->tok.tenant, &all, &n, e) < 0)
        return -1;
    int exists = 0;
    for (size_t i = 0; i < n && !exists; i++)
        exists = strcmp(all[i].name, name) == 0;
    free(all);
    uint64_t limit = r->s->opt.limits.secrets;
    if (exists || n < limit)
        return 0;
    srv_reply_problem_details(r, 403, "quota_exceeded", json_pack("{s:s, s:I}", "limit", "secrets", "ceiling", (json_int_t)limit),
                          "tenant %s has %zu secrets, the operator's limit (cell serve --limit secrets=); "
                          "delete one first", r->tok.tenant, n);
    return -2;
}

int srv_h_secrets_create(sreq *r)
{
    /* Not srv_req_json(): jansson's error text quotes the input near the error,
     * and problem details are written to the audit log. */
    if (r->body_len == 0)
        return srv_reply_problem(r, 400, "invalid_request", "a JSON object body {\"name\", \"value\"} is required");
    json_error_t jerr;
    json_t *body = json_loadb(r->body, r->body_len, JSON_REJECT_DUPLICATES, &jerr);
    wipe_body(r);
    if (!body)
        return srv_reply_problem(r, 400, "invalid_request", "body is not valid JSON (line %d, column %d)", jerr.line,
                             jerr.column);
    if (!json_is_object(body)) {
        drop_body(body);
        return srv_reply_problem(r, 422, "invalid_request", "body must be a JSON object");
    }
    if (srv_req_check_fields(r, body, "", "name", "value", NULL) < 0) {
        drop_body(body);
        return MHD_YES;
    }
    json_t *name_v = json_object_get(body, "name"), *value_v = json_object_get(body, "value");
    const char *name = json_string_value(name_v);
    if (!name || !util_valid_name(name)) {
        drop_body(body);
        return srv_reply_problem(r, 400, "invalid_request", "field \"name\" must be a string of " NAME_RULE);
    }
    if (!json_is_string(value_v)) {
        drop_body(body);
        return srv_reply_problem(r, 400, "invalid_request", "field \"value\" must be a string");
    }
    size_t len = json_string_length(value_v);
    if (len == 0) {
        drop_body(body);
        return srv_reply_problem(r, 400, "invalid_request", "field \"value\" must not be empty");
    }
    if (len > STORE_SECRET_MAX_VALUE) {
        drop_body(body);
        return srv_reply_problem(r, 413, "payload_too_large", "a secret's value is limited to %u bytes",
                             STORE_SECRET_MAX_VALUE);
    }
    char name_copy[64];
    snprintf(name_copy, sizeof name_copy, "%s", name);
    srv_req_audit(r, "secret", json_string(name_copy));
    cell_error e = { 0 };
    pthread_mutex_lock(&count_lock);
    int rc = secrets_room(r, name_copy, &e);
    if (rc == 0)
        rc = store_secret_put(r->s->st, r->tok.tenant, name_copy, json_string_value(value_v), len, &e);
    pthread_mutex_unlock(&count_lock);
    drop_body(body);
    if (rc == -2)
        return MHD_YES;
    if (rc < 0)
        return srv_reply_error(r, &e);     /* store messages name the secret, never the value */

    /* The stored time, so the answer matches a later GET. */
    store_secret_info *all = NULL;
    size_t n = 0;
    store_secret_info info = { .created = srv_now_ms() };
    snprintf(info.name, sizeof info.name, "%s", name_copy);
    if (store_secret_list(r->s->st, r->tok.tenant, &all, &n, &e) == 0)
        for (size_t i = 0; i < n; i++)
            if (strcmp(all[i].name, name_copy) == 0)
                info.created = all[i].created;
    free(all);
    return srv_reply_json(r, 201, secret_json(&info));
}

int srv_h_secrets_list(sreq *r)
{
    store_secret_info *all = NULL;
    size_t n = 0;
    cell_error e = { 0 };
    if (store_secret_list(r->s->st, r->tok.tenant, &all, &n, &e) < 0)
        return srv_reply_error(r, &e);
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, secret_json(&all[i]));
    free(all);
    return srv_reply_json(r, 200, json_pack("{s:o}", "secrets", arr));
}

int srv_h_secrets_delete(sreq *r)
{
    const char *name = srv_router_param(&r->m, "name");
    if (!name || !util_valid_name(name))
        return srv_reply_problem(r, 400, "invalid_request", "a secret name is " NAME_RULE);
    srv_req_audit(r, "secret", json_string(name));
    cell_error e = { 0 };
    if (store_secret_delete(r->s->st, r->tok.tenant, name, &e) < 0)
        return e.code == ENOENT ? srv_reply_problem(r, 404, "not_found", "secret %s", name) : srv_reply_error(r, &e);
    return srv_reply_empty(r, 204);
}

/* The key lives outside cell.db: --secrets-key-file, else STATE/secrets.key
 * (created on first start).  The daemon does not start without it when
 * sealed secrets exist, or with a key that did not seal them. */
int srv_secrets_start(srv *s, cell_error *err)
{
    char path[4096];
    if (s->opt.secrets_key_file)
        snprintf(path, sizeof path, "%s", s->opt.secrets_key_file);
    else if (util_path(path, sizeof path, err, "%s/secrets.key", s->state_dir) < 0)
        return -1;
    size_t sealed = 0;
    if (store_secrets_key(s->st, path, &sealed, err) < 0)
        return -1;
    if (sealed && !s->opt.quiet)
        srv_slog(SLOG_WARN, NULL, "sealed %zu secrets stored in plain text by an older version", sealed);
    return 0;
}
