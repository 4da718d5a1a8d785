/* boot.c: turns a prepared isolate_plan into a running cell-init: new
 * namespaces, the overlay root, /proc /dev /sys /tmp, mounts, credentials. */
#include "isolate/isolate.h"
#include "init/proto.h"
#include "util/util.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <linux/sched.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <grp.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <linux/capability.h>
#include <linux/seccomp.h>

/* Everything below runs in the boot child, between clone3() and execveat():
 * the owner may be threaded, so this code never allocates; it reports the
 * first failure as CTL_BOOT_ERROR on the control socket and exits.  Until it
 * enters the cell's user namespace it is real root in private mount, pid,
 * net, uts and ipc namespaces: every mount is made with full privilege, and
 * the cell later finds none of those namespaces owned by its own user
 * namespace, so it cannot undo them. */

__attribute__((noreturn, format(printf, 3, 4)))
static void child_fail(const struct isolate_plan *plan, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (code && n >= 0 && (size_t)n < sizeof msg)
        snprintf(msg + n, sizeof msg - (size_t)n, ": %s", strerrordesc_np(code));
    const char *strs[1] = { msg };
    ctl_send(plan->ctl_fd, CTL_BOOT_ERROR, 0, code, NULL, strs, 1, NULL, 0);
    _exit(1);
}
#define FAIL(...) child_fail(plan, errno, __VA_ARGS__)

/* "<run_dir>/<sub>" or fail: truncated paths would mount the wrong thing. */
static void run_path(const struct isolate_plan *plan, char *buf, size_t size, const char *sub)
{
    int n = snprintf(buf, size, "%s/%s", plan->run_dir, sub);
    if (n < 0 || (size_t)n >= size) {
        errno = ENAMETOOLONG;
        FAIL("path %s/%s is too long", plan->run_dir, sub);
    }
}

/* "uid=BASE" and "gid=BASE": tmpfs roots owned by the cell's root. */
struct owner_opts {
    char uid[32], gid[32];
};

static struct owner_opts owner_opts(const struct isolate_plan *plan)
{
    struct owner_opts o;
    snprintf(o.uid, sizeof o.uid, "uid=%u", (unsigned)plan->uid_base);
    snprintf(o.gid, sizeof o.gid, "gid=%u", (unsigned)plan->uid_base);
    return o;
}

/* setfsuid() to a non-zero id clears the file-related capabilities, and the
 * overlay must be mounted (and the root tree populated) with the cell's
 * fsuid but real root's power: overlayfs does copy-up with its mounter's
 * credentials, which must map through the id-mapped layers. */
static void become_cell_fs(const struct isolate_plan *plan)
{
    setfsgid(plan->uid_base);
    setfsuid(plan->uid_base);
    if ((uid_t)setfsuid((uid_t)-1) != plan->uid_base)
        FAIL("cannot switch fsuid to %u", (unsigned)plan->uid_base);
    if (isolate_caps_raise_effective() < 0)
        FAIL("cannot raise effective capabilities");
}

/* Clone `source` (a host path) as a detached mount, optionally id-mapped
 * into the cell's range and with extra attributes, and attach it on the
 * directory or file `target_fd`. */
static void attach_tree(const struct isolate_plan *plan, int dirfd, const char *source, int recursive,
                        int idmap, uint64_t attrs, int target_fd, const char *what)
{
    int flags = OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | (recursive ? AT_RECURSIVE : 0);
    if (!*source)
        flags |= AT_EMPTY_PATH;
    int tree = open_tree(dirfd, source, (unsigned)flags);
    if (tree < 0)
        FAIL("cannot clone mount %s for %s", source, what);
    struct mount_attr attr = { .attr_set = attrs };
    if (idmap) {
        attr.attr_set |= MOUNT_ATTR_IDMAP;
        attr.userns_fd = (uint64_t)plan->userns_fd;
    }
    if (attr.attr_set && mount_setattr(tree, "", AT_EMPTY_PATH | (recursive ? AT_RECURSIVE : 0), &attr, sizeof attr) < 0)
        FAIL("cannot set mount attributes%s on %s for %s", idmap ? " (id-mapped)" : "", source, what);
    if (move_mount(tree, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        FAIL("cannot attach %s at %s", source, what);
    close(tree);
}

/* Create a fresh filesystem instance with the new mount API and attach it on
 * target_fd.  `opts` is a NULL-terminated list of "key=value" or "flag". */
static void attach_new_fs(const struct isolate_plan *plan, const char *fstype, const char *const *opts,
                          unsigned attrs, int target_fd, const char *what)
{
    int fs = fsopen(fstype, FSOPEN_CLOEXEC);
    if (fs < 0)
        FAIL("cannot open a %s filesystem for %s", fstype, what);
    for (const char *const *o = opts; o && *o; o++) {
        char key[64];
        const char *eq = strchr(*o, '=');
        int r;
        if (eq) {
            snprintf(key, sizeof key, "%.*s", (int)(eq - *o), *o);
            r = fsconfig(fs, FSCONFIG_SET_STRING, key, eq + 1, 0);
        } else {
            r = fsconfig(fs, FSCONFIG_SET_FLAG, *o, NULL, 0);
        }
        if (r < 0)
            FAIL("cannot set option %s on %s for %s", *o, fstype, what);
    }
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        FAIL("cannot create %s for %s", fstype, what);
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC, attrs);
    if (mnt < 0)
        FAIL("cannot mount %s for %s", fstype, what);
    if (move_mount(mnt, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        FAIL("cannot attach %s at %s", fstype, what);
    close(mnt);
    close(fs);
}

static int must_open_in_root(const struct isolate_plan *plan, int root_fd, const char *path, int want_file)
{
    int fd = isolate_open_in_root(root_fd, path, want_file);
    if (fd < 0)
        FAIL("cannot create mount point %s inside the cell", path);
    return fd;
}

/* A size-limited lane: its ext4 image (on a loop device the owner set up),
 * mounted id-mapped like a directory lane; a full disk is ENOSPC inside. */
static void attach_lane_disk(const struct isolate_plan *plan, int target_fd)
{
    int fs = fsopen("ext4", FSOPEN_CLOEXEC);
    if (fs < 0)
        FAIL("cannot open an ext4 filesystem for the lane");
    if (fsconfig(fs, FSCONFIG_SET_STRING, "source", plan->lane_dev, 0) < 0 ||
        fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        FAIL("cannot mount the lane disk %s", plan->lane_dev);
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    if (mnt < 0)
        FAIL("cannot mount the lane disk %s", plan->lane_dev);
    struct mount_attr attr = { .attr_set = MOUNT_ATTR_IDMAP, .userns_fd = (uint64_t)plan->userns_fd };
    if (mount_setattr(mnt, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
        FAIL("cannot id-map the lane disk %s", plan->lane_dev);
    if (move_mount(mnt, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        FAIL("cannot attach the lane disk %s", plan->lane_dev);
    close(mnt);
    close(fs);
}

static void setup_overlay(const struct isolate_plan *plan)
{
    char lower[PATH_MAX], upper[PATH_MAX], root[PATH_MAX], opts[3 * PATH_MAX + 64];
    run_path(plan, lower, sizeof lower, "lower");
    run_path(plan, upper, sizeof upper, "upper");
    run_path(plan, root, sizeof root, "root");

    int lower_fd = open(lower, O_PATH | O_DIRECTORY | O_CLOEXEC);
    int upper_fd = open(upper, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (lower_fd < 0 || upper_fd < 0)
        FAIL("cannot open the mount points in %s", plan->run_dir);
    /* The image's files are owned by 0..65535 on disk; the id-mapped mount
     * shows them to the cell as its own root's, read-only.  The layers are
     * host directories: nosuid and nodev on them as on every host mount
     * (the overlay above decides what the cell may execute). */
    attach_tree(plan, AT_FDCWD, plan->image_root, 0, 1, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
                lower_fd, "the image layer");
    if (plan->lane_dev[0]) {
        attach_lane_disk(plan, upper_fd);
    } else if (plan->lane_dir[0]) {
        attach_tree(plan, AT_FDCWD, plan->lane_dir, 0, 1, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, upper_fd,
                    "the lane layer");
    } else {
        /* A throwaway layer lives in memory: it vanishes with the mount
         * namespace, so a crash leaves nothing on disk, and its size is the
         * cell's disk limit (writes past it fail with ENOSPC). */
        char size[64];
        snprintf(size, sizeof size, "size=%llu", (unsigned long long)plan->disk);
        struct owner_opts own = owner_opts(plan);
        const char *o[] = { size, own.uid, own.gid, "mode=0755", NULL };
        attach_new_fs(plan, "tmpfs", o, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, upper_fd, "the writable layer");
    }
    close(lower_fd);
    close(upper_fd);

    become_cell_fs(plan);
    if (!plan->lane_dir[0]) {
        char up[PATH_MAX + 8], work[PATH_MAX + 8];
        if (snprintf(up, sizeof up, "%s/upper", upper) >= (int)sizeof up ||
            snprintf(work, sizeof work, "%s/work", upper) >= (int)sizeof work)
            FAIL("path %s is too long", upper);
        if (mkdir(up, 0755) < 0 || mkdir(work, 0700) < 0)
            FAIL("cannot create the writable layer in %s", upper);
    }
    int n = snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", lower, upper, upper);
    if (n < 0 || (size_t)n >= sizeof opts)
        FAIL("overlay options too long");
    /* nosuid changes nothing a cell could use (no_new_privs already makes
     * exec ignore setuid bits and file capabilities) and keeps chmod u+s
     * working in the cell's own layer: it only makes the mount say so. */
    if (mount("overlay", root, "overlay", MS_NOSUID | MS_NODEV, opts) < 0)
        FAIL("cannot mount the cell's root overlay (%s)", opts);
}

static void mknod_dev(const struct isolate_plan *plan, int dev_fd, const char *name, unsigned maj, unsigned min)
{
    if (mknodat(dev_fd, name, S_IFCHR | 0666, makedev(maj, min)) < 0)
        FAIL("cannot create /dev/%s", name);
    /* mknod applies the umask; device nodes must be usable by every uid. */
    if (fchmodat(dev_fd, name, 0666, 0) < 0)
        FAIL("cannot chmod /dev/%s", name);
}

static void setup_dev(const struct isolate_plan *plan, int root_fd)
{
    int dev = must_open_in_root(plan, root_fd, "/dev", 0);
    struct owner_opts own = owner_opts(plan);
    const char *o[] = { "mode=0755", "size=1m", own.uid, own.gid, NULL };
    attach_new_fs(plan, "tmpfs", o, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, dev, "/dev");
    close(dev);
    int dev_fd = (int)syscall(SYS_openat2, root_fd, "/dev",
                              &(struct open_how){ .flags = O_DIRECTORY | O_CLOEXEC,
                                                  .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS }, sizeof(struct open_how));
    if (dev_fd < 0)
        FAIL("cannot open the cell's /dev");
    mknod_dev(plan, dev_fd, "null", 1, 3);
    mknod_dev(plan, dev_fd, "zero", 1, 5);
    mknod_dev(plan, dev_fd, "full", 1, 7);
    mknod_dev(plan, dev_fd, "random", 1, 8);
    mknod_dev(plan, dev_fd, "urandom", 1, 9);
    mknod_dev(plan, dev_fd, "tty", 5, 0);
    static const char *const links[][2] = {
        { "pts/ptmx", "ptmx" }, { "/proc/self/fd", "fd" }, { "/proc/self/fd/0", "stdin" },
        { "/proc/self/fd/1", "stdout" }, { "/proc/self/fd/2", "stderr" }, { "/proc/kcore", "core" },
    };
    for (size_t i = 0; i < sizeof links / sizeof links[0]; i++)
        if (symlinkat(links[i][0], dev_fd, links[i][1]) < 0)
            FAIL("cannot create /dev/%s", links[i][1]);
    if (mkdirat(dev_fd, "pts", 0755) < 0 || mkdirat(dev_fd, "shm", 01777) < 0 || fchmodat(dev_fd, "shm", 01777, 0) < 0)
        FAIL("cannot create /dev/pts or /dev/shm");
    int pts = openat(dev_fd, "pts", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    int shm = openat(dev_fd, "shm", O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (pts < 0 || shm < 0)
        FAIL("cannot open /dev/pts or /dev/shm");
    /* A private devpts instance: the cell sees only its own terminals. */
    const char *pts_opts[] = { "newinstance", "ptmxmode=0666", "mode=0620", NULL };
    attach_new_fs(plan, "devpts", pts_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, pts, "/dev/pts");
    char shm_size[64];
    snprintf(shm_size, sizeof shm_size, "size=%llu", (unsigned long long)plan->disk);
    const char *shm_opts[] = { "mode=1777", shm_size, own.uid, own.gid, NULL };
    attach_new_fs(plan, "tmpfs", shm_opts, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, shm, "/dev/shm");
    close(pts);
    close(shm);
    close(dev_fd);
}

static void write_proc(const struct isolate_plan *plan, int proc_fd, const char *path, const char *value)
{
    int fd = openat(proc_fd, path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || util_write_all(fd, value, strlen(value)) < 0)
        FAIL("cannot write %s to /proc/%s", value, path);
    close(fd);
}

static void setup_proc(const struct isolate_plan *plan, int root_fd)
{
    int target = must_open_in_root(plan, root_fd, "/proc", 0);
    const char *o[] = { NULL };
    attach_new_fs(plan, "proc", o, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, target, "/proc");
    close(target);
    int proc_fd = isolate_open_in_root(root_fd, "/proc", 0);
    if (proc_fd < 0)
        FAIL("cannot open the cell's /proc");
    /* The cell's root holds no capability over its network namespace, so
     * let it bind low ports and use ping sockets there. */
    write_proc(plan, proc_fd, "sys/net/ipv4/ip_unprivileged_port_start", "0");
    write_proc(plan, proc_fd, "sys/net/ipv4/ping_group_range", "0 2147483647");
    int null_fd = isolate_open_in_root(root_fd, "/dev/null", 1);
    if (null_fd < 0)
        FAIL("cannot open the cell's /dev/null");
    for (const char *const *p = isolate_proc_masked_files; *p; p++) {
        int t = openat(proc_fd, *p, O_PATH | O_NOFOLLOW | O_CLOEXEC);
        if (t < 0)
            continue; /* not present on this kernel */
        /* A device node: no nodev here, or reading the mask would fail. */
        attach_tree(plan, null_fd, "", 0, 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC, t, *p);
        close(t);
    }
    for (const char *const *p = isolate_proc_masked_dirs; *p; p++) {
        int t = openat(proc_fd, *p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (t < 0)
            continue;
        const char *e[] = { "size=0", "mode=0555", NULL };
        attach_new_fs(plan, "tmpfs", e, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, t, *p);
        close(t);
    }
    for (const char *const *p = isolate_proc_readonly; *p; p++) {
        int t = openat(proc_fd, *p, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (t < 0)
            continue;
        attach_tree(plan, proc_fd, *p, 1, 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, t, *p);
        close(t);
    }
    close(null_fd);
    close(proc_fd);
}

static void setup_sys_tmp(const struct isolate_plan *plan, int root_fd)
{
    int sys = must_open_in_root(plan, root_fd, "/sys", 0);
    const char *none[] = { NULL };
    attach_new_fs(plan, "sysfs", none, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, sys, "/sys");
    close(sys);
    int fw = isolate_open_in_root(root_fd, "/sys/firmware", 0);
    if (fw >= 0) {
        const char *e[] = { "size=0", "mode=0555", NULL };
        attach_new_fs(plan, "tmpfs", e, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, fw, "/sys/firmware");
        close(fw);
    }
    int tmp = must_open_in_root(plan, root_fd, "/tmp", 0);
    char tmp_size[64];
    snprintf(tmp_size, sizeof tmp_size, "size=%llu", (unsigned long long)plan->disk);
    const char *o[] = { "mode=1777", tmp_size, NULL };
    attach_new_fs(plan, "tmpfs", o, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, tmp, "/tmp");
    close(tmp);
}

/* Overlay mounts, and read-only binds with masks, are mounted as overlayfs
 * (ovl<i>/ on the scratch tmpfs); read-write binds cover their masks. */
static int via_overlay(const struct isolate_mount *m)
{
    return m->kind == CELL_MOUNT_OVERLAY || (m->kind == CELL_MOUNT_BIND && m->readonly && m->n_masks);
}

static int mask_by_cover(const struct isolate_mount *m)
{
    return m->kind == CELL_MOUNT_BIND && !m->readonly && m->n_masks;
}

/* "<run_dir>/ovl<i>/<sub>": an overlay mount's places on the scratch tmpfs,
 * which the cell never sees (the old root is detached at pivot_root). */
static void ovl_path(const struct isolate_plan *plan, char *buf, size_t size, size_t i, const char *sub)
{
    char rel[64];
    snprintf(rel, sizeof rel, "ovl%zu%s%s", i, *sub ? "/" : "", sub);
    run_path(plan, buf, size, rel);
}

/* The upper directory takes the host directory's owner and mode (as the
 * id-mapped lower shows them), so the mount's root looks as in a bind:
 * overlayfs shows the upper's attributes for a merged directory. */
static void ovl_make_upper(const struct isolate_plan *plan, const struct isolate_mount *m, const char *lower,
                           const char *upper)
{
    char up[PATH_MAX + 8], work[PATH_MAX + 8];
    if (snprintf(up, sizeof up, "%s/upper", upper) >= (int)sizeof up ||
        snprintf(work, sizeof work, "%s/work", upper) >= (int)sizeof work)
        FAIL("path %s is too long", upper);
    struct stat st;
    if (stat(lower, &st) < 0)
        FAIL("cannot stat the overlay source %s", m->source);
    if (mkdir(up, 0700) < 0 || mkdir(work, 0700) < 0)
        FAIL("cannot create the overlay's writable layer for %s", m->target);
    /* An owner outside the cell's range (shown as the overflow id) has no
     * meaning in the cell: the cell's root keeps the directory then. */
    if (st.st_uid >= plan->uid_base && st.st_uid - plan->uid_base < ISOLATE_UID_COUNT &&
        st.st_gid >= plan->uid_base && st.st_gid - plan->uid_base < ISOLATE_UID_COUNT &&
        chown(up, st.st_uid, st.st_gid) < 0)
        FAIL("cannot give the overlay's writable layer for %s its owner", m->target);
    if (chmod(up, st.st_mode & 07777) < 0)
        FAIL("cannot set the mode of the overlay's writable layer for %s", m->target);
}

/* ---- masks (isolate.h, struct isolate_mount) -------------------------------- */

/* A file of the mask layer or store takes the owner, mode and times of
 * what it stands for, as the id-mapped source shows them (an owner outside the
 * cell's range keeps the cell's root). */
static void mask_copy_attrs(const struct isolate_plan *plan, int fd, const struct stat *st, const char *what)
{
    if (st->st_uid >= plan->uid_base && st->st_uid - plan->uid_base < ISOLATE_UID_COUNT &&
        st->st_gid >= plan->uid_base && st->st_gid - plan->uid_base < ISOLATE_UID_COUNT &&
        fchown(fd, st->st_uid, st->st_gid) < 0)
        FAIL("cannot give the mask %s its owner", what);
    if (fchmod(fd, st->st_mode & 07777) < 0)
        FAIL("cannot give the mask %s its mode", what);
    const struct timespec times[2] = { st->st_atim, st->st_mtim };
    if (futimens(fd, times) < 0)
        FAIL("cannot give the mask %s its times", what);
}

/* One mask in the whiteout layer `layer` over the source `low`: directories
 * for its parents (attributes copied, since overlayfs shows the topmost
 * layer's for a merged directory) and a whiteout for its last component,
 * or for the first parent the source lacks, which hides whatever appears
 * there later too.  Both fds are consumed. */
static void mask_whiteout(const struct isolate_plan *plan, const struct isolate_mount *m, int layer, int low,
                          const char *path)
{
    const char *p = path;
    for (;;) {
        char name[NAME_MAX + 1];
        size_t n = strcspn(p, "/");
        snprintf(name, sizeof name, "%.*s", (int)n, p);
        struct stat st;
        int last = p[n] == '\0', gone = 0;
        if (!last && fstatat(low, name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            if (errno != ENOENT)
                FAIL("cannot stat mask %s of %s", path, m->target);
            gone = 1;
        }
        if (last || gone) {
            /* overlayfs's whiteout: a character device 0:0. */
            if (mknodat(layer, name, S_IFCHR | 0000, makedev(0, 0)) < 0 && errno != EEXIST)
                FAIL("cannot create the whiteout of mask %s of %s", path, m->target);
            break;
        }
        if (S_ISLNK(st.st_mode)) {
            errno = ELOOP;
            FAIL("mask %s of %s: a symbolic link appeared in its path since it was checked", path, m->target);
        }
        if (!S_ISDIR(st.st_mode))
            break;      /* nothing lives below a file */
        if (mkdirat(layer, name, 0700) < 0 && errno != EEXIST)
            FAIL("cannot create the mask layer's %s for %s", name, m->target);
        int nl = openat(layer, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int nlow = openat(low, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        if (nl < 0 || nlow < 0)
            FAIL("cannot open %s in the mask layer of %s", name, m->target);
        mask_copy_attrs(plan, nl, &st, path);
        close(layer);
        close(low);
        layer = nl;
        low = nlow;
        p += n + 1;
    }
    close(layer);
    close(low);
}

/* Directory times in the mask layer, once every whiteout is made (making
 * them changed the times copied before): the source's, along `path`. */
static void mask_fix_times(const struct isolate_plan *plan, int layer, int low, const char *path)
{
    char name[NAME_MAX + 1];
    const char *p = path;
    int l = dup(layer), d = dup(low);
    for (;;) {
        struct stat st;
        if (l < 0 || d < 0 || fstat(d, &st) < 0)
            FAIL("cannot read the times of mask %s", path);
        const struct timespec times[2] = { st.st_atim, st.st_mtim };
        if (futimens(l, times) < 0)
            FAIL("cannot give the mask layer's directories of %s their times", path);
        size_t n = strcspn(p, "/");
        if (!p[n])
            break;
        snprintf(name, sizeof name, "%.*s", (int)n, p);
        int nl = openat(l, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        int nd = openat(d, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(l);
        close(d);
        if (nl < 0 || nd < 0) {     /* a whiteout or a file there: no directory below */
            if (nl >= 0)
                close(nl);
            if (nd >= 0)
                close(nd);
            return;
        }
        l = nl;
        d = nd;
        p += n + 1;
    }
    close(l);
    close(d);
}

/* The top read-only layer of a masked overlay: a tmpfs of whiteouts. */
static void mask_layer(const struct isolate_plan *plan, const struct isolate_mount *m, const char *lower,
                       const char *layer)
{
    int mp = open(layer, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (mp < 0)
        FAIL("cannot open the mask layer's mount point %s", layer);
    struct owner_opts own = owner_opts(plan);
    const char *o[] = { "size=1m", own.uid, own.gid, "mode=0755", NULL };
    attach_new_fs(plan, "tmpfs", o, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, mp, m->target);
    close(mp);
    int root = open(layer, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int low = open(lower, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    struct stat st;
    if (root < 0 || low < 0 || fstat(low, &st) < 0)
        FAIL("cannot open the mask layer of %s", m->target);
    mask_copy_attrs(plan, root, &st, "layer");
    for (size_t j = 0; j < m->n_masks; j++) {
        int l = dup(root), d = dup(low);
        if (l < 0 || d < 0)
            FAIL("dup");
        mask_whiteout(plan, m, l, d, m->masks[j]);
    }
    for (size_t j = 0; j < m->n_masks; j++)
        mask_fix_times(plan, root, low, m->masks[j]);
    close(root);
    close(low);
}

/* A read-write bind's masks: an empty file or directory of the mask store
 * mounted over each that exists (resolved below the attached mount with no
 * symlink), writable, on a tmpfs that never reaches the host.  A mount
 * stays on its dentry when a parent directory is renamed, and the cell
 * cannot unmount it (its mount namespace belongs to the host's root). */
static void cover_masks(const struct isolate_plan *plan, size_t i, const struct isolate_mount *m, int root_fd)
{
    char store[PATH_MAX];
    run_path(plan, store, sizeof store, "masks");
    int st_fd = open(store, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int mnt = must_open_in_root(plan, root_fd, m->target, 0);
    if (st_fd < 0)
        FAIL("cannot open the mask store %s", store);
    for (size_t j = 0; j < m->n_masks; j++) {
        struct open_how how = { .flags = O_PATH | O_NOFOLLOW | O_CLOEXEC,
                                .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
        int t = (int)syscall(SYS_openat2, mnt, m->masks[j], &how, sizeof how);
        if (t < 0 && (errno == ENOENT || errno == ENOTDIR))
            continue;
        struct stat st;
        if (t < 0 || fstat(t, &st) < 0)
            FAIL("cannot open mask %s of %s", m->masks[j], m->target);
        char name[64];
        snprintf(name, sizeof name, "m%zu-%zu", i, j);
        int copy;
        if (S_ISDIR(st.st_mode)) {
            if (mkdirat(st_fd, name, 0700) < 0)
                FAIL("cannot create the empty copy of mask %s of %s", m->masks[j], m->target);
            copy = openat(st_fd, name, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        } else if (S_ISREG(st.st_mode)) {
            copy = openat(st_fd, name, O_RDONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
        } else {
            errno = EINVAL;
            FAIL("mask %s of %s is no longer a file or directory", m->masks[j], m->target);
        }
        if (copy < 0)
            FAIL("cannot create the empty copy of mask %s of %s", m->masks[j], m->target);
        mask_copy_attrs(plan, copy, &st, m->masks[j]);
        close(copy);
        int tree = open_tree(st_fd, name, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC);
        if (tree < 0 || move_mount(tree, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
            FAIL("cannot mount the empty copy over mask %s of %s", m->masks[j], m->target);
        close(tree);
        close(t);
    }
    close(mnt);
    close(st_fd);
}

/* CELL_MOUNT_OVERLAY: the source (the owner's read-only, id-mapped clone)
 * is the lower layer, a fresh tmpfs the upper; overlayfs never writes its
 * lower layer, and the upper goes with the cell's mount namespace.  Runs
 * with the cell's fsuid and raised capabilities (setup_overlay), which
 * copy-up uses, as for the root.  Masks add a read-only layer of whiteouts
 * above the source; a masked read-only bind is such an overlay without an
 * upper layer (read-only). */
static void attach_overlay(const struct isolate_plan *plan, size_t i, const struct isolate_mount *m, int target_fd)
{
    char lower[PATH_MAX], upper[PATH_MAX], mnt[PATH_MAX], layer[PATH_MAX], lowers[2 * PATH_MAX + 2];
    char opts[4 * PATH_MAX + 64];
    int has_upper = m->kind == CELL_MOUNT_OVERLAY;
    ovl_path(plan, lower, sizeof lower, i, "lower");
    ovl_path(plan, upper, sizeof upper, i, "upper");
    ovl_path(plan, mnt, sizeof mnt, i, "mnt");
    ovl_path(plan, layer, sizeof layer, i, "mask");
    int lower_fd = open(lower, O_PATH | O_DIRECTORY | O_CLOEXEC);
    int upper_fd = open(upper, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (lower_fd < 0 || upper_fd < 0)
        FAIL("cannot open the overlay's mount points in %s", plan->run_dir);
    if (move_mount(m->tree_fd, "", lower_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        FAIL("cannot attach %s as the lower layer of %s", m->source, m->target);
    if (has_upper) {
        char size[64];
        snprintf(size, sizeof size, "size=%llu", (unsigned long long)m->size);
        struct owner_opts own = owner_opts(plan);
        const char *o[] = { size, own.uid, own.gid, "mode=0755", NULL };
        attach_new_fs(plan, "tmpfs", o, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, upper_fd, m->target);
    }
    close(lower_fd);
    close(upper_fd);
    if (has_upper)
        ovl_make_upper(plan, m, lower, upper);
    snprintf(lowers, sizeof lowers, "%s", lower);
    if (m->n_masks) {
        mask_layer(plan, m, lower, layer);
        snprintf(lowers, sizeof lowers, "%s:%s", layer, lower);
    }
    int n = has_upper ? snprintf(opts, sizeof opts, "lowerdir=%s,upperdir=%s/upper,workdir=%s/work", lowers, upper, upper)
                      : snprintf(opts, sizeof opts, "lowerdir=%s", lowers);
    if (n < 0 || (size_t)n >= sizeof opts)
        FAIL("overlay options too long");
    /* mount(2) on a scratch directory, then moved by fd onto the target:
     * overlayfs takes the new mount API only from Linux 6.5 on. */
    int ro = m->readonly || !has_upper;
    if (mount("overlay", mnt, "overlay", MS_NOSUID | MS_NODEV | (ro ? MS_RDONLY : 0), opts) < 0)
        FAIL("cannot mount the overlay of %s at %s", m->source, m->target);
    if (move_mount(AT_FDCWD, mnt, target_fd, "", MOVE_MOUNT_T_EMPTY_PATH) < 0)
        FAIL("cannot attach the overlay of %s at %s", m->source, m->target);
}

/* A virtual filesystem (runtime/vfs.h): fuse on the owner's /dev/fuse fd,
 * mounted by real root in this mount namespace, so the connection's user
 * namespace is the host's: the owner sees the cell's host uids in requests
 * and reports files as the cell root's host uid.  allow_other lets the
 * cell's users in (they are not the mounter); default_permissions has the
 * kernel check modes, so the provider never decides access.  The cell
 * cannot unmount it (its root has no capability over this namespace) nor
 * reach /dev/fuse (not in its /dev; the fd is closed before cell-init). */
static void attach_vfs(const struct isolate_plan *plan, const struct isolate_mount *m, int target_fd)
{
    char fd[32];
    snprintf(fd, sizeof fd, "fd=%d", m->fuse_fd);
    const char *o[] = { fd, "rootmode=40000", "user_id=0", "group_id=0", "allow_other", "default_permissions",
                        NULL };
    unsigned attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (m->readonly ? MOUNT_ATTR_RDONLY : 0);
    attach_new_fs(plan, "fuse", o, attrs, target_fd, m->target);
}

static void setup_user_mounts(const struct isolate_plan *plan, int root_fd)
{
    for (size_t i = 0; i < plan->n_mounts; i++) {
        const struct isolate_mount *m = &plan->mounts[i];
        if (via_overlay(m)) {
            int t = must_open_in_root(plan, root_fd, m->target, 0);
            attach_overlay(plan, i, m, t);
            close(t);
        } else if (m->kind == CELL_MOUNT_BIND) {
            struct stat st;
            if (fstat(m->tree_fd, &st) < 0)
                FAIL("mount source %s", m->source);
            int t = must_open_in_root(plan, root_fd, m->target, !S_ISDIR(st.st_mode));
            if (move_mount(m->tree_fd, "", t, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
                FAIL("cannot attach %s at %s", m->source, m->target);
            close(t);
            if (mask_by_cover(m))
                cover_masks(plan, i, m, root_fd);
        } else if (m->kind == ISOLATE_MOUNT_VFS) {
            int t = must_open_in_root(plan, root_fd, m->target, 0);
            attach_vfs(plan, m, t);
            close(t);
        } else {
            int t = must_open_in_root(plan, root_fd, m->target, 0);
            char size[64];
            snprintf(size, sizeof size, "size=%llu", (unsigned long long)m->size);
            struct owner_opts own = owner_opts(plan);
            const char *o[] = { size, own.uid, own.gid, "mode=0755", NULL };
            attach_new_fs(plan, "tmpfs", o, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, t, m->target);
            if (m->readonly) {
                struct mount_attr a = { .attr_set = MOUNT_ATTR_RDONLY };
                int again = isolate_open_in_root(root_fd, m->target, 0);
                if (again < 0 || mount_setattr(again, "", AT_EMPTY_PATH, &a, sizeof a) < 0)
                    FAIL("cannot make %s read-only", m->target);
                close(again);
            }
            close(t);
        }
    }
}

static void setup_network(const struct isolate_plan *plan)
{
    int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (s < 0)
        FAIL("cannot create a socket to configure lo");
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    if (ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        FAIL("cannot read the flags of lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        FAIL("cannot bring lo up");
    close(s);
}

/* "<run_dir>/masks": one tmpfs (the cell's disk size, memory charged to its
 * writer as /tmp) holding the empty copies mounted over the masks of
 * read-write binds; it is left behind at pivot_root like the rest. */
static void setup_mask_store(const struct isolate_plan *plan, int scratch)
{
    if (mkdirat(scratch, "masks", 0700) < 0)
        FAIL("cannot create %s/masks", plan->run_dir);
    int dir = openat(scratch, "masks", O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        FAIL("cannot open %s/masks", plan->run_dir);
    char size[64];
    snprintf(size, sizeof size, "size=%llu", (unsigned long long)plan->disk);
    struct owner_opts own = owner_opts(plan);
    const char *o[] = { size, own.uid, own.gid, "mode=0700", NULL };
    attach_new_fs(plan, "tmpfs", o, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, dir, "the masks' empty copies");
    close(dir);
}

/* The scratch dir's contents (mount points, the generated /etc/hosts) live
 * on a tmpfs private to this mount namespace: directory operations on the
 * state directory's disk cost about half a millisecond each on slow hosts,
 * and nothing of this is ever left on disk. */
static void setup_scratch(const struct isolate_plan *plan)
{
    int dir = open(plan->run_dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (dir < 0)
        FAIL("cannot open the scratch dir %s", plan->run_dir);
    const char *o[] = { "size=1m", "mode=0700", NULL };
    attach_new_fs(plan, "tmpfs", o, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, dir, plan->run_dir);
    close(dir);
    int scratch = open(plan->run_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (scratch < 0)
        FAIL("cannot open the scratch tmpfs at %s", plan->run_dir);
    static const char *const subs[] = { "lower", "upper", "root" };
    for (size_t i = 0; i < 3; i++)
        if (mkdirat(scratch, subs[i], 0700) < 0)
            FAIL("cannot create %s/%s", plan->run_dir, subs[i]);
    int rw_masks = 0;
    for (size_t i = 0; i < plan->n_mounts; i++) {
        rw_masks |= mask_by_cover(&plan->mounts[i]);
        if (!via_overlay(&plan->mounts[i]))
            continue;
        static const char *const ovl[] = { "", "lower", "upper", "mnt", "mask" };
        for (size_t j = 0; j < 5; j++) {
            char rel[64];
            snprintf(rel, sizeof rel, "ovl%zu%s%s", i, *ovl[j] ? "/" : "", ovl[j]);
            if (mkdirat(scratch, rel, 0700) < 0)
                FAIL("cannot create %s/%s", plan->run_dir, rel);
        }
    }
    if (rw_masks)
        setup_mask_store(plan, scratch);
    int hosts = openat(scratch, "hosts", O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (hosts < 0 || util_write_all(hosts, plan->hosts, strlen(plan->hosts)) < 0)
        FAIL("cannot write %s/hosts", plan->run_dir);
    close(hosts);
    close(scratch);
}

static void build_root(const struct isolate_plan *plan)
{
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        FAIL("cannot make the mount namespace private");
    setup_scratch(plan);
    setup_overlay(plan);
    char root[PATH_MAX];
    run_path(plan, root, sizeof root, "root");
    int root_fd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (root_fd < 0)
        FAIL("cannot open the cell root %s", root);
    if (plan->image_is_host) {
        /* Not id-mapped: host uid/gid 0 (and every other host id) then has no
         * mapping in the cell's user namespace, the files show as
         * nobody:nogroup, and the cell's root is "other" for them, since
         * capabilities in a user namespace do not reach inodes whose owner
         * is not mapped there.  So what only host root may read (0600
         * root:root) stays unreadable in a cell, while 0644 files and 0755
         * programs work as for any user. */
        int usr = must_open_in_root(plan, root_fd, "/usr", 0);
        attach_tree(plan, AT_FDCWD, "/usr", 1, 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, usr,
                    "/usr");
        close(usr);
    }
    setup_dev(plan, root_fd);
    setup_proc(plan, root_fd);
    setup_sys_tmp(plan, root_fd);
    char hosts_file[PATH_MAX];
    run_path(plan, hosts_file, sizeof hosts_file, "hosts");
    int hosts = must_open_in_root(plan, root_fd, "/etc/hosts", 1);
    attach_tree(plan, AT_FDCWD, hosts_file, 0, 1, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, hosts, "/etc/hosts");
    close(hosts);
    setup_user_mounts(plan, root_fd);

    /* pivot_root(".", ".") stacks the old root under the new one; detaching
     * it leaves no path back to the host's tree. */
    if (fchdir(root_fd) < 0)
        FAIL("cannot enter the cell root");
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        FAIL("pivot_root into %s", root);
    if (umount2(".", MNT_DETACH) < 0)
        FAIL("cannot detach the host's root");
    if (chdir("/") < 0)
        FAIL("chdir / in the cell");
    close(root_fd);
}

static void enter_cell_credentials(const struct isolate_plan *plan)
{
    if (unshare(CLONE_NEWCGROUP) < 0)
        FAIL("cannot create the cgroup namespace");
    if (setns(plan->userns_fd, CLONE_NEWUSER) < 0)
        FAIL("cannot enter the cell's user namespace");
    /* Raw syscalls: glibc's wrappers apply the change to every thread of the
     * process, walking the owner's thread list copied into this child, and
     * wait forever for a thread that was being created at clone time. */
    if (syscall(SYS_setgroups, 0, NULL) < 0 || syscall(SYS_setresgid, 0, 0, 0) < 0 ||
        syscall(SYS_setresuid, 0, 0, 0) < 0)
        FAIL("cannot become root of the cell's user namespace");
    if (isolate_caps_drop(plan->nosuid_fd < 0) < 0)
        FAIL("cannot drop capabilities");
    /* setresuid() cleared the parent-death signal; set it again so the cell
     * dies with its owner even if the control socket is somehow kept open. */
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        FAIL("cannot set the parent-death signal");
    struct rlimit core = { 0, 0 };
    if (setrlimit(RLIMIT_CORE, &core) < 0)
        FAIL("cannot disable core dumps");
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        FAIL("cannot set no_new_privs");
    if (plan->seccomp && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, plan->seccomp) < 0)
        FAIL("cannot install the seccomp filter");
}

#define BOOT_NS_FLAGS (CLONE_NEWNS | CLONE_NEWPID | CLONE_NEWNET | CLONE_NEWUTS | CLONE_NEWIPC)

__attribute__((noreturn))
static void boot_child(const struct isolate_plan *plan)
{
    if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0)
        FAIL("cannot set the parent-death signal");
    for (size_t i = 0; i < plan->n_cgroup_fds; i++)
        if (write(plan->cgroup_fds[i], "0", 1) != 1)
            FAIL("cannot join the cell's cgroup");
    if (sethostname(plan->hostname, strlen(plan->hostname)) < 0)
        FAIL("cannot set the hostname %s", plan->hostname);
    setup_network(plan);
    build_root(plan);
    enter_cell_credentials(plan);

    /* cell-init expects its control socket at fd 3; nothing else of the
     * owner's may cross into the cell. */
    /* Move every fd we keep above the low numbers first: any of them may
     * currently sit on 3, 4 or 5 and be overwritten by the dup2s below. */
    int ctl = fcntl(plan->ctl_fd, F_DUPFD_CLOEXEC, 100);
    int exe = fcntl(plan->init_fd, F_DUPFD_CLOEXEC, 100);
    int nosuid = plan->nosuid_fd >= 0 ? fcntl(plan->nosuid_fd, F_DUPFD_CLOEXEC, 100) : -1;
    if (plan->nosuid_fd >= 0 && nosuid < 0)
        FAIL("cannot pass the nosuid filter to cell-init");
    int null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
    if (ctl < 0 || exe < 0 || null_fd < 0)
        FAIL("cannot arrange cell-init's descriptors");
    if (dup2(null_fd, 0) < 0 || dup2(null_fd, 1) < 0 || dup2(null_fd, 2) < 0 || dup2(ctl, 3) < 0 ||
        dup3(exe, 4, O_CLOEXEC) < 0)
        FAIL("cannot arrange cell-init's descriptors");
    /* fd 5: the nosuid filter for cell-init to apply to what it spawns. */
    int first_closed = 5;
    if (nosuid >= 0) {
        if (dup2(nosuid, 5) < 0)
            FAIL("cannot pass the nosuid filter to cell-init");
        first_closed = 6;
    }
    if (syscall(SYS_close_range, first_closed, ~0U, 0) < 0)
        FAIL("cannot close the owner's descriptors");
    char *const argv[] = { "cell-init", NULL };
    char *const envp[] = { "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", NULL };
    syscall(SYS_execveat, 4, "", argv, envp, AT_EMPTY_PATH);
    child_fail(plan, errno, "cannot exec cell-init");
}

static int boot_child_main(void *plan)
{
    boot_child(plan);
}

/* A copy-on-write child, for sanitizer builds (below). */
static pid_t boot_forked(const struct isolate_plan *plan, int *pidfd_out, cell_error *err)
{
    int pidfd = -1;
    struct clone_args args = {
        .flags = BOOT_NS_FLAGS | CLONE_PIDFD,
        .pidfd = (uint64_t)(uintptr_t)&pidfd,
        .exit_signal = SIGCHLD,
    };
    pid_t pid = (pid_t)syscall(SYS_clone3, &args, sizeof args);
    if (pid < 0)
        return util_fail_errno(err, "clone3 into new namespaces failed");
    if (pid == 0)
        boot_child(plan);
    *pidfd_out = pidfd;
    return pid;
}

/* The child shares the owner's memory and the owner's thread sleeps (CLONE_VFORK) until the
 * child has exec'd cell-init or failed, so no page table is copied and no
 * copy torn down (vmclone.c).  The child only reads the plan, which this
 * suspended thread owns. */
static pid_t boot_vforked(const struct isolate_plan *plan, int *pidfd_out, cell_error *err)
{
    struct isolate_vmstack stack = { 0 };
    /* The deepest path (build_root, setup_overlay) uses about 50 KiB. */
    if (isolate_vmstack_map(&stack, 1024 * 1024, err) < 0)
        return -1;
    int pidfd = -1;
    pid_t pid = isolate_clone_vm(boot_child_main, (void *)plan, BOOT_NS_FLAGS | CLONE_VFORK | CLONE_PIDFD, &stack,
                                 &pidfd, err);
    isolate_vmstack_unmap(&stack);
    if (pid < 0)
        return -1;
    *pidfd_out = pidfd;
    return pid;
}

/* ASan and TSan keep one stack per thread: a child running on another stack
 * in the same memory makes ASan warn at its first noreturn call (on the
 * cell's stderr) and TSan lose track.  Their builds boot copy-on-write. */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define BOOT_SHARED_VM 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer)
#define BOOT_SHARED_VM 0
#endif
#endif
#ifndef BOOT_SHARED_VM
#define BOOT_SHARED_VM 1
#endif

pid_t isolate_boot(const struct isolate_plan *plan, int *pidfd_out, cell_error *err)
{
    if (!BOOT_SHARED_VM)
        return boot_forked(plan, pidfd_out, err);
    return boot_vforked(plan, pidfd_out, err);
}

