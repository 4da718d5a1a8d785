/* fsapi.c: /cells/{cell}/v1/fs/...: files, directories and tar uploads inside
 * a cell, resolved by cell-init in the cell's root; bodies stream, never
 * buffer, through pipes to a transfer process in the cell (files.c): the
 * daemon never reads or writes a file of the cell itself. */
#include "server/handlers.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* sandbox-agent resolves relative paths against the home directory. */
#define FS_HOME "/root"
#define UPLOAD_MAX_PATHS 1024    /* listed; every entry is written */

/* Collapse "//", "." and ".." lexically.  Safe because the result is
 * still resolved inside the cell's root, where ".." stops at "/". */
static void normalize_path(char *path)
{
    char *out = path, *p = path;
    while (*p) {
        while (*p == '/')
            p++;
        size_t len = strcspn(p, "/");
        if (len == 0)
            break;
        if (len == 1 && p[0] == '.') {
            /* skip */
        } else if (len == 2 && p[0] == '.' && p[1] == '.') {
            while (out > path && *--out != '/')
                ;
        } else {
            *out++ = '/';
            memmove(out, p, len);
            out += len;
        }
        p += len;
    }
    if (out == path)
        *out++ = '/';
    *out = '\0';
}

/* The path query parameter made absolute, or a problem queued. */
static int fs_path(sreq *r, const char *key, int required, char *out, size_t size)
{
    const char *p = srv_req_query(r, key);
    if (!p || !*p) {
        if (!required) {
            snprintf(out, size, FS_HOME);
            return 0;
        }
        srv_reply_problem(r, 400, "invalid_request", "missing query parameter \"%s\"", key);
        return -1;
    }
    int n = p[0] == '/' ? snprintf(out, size, "%s", p) : snprintf(out, size, FS_HOME "/%s", p);
    if (n < 0 || (size_t)n >= size) {
        srv_reply_problem(r, 400, "invalid_request", "path is longer than %zu bytes", size - 1);
        return -1;
    }
    normalize_path(out);
    return 0;
}

/* Errors the way sandbox-agent words them: a missing path is the client's
 * mistake (400), an OS failure is a 502 "stream_error" with the errno. */
static int reply_fs_error(sreq *r, const cell_error *e, const char *path)
{
    switch (e->code) {
    case ENOENT:
        return srv_reply_problem(r, 400, "invalid_request", "path not found: %s", path);
    case EISDIR:
        return srv_reply_problem(r, 400, "invalid_request", "path is not a file: %s", path);
    case ECONNRESET:
        return srv_reply_error(r, e);
    case ELOOP:
    case EXDEV:
    case EINVAL:
        return srv_reply_problem(r, 400, "invalid_request", "%s", e->message);
    default:
        return srv_reply_problem(r, 502, "stream_error", "%s (os error %d)", strerror(e->code), e->code);
    }
}


static json_t *modified_json(int64_t mtime)
{
    char buf[40];
    time_t t = (time_t)mtime;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S+00:00", &tm);
    return json_string(buf);
}

static json_t *stat_json(const char *path, const char *name, const cell_stat *st)
{
    json_t *o = json_object();
    if (name)
        json_object_set_new(o, "name", json_string(name));
    json_object_set_new(o, "path", json_string(path));
    json_object_set_new(o, "entryType", json_string(S_ISDIR(st->mode) ? "directory" : "file"));
    json_object_set_new(o, "size", json_integer((json_int_t)st->size));
    json_object_set_new(o, "modified", modified_json(st->mtime));
    return o;
}

/* ---- GET fs/file: the transfer process's pipe, read as the client takes it - */
typedef struct read_state {
    cell_xfer x;
    srv      *s;
    char      token_id[16]; /* who asked: a revocation ends the body (conns.c) */
    uint64_t  size;     /* announced, or 0 for chunked */
    char     *first;    /* chunked: the first block, read before the status line */
    size_t    first_len, first_off;
} read_state;

static ssize_t read_body(void *cls, uint64_t pos, char *buf, size_t max)
{
    read_state *rs = cls;
    if (rs->first_off < rs->first_len) {
        size_t n = rs->first_len - rs->first_off < max ? rs->first_len - rs->first_off : max;
        memcpy(buf, rs->first + rs->first_off, n);
        rs->first_off += n;
        return (ssize_t)n;
    }
    if (rs->x.fd < 0)                 /* read_first() saw it all */
        return MHD_CONTENT_READER_END_OF_STREAM;
    /* Revoked while the cell was slow to answer: end now, not at the
     * transfer's stall limit.  Every chunk passes here, so a revocation
     * also ends a body whose socket cut the reader has not seen yet. */
    if (srv_conns_wait_readable(rs->s, rs->token_id, rs->x.fd) <= 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    ssize_t n = cell_xfer_read(&rs->x, buf, max, NULL);
    if (n > 0)
        return n;
    /* EOF before the announced size, or a transfer that failed or stalled:
     * the client must see a broken response, not a short file. */
    if (n < 0 || (rs->size && pos < rs->size) || cell_xfer_end(&rs->x, NULL) < 0)
        return MHD_CONTENT_READER_END_WITH_ERROR;
    return MHD_CONTENT_READER_END_OF_STREAM;
}

static void read_free(void *cls)
{
    read_state *rs = cls;
    cell_xfer_end(&rs->x, NULL);
    free(rs->first);
    free(rs);
}

/* A file that says it is empty (most of /proc and /sys) goes out chunked.
 * Its first block is read before the status line, so that a read the
 * kernel refuses the cell (EACCES, EPERM, EINVAL) is an error status and
 * not a broken 200. */
static int read_first(read_state *rs, cell_error *e)
{
    enum { FIRST_MAX = 64 * 1024 };
    if (!(rs->first = malloc(FIRST_MAX)))
        return util_fail(e, ENOMEM, "out of memory");
    while (rs->first_len < FIRST_MAX) {
        ssize_t n = cell_xfer_read(&rs->x, rs->first + rs->first_len, FIRST_MAX - rs->first_len, e);
        if (n < 0)
            return -1;
        if (n == 0)
            return cell_xfer_end(&rs->x, e);
        rs->first_len += (size_t)n;
    }
    return 0;
}

int srv_h_fs_read(sreq *r)
{
    char path[4096];
    if (fs_path(r, "path", 1, path, sizeof path) < 0)
        return MHD_YES;
    read_state *rs = calloc(1, sizeof *rs);
    if (!rs)
        return srv_reply_problem(r, 500, "internal", "out of memory");
    cell_error e = { 0 };
    if (WITH_CELL(r->cell, &e, cell_file_read(r->cell->c, path, &rs->x, &e)) < 0) {
        free(rs);
        return reply_fs_error(r, &e, path);
    }
    rs->size = rs->x.size;
    rs->s = r->s;
    snprintf(rs->token_id, sizeof rs->token_id, "%s", r->authed ? r->tok.id : "");
    if (!rs->size && read_first(rs, &e) < 0) {
        read_free(rs);
        return reply_fs_error(r, &e, path);
    }
    /* A whole small file in the first block has a length after all. */
    uint64_t length = rs->size ? rs->size : rs->x.fd < 0 ? rs->first_len : MHD_SIZE_UNKNOWN;
    struct MHD_Response *resp = MHD_create_response_from_callback(length, 256 * 1024, read_body, rs, read_free);
    if (!resp) {
        read_free(rs);
        return MHD_NO;
    }
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/octet-stream");
    return srv_reply_response(r, 200, resp);
}

/* ---- PUT fs/file: each chunk goes to the transfer process as it arrives ---- */
typedef struct write_state {
    cell_xfer x;
    uint64_t  written;
    char      path[4096];
} write_state;

static void write_free(sreq *r)
{
    write_state *w = r->stream;
    if (w)
        cell_xfer_end(&w->x, NULL);
    free(w);
    r->stream = NULL;
}

static write_state *write_begin(sreq *r)
{
    write_state *w = calloc(1, sizeof *w);
    if (!w) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        return NULL;
    }
    w->x.fd = w->x.status_fd = -1;
    r->stream = w;
    r->stream_free = write_free;
    if (fs_path(r, "path", 1, w->path, sizeof w->path) < 0)
        return NULL;
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", w->path);
    char *slash = strrchr(parent, '/');
    if (slash && slash != parent)
        *slash = '\0';
    else
        snprintf(parent, sizeof parent, "/");
    cell_error e = { 0 };
    scell *sc = r->cell;
    int rc = WITH_CELL(sc, &e, cell_file_mkdir(sc->c, parent, 0755, 1, &e) < 0 ? -1
                               : cell_file_write(sc->c, w->path, O_WRONLY | O_CREAT | O_TRUNC, 0644, &w->x, &e));
    if (rc < 0) {
        cell_stat st;
        cell_error e2 = { 0 };
        if ((e.code == EISDIR || e.code == EINVAL) &&
            WITH_CELL(sc, &e2, cell_file_stat(sc->c, w->path, &st, &e2)) == 0 && S_ISDIR(st.mode))
            e.code = EISDIR, srv_reply_problem(r, 502, "stream_error", "%s (os error %d)", strerror(EISDIR), EISDIR);
        else
            reply_fs_error(r, &e, w->path);
        return NULL;
    }
    return w;
}

/* A failed write of the file: out of space is 507, as for the reference. */
static int reply_write_error(sreq *r, const cell_error *e)
{
    if (e->code == ENOSPC || e->code == EDQUOT)
        return srv_reply_problem(r, 507, "insufficient_storage", "%s (os error %d)", strerror(e->code), e->code);
    return srv_reply_problem(r, 502, "stream_error", "%s (os error %d)", strerror(e->code), e->code);
}

int srv_h_fs_write_body(sreq *r, const char *data, size_t len)
{
    write_state *w = r->stream;
    if (!w && !(w = write_begin(r)))
        return -1;
    cell_error e = { 0 };
    if (cell_xfer_write(&w->x, data, len, &e) < 0)
        return reply_write_error(r, &e), -1;
    w->written += len;
    return 0;
}

int srv_h_fs_write(sreq *r)
{
    write_state *w = r->stream;
    if (!w && !(w = write_begin(r)))          /* an empty body still creates the file */
        return MHD_YES;
    cell_error e = { 0 };
    if (cell_xfer_end(&w->x, &e) < 0)         /* the last bytes may fail (ENOSPC, EPERM) */
        return reply_write_error(r, &e);
    return srv_reply_json(r, 200, json_pack("{s:s, s:I}", "path", w->path, "bytesWritten", (json_int_t)w->written));
}

int srv_h_fs_entries(sreq *r)
{
    char path[4096];
    if (fs_path(r, "path", 0, path, sizeof path) < 0)
        return MHD_YES;
    cell_dirent *ents = NULL;
    size_t n = 0;
    cell_error e = { 0 };
    if (WITH_CELL(r->cell, &e, cell_file_list(r->cell->c, path, &ents, &n, &e)) < 0) {
        if (e.code == ENOTDIR)
            return srv_reply_problem(r, 400, "invalid_request", "path is not a directory: %s", path);
        return reply_fs_error(r, &e, path);
    }
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++) {
        char child[4096 + 256];
        snprintf(child, sizeof child, "%s%s%s", path, path[strlen(path) - 1] == '/' ? "" : "/", ents[i].name);
        json_array_append_new(arr, stat_json(child, ents[i].name, &ents[i].st));
    }
    free(ents);
    return srv_reply_json(r, 200, arr);
}

int srv_h_fs_stat(sreq *r)
{
    char path[4096];
    if (fs_path(r, "path", 1, path, sizeof path) < 0)
        return MHD_YES;
    cell_stat st;
    cell_error e = { 0 };
    if (WITH_CELL(r->cell, &e, cell_file_stat(r->cell->c, path, &st, &e)) < 0)
        return reply_fs_error(r, &e, path);
    return srv_reply_json(r, 200, stat_json(path, NULL, &st));
}

int srv_h_fs_mkdir(sreq *r)
{
    char path[4096];
    if (fs_path(r, "path", 1, path, sizeof path) < 0)
        return MHD_YES;
    cell_error e = { 0 };
    cell_stat st;
    if (WITH_CELL(r->cell, &e, cell_file_stat(r->cell->c, path, &st, &e)) == 0 && !S_ISDIR(st.mode))
        e.code = EEXIST;            /* mkdir -p reports ENOTDIR; the reference says "File exists" */
    else if (WITH_CELL(r->cell, &e, cell_file_mkdir(r->cell->c, path, 0755, 1, &e)) == 0)
        return srv_reply_json(r, 200, json_pack("{s:s}", "path", path));
    return reply_fs_error(r, &e, path);
}

int srv_h_fs_move(sreq *r)
{
    json_t *body;
    const char *from = NULL, *to = NULL;
    int overwrite = 0;
    if (srv_req_json(r, &body) < 0)
        return MHD_YES;
    if (srv_json_get_str(r, body, "from", 1, &from) < 0 || srv_json_get_str(r, body, "to", 1, &to) < 0 ||
        srv_json_get_bool(r, body, "overwrite", &overwrite) < 0) {
        json_decref(body);
        return MHD_YES;
    }
    char src[4096], dst[4096];
    snprintf(src, sizeof src, from[0] == '/' ? "%s" : FS_HOME "/%s", from);
    snprintf(dst, sizeof dst, to[0] == '/' ? "%s" : FS_HOME "/%s", to);
    json_decref(body);
    normalize_path(src);
    normalize_path(dst);
    cell_error e = { 0 };
    if (WITH_CELL(r->cell, &e, cell_file_move(r->cell->c, src, dst, overwrite, &e)) < 0) {
        if (e.code == EEXIST)
            return srv_reply_problem(r, 400, "invalid_request", "destination already exists: %s", dst);
        return reply_fs_error(r, &e, src);
    }
    return srv_reply_json(r, 200, json_pack("{s:s, s:s}", "from", src, "to", dst));
}

int srv_h_fs_delete(sreq *r)
{
    char path[4096];
    if (fs_path(r, "path", 1, path, sizeof path) < 0)
        return MHD_YES;
    const char *rec = srv_req_query(r, "recursive");
    if (rec && strcmp(rec, "true") != 0 && strcmp(rec, "false") != 0)
        return srv_reply_problem(r, 400, "invalid_request", "query parameter \"recursive\" must be true or false");
    if (strcmp(path, "/") == 0)
        return srv_reply_problem(r, 400, "invalid_request", "refusing to delete the root directory");
    cell_error e = { 0 };
    int recursive = rec && rec[0] == 't';
    if (WITH_CELL(r->cell, &e, cell_file_delete(r->cell->c, path, recursive, &e)) < 0)
        return reply_fs_error(r, &e, path);
    return srv_reply_json(r, 200, json_pack("{s:s}", "path", path));
}

/* ---- upload-batch: the tar streams through a pipe to a worker -------------- */
static int require_tar_type(sreq *r)
{
    const char *ct = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_TYPE);
    if (ct && strncasecmp(ct, "application/x-tar", 17) == 0)
        return 0;
    srv_reply_problem(r, 400, "invalid_request", "content-type must be application/x-tar");
    return -1;
}

typedef struct upload_state {
    scell     *cell;
    char       dir[4096];
    int        wfd, rfd;
    pthread_t  worker;
    int        worker_on;
    json_t    *paths;
    int        truncated;
    int        rc;
    cell_error err;
} upload_state;

static void upload_path(void *user, const char *rel)
{
    upload_state *u = user;
    if (json_array_size(u->paths) >= UPLOAD_MAX_PATHS) {
        u->truncated = 1;
        return;
    }
    char full[8192];
    snprintf(full, sizeof full, "%s%s%s", u->dir, u->dir[strlen(u->dir) - 1] == '/' ? "" : "/", rel);
    json_array_append_new(u->paths, json_string(full));
}

/* The worker holds the cell's control channel for the whole upload; the
 * request thread only feeds the pipe, so the two never wait on each other. */
static void *upload_main(void *arg)
{
    upload_state *u = arg;
    scell *sc = u->cell;
    srv_scell_io_lock(sc);
    u->rc = sc->c && !sc->dead ? cell_file_upload_tar_cb(sc->c, u->dir, u->rfd, upload_path, u, &u->err)
                               : util_fail(&u->err, ECONNRESET, "cell %s is stopped", sc->id);
    srv_scell_io_unlock(sc);
    close(u->rfd);
    u->rfd = -1;
    return NULL;
}

static void upload_finish_worker(upload_state *u)
{
    if (u->wfd >= 0) {
        close(u->wfd);
        u->wfd = -1;
    }
    if (u->worker_on) {
        pthread_join(u->worker, NULL);
        u->worker_on = 0;
    }
}

static void upload_free(sreq *r)
{
    upload_state *u = r->stream;
    if (!u)
        return;
    upload_finish_worker(u);
    if (u->rfd >= 0)
        close(u->rfd);
    json_decref(u->paths);
    free(u);
    r->stream = NULL;
}

static upload_state *upload_begin(sreq *r)
{
    upload_state *u = calloc(1, sizeof *u);
    if (!u) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        return NULL;
    }
    u->wfd = u->rfd = -1;
    u->cell = r->cell;
    r->stream = u;
    r->stream_free = upload_free;
    if (!(u->paths = json_array())) {
        srv_reply_problem(r, 500, "internal", "out of memory");
        return NULL;
    }
    if (require_tar_type(r) < 0)
        return NULL;
    if (fs_path(r, "path", 0, u->dir, sizeof u->dir) < 0)
        return NULL;
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) < 0) {
        srv_reply_problem(r, 500, "internal", "pipe: %s", strerror(errno));
        return NULL;
    }
    u->rfd = fds[0];
    u->wfd = fds[1];
    if (pthread_create(&u->worker, NULL, upload_main, u) != 0) {
        srv_reply_problem(r, 500, "internal", "could not start the upload worker");
        return NULL;
    }
    u->worker_on = 1;
    return u;
}

int srv_h_fs_upload_body(sreq *r, const char *data, size_t len)
{
    upload_state *u = r->stream;
    if (!u && !(u = upload_begin(r)))
        return -1;
    /* A worker that stopped reading failed; its error is the answer. */
    if (u->wfd >= 0 && util_write_all(u->wfd, data, len) < 0) {
        close(u->wfd);
        u->wfd = -1;
    }
    return 0;
}

int srv_h_fs_upload(sreq *r)
{
    upload_state *u = r->stream;
    if (!u) {
        /* No body at all: an empty archive, as the reference treats it. */
        char dir[4096];
        cell_error e = { 0 };
        if (require_tar_type(r) < 0 || fs_path(r, "path", 0, dir, sizeof dir) < 0)
            return MHD_YES;
        if (WITH_CELL(r->cell, &e, cell_file_mkdir(r->cell->c, dir, 0755, 1, &e)) < 0)
            return reply_fs_error(r, &e, dir);
        return srv_reply_json(r, 200, json_pack("{s:[], s:b}", "paths", "truncated", 0));
    }
    upload_finish_worker(u);
    if (u->rc < 0) {
        if (u->err.code == EINVAL)
            return srv_reply_problem(r, 400, "invalid_request", "%s", u->err.message);
        if (u->err.code == EBADMSG)
            return srv_reply_problem(r, 502, "stream_error", "%s", u->err.message);
        return reply_fs_error(r, &u->err, u->dir);
    }
    return srv_reply_json(r, 200, json_pack("{s:O, s:b}", "paths", u->paths, "truncated", u->truncated));
}
