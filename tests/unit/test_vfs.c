/* test_vfs.c: virtual filesystems served by the test's own callbacks
 * (cell_options_add_vfs), in real cells (root only): the three tiers, a
 * callback slower than the timeout (EIO, nothing hangs, even with every
 * worker stuck), callbacks returning garbage (counts past the buffer, errno
 * out of range, unknown file types, invalid names), 8 concurrent readers in
 * the cell, and FUSE denied to the cell's code. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "cell.h"
#include "runtime/vfs_dir.h"

static char state_dir[] = "/tmp/cell-unit-vfs.XXXXXX";
static cell_ctx *ctx;

/* ---- an in-memory filesystem ------------------------------------------------ */

enum special { PLAIN, SLOW, BAD_COUNT, BAD_ERRNO, BAD_TYPE, BAD_NAMES };
#define MAX_NODES 64
#define BIG_SIZE  (4u << 20)

struct node {
    int      used;
    uint64_t parent;
    char     name[64];
    uint32_t mode;
    char    *data;
    size_t   size;
    enum special kind;
};

static struct mem {
    pthread_mutex_t lock;
    pthread_cond_t  cond;
    struct node     n[MAX_NODES];   /* inode i = n[i]; 1 = the root */
    int             released;       /* SLOW callbacks return once set */
    int             slow_entered;
} fs = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

static char big_byte(size_t i)
{
    return (char)('a' + (i * 7 + i / 4096) % 26);
}

static uint64_t mem_add(uint64_t parent, const char *name, uint32_t mode, const char *data, size_t size,
                        enum special kind)
{
    for (uint64_t i = 2; i < MAX_NODES; i++)
        if (!fs.n[i].used) {
            struct node *x = &fs.n[i];
            *x = (struct node){ .used = 1, .parent = parent, .mode = mode, .size = size, .kind = kind };
            snprintf(x->name, sizeof x->name, "%s", name);
            x->data = malloc(size ? size : 1);
            if (data)
                memcpy(x->data, data, size);
            return i;
        }
    return 0;
}

static void mem_reset(void)
{
    for (int i = 0; i < MAX_NODES; i++)
        free(fs.n[i].data);
    memset(fs.n, 0, sizeof fs.n);
    fs.released = fs.slow_entered = 0;
    fs.n[1] = (struct node){ .used = 1, .parent = 1, .mode = S_IFDIR | 0755 };
    mem_add(1, "hello", S_IFREG | 0644, "hello world\n", 12, PLAIN);
    uint64_t big = mem_add(1, "big", S_IFREG | 0644, NULL, BIG_SIZE, PLAIN);
    for (size_t i = 0; i < BIG_SIZE; i++)
        fs.n[big].data[i] = big_byte(i);
    mem_add(1, "slow", S_IFREG | 0644, "late\n", 5, SLOW);
    mem_add(1, "badcount", S_IFREG | 0644, "x", 1, BAD_COUNT);
    mem_add(1, "baderrno", S_IFREG | 0644, "x", 1, BAD_ERRNO);
    mem_add(1, "badtype", S_IFREG | 0644, "x", 1, BAD_TYPE);
    uint64_t d = mem_add(1, "dir", S_IFDIR | 0755, NULL, 0, PLAIN);
    mem_add(d, "inner", S_IFREG | 0600, "inside\n", 7, PLAIN);
    mem_add(1, "badnames", S_IFDIR | 0755, NULL, 0, BAD_NAMES);
}

static void fill_attr(uint64_t ino, cell_vfs_attr *out)
{
    const struct node *x = &fs.n[ino];
    *out = (cell_vfs_attr){ .ino = ino, .mode = x->mode, .size = x->size, .mtime = 1700000000 };
    if (x->kind == BAD_TYPE)
        out->mode = S_IFCHR | 0666;
}

static uint64_t mem_find(uint64_t parent, const char *name)
{
    for (uint64_t i = 2; i < MAX_NODES; i++)
        if (fs.n[i].used && fs.n[i].parent == parent && strcmp(fs.n[i].name, name) == 0)
            return i;
    return 0;
}

static int valid_ino(uint64_t ino)
{
    return ino > 0 && ino < MAX_NODES && fs.n[ino].used;
}

/* A SLOW callback waits until the test releases it (bounded). */
static void slow_wait(void)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 30;
    fs.slow_entered++;
    while (!fs.released)
        if (pthread_cond_timedwait(&fs.cond, &fs.lock, &until) != 0)
            break;
}

static int cb_lookup(void *user, uint64_t parent, const char *name, cell_vfs_attr *out)
{
    (void)user;
    pthread_mutex_lock(&fs.lock);
    uint64_t i = mem_find(parent, name);
    if (i)
        fill_attr(i, out);
    pthread_mutex_unlock(&fs.lock);
    return i ? 0 : -ENOENT;
}

static int cb_getattr(void *user, uint64_t ino, cell_vfs_attr *out)
{
    (void)user;
    pthread_mutex_lock(&fs.lock);
    int ok = valid_ino(ino);
    if (ok)
        fill_attr(ino, out);
    pthread_mutex_unlock(&fs.lock);
    return ok ? 0 : -ENOENT;
}

static int cb_readdir(void *user, uint64_t ino, cell_vfs_fill_fn fill, void *dir)
{
    (void)user;
    pthread_mutex_lock(&fs.lock);
    if (fs.n[ino].kind == BAD_NAMES) {
        fill(dir, "../escape", 99, S_IFREG);    /* a '/' in a name: the listing is EIO */
        pthread_mutex_unlock(&fs.lock);
        return 0;
    }
    for (uint64_t i = 2; i < MAX_NODES; i++)
        if (fs.n[i].used && fs.n[i].parent == ino)
            fill(dir, fs.n[i].name, i, fs.n[i].mode);
    pthread_mutex_unlock(&fs.lock);
    return 0;
}

static ssize_t cb_read(void *user, uint64_t ino, uint64_t fh, char *buf, size_t size, uint64_t off)
{
    (void)user;
    (void)fh;
    pthread_mutex_lock(&fs.lock);
    struct node *x = &fs.n[ino];
    if (x->kind == SLOW)
        slow_wait();
    ssize_t n;
    if (x->kind == BAD_COUNT)
        n = (ssize_t)size + 4096;
    else if (x->kind == BAD_ERRNO)
        n = -100000;
    else {
        n = off >= x->size ? 0 : (ssize_t)(x->size - off < size ? x->size - off : size);
        if (n > 0)
            memcpy(buf, x->data + off, (size_t)n);
    }
    pthread_mutex_unlock(&fs.lock);
    return n;
}

static ssize_t cb_write(void *user, uint64_t ino, uint64_t fh, const char *buf, size_t size, uint64_t off)
{
    (void)user;
    (void)fh;
    pthread_mutex_lock(&fs.lock);
    struct node *x = &fs.n[ino];
    if (off + size > x->size) {
        char *d = realloc(x->data, off + size);
        if (!d) {
            pthread_mutex_unlock(&fs.lock);
            return -ENOSPC;
        }
        if (off > x->size)
            memset(d + x->size, 0, off - x->size);
        x->data = d;
        x->size = off + size;
    }
    memcpy(x->data + off, buf, size);
    pthread_mutex_unlock(&fs.lock);
    return (ssize_t)size;
}

static int cb_create(void *user, uint64_t parent, const char *name, uint32_t mode, cell_vfs_attr *out, uint64_t *fh)
{
    (void)user;
    *fh = 0;
    pthread_mutex_lock(&fs.lock);
    uint64_t i = mem_find(parent, name);
    if (!i)
        i = mem_add(parent, name, S_IFREG | (mode & 0777), NULL, 0, PLAIN);
    if (i)
        fill_attr(i, out);
    pthread_mutex_unlock(&fs.lock);
    return i ? 0 : -ENOSPC;
}

static int cb_mkdir(void *user, uint64_t parent, const char *name, uint32_t mode, cell_vfs_attr *out)
{
    (void)user;
    pthread_mutex_lock(&fs.lock);
    uint64_t i = mem_find(parent, name) ? 0 : mem_add(parent, name, S_IFDIR | (mode & 0777), NULL, 0, PLAIN);
    if (i)
        fill_attr(i, out);
    pthread_mutex_unlock(&fs.lock);
    return i ? 0 : -EEXIST;
}

static int cb_remove(uint64_t parent, const char *name, int dir)
{
    pthread_mutex_lock(&fs.lock);
    uint64_t i = mem_find(parent, name);
    int r = !i ? -ENOENT : (S_ISDIR(fs.n[i].mode) ? 1 : 0) != dir ? (dir ? -ENOTDIR : -EISDIR) : 0;
    if (!r) {
        free(fs.n[i].data);
        memset(&fs.n[i], 0, sizeof fs.n[i]);
    }
    pthread_mutex_unlock(&fs.lock);
    return r;
}

static int cb_unlink(void *user, uint64_t parent, const char *name)
{
    (void)user;
    return cb_remove(parent, name, 0);
}

static int cb_rmdir(void *user, uint64_t parent, const char *name)
{
    (void)user;
    return cb_remove(parent, name, 1);
}

static int cb_rename(void *user, uint64_t parent, const char *name, uint64_t newparent, const char *newname)
{
    (void)user;
    pthread_mutex_lock(&fs.lock);
    uint64_t i = mem_find(parent, name);
    if (i) {
        uint64_t old = mem_find(newparent, newname);
        if (old) {
            free(fs.n[old].data);
            memset(&fs.n[old], 0, sizeof fs.n[old]);
        }
        fs.n[i].parent = newparent;
        snprintf(fs.n[i].name, sizeof fs.n[i].name, "%s", newname);
    }
    pthread_mutex_unlock(&fs.lock);
    return i ? 0 : -ENOENT;
}

static int cb_truncate(void *user, uint64_t ino, uint64_t size, cell_vfs_attr *out)
{
    (void)user;
    pthread_mutex_lock(&fs.lock);
    struct node *x = &fs.n[ino];
    char *d = realloc(x->data, size ? size : 1);
    if (d) {
        if (size > x->size)
            memset(d + x->size, 0, size - x->size);
        x->data = d;
        x->size = size;
        fill_attr(ino, out);
    }
    pthread_mutex_unlock(&fs.lock);
    return d ? 0 : -ENOSPC;
}

static const cell_vfs_ops mem_ops = {
    .lookup = cb_lookup, .getattr = cb_getattr, .readdir = cb_readdir, .read = cb_read, .write = cb_write,
    .create = cb_create, .unlink = cb_unlink, .rmdir = cb_rmdir, .rename = cb_rename, .mkdir = cb_mkdir,
    .truncate = cb_truncate,
};

/* ---- cells -------------------------------------------------------------------- */

static cell *boot(int tier, uint32_t timeout_ms)
{
    mem_reset();
    cell_options *o = NULL;
    cell_error err = { 0 };
    cell *c = NULL;
    assert_int_equal(cell_options_new(&o, &err), 0);
    assert_int_equal(cell_options_add_vfs(o, "/v", &mem_ops, NULL, tier, timeout_ms, &err), 0);
    if (cell_create_v2(ctx, o, &c, &err) < 0)
        fprintf(stderr, "cell_create_v2: %s\n", err.message);
    cell_options_free(o);
    assert_non_null(c);
    return c;
}

/* Runs sh -c script in the cell; its stdout+stderr into out.  Returns the
 * exit status (bounded: 120 s). */
static int sh(cell *c, const char *script, char *out, size_t size)
{
    int fd = memfd_create("out", MFD_CLOEXEC);
    assert_true(fd >= 0);
    const char *argv[] = { "/bin/sh", "-c", script, NULL };
    cell_proc_spec spec = { .argv = argv, .stdin_fd = -1, .stdout_fd = fd, .stderr_fd = fd };
    pid_t pid;
    cell_error err = { 0 };
    assert_int_equal(cell_spawn(c, &spec, &pid, NULL, &err), 0);
    cell_exit ex;
    assert_int_equal(cell_wait_exit(c, 120000, &ex, &err), 1);
    ssize_t n = pread(fd, out, size - 1, 0);
    out[n > 0 ? n : 0] = '\0';
    close(fd);
    return WIFEXITED(ex.status) ? WEXITSTATUS(ex.status) : 128 + WTERMSIG(ex.status);
}

#define NEED_ROOT() do { if (geteuid() != 0) { skip(); } } while (0)

static char out[1 << 16];

static void readonly_tier_serves_files_and_refuses_changes(void **state)
{
    (void)state;
    NEED_ROOT();
    cell *c = boot(CELL_VFS_READONLY, 0);
    assert_int_equal(sh(c, "cat /v/hello; cat /v/dir/inner; ls /v | tr '\\n' ' '; stat -c '%U %a' /v/hello", out,
                        sizeof out), 0);
    assert_string_equal(out, "hello world\ninside\nbadcount baderrno badnames badtype big dir hello slow "
                             "root 444\n");
    /* Each change fails: the mount is read-only. */
    assert_int_not_equal(sh(c, "echo x > /v/hello", out, sizeof out), 0);
    assert_non_null(strstr(out, "Read-only"));
    assert_int_not_equal(sh(c, "touch /v/new || mkdir /v/d || rm /v/hello || mv /v/hello /v/h2", out, sizeof out), 0);
    assert_int_equal(sh(c, "cat /v/hello", out, sizeof out), 0);
    assert_string_equal(out, "hello world\n");
    cell_destroy(c);
}

static void eight_concurrent_readers_read_the_same_bytes(void **state)
{
    (void)state;
    NEED_ROOT();
    cell *c = boot(CELL_VFS_READONLY, 0);
    /* Drop the page cache between rounds so that reads reach the callbacks. */
    assert_int_equal(sh(c, "for i in 1 2 3 4 5 6 7 8; do cksum </v/big >/tmp/o$i & done; wait; "
                           "cat /tmp/o* | sort -u | wc -l; cat /tmp/o1", out, sizeof out), 0);
    unsigned lines = 0, crc = 0;
    unsigned long long len = 0;
    assert_int_equal(sscanf(out, "%u %u %llu", &lines, &crc, &len), 3);
    assert_int_equal(lines, 1);
    assert_int_equal(len, BIG_SIZE);
    /* The same checksum on the host's copy of the bytes. */
    char path[] = "/tmp/cell-unit-vfs-big.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, fs.n[mem_find(1, "big")].data, BIG_SIZE), BIG_SIZE);
    close(fd);
    char cmd[128], host[128] = "";
    snprintf(cmd, sizeof cmd, "cksum <%s", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    assert_non_null(fgets(host, sizeof host, p));
    pclose(p);
    unlink(path);
    unsigned hcrc = 0;
    assert_int_equal(sscanf(host, "%u", &hcrc), 1);
    assert_int_equal(hcrc, crc);
    cell_destroy(c);
}

static void release_slow(void)
{
    pthread_mutex_lock(&fs.lock);
    fs.released = 1;
    pthread_cond_broadcast(&fs.cond);
    pthread_mutex_unlock(&fs.lock);
}

static void a_slow_callback_is_eio_and_hangs_nothing(void **state)
{
    (void)state;
    NEED_ROOT();
    cell *c = boot(CELL_VFS_READONLY, 200);
    assert_int_not_equal(sh(c, "cat /v/slow", out, sizeof out), 0);
    assert_non_null(strstr(out, "Input/output error"));
    /* 24 readers at once: more than the 16 workers, all stuck in the
     * callback; every read still ends with EIO. */
    assert_int_equal(sh(c, "for i in $(seq 24); do (cat /v/slow >/dev/null 2>&1; echo $? >/tmp/r$i) & done; wait; "
                           "cat /tmp/r* | sort | uniq -c | tr -s ' '", out, sizeof out), 0);
    assert_string_equal(out, " 24 1\n");
    release_slow();
    /* The late answers were dropped; the vfs serves on. */
    assert_int_equal(sh(c, "cat /v/hello", out, sizeof out), 0);
    assert_string_equal(out, "hello world\n");
    cell_destroy(c);
}

static void garbage_from_callbacks_is_eio(void **state)
{
    (void)state;
    NEED_ROOT();
    cell *c = boot(CELL_VFS_READONLY, 0);
    static const char *const scripts[] = { "cat /v/badcount", "cat /v/baderrno", "stat /v/badtype",
                                           "ls /v/badnames" };
    for (size_t i = 0; i < sizeof scripts / sizeof *scripts; i++) {
        assert_int_not_equal(sh(c, scripts[i], out, sizeof out), 0);
        if (!strstr(out, "Input/output error"))
            fprintf(stderr, "%s: %s\n", scripts[i], out);
        assert_non_null(strstr(out, "Input/output error"));
    }
    assert_int_equal(sh(c, "cat /v/hello", out, sizeof out), 0);
    cell_destroy(c);
}

static const char *node_data(const char *name)
{
    uint64_t i = mem_find(1, name);
    return i ? fs.n[i].data : NULL;
}

static void writable_tier_changes_reach_the_callbacks(void **state)
{
    (void)state;
    NEED_ROOT();
    cell *c = boot(CELL_VFS_WRITABLE, 0);
    assert_int_equal(sh(c, "set -e; echo one > /v/f; echo two >> /v/f; mkdir /v/d; mv /v/f /v/d/g; "
                           "mv /v/d/g /v/g; : > /v/hello; rmdir /v/d; cat /v/g; echo 12345 > /v/t; "
                           "truncate -s 3 /v/t; touch /v/t; ls /v | tr '\\n' ' '", out, sizeof out), 0);
    assert_string_equal(out, "one\ntwo\nbadcount baderrno badnames badtype big dir g hello slow t ");
    assert_int_equal(fs.n[mem_find(1, "g")].size, 8);
    assert_memory_equal(node_data("g"), "one\ntwo\n", 8);
    assert_int_equal(fs.n[mem_find(1, "hello")].size, 0);
    assert_int_equal(fs.n[mem_find(1, "t")].size, 3);
    /* Owner and mode changes are refused; a shared writable mmap too
     * (direct I/O). */
    assert_int_not_equal(sh(c, "chmod 600 /v/g", out, sizeof out), 0);
    assert_int_not_equal(sh(c, "chown 1:1 /v/g", out, sizeof out), 0);
    assert_int_not_equal(sh(c, "python3 -c \"import mmap,os\nf=os.open('/v/g',os.O_RDWR)\nmmap.mmap(f,4)\"", out,
                            sizeof out), 0);
    assert_non_null(strstr(out, "No such device"));     /* ENODEV: direct I/O, no shared mmap */
    assert_int_equal(sh(c, "rm /v/g && test ! -e /v/g", out, sizeof out), 0);
    assert_int_equal(mem_find(1, "g"), 0);
    cell_destroy(c);
}

static void posix_tier_allows_shared_mmap(void **state)
{
    (void)state;
    NEED_ROOT();
    cell *c = boot(CELL_VFS_POSIX, 0);
    int rc = sh(c, "echo abcdef > /v/m && python3 -c \"import mmap,os\n"
                   "f=os.open('/v/m',os.O_RDWR)\nm=mmap.mmap(f,7)\nm[0:3]=b'XYZ'\nm.flush()\nm.close()\nos.close(f)\n"
                   "print(open('/v/m').read(),end='')\"", out, sizeof out);
    if (rc != 0)
        fprintf(stderr, "%s\n", out);
    assert_int_equal(rc, 0);
    assert_string_equal(out, "XYZdef\n");
    assert_memory_equal(node_data("m"), "XYZdef\n", 7);
    cell_destroy(c);
}

static void the_cell_cannot_mount_fuse_or_unmount_the_vfs(void **state)
{
    (void)state;
    NEED_ROOT();
    cell *c = boot(CELL_VFS_READONLY, 0);
    static const char *const scripts[] = {
        "test -e /dev/fuse",
        "mknod /tmp/fuse c 10 229",
        "mkdir -p /tmp/m && mount -t fuse -o fd=0,rootmode=40000,user_id=0,group_id=0 x /tmp/m",
        "mkdir -p /tmp/m && unshare -Urm sh -c 'mount -t fuse -o fd=0,rootmode=40000,user_id=0,group_id=0 x /tmp/m'",
        "umount /v",
        "umount -l /v",
        "mount -o remount,rw /v",
        "exec 3</dev/fuse",     /* (not <>, which would create a plain file on /dev's tmpfs) */
    };
    for (size_t i = 0; i < sizeof scripts / sizeof *scripts; i++) {
        if (sh(c, scripts[i], out, sizeof out) == 0)
            fprintf(stderr, "allowed in the cell: %s\n", scripts[i]);
        assert_int_not_equal(sh(c, scripts[i], out, sizeof out), 0);
    }
    assert_int_equal(sh(c, "cat /v/hello && grep -c ' /v fuse' /proc/mounts", out, sizeof out), 0);
    assert_string_equal(out, "hello world\n1\n");
    cell_destroy(c);
}

/* runtime_vfs_dir_ops over a host directory holding a file, a directory, a
 * symlink to /etc, a whiteout (char 0:0) and a fifo: the cell sees the file
 * and the directory only, cannot write, and a directory swapped for a
 * symlink to / while served leads nowhere. */
static void a_host_directory_is_served_without_links_or_devices(void **state)
{
    (void)state;
    NEED_ROOT();
    char dir[] = "/tmp/cell-unit-vfsdir.XXXXXX", p[512];
    assert_non_null(mkdtemp(dir));
    snprintf(p, sizeof p, "mkdir %s/sub && echo data >%s/sub/file && ln -s /etc %s/etc && mknod %s/wh c 0 0 && "
                          "mkfifo %s/fifo && chmod 0600 %s/sub/file", dir, dir, dir, dir, dir, dir);
    assert_int_equal(system(p), 0);
    void *user = NULL;
    cell_error err = { 0 };
    assert_int_equal(runtime_vfs_dir_new(dir, &user, &err), 0);
    cell_options *o = NULL;
    cell *c = NULL;
    assert_int_equal(cell_options_new(&o, &err), 0);
    assert_int_equal(cell_options_add_vfs(o, "/d", &runtime_vfs_dir_ops, user, CELL_VFS_READONLY, 0, &err), 0);
    assert_int_equal(cell_create_v2(ctx, o, &c, &err), 0);
    cell_options_free(o);
    assert_int_equal(sh(c, "ls -A /d; cat /d/sub/file; stat -c '%U %a' /d/sub/file", out, sizeof out), 0);
    assert_string_equal(out, "sub\ndata\nroot 400\n");
    assert_int_not_equal(sh(c, "cat /d/etc/passwd", out, sizeof out), 0);
    assert_int_not_equal(sh(c, "stat /d/wh || stat /d/fifo", out, sizeof out), 0);
    assert_int_not_equal(sh(c, "echo x >/d/sub/file || echo x >/d/new", out, sizeof out), 0);
    /* 3000 names: the provider's path table grows and rehashes. */
    snprintf(p, sizeof p, "mkdir %s/many && cd %s/many && seq 3000 | xargs touch && echo last >3000", dir, dir);
    assert_int_equal(system(p), 0);
    assert_int_equal(sh(c, "stat -c %i /d/many/* | sort -u | wc -l; cat /d/many/3000", out, sizeof out), 0);
    assert_string_equal(out, "3000\nlast\n");
    /* sub becomes a symlink to /: its names are gone, never the host's. */
    snprintf(p, sizeof p, "mv %s/sub %s/old && ln -s / %s/sub", dir, dir, dir);
    assert_int_equal(system(p), 0);
    assert_int_not_equal(sh(c, "cat /d/sub/etc/passwd || ls /d/sub/etc", out, sizeof out), 0);
    assert_int_equal(sh(c, "cat /d/old/file", out, sizeof out), 0);
    assert_string_equal(out, "data\n");
    cell_destroy(c);
    runtime_vfs_dir_free(user);
    snprintf(p, sizeof p, "rm -rf %s", dir);
    assert_int_equal(system(p), 0);
}

static int cb_crash_getattr(void *user, uint64_t ino, cell_vfs_attr *attr)
{
    (void)user;
    if (ino != CELL_VFS_ROOT)
        abort();    /* the owner's own bug: the owner dies, and its cell with it */
    *attr = (cell_vfs_attr){ .ino = ino, .mode = S_IFDIR | 0755 };
    return 0;
}

static int cb_crash_lookup(void *user, uint64_t parent, const char *name, cell_vfs_attr *attr)
{
    (void)parent;
    (void)name;
    return cb_crash_getattr(user, 2, attr);
}

/* A callback that crashes takes its process down (it is the owner's code,
 * run in the owner); the cell goes with it (cell-init's parent-death
 * signal), and nothing is left blocked on the dead FUSE connection. */
static void a_crashing_callback_ends_its_owner_and_the_cell(void **state)
{
    (void)state;
    NEED_ROOT();
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t child = fork();
    assert_true(child >= 0);
    if (child == 0) {
        close(p[0]);
        cell_vfs_ops ops = { .lookup = cb_crash_lookup, .getattr = cb_crash_getattr, .readdir = cb_readdir,
                             .read = cb_read };
        cell_options *o = NULL;
        cell *c = NULL;
        cell_error err = { 0 };
        if (cell_options_new(&o, &err) < 0 || cell_options_add_vfs(o, "/v", &ops, NULL, 0, 0, &err) < 0 ||
            cell_create_v2(ctx, o, &c, &err) < 0)
            _exit(3);
        pid_t init = cell_init_pid(c);
        if (write(p[1], &init, sizeof init) != sizeof init)
            _exit(4);
        char buf[64];
        sh(c, "cat /v/anything", buf, sizeof buf);   /* the lookup aborts this process */
        _exit(5);
    }
    close(p[1]);
    pid_t init = 0;
    assert_int_equal(read(p[0], &init, sizeof init), sizeof init);
    close(p[0]);
    int status = 0;
    assert_int_equal(waitpid(child, &status, 0), child);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
    /* cell-init dies with its owner (bounded wait: up to 30 s). */
    for (int i = 0; i < 300 && kill(init, 0) == 0; i++)
        usleep(100000);
    assert_int_not_equal(kill(init, 0), 0);
}

static void bad_options_are_refused(void **state)
{
    (void)state;
    cell_options *o = NULL;
    cell_error err = { 0 };
    assert_int_equal(cell_options_new(&o, &err), 0);
    cell_vfs_ops partial = { .lookup = cb_lookup, .getattr = cb_getattr, .readdir = cb_readdir };
    assert_int_equal(cell_options_add_vfs(o, "/v", &partial, NULL, 0, 0, &err), -1);
    assert_int_equal(err.code, EINVAL);
    cell_vfs_ops reserved = mem_ops;
    reserved.reserved[3] = (void (*)(void))abort;
    assert_int_equal(cell_options_add_vfs(o, "/v", &reserved, NULL, 0, 0, &err), -1);
    assert_int_equal(cell_options_add_vfs(o, "/v", &mem_ops, NULL, 3, 0, &err), -1);
    assert_int_equal(cell_options_add_vfs(o, "/v", &mem_ops, NULL, -1, 0, &err), -1);
    assert_int_equal(cell_options_add_vfs(o, "/v", &mem_ops, NULL, 0, 3600001, &err), -1);
    assert_int_equal(err.code, ERANGE);
    assert_int_equal(cell_options_add_vfs(o, "/", &mem_ops, NULL, 0, 0, &err), -1);
    assert_int_equal(cell_options_add_vfs(o, "/a/../etc", &mem_ops, NULL, 0, 0, &err), -1);
    assert_int_equal(cell_options_add_vfs(o, "rel", &mem_ops, NULL, 0, 0, &err), -1);
    assert_int_equal(cell_options_add_vfs(o, NULL, &mem_ops, NULL, 0, 0, &err), -1);
    assert_int_equal(cell_options_add_vfs(o, "/v", NULL, NULL, 0, 0, &err), -1);
    /* Another mount inside the vfs: refused at create, before any boot. */
    assert_int_equal(cell_options_add_vfs(o, "/v", &mem_ops, NULL, 0, 0, &err), 0);
    assert_int_equal(cell_options_add_tmpfs(o, "/v/inside", 0, &err), 0);
    if (geteuid() == 0) {
        cell *c = NULL;
        assert_int_equal(cell_create_v2(ctx, o, &c, &err), -1);
        assert_int_equal(err.code, EINVAL);
        assert_non_null(strstr(err.message, "/v/inside"));
    }
    cell_options_free(o);
}

static int setup(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0;
    cell_error err = { 0 };
    if (!mkdtemp(state_dir) || cell_ctx_open(&ctx, state_dir, &err) < 0) {
        fprintf(stderr, "setup: %s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cell_ctx_close(ctx);
    for (int i = 0; i < MAX_NODES; i++)
        free(fs.n[i].data);
    if (geteuid() == 0) {
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf %s", state_dir);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(bad_options_are_refused),
        cmocka_unit_test(readonly_tier_serves_files_and_refuses_changes),
        cmocka_unit_test(eight_concurrent_readers_read_the_same_bytes),
        cmocka_unit_test(a_slow_callback_is_eio_and_hangs_nothing),
        cmocka_unit_test(garbage_from_callbacks_is_eio),
        cmocka_unit_test(writable_tier_changes_reach_the_callbacks),
        cmocka_unit_test(posix_tier_allows_shared_mmap),
        cmocka_unit_test(the_cell_cannot_mount_fuse_or_unmount_the_vfs),
        cmocka_unit_test(a_host_directory_is_served_without_links_or_devices),
        cmocka_unit_test(a_crashing_callback_ends_its_owner_and_the_cell),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
