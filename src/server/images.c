/* images.c: the image store through the API (issue 13): GET /v1/images and
 * /v1/images/{name} with digest, size, created and source; POST
 * /v1/images/{name}/import (admin; the body, an OCI layout or docker-archive
 * tar, streams through a pipe into cell_image_import on a worker thread, as
 * lane imports do); DELETE /v1/images/{name} (admin; 409 while used).
 * Images are host-wide: any tenant may boot and list them, only admins
 * add or remove them (per-tenant sharing and quota accounting: not yet). */
#include "server/handlers.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static json_t *info_json(const cell_image_info *m)
{
    return json_pack("{s:s, s:s*, s:I, s:I, s:s, s:b}", "name", m->name, "digest", m->digest[0] ? m->digest : NULL,
                     "size", (json_int_t)m->size, "created", (json_int_t)m->created, "source", m->source,
                     "ready", m->ready);
}

/* The list under the shared context's lock; NULL with e filled. */
static json_t *images_json(srv *s, const char *only, cell_error *e)
{
    cell_image_info *imgs = NULL;
    size_t n = 0;
    pthread_mutex_lock(&s->ctx_lock);
    int rc = cell_image_list(s->ctx, &imgs, &n, e);
    pthread_mutex_unlock(&s->ctx_lock);
    if (rc < 0)
        return NULL;
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        if (!only || strcmp(only, imgs[i].name) == 0)
            json_array_append_new(arr, info_json(&imgs[i]));
    free(imgs);
    return arr;
}

int h_images_ls(sreq *r)
{
    cell_error e = { 0 };
    json_t *arr = images_json(r->s, NULL, &e);
    if (!arr)
        return reply_error(r, &e);
    return reply_json(r, 200, json_pack("{s:o}", "images", arr));
}

int h_images_show(sreq *r)
{
    const char *name = router_param(&r->m, "name");
    cell_error e = { 0 };
    json_t *arr = images_json(r->s, name, &e);
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
    return reply_json(r, 200, json_pack("{s:s, s:b}", "name", name, "deleted", 1));
}

/* ---- import --------------------------------------------------------------------- */

typedef struct image_import {
    char       state_dir[4096];
    char       name[64];
    int        rfd, wfd;      /* the pipe: the body goes in at wfd, the worker reads rfd */
    pthread_t  worker;
    int        worker_on, rc;
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
    if (im->rc < 0) {
        cell_error e = im->err;
        /* What the archive got wrong is the client's error. */
        if (e.code == EBADMSG || e.code == EPROTO || e.code == ENOENT || e.code == EPIPE)
            e.code = EINVAL;
        return reply_error(r, &e);
    }
    cell_error e = { 0 };
    json_t *arr = images_json(r->s, im->name, &e);
    json_t *one = arr ? json_incref(json_array_get(arr, 0)) : NULL;
    json_decref(arr);
    if (!one)
        return reply_error(r, &e);
    return reply_json(r, 201, one);
}
