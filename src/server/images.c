/* images.c: the image store through the API (issue 13): GET /v1/images and
 * /v1/images/{name} with digest, size, created and source; POST
 * /v1/images/{name}/import (admin; the body, an OCI layout or docker-archive
 * tar, streams through a pipe into cell_image_import on a worker thread, as
 * lane imports do); DELETE /v1/images/{name} (admin; 409 while used).
 * Images are host-wide and only admins add or remove them; which tenants
 * see one is the operator's choice: PUT /v1/images/{name}/tenants writes
 * STATE/images/.shares/NAME (a JSON array of tenant names, "*" for all).
 * An image imported through the API starts shared with no tenant; one
 * without that file (builtins, images made by the CLI or by a lane commit)
 * is visible to every tenant.  Quota accounting of images: not yet. */
#include "server/handlers.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#define SHARES_MAX_JSON (256u << 10)

/* STATE/images/.shares/NAME for an importable name, else -1. */
static int shares_path(srv *s, const char *name, char *out, size_t size)
{
    size_t n = strlen(name);
    if (n < 1 || n > 63 || name[0] == '.' || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789._-") != n)
        return -1;
    return snprintf(out, size, "%s/images/.shares/%s", s->state_dir, name) < (int)size ? 0 : -1;
}

int images_visible(sreq *r, const char *name)
{
    char path[4096];
    if (!name || r->tok.admin || shares_path(r->s, name, path, sizeof path) < 0)
        return 1;
    json_error_t jerr;
    json_t *list = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!list)
        return access(path, F_OK) < 0 && errno == ENOENT; /* no file: not restricted; unreadable: hidden */
    int seen = 0;
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t) {
        const char *v = json_string_value(t);
        seen |= v && (strcmp(v, "*") == 0 || strcmp(v, r->tok.tenant) == 0);
    }
    json_decref(list);
    return seen;
}

/* tenants as STATE/images/.shares/NAME: a temp file, then rename (replace)
 * or link (only if none is there: 0 then, 1 when made). */
static int put_shares(srv *s, const char *name, json_t *tenants, int replace, cell_error *e)
{
    char path[4096], dir[4096], tmp[4200], suffix[17];
    if (shares_path(s, name, path, sizeof path) < 0)
        return util_fail(e, EINVAL, "image name '%.80s' cannot be shared", name);
    if (util_random_hex(suffix, 8) < 0)
        return util_fail_errno(e, "getrandom");
    if (util_path(dir, sizeof dir, e, "%s/images/.shares", s->state_dir) < 0 ||
        util_path(tmp, sizeof tmp, e, "%s/.tmp-%s", dir, suffix) < 0)
        return -1;
    char *text = json_dumps(tenants, JSON_COMPACT);
    if (!text)
        return util_fail(e, ENOMEM, "out of memory");
    int rc = util_mkdir_p(dir, 0700, e) < 0 || util_write_file(tmp, text, strlen(text), 0600, 1, e) < 0 ? -1 : 1;
    free(text);
    if (rc == 1 && replace && rename(tmp, path) < 0)
        rc = util_fail_errno(e, "cannot write %s", path);
    if (rc == 1 && !replace && link(tmp, path) < 0)
        rc = errno == EEXIST ? 0 : util_fail_errno(e, "cannot write %s", path);
    unlink(tmp);
    return rc;
}

static int write_shares(srv *s, const char *name, json_t *tenants, cell_error *e)
{
    return put_shares(s, name, tenants, 1, e) < 0 ? -1 : 0;
}

/* An empty list for `name` unless one exists: 1 made, 0 there, -1 error. */
static int new_shares(srv *s, const char *name, cell_error *e)
{
    json_t *none = json_array();
    int rc = none ? put_shares(s, name, none, 0, e) : util_fail(e, ENOMEM, "out of memory");
    json_decref(none);
    return rc;
}

static void drop_shares(srv *s, const char *name)
{
    char path[4096];
    if (shares_path(s, name, path, sizeof path) == 0)
        unlink(path);
}

int images_share_with(srv *s, const char *name, const char *tenant, cell_error *e)
{
    json_t *one = json_pack("[s]", tenant);
    int rc = one ? put_shares(s, name, one, 0, e) : util_fail(e, ENOMEM, "out of memory");
    json_decref(one);
    return rc;
}

void images_share_drop(srv *s, const char *name)
{
    drop_shares(s, name);
}

static json_t *info_json(const cell_image_info *m)
{
    return json_pack("{s:s, s:s*, s:I, s:I, s:s, s:b}", "name", m->name, "digest", m->digest[0] ? m->digest : NULL,
                     "size", (json_int_t)m->size, "created", (json_int_t)m->created, "source", m->source,
                     "ready", m->ready);
}

/* The list under the shared context's lock, as r's tenant sees it; NULL
 * with e filled. */
static json_t *images_json(sreq *r, const char *only, cell_error *e)
{
    srv *s = r->s;
    cell_image_info *imgs = NULL;
    size_t n = 0;
    pthread_mutex_lock(&s->ctx_lock);
    int rc = cell_image_list(s->ctx, &imgs, &n, e);
    pthread_mutex_unlock(&s->ctx_lock);
    if (rc < 0)
        return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        if ((!only || strcmp(only, imgs[i].name) == 0) && images_visible(r, imgs[i].name))
            json_array_append_new(arr, info_json(&imgs[i]));
    free(imgs);
    return arr;
}

int h_images_ls(sreq *r)
{
    cell_error e = { 0 };
    json_t *arr = images_json(r, NULL, &e);
    if (!arr)
        return reply_error(r, &e);
    return reply_json(r, 200, json_pack("{s:o}", "images", arr));
}

int h_images_show(sreq *r)
{
    const char *name = router_param(&r->m, "name");
    cell_error e = { 0 };
    json_t *arr = images_json(r, name, &e);
    if (!arr)
        return reply_error(r, &e);
    json_t *one = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    if (!one)
        return reply_problem(r, 404, "not_found", "image %s (GET /v1/images lists them)", name);
    return reply_json(r, 200, one);
}

int h_images_delete(sreq *r)
{
    const char *name = router_param(&r->m, "name");
    req_audit(r, "image", json_string(name));
    cell_error e = { 0 };
    pthread_mutex_lock(&r->s->ctx_lock);
    int rc = cell_image_remove(r->s->ctx, name, &e);
    pthread_mutex_unlock(&r->s->ctx_lock);
    if (rc < 0)
        return reply_error(r, &e);
    drop_shares(r->s, name);
    return reply_json(r, 200, json_pack("{s:s, s:b}", "name", name, "deleted", 1));
}

/* PUT /v1/images/{name}/tenants {"tenants": ["a", "b"] or ["*"]} (admin). */
int h_images_share(sreq *r)
{
    const char *name = router_param(&r->m, "name");
    req_audit(r, "image", json_string(name));
    json_t *body;
    if (req_json(r, &body) < 0)
        return MHD_YES;
    if (req_check_fields(r, body, "", "tenants", NULL) < 0) {
        json_decref(body);
        return MHD_YES;
    }
    json_t *tenants = json_object_get(body, "tenants");
    size_t i;
    json_t *t;
    int ok = json_is_array(tenants) && json_array_size(tenants) <= 1024;
    json_array_foreach(tenants, i, t)
        ok = ok && json_is_string(t) && json_string_length(t) >= 1 && json_string_length(t) <= 63;
    if (!ok) {
        json_decref(body);
        return reply_problem(r, 400, "invalid_request", "field \"tenants\": an array of at most 1024 tenant "
                             "names (1-63 bytes each), or [\"*\"] for every tenant");
    }
    cell_error e = { 0 };
    json_t *arr = images_json(r, name, &e);
    json_t *one = arr ? json_array_get(arr, 0) : NULL;
    const char *source = json_string_value(json_object_get(one, "source"));
    int rc = 0;
    if (!arr)
        rc = reply_error(r, &e);
    else if (!one)
        rc = reply_problem(r, 404, "not_found", "image %s (GET /v1/images lists them)", name);
    else if (source && strcmp(source, "builtin") == 0)
        rc = reply_problem(r, 400, "invalid_request", "image %s is builtin: every tenant sees it", name);
    else if (write_shares(r->s, name, tenants, &e) < 0)
        rc = reply_error(r, &e);
    else
        rc = reply_json(r, 200, json_pack("{s:s, s:O}", "name", name, "tenants", tenants));
    json_decref(arr);
    json_decref(body);
    return rc;
}

/* ---- import --------------------------------------------------------------------- */

typedef struct image_import {
    char       state_dir[4096];
    char       name[64];
    int        rfd, wfd;      /* the pipe: the body goes in at wfd, the worker reads rfd */
    pthread_t  worker;
    int        worker_on, rc;
    int        made_shares;   /* this import wrote its .shares file */
    cell_error err;
} image_import;

static void *import_main(void *arg)
{
    image_import *im = arg;
    cell_ctx *ctx = NULL;
    im->rc = -1;
    if (cell_ctx_open(&ctx, im->state_dir, &im->err) == 0) {
        im->rc = cell_image_import(ctx, im->name, im->rfd, NULL, NULL, &im->err);
        cell_ctx_close(ctx);
    }
    /* Closing the read end makes a body still arriving fail with EPIPE,
     * so a refused import stops taking the upload. */
    close(im->rfd);
    im->rfd = -1;
    return NULL;
}

/* Stop the worker (an import cut short fails and removes its staging dir). */
static void import_stop(image_import *im)
{
    if (im->wfd >= 0) {
        close(im->wfd);
        im->wfd = -1;
    }
    if (im->worker_on) {
        pthread_join(im->worker, NULL);
        im->worker_on = 0;
    }
}

static void import_free(sreq *r)
{
    image_import *im = r->stream;
    if (!im)
        return;
    import_stop(im);
    if (im->rfd >= 0)
        close(im->rfd);
    free(im);
    r->stream = NULL;
}

static int tar_type(sreq *r)
{
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    return ct && (strncasecmp(ct, "application/x-tar", 17) == 0 || strncasecmp(ct, "application/gzip", 16) == 0);
}

/* Name checks here, before any of the body is read: the runtime checks the
 * same again. */
static int name_refused(sreq *r, const char *name)
{
    size_t n = strlen(name);
    int ok = n >= 1 && n <= 63 && name[0] != '.' && name[0] != '-' && strspn(name, "abcdefghijklmnopqrstuvwxyz"
                                                                               "0123456789._-") == n;
    if (!ok)
        return reply_problem(r, 400, "invalid_request", "image name '%.80s': use 1-63 of a-z 0-9 . _ - not "
                             "starting with '.' or '-'", name), 1;
    if (strcmp(name, "host") == 0 || strcmp(name, "debian-bookworm") == 0 || strcmp(name, "blobs") == 0)
        return reply_problem(r, 400, "invalid_request", "image name '%s' is reserved (a builtin image or the "
                             "blob store): choose another", name), 1;
    return 0;
}

static image_import *import_begin(sreq *r)
{
    const char *name = router_param(&r->m, "name");
    req_audit(r, "image", json_string(name));
    if (!tar_type(r))
        return reply_problem(r, 400, "invalid_request", "the body must be an image tar (Content-Type: "
                             "application/x-tar)"), NULL;
    if (name_refused(r, name))
        return NULL;
    image_import *im = calloc(1, sizeof *im);
    if (!im)
        return reply_problem(r, 500, "internal", "out of memory"), NULL;
    im->rfd = im->wfd = -1;
    r->stream = im;
    r->stream_free = import_free;
    snprintf(im->state_dir, sizeof im->state_dir, "%s", r->s->state_dir);
    snprintf(im->name, sizeof im->name, "%s", name);
    /* Shared with no tenant until the operator says otherwise, from before
     * the image exists: no tenant ever sees it unshared.  A file already
     * there (another import of the name, or the operator's word on an
     * earlier image of it) is left as it is. */
    cell_error se = { 0 };
    if ((im->made_shares = new_shares(r->s, name, &se)) < 0)
        return reply_error(r, &se), NULL;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return reply_problem(r, 500, "internal", "cannot make a pipe: %s", strerror(errno)), NULL;
    im->rfd = fds[0];
    im->wfd = fds[1];
    if (pthread_create(&im->worker, NULL, import_main, im) != 0)
        return reply_problem(r, 500, "internal", "could not start the import worker"), NULL;
    im->worker_on = 1;
    return im;
}

int h_images_import_body(sreq *r, const char *data, size_t len)
{
    image_import *im = r->stream;
    if (!im && !(im = import_begin(r)))
        return -1;
    if (im->wfd >= 0 && util_write_all(im->wfd, data, len) < 0) {
        /* The worker stopped reading: it failed; its error is the reply. */
        close(im->wfd);
        im->wfd = -1;
    }
    return 0;
}

int h_images_import(sreq *r)
{
    image_import *im = r->stream;
    if (!im) {
        if (!tar_type(r))
            return reply_problem(r, 400, "invalid_request", "the body must be an image tar (Content-Type: "
                                 "application/x-tar)");
        const char *name = router_param(&r->m, "name");
        if (name_refused(r, name))
            return MHD_YES;
        return reply_problem(r, 400, "invalid_request", "the body is empty: send the image tar");
    }
    import_stop(im);
    /* Dropped only while no image has the name: a concurrent import of it
     * may have won, and its image keeps the list. */
    char meta[4200];
    snprintf(meta, sizeof meta, "%s/images/%s/image.json", r->s->state_dir, im->name);
    if (im->rc < 0 && im->made_shares && access(meta, F_OK) < 0)
        drop_shares(r->s, im->name);
    if (im->rc < 0) {
        cell_error e = im->err;
        /* What the archive got wrong is the client's error. */
        if (e.code == EBADMSG || e.code == EPROTO || e.code == ENOENT || e.code == EPIPE)
            e.code = EINVAL;
        return reply_error(r, &e);
    }
    cell_error e = { 0 };
    json_t *arr = images_json(r, im->name, &e);
    json_t *one = arr ? json_incref(json_array_get(arr, 0)) : NULL;
    json_decref(arr);
    if (!one)
        return reply_error(r, &e);
    return reply_json(r, 201, one);
}
