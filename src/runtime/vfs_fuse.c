/* vfs_fuse.c: the owner's side of a virtual filesystem (vfs.h): a FUSE
 * server built on libfuse's low-level API over a /dev/fuse fd that the boot
 * child mounts.  Linked into libcell-vfs.so (src/plugin/vfs.c) and, for
 * the tests, into programs linked with $(LIBCELL_BUILTINS).
 *
 * Threads: one reader decodes requests and queues a job for each callback;
 * up to VFS_MAX_WORKERS workers run them; a watchdog answers EIO to every
 * job unanswered at its deadline.  A job is answered once: whoever sets
 * `answered` (under the lock) replies, so a late result is dropped and the
 * cell never waits past the timeout, even when every worker is stuck in a
 * callback that never returns. */
#define FUSE_USE_VERSION 34
#include <fuse_lowlevel.h>

#include "runtime/vfs.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define VFS_MAX_WORKERS   16
#define VFS_MAX_DIRENTS   (1u << 20)    /* per directory listing */
#define VFS_MAX_DIRBYTES  (64u << 20)   /* names in one listing */

enum vfs_op { OP_LOOKUP, OP_GETATTR, OP_OPENDIR, OP_OPEN, OP_READ, OP_RELEASE, OP_WRITE, OP_CREATE, OP_UNLINK,
              OP_RMDIR, OP_RENAME, OP_MKDIR, OP_SETATTR };

struct job {
    struct job *next;                   /* the queue */
    struct job *pprev_next, *pnext;     /* the pending list (queued or running) */
    fuse_req_t  req;
    enum vfs_op op;
    int         answered;               /* under the lock */
    struct timespec deadline;
    uint64_t    ino, ino2, fh, off;
    size_t      size;
    int         flags, to_set;
    uint32_t    mode;
    char       *name, *name2, *data;
};

struct dirent_rec {
    char    *name;
    uint64_t ino;
    uint32_t mode;
};

struct dirlist {
    struct dirent_rec *e;
    size_t n, cap, bytes;
    int    bad;                         /* the provider listed something invalid */
};

struct runtime_vfs {
    struct runtime_vfs_spec spec;       /* a copy: options may be freed while the cell lives */
    uid_t uid;
    gid_t gid;
    int   fd, stop_fd;
    struct fuse_session *se;
    pthread_mutex_t lock;
    pthread_cond_t  work, tick;
    struct job *queue_head, *queue_tail;
    struct job *pending;
    int   stopping, idle, n_workers, serving;
    int   watch_sleeping, watch_timed;  /* the watchdog waits on `tick` (until watch_until) */
    struct timespec watch_until;
    pthread_t workers[VFS_MAX_WORKERS];
    pthread_t reader, watchdog;
};

/* ---- results from the provider --------------------------------------------- */

/* A callback's negative errno, or EIO for anything else. */
static int cb_errno(long r)
{
    return r < 0 && r >= -4095 ? (int)-r : EIO;
}

static double vfs_cache_secs(const struct runtime_vfs *v)
{
    /* Writable tiers: the provider may change what the cell wrote; ask again. */
    return v->spec.tier == CELL_VFS_READONLY ? 1.0 : 0.0;
}

/* 0, or EIO when the provider's attributes are not a file or directory. */
static int vfs_stat(const struct runtime_vfs *v, const cell_vfs_attr *a, struct stat *st)
{
    if (a->ino == 0 || (!S_ISREG(a->mode) && !S_ISDIR(a->mode)) || a->size > INT64_MAX)
        return EIO;
    memset(st, 0, sizeof *st);
    st->st_ino = a->ino;
    mode_t perm = a->mode & 0777;
    if (v->spec.tier == CELL_VFS_READONLY)
        perm &= ~0222u;
    st->st_mode = (a->mode & S_IFMT) | perm;
    st->st_nlink = S_ISDIR(a->mode) ? 2 : 1;
    st->st_uid = v->uid;
    st->st_gid = v->gid;
    st->st_size = (off_t)a->size;
    st->st_blksize = 4096;
    st->st_blocks = (blkcnt_t)((a->size + 511) / 512);
    st->st_atime = st->st_mtime = st->st_ctime = a->mtime;
    return 0;
}

static int vfs_entry(const struct runtime_vfs *v, const cell_vfs_attr *a, struct fuse_entry_param *e)
{
    memset(e, 0, sizeof *e);
    if (vfs_stat(v, a, &e->attr) != 0)
        return EIO;
    e->ino = a->ino;
    e->attr_timeout = e->entry_timeout = vfs_cache_secs(v);
    return 0;
}

static int vfs_valid_name(const char *name)
{
    size_t n = strlen(name);
    return n > 0 && n <= 255 && !strchr(name, '/') && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static int dir_fill(void *dir, const char *name, uint64_t ino, uint32_t mode)
{
    struct dirlist *d = dir;
    if (d->bad)
        return -1;
    if (!name || !vfs_valid_name(name) || ino == 0 || (!S_ISREG(mode) && !S_ISDIR(mode))) {
        d->bad = EIO;
        return -1;
    }
    size_t len = strlen(name);
    if (d->n >= VFS_MAX_DIRENTS || d->bytes + len > VFS_MAX_DIRBYTES) {
        d->bad = EFBIG;
        return -1;
    }
    if (d->n == d->cap) {
        size_t cap = d->cap ? d->cap * 2 : 16;
        struct dirent_rec *e = realloc(d->e, cap * sizeof *e);
        if (!e) {
            d->bad = ENOMEM;
            return -1;
        }
        d->e = e;
        d->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy) {
        d->bad = ENOMEM;
        return -1;
    }
    d->e[d->n++] = (struct dirent_rec){ .name = copy, .ino = ino, .mode = mode & S_IFMT };
    d->bytes += len;
    return 0;
}

static void dir_free(struct dirlist *d)
{
    if (!d)
        return;
    for (size_t i = 0; i < d->n; i++)
        free(d->e[i].name);
    free(d->e);
    free(d);
}

/* ---- jobs ----------------------------------------------------------------- */

static void job_free(struct job *j)
{
    free(j->name);
    free(j->name2);
    free(j->data);
    free(j);
}

/* 1 if the caller is the one to answer j (it was not answered yet). */
static int job_claim(struct runtime_vfs *v, struct job *j)
{
    pthread_mutex_lock(&v->lock);
    int mine = !j->answered;
    j->answered = 1;
    pthread_mutex_unlock(&v->lock);
    return mine;
}

static void run_lookup(struct runtime_vfs *v, struct job *j)
{
    cell_vfs_attr a = { 0 };
    struct fuse_entry_param e;
    int r = v->spec.ops.lookup(v->spec.user, j->ino, j->name, &a);
    r = r ? cb_errno(r) : vfs_entry(v, &a, &e);
    if (job_claim(v, j))
        r ? fuse_reply_err(j->req, r) : fuse_reply_entry(j->req, &e);
}

static void run_getattr(struct runtime_vfs *v, struct job *j)
{
    cell_vfs_attr a = { 0 };
    struct stat st;
    int r = v->spec.ops.getattr(v->spec.user, j->ino, &a);
    r = r ? cb_errno(r) : vfs_stat(v, &a, &st);
    if (job_claim(v, j))
        r ? fuse_reply_err(j->req, r) : fuse_reply_attr(j->req, &st, vfs_cache_secs(v));
}

/* The whole listing is taken at opendir and served from memory, so that
 * offsets stay consistent however the provider's directory changes. */
static void run_opendir(struct runtime_vfs *v, struct job *j)
{
    struct dirlist *d = calloc(1, sizeof *d);
    int r = d ? v->spec.ops.readdir(v->spec.user, j->ino, dir_fill, d) : -ENOMEM;
    r = r ? cb_errno(r) : d->bad;
    if (!job_claim(v, j)) {
        dir_free(d);
        return;
    }
    if (r) {
        dir_free(d);
        fuse_reply_err(j->req, r);
        return;
    }
    struct fuse_file_info fi = { .fh = (uint64_t)(uintptr_t)d };
    if (fuse_reply_open(j->req, &fi) != 0)
        dir_free(d);    /* the request was interrupted: releasedir will not come */
}

static void vfs_release_fh(struct runtime_vfs *v, uint64_t ino, uint64_t fh)
{
    if (v->spec.ops.release)
        v->spec.ops.release(v->spec.user, ino, fh);
}

static void reply_open(struct runtime_vfs *v, struct job *j, uint64_t fh)
{
    struct fuse_file_info fi = { .fh = fh };
    /* WRITABLE: every read and write reaches the provider in order. */
    fi.direct_io = v->spec.tier == CELL_VFS_WRITABLE;
    /* READONLY: the cache outlives a close; a provider's change of size or
     * mtime still drops it when the attributes are next read (libfuse's
     * default auto_inval_data). */
    fi.keep_cache = v->spec.tier == CELL_VFS_READONLY;
    if (fuse_reply_open(j->req, &fi) != 0)
        vfs_release_fh(v, j->ino, fh);
}

static void run_open(struct runtime_vfs *v, struct job *j)
{
    uint64_t fh = 0;
    int r = 0;
    /* libfuse asks for atomic O_TRUNC: the truncation is the open's. */
    if (j->flags & O_TRUNC) {
        cell_vfs_attr a = { 0 };
        r = v->spec.ops.truncate ? v->spec.ops.truncate(v->spec.user, j->ino, 0, &a) : -EPERM;
    }
    if (!r && v->spec.ops.open)
        r = v->spec.ops.open(v->spec.user, j->ino, j->flags, &fh);
    r = r ? cb_errno(r) : 0;
    if (!job_claim(v, j)) {
        if (!r)     /* answered EIO already: the cell will not release it */
            vfs_release_fh(v, j->ino, fh);
        return;
    }
    r ? (void)fuse_reply_err(j->req, r) : reply_open(v, j, fh);
}

/* A worker's read buffer, kept from one read to the next: a fresh 128 KiB
 * malloc per request is an mmap, 32 page faults and an munmap each time. */
struct read_buf {
    char  *p;
    size_t cap;
};

static void run_read(struct runtime_vfs *v, struct job *j, struct read_buf *b)
{
    size_t need = j->size ? j->size : 1;
    if (b->cap < need) {
        free(b->p);
        b->cap = (b->p = malloc(need)) ? need : 0;
    }
    ssize_t n = b->p ? v->spec.ops.read(v->spec.user, j->ino, j->fh, b->p, j->size, j->off) : -ENOMEM;
    /* A count past the buffer is garbage (and may mean the buffer was
     * overrun): EIO, nothing of it reaches the cell. */
    int r = n < 0 ? cb_errno(n) : (size_t)n > j->size ? EIO : 0;
    if (job_claim(v, j))
        r ? fuse_reply_err(j->req, r) : fuse_reply_buf(j->req, b->p, (size_t)n);
}

static void run_write(struct runtime_vfs *v, struct job *j)
{
    ssize_t n = v->spec.ops.write(v->spec.user, j->ino, j->fh, j->data, j->size, j->off);
    int r = n < 0 ? cb_errno(n) : (size_t)n > j->size ? EIO : 0;
    if (job_claim(v, j))
        r ? fuse_reply_err(j->req, r) : fuse_reply_write(j->req, (size_t)n);
}

static void run_create(struct runtime_vfs *v, struct job *j)
{
    cell_vfs_attr a = { 0 };
    uint64_t fh = 0;
    struct fuse_entry_param e;
    int r = v->spec.ops.create(v->spec.user, j->ino, j->name, j->mode, &a, &fh);
    int made = r == 0;
    r = r ? cb_errno(r) : vfs_entry(v, &a, &e);
    if (!job_claim(v, j)) {
        if (made)   /* answered EIO already: the cell will not release it */
            vfs_release_fh(v, a.ino, fh);
        return;
    }
    if (r) {
        if (made)
            vfs_release_fh(v, a.ino, fh);
        fuse_reply_err(j->req, r);
        return;
    }
    struct fuse_file_info fi = { .fh = fh, .direct_io = v->spec.tier == CELL_VFS_WRITABLE };
    if (fuse_reply_create(j->req, &e, &fi) != 0)
        vfs_release_fh(v, a.ino, fh);
}

static void run_mkdir(struct runtime_vfs *v, struct job *j)
{
    cell_vfs_attr a = { 0 };
    struct fuse_entry_param e;
    int r = v->spec.ops.mkdir(v->spec.user, j->ino, j->name, j->mode, &a);
    r = r ? cb_errno(r) : vfs_entry(v, &a, &e);
    if (job_claim(v, j))
        r ? fuse_reply_err(j->req, r) : fuse_reply_entry(j->req, &e);
}

static void run_simple(struct runtime_vfs *v, struct job *j)
{
    const cell_vfs_ops *o = &v->spec.ops;
    int r;
    if (j->op == OP_UNLINK)
        r = o->unlink(v->spec.user, j->ino, j->name);
    else if (j->op == OP_RMDIR)
        r = o->rmdir(v->spec.user, j->ino, j->name);
    else if (j->op == OP_RENAME)
        r = o->rename(v->spec.user, j->ino, j->name, j->ino2, j->name2);
    else {
        vfs_release_fh(v, j->ino, j->fh);
        r = 0;
    }
    r = r ? cb_errno(r) : 0;
    if (job_claim(v, j))
        fuse_reply_err(j->req, r);
}

/* Only a size change reaches the provider; times are accepted and not
 * kept (touch works), owner and mode changes are refused. */
static void run_setattr(struct runtime_vfs *v, struct job *j)
{
    cell_vfs_attr a = { 0 };
    struct stat st;
    int r = EPERM;
    if (!(j->to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID))) {
        /* ll_setattr refused a size change without a truncate callback. */
        r = (j->to_set & FUSE_SET_ATTR_SIZE) ? v->spec.ops.truncate(v->spec.user, j->ino, j->off, &a)
                                             : v->spec.ops.getattr(v->spec.user, j->ino, &a);
        r = r ? cb_errno(r) : vfs_stat(v, &a, &st);
    }
    if (job_claim(v, j))
        r ? fuse_reply_err(j->req, r) : fuse_reply_attr(j->req, &st, vfs_cache_secs(v));
}

static void job_run(struct runtime_vfs *v, struct job *j, struct read_buf *b)
{
    switch (j->op) {
    case OP_LOOKUP:  run_lookup(v, j); break;
    case OP_GETATTR: run_getattr(v, j); break;
    case OP_OPENDIR: run_opendir(v, j); break;
    case OP_OPEN:    run_open(v, j); break;
    case OP_READ:    run_read(v, j, b); break;
    case OP_WRITE:   run_write(v, j); break;
    case OP_CREATE:  run_create(v, j); break;
    case OP_MKDIR:   run_mkdir(v, j); break;
    case OP_SETATTR: run_setattr(v, j); break;
    default:         run_simple(v, j); break;
    }
}

static void pending_remove(struct runtime_vfs *v, struct job *j)
{
    if (j->pprev_next)
        j->pprev_next->pnext = j->pnext;
    else
        v->pending = j->pnext;
    if (j->pnext)
        j->pnext->pprev_next = j->pprev_next;
}

static void *worker_main(void *arg)
{
    struct runtime_vfs *v = arg;
    struct read_buf b = { NULL, 0 };
    pthread_mutex_lock(&v->lock);
    for (;;) {
        while (!v->queue_head && !v->stopping) {
            v->idle++;
            pthread_cond_wait(&v->work, &v->lock);
            v->idle--;
        }
        struct job *j = v->queue_head;
        if (!j)
            break;
        v->queue_head = j->next;
        if (!v->queue_head)
            v->queue_tail = NULL;
        /* Timed out while queued, or the cell is gone: no callback. */
        int skip = j->answered || v->stopping;
        pthread_mutex_unlock(&v->lock);
        if (!skip)
            job_run(v, j, &b);
        else if (job_claim(v, j))
            fuse_reply_err(j->req, EIO);
        pthread_mutex_lock(&v->lock);
        pending_remove(v, j);
        job_free(j);
    }
    pthread_mutex_unlock(&v->lock);
    free(b.p);
    return NULL;
}

static int ts_before(const struct timespec *a, const struct timespec *b)
{
    return a->tv_sec < b->tv_sec || (a->tv_sec == b->tv_sec && a->tv_nsec < b->tv_nsec);
}

/* Under the lock: a worker is started when none is idle (up to the cap). */
static void job_submit(struct runtime_vfs *v, fuse_req_t req, struct job *j)
{
    j->req = req;
    clock_gettime(CLOCK_MONOTONIC, &j->deadline);
    uint64_t ms = v->spec.timeout_ms;
    j->deadline.tv_sec += (time_t)(ms / 1000);
    j->deadline.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (j->deadline.tv_nsec >= 1000000000L) {
        j->deadline.tv_sec++;
        j->deadline.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&v->lock);
    j->pnext = v->pending;
    j->pprev_next = NULL;
    if (v->pending)
        v->pending->pprev_next = j;
    v->pending = j;
    if (v->queue_tail)
        v->queue_tail->next = j;
    else
        v->queue_head = j;
    v->queue_tail = j;
    if (v->idle == 0 && v->n_workers < VFS_MAX_WORKERS &&
        pthread_create(&v->workers[v->n_workers], NULL, worker_main, v) == 0)
        v->n_workers++;
    /* With no worker at all the watchdog answers it EIO at its deadline.
     * It is woken only when it would otherwise sleep past this deadline:
     * waking it for every request (each read of a file) cost a context
     * switch per request.  A watchdog that is not asleep rescans the
     * pending list, this job included, before it sleeps again. */
    pthread_cond_signal(&v->work);
    if (v->watch_sleeping && (!v->watch_timed || ts_before(&j->deadline, &v->watch_until)))
        pthread_cond_signal(&v->tick);
    pthread_mutex_unlock(&v->lock);
}

static void *watchdog_main(void *arg)
{
    struct runtime_vfs *v = arg;
    pthread_mutex_lock(&v->lock);
    while (!v->stopping) {
        struct timespec now, next = { 0, 0 };
        clock_gettime(CLOCK_MONOTONIC, &now);
        fuse_req_t expired[64];
        size_t n = 0;
        int have_next = 0;
        for (struct job *j = v->pending; j; j = j->pnext) {
            if (j->answered)
                continue;
            if (!ts_before(&now, &j->deadline) && n < sizeof expired / sizeof *expired) {
                j->answered = 1;
                expired[n++] = j->req;
            } else if (!have_next || ts_before(&j->deadline, &next)) {
                next = j->deadline;
                have_next = 1;
            }
        }
        if (n) {
            pthread_mutex_unlock(&v->lock);
            for (size_t i = 0; i < n; i++)
                fuse_reply_err(expired[i], EIO);
            pthread_mutex_lock(&v->lock);
            continue;
        }
        v->watch_sleeping = 1;
        v->watch_timed = have_next;
        v->watch_until = next;
        if (have_next)
            pthread_cond_timedwait(&v->tick, &v->lock, &next);
        else
            pthread_cond_wait(&v->tick, &v->lock);
        v->watch_sleeping = 0;
    }
    pthread_mutex_unlock(&v->lock);
    return NULL;
}

/* ---- the low-level operations (on the reader thread) -------------------------- */

static struct job *job_new(fuse_req_t req, enum vfs_op op, uint64_t ino)
{
    struct job *j = calloc(1, sizeof *j);
    if (!j)
        fuse_reply_err(req, ENOMEM);
    else {
        j->op = op;
        j->ino = ino;
    }
    return j;
}

static int job_name(fuse_req_t req, struct job *j, char **slot, const char *name)
{
    if ((*slot = strdup(name)))
        return 0;
    fuse_reply_err(req, ENOMEM);
    job_free(j);
    return -1;
}

/* A change in a read-only tier (the mount is read-only too), or one the
 * provider does not implement: answered at once. */
static int vfs_refuse(fuse_req_t req, const void *cb)
{
    struct runtime_vfs *v = fuse_req_userdata(req);
    if (v->spec.tier == CELL_VFS_READONLY)
        return fuse_reply_err(req, EROFS), 1;
    if (!cb)
        return fuse_reply_err(req, EPERM), 1;
    return 0;
}

static void ll_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    struct job *j = job_new(req, OP_LOOKUP, parent);
    if (j && job_name(req, j, &j->name, name) == 0)
        job_submit(fuse_req_userdata(req), req, j);
}

static void ll_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
    (void)ino;
    (void)nlookup;
    fuse_reply_none(req);
}

static void ll_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct job *j = job_new(req, OP_GETATTR, ino);
    if (j)
        job_submit(fuse_req_userdata(req), req, j);
}

static void ll_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set, struct fuse_file_info *fi)
{
    (void)fi;
    struct runtime_vfs *v = fuse_req_userdata(req);
    if (vfs_refuse(req, (to_set & FUSE_SET_ATTR_SIZE) ? (const void *)v->spec.ops.truncate
                                                      : (const void *)v->spec.ops.getattr))
        return;
    struct job *j = job_new(req, OP_SETATTR, ino);
    if (!j)
        return;
    j->to_set = to_set;
    j->off = (uint64_t)attr->st_size;
    job_submit(v, req, j);
}

static void ll_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)fi;
    struct job *j = job_new(req, OP_OPENDIR, ino);
    if (j)
        job_submit(fuse_req_userdata(req), req, j);
}

static void ll_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    struct dirlist *d = (struct dirlist *)(uintptr_t)fi->fh;
    char *buf = malloc(size ? size : 1);
    if (!buf) {
        fuse_reply_err(req, ENOMEM);
        return;
    }
    size_t pos = 0;
    /* Offsets: 0 ".", 1 "..", 2 + i the provider's entry i. */
    for (size_t i = off < 0 ? 0 : (size_t)off; i < d->n + 2; i++) {
        struct stat st = { .st_ino = i == 0 ? ino : 1, .st_mode = S_IFDIR };
        const char *name = i == 0 ? "." : "..";
        if (i >= 2) {
            st.st_ino = d->e[i - 2].ino;
            st.st_mode = d->e[i - 2].mode;
            name = d->e[i - 2].name;
        }
        size_t need = fuse_add_direntry(req, buf + pos, size - pos, name, &st, (off_t)(i + 1));
        if (need > size - pos)
            break;
        pos += need;
    }
    fuse_reply_buf(req, buf, pos);
    free(buf);
}

static void ll_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    dir_free((struct dirlist *)(uintptr_t)fi->fh);
    fuse_reply_err(req, 0);
}

static void ll_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct runtime_vfs *v = fuse_req_userdata(req);
    if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
        if (vfs_refuse(req, v->spec.ops.write))
            return;
    struct job *j = job_new(req, OP_OPEN, ino);
    if (!j)
        return;
    j->flags = fi->flags;
    job_submit(v, req, j);
}

static void ll_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, struct fuse_file_info *fi)
{
    struct job *j = job_new(req, OP_READ, ino);
    if (!j)
        return;
    j->fh = fi->fh;
    j->size = size;
    j->off = (uint64_t)off;
    job_submit(fuse_req_userdata(req), req, j);
}

static void ll_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                     struct fuse_file_info *fi)
{
    struct runtime_vfs *v = fuse_req_userdata(req);
    if (vfs_refuse(req, v->spec.ops.write))
        return;
    struct job *j = job_new(req, OP_WRITE, ino);
    if (!j)
        return;
    /* buf belongs to the reader's buffer: the worker gets a copy. */
    if (!(j->data = malloc(size ? size : 1))) {
        fuse_reply_err(req, ENOMEM);
        job_free(j);
        return;
    }
    memcpy(j->data, buf, size);
    j->fh = fi->fh;
    j->size = size;
    j->off = (uint64_t)off;
    job_submit(v, req, j);
}

static void ll_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    struct runtime_vfs *v = fuse_req_userdata(req);
    if (!v->spec.ops.release) {
        fuse_reply_err(req, 0);
        return;
    }
    struct job *j = job_new(req, OP_RELEASE, ino);
    if (!j)
        return;
    j->fh = fi->fh;
    job_submit(v, req, j);
}

static void ll_flush(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
    (void)ino;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void ll_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
    (void)ino;
    (void)datasync;
    (void)fi;
    fuse_reply_err(req, 0);
}

static void ll_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, struct fuse_file_info *fi)
{
    struct runtime_vfs *v = fuse_req_userdata(req);
    if (vfs_refuse(req, v->spec.ops.create))
        return;
    if (!S_ISREG(mode)) {
        fuse_reply_err(req, EPERM);
        return;
    }
    struct job *j = job_new(req, OP_CREATE, parent);
    if (!j || job_name(req, j, &j->name, name) < 0)
        return;
    j->mode = (uint32_t)mode;
    j->flags = fi->flags;
    job_submit(v, req, j);
}

static void ll_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
    struct runtime_vfs *v = fuse_req_userdata(req);
    if (vfs_refuse(req, v->spec.ops.mkdir))
        return;
    struct job *j = job_new(req, OP_MKDIR, parent);
    if (!j || job_name(req, j, &j->name, name) < 0)
        return;
    j->mode = (uint32_t)(S_IFDIR | (mode & 0777));
    job_submit(v, req, j);
}

static void name_op(fuse_req_t req, enum vfs_op op, fuse_ino_t parent, const char *name, const void *cb)
{
    if (vfs_refuse(req, cb))
        return;
    struct job *j = job_new(req, op, parent);
    if (j && job_name(req, j, &j->name, name) == 0)
        job_submit(fuse_req_userdata(req), req, j);
}

static void ll_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    name_op(req, OP_UNLINK, parent, name, ((struct runtime_vfs *)fuse_req_userdata(req))->spec.ops.unlink);
}

static void ll_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
    name_op(req, OP_RMDIR, parent, name, ((struct runtime_vfs *)fuse_req_userdata(req))->spec.ops.rmdir);
}

static void ll_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                      const char *newname, unsigned int flags)
{
    struct runtime_vfs *v = fuse_req_userdata(req);
    if (vfs_refuse(req, v->spec.ops.rename))
        return;
    if (flags) {    /* RENAME_EXCHANGE, RENAME_NOREPLACE: not offered */
        fuse_reply_err(req, EINVAL);
        return;
    }
    struct job *j = job_new(req, OP_RENAME, parent);
    if (!j || job_name(req, j, &j->name, name) < 0 || job_name(req, j, &j->name2, newname) < 0)
        return;
    j->ino2 = newparent;
    job_submit(v, req, j);
}

/* Everything else (symlinks, links, mknod, xattrs, locks: ENOSYS) is left
 * out of the table, which libfuse answers itself. */
static const struct fuse_lowlevel_ops vfs_ll_ops = {
    .lookup = ll_lookup, .forget = ll_forget, .getattr = ll_getattr, .setattr = ll_setattr,
    .opendir = ll_opendir, .readdir = ll_readdir, .releasedir = ll_releasedir,
    .open = ll_open, .read = ll_read, .write = ll_write, .release = ll_release, .flush = ll_flush,
    .fsync = ll_fsync, .create = ll_create, .mkdir = ll_mkdir, .unlink = ll_unlink, .rmdir = ll_rmdir,
    .rename = ll_rename,
};

/* ---- the session ------------------------------------------------------------ */

static void *reader_main(void *arg)
{
    struct runtime_vfs *v = arg;
    struct fuse_buf buf = { .mem = NULL };
    while (!fuse_session_exited(v->se)) {
        struct pollfd p[2] = { { .fd = v->fd, .events = POLLIN }, { .fd = v->stop_fd, .events = POLLIN } };
        if (poll(p, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        if (p[1].revents)
            break;
        int r = fuse_session_receive_buf(v->se, &buf);
        if (r == -EINTR || r == -EAGAIN)
            continue;
        if (r <= 0)     /* the connection ended (ENODEV: the cell's mount is gone) */
            break;
        fuse_session_process_buf(v->se, &buf);
    }
    free(buf.mem);
    return NULL;
}

static void vfs_free(struct runtime_vfs *v)
{
    if (v->se)
        fuse_session_destroy(v->se);    /* closes v->fd */
    else if (v->fd >= 0)
        close(v->fd);
    if (v->stop_fd >= 0)
        close(v->stop_fd);
    pthread_mutex_destroy(&v->lock);
    pthread_cond_destroy(&v->work);
    pthread_cond_destroy(&v->tick);
    free(v->spec.target);
    free(v);
}

static int vfs_open(const struct runtime_vfs_spec *spec, uid_t uid, gid_t gid, struct runtime_vfs **out, int *fuse_fd,
                    cell_error *err)
{
    struct runtime_vfs *v = calloc(1, sizeof *v);
    if (!v)
        return util_fail(err, ENOMEM, "out of memory");
    v->spec = *spec;
    v->uid = uid;
    v->gid = gid;
    v->fd = v->stop_fd = -1;
    pthread_mutex_init(&v->lock, NULL);
    pthread_cond_init(&v->work, NULL);
    if (!(v->spec.target = strdup(spec->target))) {
        vfs_free(v);
        return util_fail(err, ENOMEM, "out of memory");
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&v->tick, &ca);
    pthread_condattr_destroy(&ca);
    if ((v->fd = open("/dev/fuse", O_RDWR | O_CLOEXEC)) < 0) {
        util_fail_errno(err, "vfs at %s: cannot open /dev/fuse (is the fuse module loaded?)", spec->target);
        goto fail;
    }
    if ((v->stop_fd = eventfd(0, EFD_CLOEXEC)) < 0) {
        util_fail_errno(err, "vfs at %s: eventfd", spec->target);
        goto fail;
    }
    char *argv[] = { "cell-vfs", NULL };
    struct fuse_args args = FUSE_ARGS_INIT(1, argv);
    v->se = fuse_session_new(&args, &vfs_ll_ops, sizeof vfs_ll_ops, v);
    fuse_opt_free_args(&args);
    char dev[32];
    snprintf(dev, sizeof dev, "/dev/fd/%d", v->fd);
    /* "/dev/fd/N": libfuse takes the fd as it is, mounting nothing. */
    if (!v->se || fuse_session_mount(v->se, dev) != 0) {
        util_fail(err, EIO, "vfs at %s: cannot start a FUSE session", spec->target);
        goto fail;
    }
    *fuse_fd = v->fd;
    *out = v;
    return 0;
fail:
    vfs_free(v);
    return -1;
}

static int vfs_serve(struct runtime_vfs *v, cell_error *err)
{
    int e = pthread_create(&v->watchdog, NULL, watchdog_main, v);
    if (e)
        return util_fail(err, e, "vfs at %s: cannot start its watchdog thread", v->spec.target);
    if ((e = pthread_create(&v->reader, NULL, reader_main, v))) {
        pthread_mutex_lock(&v->lock);
        v->stopping = 1;
        pthread_cond_broadcast(&v->tick);
        pthread_mutex_unlock(&v->lock);
        pthread_join(v->watchdog, NULL);
        return util_fail(err, e, "vfs at %s: cannot start its reader thread", v->spec.target);
    }
    v->serving = 1;
    return 0;
}

static void vfs_close(struct runtime_vfs *v)
{
    if (!v)
        return;
    if (v->serving) {
        uint64_t one = 1;
        if (write(v->stop_fd, &one, sizeof one) != sizeof one)
            abort();    /* an eventfd write of 1 cannot fail; the join below would hang */
        pthread_join(v->reader, NULL);
        pthread_mutex_lock(&v->lock);
        v->stopping = 1;
        pthread_cond_broadcast(&v->work);
        pthread_cond_broadcast(&v->tick);
        pthread_mutex_unlock(&v->lock);
        /* Workers drain the queue (answering EIO) and finish the callbacks
         * in progress: the provider's `user` is not touched after this. */
        for (int i = 0; i < v->n_workers; i++)
            pthread_join(v->workers[i], NULL);
        pthread_join(v->watchdog, NULL);
        /* Jobs no worker could take (none could be started). */
        while (v->queue_head) {
            struct job *j = v->queue_head;
            v->queue_head = j->next;
            if (!j->answered)
                fuse_reply_err(j->req, EIO);
            job_free(j);
        }
    }
    vfs_free(v);
}

const runtime_vfs_ops runtime_vfs_builtin = {
    .size = sizeof(runtime_vfs_ops),
    .open = vfs_open,
    .serve = vfs_serve,
    .close = vfs_close,
};
