/* images.c: the image store through the API (issue 13): GET /v1/images and
 * /v1/images/{name} with digest, size, created and source; POST
 * /v1/images/{name}/import (admin; the body, an OCI layout or docker-archive
 * tar, streams through a pipe into cell_image_import on a worker thread, as
 * lane imports do); DELETE /v1/images/{name} (an admin, or the tenant that
 * committed the image; 409 while used).
 * Images are host-wide; which tenants see one fails closed: builtins are
 * seen by all, an image a tenant committed through the API (image.json's
 * "tenant", source "commit") by that tenant, and any other only by the
 * tenants the operator shares it with: PUT /v1/images/{name}/tenants
 * writes STATE/images/.shares/NAME (a JSON array of tenant names, "*" for
 * all), which the runtime removes with the image.  Admins see all.  To a
 * tenant an image it does not see answers as an unknown one, on every
 * route.  Images made through the API count against the disk quota of the
 * tenant recorded in image.json (srv_images_tenant_bytes). */
#include "server/handlers.h"
#include "server/runs.h"
#include "server/slog.h"
#include "runtime/image_meta.h"
#include "runtime/runtime.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
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

static int builtin_name(const char *name)
{
    for (const char *const *b = runtime_image_names; *b; b++)
        if (strcmp(*b, name) == 0)
            return 1;
    return 0;
}

/* images/NAME/image.json of a stored image into *m; -1 if there is none. */
static int read_meta(srv *s, const char *name, struct image_meta *m)
{
    char dir[4096];
    if (runtime_image_meta_check_name(name, NULL) < 0 ||
        snprintf(dir, sizeof dir, "%s/images/%s", s->state_dir, name) >= (int)sizeof dir)
        return -1;
    return runtime_image_meta_read_dir(dir, m, NULL);
}

/* The operator's list names `tenant` (or "*").  No list, or one that
 * cannot be read: shared with nobody. */
static int shared_with(srv *s, const char *name, const char *tenant)
{
    char path[4096];
    if (shares_path(s, name, path, sizeof path) < 0)
        return 0;
    json_error_t jerr;
    json_t *list = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
    if (!list)
        return 0;
    int seen = 0;
    size_t i;
    json_t *t;
    json_array_foreach(list, i, t) {
        const char *v = json_string_value(t);
        seen |= v && (strcmp(v, "*") == 0 || strcmp(v, tenant) == 0);
    }
    json_decref(list);
    return seen;
}

/* 1 if the image exists and r's tenant may use it; 0 for an unknown
 * image and for one it may not see alike (callers answer both the same). */
int srv_images_visible(sreq *r, const char *name)
{
    if (!name)
        return 0;
    if (builtin_name(name))
        return 1;
    struct image_meta m;
    if (read_meta(r->s, name, &m) < 0)
        return 0;
    int owner = strcmp(m.source, "commit") == 0 && m.tenant[0] && strcmp(m.tenant, r->tok.tenant) == 0;
    runtime_image_meta_free(&m);
    return r->tok.admin || owner || shared_with(r->s, name, r->tok.tenant);
}

/* What a tenant's images hold: for each image made through the API for it,
 * its rootfs (image.json's size) and every blob it names, in full even
 * where another image shares it, so that the charge never depends on
 * (and never reveals) what other tenants stored. */
static uint64_t meta_bytes(srv *s, const struct image_meta *m)
{
    uint64_t total = m->size;
    for (size_t j = 0; j < m->n_layers + m->n_blobs; j++) {
        char path[4096];
        struct stat st;
        const char *d = j < m->n_layers ? m->layers[j] : m->blobs[j - m->n_layers];
        if (snprintf(path, sizeof path, "%s/images/blobs/sha256/%s", s->state_dir, d + 7) < (int)sizeof path &&
            stat(path, &st) == 0)
            total += (uint64_t)st.st_size;
    }
    return total;
}

uint64_t srv_images_tenant_bytes(srv *s, const char *tenant)
{
    cell_image_info *imgs = NULL;
    size_t n = 0;
    uint64_t total = 0;
    pthread_mutex_lock(&s->ctx_lock);
    int rc = cell_image_list(s->ctx, &imgs, &n, NULL);
    pthread_mutex_unlock(&s->ctx_lock);
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct image_meta m;
        if (strcmp(imgs[i].source, "builtin") == 0 || read_meta(s, imgs[i].name, &m) < 0)
            continue;
        if (strcmp(m.tenant, tenant) == 0)
            total += meta_bytes(s, &m);
        runtime_image_meta_free(&m);
    }
    free(imgs);
    return total;
}

/* The tenant's quota and what its lanes (their sizes), runs and images hold. */
static int disk_of(srv *s, const char *tenant, store_tenant *t, uint64_t *used, cell_error *e)
{
    size_t n = 0;
    uint64_t lanes = 0;
    if (store_tenant_ensure(s->st, tenant, e) < 0 || store_tenant_get(s->st, tenant, t, e) < 0 ||
        store_lane_count(s->st, tenant, &n, &lanes, e) < 0)
        return -1;
    *used = lanes + srv_runs_tenant_bytes(s, tenant) + srv_images_tenant_bytes(s, tenant);
    return 0;
}

int srv_images_quota_before(sreq *r, const char *name, uint64_t *left)
{
    store_tenant t;
    uint64_t used = 0;
    cell_error e = { 0 };
    if (disk_of(r->s, r->tok.tenant, &t, &used, &e) < 0)
        return srv_reply_error(r, &e), -1;
    if (used >= t.max_disk)
        return srv_reply_problem(r, 403, "quota_exceeded", "tenant %s: quota \"disk\" is %llu bytes and its lanes, runs "
                             "and images hold %llu: no room for image %s (remove some, or raise maxDisk)", t.name,
                             (unsigned long long)t.max_disk, (unsigned long long)used, name), -1;
    *left = t.max_disk - used;
    return 0;
}

/* Its size is known once it is made: counted then, under the lock the
 * lanes' check takes, so two images (or an image and a lane) made at once
 * cannot both fit in the same room. */
int srv_images_quota_after(sreq *r, const char *name)
{
    store_tenant t;
    uint64_t used = 0, mine = 0;
    cell_error e = { 0 };
    struct image_meta m;
    srv_lanes_quota_hold();
    int rc = disk_of(r->s, r->tok.tenant, &t, &used, &e);
    if (rc == 0 && read_meta(r->s, name, &m) == 0) {
        mine = meta_bytes(r->s, &m);
        runtime_image_meta_free(&m);
    }
    if (rc == 0 && used > t.max_disk) {
        cell_error re = { 0 };
        pthread_mutex_lock(&r->s->ctx_lock);
        if (cell_image_remove(r->s->ctx, name, &re) < 0)
            srv_slog(SLOG_ERROR, SLOG_F("image", name, "tenant", t.name),
                 "image %s over tenant %s's disk quota could not be removed: %s", name, t.name, re.message);
        pthread_mutex_unlock(&r->s->ctx_lock);
    }
    srv_lanes_quota_release();
    if (rc < 0)
        return srv_reply_error(r, &e), -1;
    if (used > t.max_disk)
        return srv_reply_problem(r, 403, "quota_exceeded", "tenant %s: quota \"disk\" is %llu bytes; its lanes, runs and "
                             "other images hold %llu and image %s needs %llu: it was not kept", t.name,
                             (unsigned long long)t.max_disk, (unsigned long long)(used - mine), name,
                             (unsigned long long)mine), -1;
    return 0;
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

/* The list written holding the image directory's flock shared, and only
 * while images/NAME is still the directory locked: the runtime's removal
 * holds it exclusively while it renames the image away and removes the
 * list, so a list is never written for an image being removed (a later
 * image of the name would inherit it).  ENOENT when the image is gone. */
static int write_shares(srv *s, const char *name, json_t *tenants, cell_error *e)
{
    char dir[4096];
    if (snprintf(dir, sizeof dir, "%s/images/%s", s->state_dir, name) >= (int)sizeof dir)
        return util_fail(e, ENAMETOOLONG, "image name too long");
    _cleanup_close_ int fd = open(dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || flock(fd, LOCK_SH) < 0)
        return util_fail(e, ENOENT, "unknown image '%s'", name);
    struct stat held, now;
    if (fstat(fd, &held) < 0 || stat(dir, &now) < 0 || held.st_ino != now.st_ino || held.st_dev != now.st_dev ||
        faccessat(fd, "image.json", F_OK, 0) < 0)
        return util_fail(e, ENOENT, "unknown image '%s'", name);
    return put_shares(s, name, tenants, 1, e) < 0 ? -1 : 0;
}

/* "lanes": the lanes on the image a tenant may know of: its own by name;
 * to an admin every tenant's, as TENANT/NAME. */
static json_t *info_json(const cell_image_info *m, const store_lane *lanes, size_t n, int admin)
{
    json_t *names = json_array();
    for (size_t i = 0; names && i < n; i++) {
        char one[160];
        if (strcmp(lanes[i].image, m->name) != 0 || strcmp(lanes[i].state, "ready") != 0)
            continue;
        if (admin)
            snprintf(one, sizeof one, "%s/%s", lanes[i].tenant, lanes[i].name);
        else
            snprintf(one, sizeof one, "%s", lanes[i].name);
        json_array_append_new(names, json_string(one));
    }
    return json_pack("{s:s, s:s*, s:I, s:I, s:s, s:b, s:o*}", "name", m->name, "digest",
                     m->digest[0] ? m->digest : NULL, "size", (json_int_t)m->size, "created", (json_int_t)m->created,
                     "source", m->source, "ready", m->ready, "lanes", names);
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
    store_lane *lanes = NULL;
    size_t nl = 0;
    if (rc < 0 || store_lane_list(s->st, r->tok.admin ? NULL : r->tok.tenant, &lanes, &nl, e) < 0) {
        free(imgs);
        return NULL;
    }
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        if ((!only || strcmp(only, imgs[i].name) == 0) && srv_images_visible(r, imgs[i].name))
            json_array_append_new(arr, info_json(&imgs[i], lanes, nl, r->tok.admin));
    free(lanes);
    free(imgs);
    return arr;
}

int srv_h_images_ls(sreq *r)
{
    cell_error e = { 0 };
    json_t *arr = images_json(r, NULL, &e);
    if (!arr)
        return srv_reply_error(r, &e);
    return srv_reply_json(r, 200, json_pack("{s:o}", "images", arr));
}

int srv_h_images_show(sreq *r)
{
    const char *name = srv_router_param(&r->m, "name");
    cell_error e = { 0 };
    json_t *arr = images_json(r, name, &e);
    if (!arr)
        return srv_reply_error(r, &e);
    json_t *one = json_incref(json_array_get(arr, 0));
    json_decref(arr);
    if (!one)
        return srv_reply_problem(r, 404, "not_found", "image %s (GET /v1/images lists them)", name);
    return srv_reply_json(r, 200, one);
}

/* 1 if r's tenant committed the image through the API (it may delete it). */
static int owned(sreq *r, const char *name)
{
    struct image_meta m;
    if (read_meta(r->s, name, &m) < 0)
        return 0;
    int mine = strcmp(m.source, "commit") == 0 && strcmp(m.tenant, r->tok.tenant) == 0;
    runtime_image_meta_free(&m);
    return mine;
}

/* DELETE /v1/images/{name}: an admin any image, a tenant the ones it
 * committed; the runtime removes the share list and collects the blobs. */
int srv_h_images_delete(sreq *r)
{
    const char *name = srv_router_param(&r->m, "name");
    srv_req_audit(r, "image", json_string(name));
    if (!r->tok.admin && !srv_images_visible(r, name))
        return srv_reply_problem(r, 404, "not_found", "image %s (GET /v1/images lists them)", name);
    if (!r->tok.admin && !owned(r, name))
        return srv_reply_problem(r, 403, "forbidden", "image %s: a tenant removes only the images it committed; "
                             "an admin removes the others", name);
    cell_error e = { 0 };
    pthread_mutex_lock(&r->s->ctx_lock);
    int rc = cell_image_remove(r->s->ctx, name, &e);
    pthread_mutex_unlock(&r->s->ctx_lock);
    if (rc < 0 && e.code == ENOENT)
        return srv_reply_problem(r, 404, "not_found", "image %s (GET /v1/images lists them)", name);
    if (rc < 0)
        return srv_reply_error(r, &e);
    return srv_reply_json(r, 200, json_pack("{s:s, s:b}", "name", name, "deleted", 1));
}

/* PUT /v1/images/{name}/tenants {"tenants": ["a", "b"] or ["*"]} (admin). */
int srv_h_images_share(sreq *r)
{
    const char *name = srv_router_param(&r->m, "name");
    srv_req_audit(r, "image", json_string(name));
    json_t *body;
    if (srv_req_json(r, &body) < 0)
        return MHD_YES;
    if (srv_req_check_fields(r, body, "", "tenants", NULL) < 0) {
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
        return srv_reply_problem(r, 400, "invalid_request", "field \"tenants\": an array of at most 1024 tenant "
                             "names (1-63 bytes each), or [\"*\"] for every tenant");
    }
    cell_error e = { 0 };
    json_t *arr = images_json(r, name, &e);
    json_t *one = arr ? json_array_get(arr, 0) : NULL;
    const char *source = json_string_value(json_object_get(one, "source"));
    int rc = 0;
    if (!arr)
        rc = srv_reply_error(r, &e);
    else if (!one)
        rc = srv_reply_problem(r, 404, "not_found", "image %s (GET /v1/images lists them)", name);
    else if (source && strcmp(source, "builtin") == 0)
        rc = srv_reply_problem(r, 400, "invalid_request", "image %s is builtin: every tenant sees it", name);
    else if (write_shares(r->s, name, tenants, &e) < 0)
        rc = e.code == ENOENT ? srv_reply_problem(r, 404, "not_found", "image %s (GET /v1/images lists them)", name)
                              : srv_reply_error(r, &e);
    else
        rc = srv_reply_json(r, 200, json_pack("{s:s, s:O}", "name", name, "tenants", tenants));
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
    char       tenant[64];    /* charged with the image (the admin token's) */
    uint64_t   max_size;      /* what the tenant's disk quota leaves (at most the default) */
    cell_error err;
} image_import;

static void *import_main(void *arg)
{
    image_import *im = arg;
    cell_ctx *ctx = NULL;
    im->rc = -1;
    if (cell_ctx_open(&ctx, im->state_dir, &im->err) == 0) {
        im->rc = runtime_image_import_owned(ctx, im->name, im->rfd, im->max_size, im->tenant, NULL, NULL, &im->err);
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
        return srv_reply_problem(r, 400, "invalid_request", "image name '%.80s': use 1-63 of a-z 0-9 . _ - not "
                             "starting with '.' or '-'", name), 1;
    if (strcmp(name, "host") == 0 || strcmp(name, "debian-bookworm") == 0 || strcmp(name, "desktop") == 0 ||
        strcmp(name, "blobs") == 0)
        return srv_reply_problem(r, 400, "invalid_request", "image name '%s' is reserved (a builtin image or the "
                             "blob store): choose another", name), 1;
    return 0;
}

static image_import *import_begin(sreq *r)
{
    const char *name = srv_router_param(&r->m, "name");
    srv_req_audit(r, "image", json_string(name));
    if (!tar_type(r))
        return srv_reply_problem(r, 400, "invalid_request", "the body must be an image tar (Content-Type: "
                             "application/x-tar)"), NULL;
    if (name_refused(r, name))
        return NULL;
    uint64_t left = 0;
    if (srv_images_quota_before(r, name, &left) < 0)
        return NULL;
    image_import *im = calloc(1, sizeof *im);
    if (!im)
        return srv_reply_problem(r, 500, "internal", "out of memory"), NULL;
    im->rfd = im->wfd = -1;
    r->stream = im;
    r->stream_free = import_free;
    snprintf(im->state_dir, sizeof im->state_dir, "%s", r->s->state_dir);
    snprintf(im->name, sizeof im->name, "%s", name);
    snprintf(im->tenant, sizeof im->tenant, "%s", r->tok.tenant);
    /* The archive and the rootfs stop at what the quota leaves: an upload
     * past it is refused while it streams. */
    im->max_size = left < CELL_IMAGE_DEFAULT_MAX_SIZE ? left : CELL_IMAGE_DEFAULT_MAX_SIZE;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0)
        return srv_reply_problem(r, 500, "internal", "cannot make a pipe: %s", strerror(errno)), NULL;
    im->rfd = fds[0];
    im->wfd = fds[1];
    if (pthread_create(&im->worker, NULL, import_main, im) != 0)
        return srv_reply_problem(r, 500, "internal", "could not start the import worker"), NULL;
    im->worker_on = 1;
    return im;
}

int srv_h_images_import_body(sreq *r, const char *data, size_t len)
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

int srv_h_images_import(sreq *r)
{
    image_import *im = r->stream;
    if (!im) {
        if (!tar_type(r))
            return srv_reply_problem(r, 400, "invalid_request", "the body must be an image tar (Content-Type: "
                                 "application/x-tar)");
        const char *name = srv_router_param(&r->m, "name");
        if (name_refused(r, name))
            return MHD_YES;
        return srv_reply_problem(r, 400, "invalid_request", "the body is empty: send the image tar");
    }
    import_stop(im);
    if (im->rc < 0 && im->err.code == EFBIG && im->max_size < CELL_IMAGE_DEFAULT_MAX_SIZE)
        return srv_reply_problem(r, 403, "quota_exceeded", "tenant %s: image %s is larger than the %llu bytes its quota "
                             "\"disk\" leaves (lanes, runs and images count): remove some, or raise maxDisk",
                             im->tenant, im->name, (unsigned long long)im->max_size);
    if (im->rc < 0) {
        cell_error e = im->err;
        /* What the archive got wrong is the client's error. */
        if (e.code == EBADMSG || e.code == EPROTO || e.code == ENOENT || e.code == EPIPE)
            e.code = EINVAL;
        return srv_reply_error(r, &e);
    }
    if (srv_images_quota_after(r, im->name) < 0)
        return MHD_YES;
    cell_error e = { 0 };
    json_t *arr = images_json(r, im->name, &e);
    json_t *one = arr ? json_incref(json_array_get(arr, 0)) : NULL;
    json_decref(arr);
    if (!one)
        return srv_reply_error(r, &e);
    return srv_reply_json(r, 201, one);
}
