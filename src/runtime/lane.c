/* lane.c: lanes, the durable writable layers.  A lane is a directory with
 * the overlay's upper and work dirs, the name of its image and a lock. */
#include "isolate/isolate.h"
#include "runtime/digest.h"
#include "runtime/runtime.h"
#include "util/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>

int runtime_lane_dir(cell_ctx *ctx, const char *name, char *out, size_t size, cell_error *err)
{
    if (!util_valid_name(name))
        return util_fail(err, EINVAL, "invalid lane name '%s': use 1-63 characters of A-Z a-z 0-9 _ . - "
                         "not starting with '.' or '-'", name ? name : "");
    return util_path(out, size, err, "%s/lanes/%s", ctx->state_dir, name) < 0 ? -1 : 0;
}

static int read_image(const char *dir, char *image, size_t size, cell_error *err)
{
    char path[PATH_MAX], *text = NULL;
    if (util_path(path, sizeof path, err, "%s/image", dir) < 0 || util_read_file(path, 255, &text, NULL, err) < 0)
        return -1;
    text[strcspn(text, "\n")] = '\0';
    snprintf(image, size, "%s", text);
    free(text);
    return 0;
}

/* Set once by the daemon before its first thread (runtime_lane_daemon_mode). */
static int daemon_mode;

void runtime_lane_daemon_mode(void)
{
    daemon_mode = 1;
}

/* 1 and "TENANT/NAME" in out when `dir` is a daemon's lane, else 0.  A
 * marker that cannot be read still makes it the daemon's (fail closed). */
static int read_owner(const char *dir, char *out, size_t size)
{
    char path[PATH_MAX], *text = NULL;
    snprintf(out, size, "?/?");
    if (snprintf(path, sizeof path, "%s/" RUNTIME_LANE_OWNER, dir) >= (int)sizeof path)
        return 1;
    if (util_read_file(path, 256, &text, NULL, NULL) < 0)
        return errno == ENOENT ? 0 : 1;
    char *name = strchr(text, '\n');
    if (name) {
        *name++ = '\0';
        name[strcspn(name, "\n")] = '\0';
    }
    snprintf(out, size, "%s/%s", text, name && *name ? name : "?");
    free(text);
    return 1;
}

int runtime_lane_owner(cell_ctx *ctx, const char *id, char *out, size_t size)
{
    char dir[PATH_MAX];
    return runtime_lane_dir(ctx, id, dir, sizeof dir, NULL) == 0 && read_owner(dir, out, size);
}

/* Outside the daemon, a daemon's lane is neither shown nor touched: its
 * name is the tenant's, its quota and users are the daemon's. */
static int lane_foreign(const char *dir, const char *id, cell_error *err)
{
    char owner[160];
    if (daemon_mode || !read_owner(dir, owner, sizeof owner))
        return 0;
    const char *slash = strchr(owner, '/');
    int tlen = slash ? (int)(slash - owner) : (int)strlen(owner);
    const char *name = slash ? slash + 1 : "?";
    return util_fail(err, EPERM, "lane '%s' belongs to the daemon (cell serve): it is lane '%s' of tenant '%.*s'; "
                     "reach it through the daemon with a token of that tenant: cell lane COMMAND --url URL %s",
                     id, name, tlen, owner, name);
}

int runtime_lane_set_owner(cell_ctx *ctx, const char *tenant, const char *name, cell_error *err)
{
    if (!tenant || !*tenant) {
        ctx->lane_owner[0] = '\0';
        return 0;
    }
    if (!util_valid_name(tenant) || !util_valid_name(name))
        return util_fail(err, EINVAL, "a daemon lane's owner needs a valid tenant and lane name");
    snprintf(ctx->lane_owner, sizeof ctx->lane_owner, "%s\n%s\n", tenant, name);
    return 0;
}

int runtime_lane_mark_owner(cell_ctx *ctx, const char *id, const char *tenant, const char *name, cell_error *err)
{
    char dir[PATH_MAX], path[PATH_MAX], text[136];
    if (runtime_lane_dir(ctx, id, dir, sizeof dir, err) < 0 ||
        util_path(path, sizeof path, err, "%s/" RUNTIME_LANE_OWNER, dir) < 0)
        return -1;
    if (access(path, F_OK) == 0)
        return 0;
    if (access(dir, F_OK) < 0)
        return util_fail(err, ENOENT, "no lane named '%s'", id);
    if (!util_valid_name(tenant) || !util_valid_name(name))
        return util_fail(err, EINVAL, "a daemon lane's owner needs a valid tenant and lane name");
    int n = snprintf(text, sizeof text, "%s\n%s\n", tenant, name);
    return util_write_file(path, text, (size_t)n, 0644, 1, err);
}

/* The exclusive holder says who it is in the lock file ("KIND DETAIL\tPID\t
 * COMM\n"), for the message of whoever it refuses.  Only a message depends
 * on it, so a failed write leaves the generic one. */
static void write_holder(int fd, const char *who)
{
    char comm[32] = "", rec[256], *text = NULL;
    if (util_read_file("/proc/self/comm", 64, &text, NULL, NULL) == 0) {
        snprintf(comm, sizeof comm, "%s", text);
        comm[strcspn(comm, "\n")] = '\0';
        free(text);
    }
    int n = snprintf(rec, sizeof rec, "%s\t%d\t%s\n", who, (int)getpid(), comm);
    if (n < 0 || (size_t)n >= sizeof rec || ftruncate(fd, 0) < 0 || pwrite(fd, rec, (size_t)n, 0) != n)
        return;
}

/* Who holds flocks on fd's file, from /proc/locks: the pid of an exclusive
 * holder (0 if none) and how many shared holds there are. */
static pid_t lock_holders(int fd, int *readers)
{
    struct stat st;
    *readers = 0;
    if (fstat(fd, &st) < 0)
        return 0;
    FILE *f = fopen("/proc/locks", "re");
    if (!f)
        return 0;
    char line[256], type[16], mode[16];
    pid_t writer = 0;
    while (fgets(line, sizeof line, f)) {
        int pid;
        unsigned maj, min;
        unsigned long ino;
        /* "1: FLOCK  ADVISORY  WRITE 123 08:02:4567 0 EOF"; waiters have "->". */
        if (sscanf(line, "%*d: %15s %*s %15s %d %x:%x:%lu", type, mode, &pid, &maj, &min, &ino) != 6 ||
            strcmp(type, "FLOCK") != 0 || ino != st.st_ino || maj != major(st.st_dev) || min != minor(st.st_dev))
            continue;
        if (strcmp(mode, "WRITE") == 0)
            writer = pid;
        else
            (*readers)++;
    }
    fclose(f);
    return writer;
}

/* The holder's record if it is the current holder's (its pid is the one
 * /proc/locks names): 1 with rec split into kind+detail, pid and comm. */
static int read_holder(int fd, pid_t holder, char *rec, size_t size, char **pid, char **comm)
{
    ssize_t n = pread(fd, rec, size - 1, 0);
    rec[n > 0 ? n : 0] = '\0';
    for (char *p = rec; *p; p++)
        if ((unsigned char)*p < 0x20 && *p != '\t')
            *p = *p == '\n' ? '\0' : '?';
    *pid = strchr(rec, '\t');
    *comm = NULL;
    if (!*pid)
        return 0;
    *(*pid)++ = '\0';
    *comm = strchr(*pid, '\t');
    if (*comm)
        *(*comm)++ = '\0';
    return holder > 0 && atoi(*pid) == holder;
}

/* Why the lock on fd is busy, as a message about lane `name`; 1 when it
 * is free by now (its holder let go: try again).  A new holder writes its
 * record just after it wins the lock: a record that is not the holder's yet
 * (empty, or the last holder's) is read again for up to 0.2 s (a loaded
 * host) before the message names only the pid /proc/locks gives. */
static int describe_holder(int fd, const char *name, char *msg, size_t size)
{
    char rec[256], *pid = NULL, *comm = NULL;
    for (int tries = 0;; tries++) {
        int readers;
        pid_t holder = lock_holders(fd, &readers);
        if (!holder) {
            /* Shared holds are exports. */
            snprintf(msg, size, readers ? "lane '%s' is being exported; try again when the export is done"
                                        : "lane '%s' is in use; try again", name);
            return !readers;
        }
        if (read_holder(fd, holder, rec, sizeof rec, &pid, &comm))
            break;
        if (tries == 100) {
            snprintf(msg, size, "lane '%s' is attached to a running cell (pid %d); stop that cell first", name,
                     (int)holder);
            return 0;
        }
        struct timespec pause = { 0, 2000000 };
        nanosleep(&pause, NULL);
    }
    char by[96];
    snprintf(by, sizeof by, "pid %.16s%s%.31s", pid, comm && *comm ? " " : "", comm ? comm : "");
    if (strncmp(rec, "delete", 6) == 0)
        snprintf(msg, size, "lane '%s' is being deleted (%s)", name, by);
    else if (strncmp(rec, "commit ", 7) == 0)
        snprintf(msg, size, "lane '%s' is being committed into image '%.63s' (%s); try again when it is done", name,
                 rec + 7, by);
    else if (strncmp(rec, "cell ", 5) == 0)
        snprintf(msg, size, "lane '%s' is attached to a running cell (cell %.40s, %s); stop that cell first", name,
                 rec + 5, by);
    else
        snprintf(msg, size, "lane '%s' is attached to a running cell (a daemon cell's lane mount, %s)", name, by);
    return 0;
}

int runtime_lane_lock(cell_ctx *ctx, const char *name, int mode, const char *who, char *dir, size_t dir_size,
                      int *lock_fd, cell_error *err)
{
    char lock[PATH_MAX];
    if (runtime_lane_dir(ctx, name, dir, dir_size, err) < 0)
        return -1;
    if (access(dir, F_OK) < 0)
        return util_fail(err, ENOENT, "no lane named '%s' (see `cell lane ls`)", name);
    if (lane_foreign(dir, name, err) < 0 || util_path(lock, sizeof lock, err, "%s/lock", dir) < 0)
        return -1;
    _cleanup_close_ int fd = open(lock, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return errno == ENOENT ? util_fail(err, ENOENT, "no lane named '%s' (see `cell lane ls`)", name)
                               : util_fail_errno(err, "cannot open %s", lock);
    /* Never waiting for a holder; a holder that let go between the try and
     * the look at /proc/locks gets the lane another try or two. */
    for (int attempt = 0; flock(fd, mode | LOCK_NB) < 0; attempt++) {
        if (errno != EWOULDBLOCK)
            return util_fail_errno(err, "cannot lock %s", lock);
        char msg[400];
        if (!describe_holder(fd, name, msg, sizeof msg) || attempt == 2)
            return util_fail(err, EBUSY, "%s", msg);
    }
    if (mode == LOCK_EX && who)
        write_holder(fd, who);
    /* A delete renames the lane away while it holds the lock and removes
     * it: a lock won after that is on a file no lane has any more. */
    struct stat held, now;
    if (fstat(fd, &held) < 0)
        return util_fail_errno(err, "cannot stat %s", lock);
    if (stat(lock, &now) < 0 || now.st_ino != held.st_ino || now.st_dev != held.st_dev)
        return util_fail(err, ENOENT, "no lane named '%s' (it was deleted meanwhile)", name);
    *lock_fd = util_steal_fd(&fd);
    return 0;
}

/* 1 if a running cell holds the lane, 0 if not. */
static int lane_attached(const char *dir)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/lock", dir) >= (int)sizeof path)
        return 0;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    /* Cells hold LOCK_EX, exports LOCK_SH: only the former means attached. */
    return flock(fd, LOCK_SH | LOCK_NB) < 0 && errno == EWOULDBLOCK;
}

/* The lane's layer as an ext4 image of `bytes`, holding upper/ and work/:
 * mke2fs -d fills it from a directory, so creating it needs no mount. */
static int make_lane_disk(const char *tmp, uint64_t bytes, cell_error *err)
{
    char stage[PATH_MAX], p[PATH_MAX], disk[PATH_MAX], kib[32];
    if (util_path(stage, sizeof stage, err, "%s/stage", tmp) < 0 ||
        util_path(disk, sizeof disk, err, "%s/" RUNTIME_LANE_DISK, tmp) < 0)
        return -1;
    static const char *const parts[] = { "upper", "work" };
    for (size_t i = 0; i < 2; i++)
        if (util_path(p, sizeof p, err, "%s/%s", stage, parts[i]) < 0 || util_mkdir_p(p, 0755, err) < 0)
            return -1;
    snprintf(kib, sizeof kib, "%lluk", (unsigned long long)(bytes >> 10));
    /* No journal-less tricks: lanes must survive a crash of the host. */
    const char *argv[] = { "mke2fs", "-q", "-F", "-t", "ext4", "-L", "cell-lane", "-d", stage, disk, kib, NULL };
    int rc = util_run(argv, err);
    util_rm_rf(stage, NULL);
    return rc;
}

int runtime_lane_begin(cell_ctx *ctx, const char *name, const char *image, uint64_t disk_size, char *tmp, size_t size,
                       cell_error *err)
{
    char dir[PATH_MAX], p[PATH_MAX], rootfs[PATH_MAX], suffix[17];
    if (runtime_lane_dir(ctx, name, dir, sizeof dir, err) < 0)
        return -1;
    if (runtime_image_rootfs(ctx, image, rootfs, sizeof rootfs, err) < 0)
        return -1;
    if (daemon_mode && !ctx->lane_owner[0])
        return util_fail(err, EINVAL, "the daemon makes lanes with an owner (runtime_lane_set_owner)");
    if (access(dir, F_OK) == 0)
        return util_fail(err, EEXIST, "lane '%s' already exists", name);
    if (util_random_hex(suffix, 8) < 0)
        return util_fail_errno(err, "getrandom");
    if (util_path(tmp, size, err, "%s/lanes/.%s.tmp-%s", ctx->state_dir, name, suffix) < 0)
        return -1;
    if (disk_size) {
        if (util_mkdir_p(tmp, 0700, err) < 0 || make_lane_disk(tmp, disk_size, err) < 0)
            goto fail;
    } else {
        static const char *const parts[] = { "upper", "work" };
        for (size_t i = 0; i < 2; i++)
            if (util_path(p, sizeof p, err, "%s/%s", tmp, parts[i]) < 0 || util_mkdir_p(p, 0755, err) < 0)
                goto fail;
        if (util_path(p, sizeof p, err, "%s/upper", tmp) < 0)
            goto fail;
        if (chmod(p, 0755) < 0) {
            util_fail_errno(err, "cannot set the mode of %s", p);
            goto fail;
        }
    }
    if (util_path(p, sizeof p, err, "%s/image", tmp) < 0 || util_write_file(p, image, strlen(image), 0644, 1, err) < 0)
        goto fail;
    /* The lane is bound to the image's content, not only its name: see
     * check_digest.  Not a lane on host: that image follows the host's /usr
     * by design (and is regenerated when cell's version of it changes). */
    char digest[72];
    if (strcmp(image, "host") != 0 &&
        (runtime_image_digest(ctx, image, digest, err) < 0 ||
         util_path(p, sizeof p, err, "%s/" RUNTIME_LANE_DIGEST, tmp) < 0 ||
         util_write_file(p, digest, strlen(digest), 0644, 1, err) < 0))
        goto fail;
    if (util_path(p, sizeof p, err, "%s/lock", tmp) < 0 || util_write_file(p, "", 0, 0600, 0, err) < 0)
        goto fail;
    /* A daemon's lane is its from the moment it has its name. */
    if (ctx->lane_owner[0] && (util_path(p, sizeof p, err, "%s/" RUNTIME_LANE_OWNER, tmp) < 0 ||
                               util_write_file(p, ctx->lane_owner, strlen(ctx->lane_owner), 0644, 1, err) < 0))
        goto fail;
    return 0;
fail:
    util_rm_rf(tmp, NULL);
    return -1;
}

/* The image mounted where no one else sees it: a detached mount lives as
 * long as an fd refers to it, and the loop device (autoclear) goes with it. */
int runtime_ext4_mount(const char *disk, int readonly, cell_error *err)
{
    char dev[64];
    _cleanup_close_ int loop = -1;
    if (isolate_loop_attach(disk, &loop, dev, sizeof dev, err) < 0)
        return -1;
    _cleanup_close_ int fs = fsopen("ext4", FSOPEN_CLOEXEC);
    if (fs < 0)
        return util_fail_errno(err, "cannot open an ext4 filesystem for the lane");
    if (fsconfig(fs, FSCONFIG_SET_STRING, "source", dev, 0) < 0 ||
        (readonly && fsconfig(fs, FSCONFIG_SET_FLAG, "ro", NULL, 0) < 0) ||
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return util_fail_errno(err, "cannot mount the lane disk");
    unsigned attrs = MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID | (readonly ? MOUNT_ATTR_RDONLY : 0);
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
    if (mnt < 0)
        return util_fail_errno(err, "cannot mount the lane disk");
    return mnt;
}

int runtime_lane_open_upper(const char *dir, int readonly, int *mnt_fd, int *upper_fd, cell_error *err)
{
    char disk[PATH_MAX], upper[PATH_MAX];
    *mnt_fd = *upper_fd = -1;
    if (util_path(disk, sizeof disk, err, "%s/" RUNTIME_LANE_DISK, dir) < 0 ||
        util_path(upper, sizeof upper, err, "%s/upper", dir) < 0)
        return -1;
    _cleanup_close_ int mnt = -1;
    if (access(disk, F_OK) == 0 && (mnt = runtime_ext4_mount(disk, readonly, err)) < 0)
        return -1;
    int fd = mnt >= 0 ? openat(mnt, "upper", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                      : open(upper, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "cannot open the lane's upper dir");
    *upper_fd = fd;
    *mnt_fd = util_steal_fd(&mnt);
    return 0;
}

int runtime_lane_commit(cell_ctx *ctx, const char *name, const char *tmp, int flush, cell_error *err)
{
    char dir[PATH_MAX];
    if (runtime_lane_dir(ctx, name, dir, sizeof dir, err) < 0)
        goto fail;
    /* A lane that exists after a crash must be complete: flush its layer
     * before it gets its name (a lost rename only loses the whole lane). */
    if (flush) {
        _cleanup_close_ int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || syncfs(fd) < 0) {
            util_fail_errno(err, "cannot flush %s", tmp);
            goto fail;
        }
    }
    if (rename(tmp, dir) < 0) {
        if (errno == EEXIST || errno == ENOTEMPTY)
            util_fail(err, EEXIST, "lane '%s' already exists", name);
        else
            util_fail_errno(err, "cannot create lane %s", dir);
        goto fail;
    }
    return 0;
fail:
    util_rm_rf(tmp, NULL);
    return -1;
}

int cell_lane_create_sized(cell_ctx *ctx, const char *name, const char *image, uint64_t disk_size, cell_error *err)
{
    if (disk_size && disk_size < CELL_LANE_MIN_SIZE)
        return util_fail(err, EINVAL, "lane size %llu bytes is too small: a size-limited lane needs at least 16M",
                         (unsigned long long)disk_size);
    char tmp[PATH_MAX];
    /* Built aside and renamed into place: a crash never leaves half a lane. */
    if (runtime_lane_begin(ctx, name, image ? image : "host", disk_size, tmp, sizeof tmp, err) < 0)
        return -1;
    return runtime_lane_commit(ctx, name, tmp, 0, err);
}

int cell_lane_create(cell_ctx *ctx, const char *name, const char *image, cell_error *err)
{
    return cell_lane_create_sized(ctx, name, image, 0, err);
}

int runtime_lane_find(cell_ctx *ctx, const char *name, char *dir, size_t size, struct stat *st, cell_error *err)
{
    if (runtime_lane_dir(ctx, name, dir, size, err) < 0)
        return -1;
    if (stat(dir, st) < 0)
        return errno == ENOENT ? util_fail(err, ENOENT, "no lane named '%s' (see `cell lane ls`)", name)
                               : util_fail_errno(err, "cannot stat %s", dir);
    return lane_foreign(dir, name, err);
}

static int lane_get(cell_ctx *ctx, const char *name, int all, cell_lane_info *out, cell_error *err)
{
    char dir[PATH_MAX];
    struct stat st;
    if (runtime_lane_dir(ctx, name, dir, sizeof dir, err) < 0)
        return -1;
    if (stat(dir, &st) < 0)
        return errno == ENOENT ? util_fail(err, ENOENT, "no lane named '%s' (see `cell lane ls`)", name)
                               : util_fail_errno(err, "cannot stat %s", dir);
    if (!all && lane_foreign(dir, name, err) < 0)
        return -1;
    memset(out, 0, sizeof *out);
    snprintf(out->name, sizeof out->name, "%s", name);
    if (read_image(dir, out->image, sizeof out->image, err) < 0)
        return -1;
    out->created = (uint64_t)st.st_ctime;
    out->attached = lane_attached(dir);
    char disk[PATH_MAX];
    struct stat dst;
    if (util_path(disk, sizeof disk, NULL, "%s/" RUNTIME_LANE_DISK, dir) >= 0 && stat(disk, &dst) == 0)
        out->size = (uint64_t)dst.st_size;
    return 0;
}

int cell_lane_get(cell_ctx *ctx, const char *name, cell_lane_info *out, cell_error *err)
{
    return lane_get(ctx, name, 0, out, err);
}

static int compare_lanes(const void *a, const void *b)
{
    return strcmp(((const cell_lane_info *)a)->name, ((const cell_lane_info *)b)->name);
}

/* all: the daemon's lanes too; *foreign (if not NULL) counts those left out. */
static int lane_list(cell_ctx *ctx, int all, cell_lane_info **out, size_t *count, size_t *foreign,
                     cell_error *err)
{
    char dir[PATH_MAX];
    if (util_path(dir, sizeof dir, err, "%s/lanes", ctx->state_dir) < 0)
        return -1;
    DIR *d = opendir(dir);
    if (!d)
        return util_fail_errno(err, "cannot open %s", dir);
    cell_lane_info *list = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !util_valid_name(e->d_name))
            continue;
        if (n == cap) {
            cap = cap ? cap * 2 : 16;
            cell_lane_info *grown = realloc(list, cap * sizeof *list);
            if (!grown) {
                free(list);
                closedir(d);
                return util_fail(err, ENOMEM, "out of memory listing lanes");
            }
            list = grown;
        }
        cell_error why = { 0 };
        if (lane_get(ctx, e->d_name, all, &list[n], &why) == 0)
            n++;
        else if (why.code == EPERM && foreign)
            (*foreign)++;
    }
    closedir(d);
    if (n)
        qsort(list, n, sizeof *list, compare_lanes);
    *out = list;
    *count = n;
    return 0;
}

int cell_lane_list(cell_ctx *ctx, cell_lane_info **out, size_t *count, cell_error *err)
{
    return lane_list(ctx, 0, out, count, NULL, err);
}

int runtime_lane_list_all(cell_ctx *ctx, cell_lane_info **out, size_t *count, cell_error *err)
{
    return lane_list(ctx, 1, out, count, NULL, err);
}

size_t runtime_lane_daemon_count(cell_ctx *ctx)
{
    cell_lane_info *list = NULL;
    size_t n = 0, foreign = 0;
    if (!daemon_mode && lane_list(ctx, 0, &list, &n, &foreign, NULL) == 0)
        free(list);
    return foreign;
}

int cell_lane_delete(cell_ctx *ctx, const char *name, cell_error *err)
{
    char dir[PATH_MAX], doomed[PATH_MAX], suffix[17];
    /* Held until the tree is gone: a cell, commit, export or second delete
     * meanwhile is refused naming this one, and after it finds no lane. */
    _cleanup_close_ int fd = -1;
    if (runtime_lane_lock(ctx, name, LOCK_EX, "delete", dir, sizeof dir, &fd, err) < 0)
        return -1;
    if (util_random_hex(suffix, 8) < 0)
        return util_fail_errno(err, "getrandom");
    /* Rename first so the name is free at once and a crash mid-delete
     * leaves only a hidden directory, never a half-deleted lane. */
    if (util_path(doomed, sizeof doomed, err, "%s/lanes/.%s.deleted-%s", ctx->state_dir, name, suffix) < 0)
        return -1;
    if (rename(dir, doomed) < 0)
        return util_fail_errno(err, "cannot delete lane %s", dir);
    return util_rm_rf(doomed, err);
}

/* A lane is a layer over one image's tree: over another tree, its whiteouts
 * and copies would apply to files they were not made from.  A lane made
 * before lanes recorded the digest has none and is accepted as before. */
static int check_digest(cell_ctx *ctx, const char *name, const char *dir, const char *image, cell_error *err)
{
    char path[PATH_MAX], now[72], *text = NULL;
    if (util_path(path, sizeof path, err, "%s/" RUNTIME_LANE_DIGEST, dir) < 0)
        return -1;
    if (util_read_file(path, 80, &text, NULL, NULL) < 0)
        return errno == ENOENT ? 0 : util_fail_errno(err, "cannot read %s", path);
    if (strcmp(image, "host") == 0) {
        free(text);
        return util_fail(err, EBUSY, "lane '%s' records an image digest, but image 'host' has none", name);
    }
    text[strcspn(text, "\n")] = '\0';
    int rc = runtime_image_digest(ctx, image, now, err);
    if (rc == 0 && strcmp(text, now) != 0)
        rc = util_fail(err, EBUSY, "lane '%s' was made on image '%s' %s; image '%s' is now %s", name, image, text,
                       image, now);
    free(text);
    return rc;
}

int runtime_lane_acquire(cell_ctx *ctx, const char *name, const char *who, char *image, size_t image_size,
                         char *dir, size_t dir_size, int *lock_fd, cell_error *err)
{
    _cleanup_close_ int fd = -1;
    if (runtime_lane_lock(ctx, name, LOCK_EX, who, dir, dir_size, &fd, err) < 0)
        return -1;
    if (read_image(dir, image, image_size, err) < 0 || check_digest(ctx, name, dir, image, err) < 0)
        return -1;
    *lock_fd = util_steal_fd(&fd);
    return 0;
}
