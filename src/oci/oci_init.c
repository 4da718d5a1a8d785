/* oci_init.c: the container's init, from clone() to execve().  It starts
 * as real root in new mount, pid, uts, ipc and network namespaces (or ones
 * joined by path), builds the root filesystem (the bundle's root id-mapped
 * onto the container's uid range, the spec's mounts, cell's /proc masks and
 * the spec's masked and read-only paths), pivots into it, tells the
 * creator it is ready and parks on exec.fifo until `start`.  Then it takes
 * cell's confinement: a new cgroup namespace, the container's user
 * namespace, the spec's user, capabilities cut to cell's kept set,
 * no_new_privs and cell's seccomp filter, and execs process.args.
 *
 * The namespaces are created by real root and so owned by the initial
 * user namespace, as a cell's: the container's root cannot unmount the
 * masks, change its network or its hostname (docs/oci.md). */
#include "oci/oci.h"
#include "isolate/isolate.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/close_range.h>
#include <linux/magic.h>
#include <linux/openat2.h>
#include <linux/seccomp.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/fsuid.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

/* Every failure before the park goes to the creator as text and ends the init. */
__attribute__((noreturn, format(printf, 2, 3)))
static void init_fail(const struct oci_init_args *a, const char *fmt, ...)
{
    int code = errno;
    char msg[900];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n >= 0 && (size_t)n < sizeof msg && code)
        snprintf(msg + n, sizeof msg - (size_t)n, ": %s", strerror(code));
    if (a->sync_fd >= 0)
        (void)!write(a->sync_fd, msg, strlen(msg));
    else
        fprintf(stderr, "cell-oci init: %s\n", msg);
    _exit(127);
}

#define FAIL(...) init_fail(a, __VA_ARGS__)

/* Files the init creates in the root (mount points, /dev) must belong to
 * the container's root: the fs ids of its range, with real root's power. */
static void become_container_fs(const struct oci_init_args *a)
{
    setfsgid(a->uid_base);
    setfsuid(a->uid_base);
    if ((uid_t)setfsuid((uid_t)-1) != a->uid_base || isolate_caps_raise_effective() < 0)
        FAIL("cannot take the container's file system ids (%u)", (unsigned)a->uid_base);
}

static void attach(const struct oci_init_args *a, int mnt, int target_fd, const char *what)
{
    if (move_mount(mnt, "", target_fd, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        FAIL("cannot attach the mount at %s", what);
    close(mnt);
}

/* A new filesystem instance (proc, tmpfs, sysfs, devpts, mqueue) with the
 * given "key=value"/"flag" options, attached on target_fd. */
static void new_fs(const struct oci_init_args *a, const char *type, const char *const *opts, size_t n_opts,
                   uint64_t attrs, int target_fd, const char *what)
{
    int fs = fsopen(type, FSOPEN_CLOEXEC);
    if (fs < 0)
        FAIL("cannot open a %s filesystem for %s", type, what);
    for (size_t i = 0; i < n_opts; i++) {
        char key[64];
        const char *eq = strchr(opts[i], '=');
        int r;
        if (eq) {
            snprintf(key, sizeof key, "%.*s", (int)(eq - opts[i]), opts[i]);
            r = fsconfig(fs, FSCONFIG_SET_STRING, key, eq + 1, 0);
        } else {
            r = fsconfig(fs, FSCONFIG_SET_FLAG, opts[i], NULL, 0);
        }
        if (r < 0)
            FAIL("%s: option '%s' of %s refused", what, opts[i], type);
    }
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        FAIL("cannot create the %s filesystem for %s", type, what);
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC, (unsigned)attrs);
    if (mnt < 0)
        FAIL("cannot mount %s at %s", type, what);
    close(fs);
    attach(a, mnt, target_fd, what);
}

/* The files under /proc a spec may cover (lxcfs's, as runc allows them). */
static const char *const proc_mountable[] = {
    "/proc/cpuinfo", "/proc/diskstats", "/proc/meminfo", "/proc/stat", "/proc/swaps", "/proc/uptime",
    "/proc/loadavg", "/proc/slabinfo", "/proc/net/dev", "/proc/sys/kernel/ns_last_pid", NULL,
};

static int must_open(const struct oci_init_args *a, int root_fd, const char *path, int want_file)
{
    int fd = isolate_open_in_root(root_fd, path, want_file);
    if (fd < 0)
        FAIL("cannot create the mount point %s in the container's root", path);
    /* Nothing is mounted inside a proc already there (however the path got
     * there: a destination through a symlink counts where it lands): a
     * mount over /proc/1/oom_score_adj or /proc/self/attr would take what
     * the init and exec write there (runc's CVE-2025-52881), a mount over
     * a mask would undo it.  lxcfs's files excepted, by their exact path. */
    struct statfs sfs;
    if (fstatfs(fd, &sfs) < 0)
        FAIL("cannot tell the filesystem of the mount point %s", path);
    if (sfs.f_type == PROC_SUPER_MAGIC) {
        int allowed = 0;
        for (const char *const *p = proc_mountable; *p; p++)
            allowed |= strcmp(path, *p) == 0;
        if (!allowed) {
            errno = 0;
            FAIL("mounts: destination %s is inside /proc; only a proc mount of its own or lxcfs's files (%s, "
                 "/proc/meminfo, ...) may go there", path, proc_mountable[0]);
        }
    }
    return fd;
}

/* Cover `path` of an existing tree: files with /dev/null, directories with
 * an empty read-only tmpfs.  A path that does not exist is left alone. */
static void mask_path(const struct oci_init_args *a, int dir_fd, const char *path, int null_fd, const char *what)
{
    struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    int t = (int)syscall(SYS_openat2, dir_fd, path, &how, sizeof how);
    if (t < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return;
        FAIL("cannot open %s to mask it", what);
    }
    struct stat st;
    if (fstat(t, &st) < 0)
        FAIL("cannot stat %s", what);
    if (S_ISDIR(st.st_mode)) {
        const char *o[] = { "size=0", "mode=0555" };
        new_fs(a, "tmpfs", o, 2, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, t,
               what);
    } else {
        int m = open_tree(null_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
        struct mount_attr attr = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC };
        if (m < 0 || mount_setattr(m, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
            FAIL("cannot clone /dev/null to mask %s", what);
        attach(a, m, t, what);
    }
    close(t);
}

/* Make `path` of an existing tree read-only (a recursive read-only clone
 * of itself on top). */
static void readonly_path(const struct oci_init_args *a, int dir_fd, const char *path, const char *what)
{
    struct open_how how = { .flags = O_PATH | O_CLOEXEC, .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    int t = (int)syscall(SYS_openat2, dir_fd, path, &how, sizeof how);
    if (t < 0) {
        if (errno == ENOENT || errno == ENOTDIR)
            return;
        FAIL("cannot open %s to make it read-only", what);
    }
    int m = open_tree(t, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
    struct mount_attr attr = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV };
    if (m < 0 || mount_setattr(m, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
        FAIL("cannot make %s read-only", what);
    attach(a, m, t, what);
    close(t);
}

/* cell's /proc masks, on every proc the spec mounts. */
static void mask_proc(const struct oci_init_args *a, int root_fd, const char *dest, int null_fd)
{
    int proc = (int)syscall(SYS_openat2, root_fd, dest,
                            &(struct open_how){ .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
                                                .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS },
                            sizeof(struct open_how));
    if (proc < 0)
        FAIL("cannot open the container's %s", dest);
    for (const char *const *p = isolate_proc_masked_files; *p; p++)
        mask_path(a, proc, *p, null_fd, *p);
    for (const char *const *p = isolate_proc_masked_dirs; *p; p++)
        mask_path(a, proc, *p, null_fd, *p);
    for (const char *const *p = isolate_proc_readonly; *p; p++)
        readonly_path(a, proc, *p, *p);
    close(proc);
}

/* Owner options of a tmpfs or devpts in the container's range: the spec's
 * uid=N / gid=N are container ids, the kernel wants host ids. */
static const char *owner_opt(const struct oci_init_args *a, const char *opt, char *buf, size_t size)
{
    if (strncmp(opt, "uid=", 4) != 0 && strncmp(opt, "gid=", 4) != 0)
        return opt;
    char *end;
    unsigned long id = strtoul(opt + 4, &end, 10);
    if (*end || end == opt + 4 || id >= a->uid_count)
        FAIL("mount option %s names an id outside the container's %u ids", opt, (unsigned)a->uid_count);
    snprintf(buf, size, "%.4s%lu", opt, (unsigned long)a->uid_base + id);
    return buf;
}

static void bind_mount(const struct oci_init_args *a, const struct oci_mount *m, int root_fd)
{
    _cleanup_close_ int src = open(m->source, O_PATH | O_CLOEXEC);
    struct stat st;
    if (src < 0 || fstat(src, &st) < 0)
        FAIL("mount source %s", m->source);
    int tree = -1;
    cell_error err = { 0 };
    /* id-mapped, so its files show their owners inside the range; a
     * filesystem without id-mapped mounts is bound as is (its files are
     * then nobody's inside the container). */
    if (isolate_bind_tree(src, m->source, a->userns_fd, !!(m->attrs & MOUNT_ATTR_RDONLY), &tree, &err) < 0) {
        tree = open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
        struct mount_attr attr = { .attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV |
                                               (m->attrs & MOUNT_ATTR_RDONLY) };
        if (tree < 0 || mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
            FAIL("cannot bind %s", m->source);
    }
    struct mount_attr extra = { .attr_set = m->attrs & (MOUNT_ATTR_NOEXEC | MOUNT_ATTR_NOATIME |
                                                        MOUNT_ATTR_NODIRATIME) };
    if (extra.attr_set && mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &extra, sizeof extra) < 0)
        FAIL("cannot set the options of the bind of %s", m->source);
    int target = must_open(a, root_fd, m->destination, !S_ISDIR(st.st_mode));
    attach(a, tree, target, m->destination);
    close(target);
}

static void make_devices(const struct oci_init_args *a, int root_fd, const char *dest)
{
    int dev = (int)syscall(SYS_openat2, root_fd, dest,
                           &(struct open_how){ .flags = O_DIRECTORY | O_CLOEXEC,
                                               .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS },
                           sizeof(struct open_how));
    if (dev < 0)
        FAIL("cannot open the container's %s", dest);
    static const struct { const char *name; unsigned maj, min; } nodes[] = {
        { "null", 1, 3 }, { "zero", 1, 5 }, { "full", 1, 7 }, { "random", 1, 8 }, { "urandom", 1, 9 }, { "tty", 5, 0 },
    };
    for (size_t i = 0; i < sizeof nodes / sizeof *nodes; i++)
        if (mknodat(dev, nodes[i].name, S_IFCHR | 0666, makedev(nodes[i].maj, nodes[i].min)) < 0 ||
            fchmodat(dev, nodes[i].name, 0666, 0) < 0)
            FAIL("cannot create %s/%s", dest, nodes[i].name);
    static const char *const links[][2] = {
        { "pts/ptmx", "ptmx" }, { "/proc/self/fd", "fd" }, { "/proc/self/fd/0", "stdin" },
        { "/proc/self/fd/1", "stdout" }, { "/proc/self/fd/2", "stderr" },
    };
    for (size_t i = 0; i < sizeof links / sizeof *links; i++)
        if (symlinkat(links[i][0], dev, links[i][1]) < 0)
            FAIL("cannot create %s/%s", dest, links[i][1]);
    close(dev);
}

static void spec_mount(const struct oci_init_args *a, const struct oci_mount *m, int root_fd, int null_fd)
{
    /* Never device nodes or set-id files from a mount, but on /dev's tmpfs,
     * whose nodes the init makes itself, and devpts (its ptmx). */
    int is_dev = strcmp(m->destination, "/dev") == 0;
    uint64_t attrs = m->attrs | MOUNT_ATTR_NOSUID | (is_dev || m->kind == OCI_MOUNT_DEVPTS ? 0 : MOUNT_ATTR_NODEV);
    char own[2][32], buf[OCI_MAX_MOUNT_DATA][48];
    const char *opts[OCI_MAX_MOUNT_DATA + 2];
    size_t n = 0;
    int has_uid = 0, has_gid = 0;
    for (size_t i = 0; i < m->n_data; i++) {
        has_uid |= strncmp(m->data[i], "uid=", 4) == 0;
        has_gid |= strncmp(m->data[i], "gid=", 4) == 0;
        opts[n++] = owner_opt(a, m->data[i], buf[i], sizeof buf[i]);
    }
    int target;
    switch (m->kind) {
    case OCI_MOUNT_BIND:
        bind_mount(a, m, root_fd);
        return;
    case OCI_MOUNT_CGROUP:
        /* Not mounted yet (docs/oci.md): the directory stays empty. */
        oci_log("debug", "mount of %s (cgroup) skipped", m->destination);
        return;
    case OCI_MOUNT_PROC:
        target = must_open(a, root_fd, m->destination, 0);
        new_fs(a, "proc", opts, n, attrs | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, target, m->destination);
        close(target);
        mask_proc(a, root_fd, m->destination, null_fd);
        return;
    case OCI_MOUNT_SYSFS:
        target = must_open(a, root_fd, m->destination, 0);
        /* Always read-only, as in a cell, and without the firmware tables. */
        new_fs(a, "sysfs", opts, n, attrs | MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, target,
               m->destination);
        mask_path(a, target, "firmware", null_fd, "sysfs firmware");
        close(target);
        return;
    case OCI_MOUNT_TMPFS:
    case OCI_MOUNT_DEVPTS:
        if (!has_uid && m->kind == OCI_MOUNT_TMPFS) {
            snprintf(own[0], sizeof own[0], "uid=%u", (unsigned)a->uid_base);
            opts[n++] = own[0];
        }
        if (!has_gid) {
            snprintf(own[1], sizeof own[1], "gid=%u", (unsigned)a->uid_base + (m->kind == OCI_MOUNT_DEVPTS ? 5 : 0));
            opts[n++] = own[1];
        }
        target = must_open(a, root_fd, m->destination, 0);
        new_fs(a, m->kind == OCI_MOUNT_TMPFS ? "tmpfs" : "devpts", opts, n,
               attrs | (m->kind == OCI_MOUNT_DEVPTS ? MOUNT_ATTR_NOEXEC : 0), target, m->destination);
        close(target);
        if (is_dev && m->kind == OCI_MOUNT_TMPFS)
            make_devices(a, root_fd, m->destination);
        return;
    case OCI_MOUNT_MQUEUE:
        target = must_open(a, root_fd, m->destination, 0);
        new_fs(a, "mqueue", opts, n, attrs | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC, target, m->destination);
        close(target);
        return;
    }
    FAIL("mount %s: unknown kind", m->destination);
}

/* The overlay mounted at root.path: its super options from mountinfo
 * (the last, topmost mount there), or -1 when it is not one. */
static int overlay_options(const char *root, char *opts, size_t size)
{
    FILE *f = fopen("/proc/self/mountinfo", "re");
    char line[8192];
    int found = -1;
    while (f && fgets(line, sizeof line, f)) {
        char *fields[6] = { 0 }, *p = line, *sep = strstr(line, " - ");
        for (int i = 0; i < 6 && p; i++)
            fields[i] = strsep(&p, " ");
        if (!sep || !fields[4] || strcmp(fields[4], root) != 0)
            continue;
        char type[32], super[8192];
        if (sscanf(sep + 3, "%31s %*s %8191s", type, super) != 2)
            continue;
        found = strcmp(type, "overlay") == 0 && strlen(super) < size ? 0 : -1;
        if (found == 0)
            snprintf(opts, size, "%s", super);
    }
    if (f)
        fclose(f);
    return found;
}

/* The value of key= in a comma-separated option list (copied), or NULL. */
static char *opt_value(const char *opts, const char *key, char *out, size_t size)
{
    size_t klen = strlen(key);
    for (const char *p = opts; p && *p;) {
        size_t n = strcspn(p, ",");
        if (n > klen && strncmp(p, key, klen) == 0 && p[klen] == '=' && n - klen - 1 < size) {
            snprintf(out, size, "%.*s", (int)(n - klen - 1), p + klen + 1);
            return out;
        }
        p += n + (p[n] == ',');
    }
    return NULL;
}

/* Attach `path` (a host directory) id-mapped onto the container's range at
 * SCRATCH/name; 0, or -1 (the caller falls back). */
static int idmap_at(const struct oci_init_args *a, const char *path, const char *name)
{
    _cleanup_close_ int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
    char dst[PATH_MAX];
    if (fd < 0 || (size_t)snprintf(dst, sizeof dst, "%s/%s", a->scratch, name) >= sizeof dst ||
        mkdir(dst, 0700) < 0)
        return -1;
    int tree = -1;
    if (isolate_bind_tree(fd, path, a->userns_fd, 0, &tree, NULL) < 0)
        return -1;
    int rc = move_mount(tree, "", AT_FDCWD, dst, MOVE_MOUNT_F_EMPTY_PATH);
    close(tree);
    return rc;
}

/* containerd's snapshot is an overlayfs, which cannot be id-mapped itself:
 * make the same overlay again from id-mapped clones of its layers (as cells
 * mount images), mounted with the container's fs ids so that copy-up
 * writes through the mapping.  -1 (nothing changed that matters) when the
 * overlay is not one this understands; the caller binds it as it is. */
static int idmapped_overlay(const struct oci_init_args *a, int *tree_out)
{
    static char opts[8192], lower[8192], upper[PATH_MAX], work[PATH_MAX], val[8192];
    if (!a->scratch || overlay_options(a->spec->root, opts, sizeof opts) < 0 || strchr(opts, '\\') ||
        !opt_value(opts, "lowerdir", lower, sizeof lower))
        return -1;
    int has_upper = opt_value(opts, "upperdir", upper, sizeof upper) != NULL;
    if (has_upper != (opt_value(opts, "workdir", work, sizeof work) != NULL))
        return -1;
    /* A private tmpfs holds the layers' mount points (this namespace only). */
    if (mkdir(a->scratch, 0700) < 0 || mount("none", a->scratch, "tmpfs", MS_NOSUID | MS_NODEV, "mode=0700") < 0)
        return -1;
    size_t used = 0, n = 0;
    val[0] = 0;
    for (char *p = lower, *l; (l = strsep(&p, ":"));) {
        char name[32];
        snprintf(name, sizeof name, "l%zu", n++);
        int w = snprintf(val + used, sizeof val - used, "%s%s/%s", used ? ":" : "", a->scratch, name);
        if (!*l || w < 0 || (size_t)w >= sizeof val - used || idmap_at(a, l, name) < 0)
            return -1;
        used += (size_t)w;
    }
    int fs = fsopen("overlay", FSOPEN_CLOEXEC);
    if (fs < 0 || fsconfig(fs, FSCONFIG_SET_STRING, "lowerdir", val, 0) < 0)
        return -1;
    if (has_upper) {
        /* upper and work must stay on one mount: map their common parent. */
        char *us = strrchr(upper, '/'), *ws = strrchr(work, '/'), up[PATH_MAX], wk[PATH_MAX];
        if (!us || !ws || us - upper != ws - work || strncmp(upper, work, (size_t)(us - upper)) != 0 || us == upper)
            return -1;
        *us = 0;
        if (idmap_at(a, upper, "u") < 0)
            return -1;
        snprintf(up, sizeof up, "%s/u/%s", a->scratch, us + 1);
        snprintf(wk, sizeof wk, "%s/u/%s", a->scratch, ws + 1);
        if (fsconfig(fs, FSCONFIG_SET_STRING, "upperdir", up, 0) < 0 ||
            fsconfig(fs, FSCONFIG_SET_STRING, "workdir", wk, 0) < 0)
            return -1;
    }
    /* The mounter's credentials do copy-up: the container's fs ids. */
    become_container_fs(a);
    if (fsconfig(fs, FSCONFIG_CMD_CREATE, NULL, NULL, 0) < 0)
        return -1;
    int mnt = fsmount(fs, FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV);
    close(fs);
    if (mnt < 0)
        return -1;
    /* overlayfs keeps private clones of its layers: the mount points go. */
    (void)umount2(a->scratch, MNT_DETACH);
    *tree_out = mnt;
    return 0;
}

/* The bundle's root, id-mapped onto the container's range, over itself in
 * this mount namespace; then the spec's mounts and masks on it. */
static int build_root(const struct oci_init_args *a)
{
    const struct oci_spec *s = a->spec;
    if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        FAIL("cannot make the mount tree private");
    _cleanup_close_ int src = open(s->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    if (src < 0)
        FAIL("root.path %s", s->root);
    int tree;
    cell_error err = { 0 };
    /* Writable until the spec's mount points exist; root.readonly applies last. */
    if (isolate_bind_tree(src, s->root, a->userns_fd, 0, &tree, &err) < 0) {
        if (err.code != EINVAL) {
            errno = err.code;
            FAIL("%s", err.message);
        }
        if (idmapped_overlay(a, &tree) < 0) {
            /* A filesystem without id-mapped mounts, and not an overlay of
             * ones with, is bound as it is: its files keep their host owners,
             * which the container's range does not include (root-owned files
             * are nobody's inside, writable only where the mode lets anyone). */
            oci_log("debug", "root %s is not id-mapped: bound as it is", s->root);
            tree = open_tree(src, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH | AT_RECURSIVE);
            struct mount_attr attr = { .attr_set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV };
            if (tree < 0 || mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
                FAIL("cannot bind the container's root %s", s->root);
        }
    }
    if (move_mount(tree, "", src, "", MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH) < 0)
        FAIL("cannot attach the container's root on %s", s->root);
    close(tree);
    int root_fd = open(s->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
    _cleanup_close_ int null_fd = open("/dev/null", O_PATH | O_CLOEXEC);
    if (root_fd < 0 || null_fd < 0)
        FAIL("cannot open the container's root %s", s->root);
    become_container_fs(a);
    for (size_t i = 0; i < s->n_mounts; i++)
        spec_mount(a, &s->mounts[i], root_fd, null_fd);
    for (size_t i = 0; i < s->n_masked; i++)
        mask_path(a, root_fd, s->masked[i], null_fd, s->masked[i]);
    for (size_t i = 0; i < s->n_readonly; i++)
        readonly_path(a, root_fd, s->readonly[i], s->readonly[i]);
    struct mount_attr ro = { .attr_set = MOUNT_ATTR_RDONLY };
    if (s->root_readonly && mount_setattr(root_fd, "", AT_EMPTY_PATH, &ro, sizeof ro) < 0)
        FAIL("cannot make the container's root read-only (root.readonly)");
    return root_fd;
}

static void pivot(const struct oci_init_args *a, int root_fd)
{
    if (fchdir(root_fd) < 0)
        FAIL("cannot enter the container's root");
    if (syscall(SYS_pivot_root, ".", ".") < 0)
        FAIL("pivot_root into %s", a->spec->root);
    if (umount2(".", MNT_DETACH) < 0)
        FAIL("cannot detach the host's root");
    if (chdir("/") < 0)
        FAIL("chdir / in the container");
}

static void join_namespaces(const struct oci_init_args *a)
{
    static const int joinable[] = { CLONE_NEWNET, CLONE_NEWIPC, CLONE_NEWUTS };
    for (size_t i = 0; i < sizeof joinable / sizeof *joinable; i++) {
        const struct oci_ns *ns = oci_spec_ns(a->spec, joinable[i]);
        if (!ns || !ns->path)
            continue;
        /* Checked as a namespace of that type and never the host's (ours
         * until this setns: these types were not in the clone flags). */
        cell_error err = { 0 };
        _cleanup_close_ int fd = oci_ns_open(ns->path, joinable[i], &err);
        if (fd < 0) {
            errno = 0;
            FAIL("%s", err.message);
        }
        if (setns(fd, joinable[i]) < 0)
            FAIL("cannot join the namespace %s", ns->path);
    }
}

/* linux.sysctl (names checked by the parser: namespaced ones only),
 * written through /proc/sys, which shows the writer's namespaces. */
static void set_sysctls(const struct oci_init_args *a)
{
    const struct oci_ns *net = oci_spec_ns(a->spec, CLONE_NEWNET);
    const char *name;
    json_t *v;
    json_object_foreach(a->spec->sysctl, name, v) {
        /* A joined network namespace is the pod's (or the host's): its
         * sandbox sets its sysctls, never a member. */
        if (strncmp(name, "net.", 4) == 0 && net && net->path) {
            errno = 0;
            FAIL("linux.sysctl %s: the network namespace is joined by path, its owner sets it", name);
        }
        char path[256];
        snprintf(path, sizeof path, "/proc/sys/%s", name);
        for (char *c = path + 10; *c; c++)
            if (*c == '.')
                *c = '/';
        const char *value = json_string_value(v);
        _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0 || util_write_all(fd, value, strlen(value)) < 0)
            FAIL("cannot set linux.sysctl %s to '%s'", name, value);
    }
}

/* A new network namespace: lo up, and (its root holding no capability over
 * it) low ports and ping sockets open to every uid, as in a cell. */
static void setup_new_netns(const struct oci_init_args *a)
{
    const struct oci_ns *ns = oci_spec_ns(a->spec, CLONE_NEWNET);
    if (ns && ns->path)
        return;
    _cleanup_close_ int s = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr = { 0 };
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    if (s < 0 || ioctl(s, SIOCGIFFLAGS, &ifr) < 0)
        FAIL("cannot read the flags of lo");
    ifr.ifr_flags |= IFF_UP;
    if (ioctl(s, SIOCSIFFLAGS, &ifr) < 0)
        FAIL("cannot bring lo up");
    static const char *const knobs[][2] = { { "/proc/sys/net/ipv4/ip_unprivileged_port_start", "0" },
                                            { "/proc/sys/net/ipv4/ping_group_range", "0 2147483647" } };
    for (size_t i = 0; i < 2; i++) {
        _cleanup_close_ int fd = open(knobs[i][0], O_WRONLY | O_CLOEXEC);
        if (fd < 0 || util_write_all(fd, knobs[i][1], strlen(knobs[i][1])) < 0)
            FAIL("cannot write %s", knobs[i][0]);
    }
}

/* Open `path` of the container's root (the init's and an exec'd process's
 * root once pivoted or joined) while still real root: the tree is the
 * image's, so symlinks stay inside it and never go through a magic link
 * (/proc/PID/root, /proc/PID/fd/N), which would reach whatever that process
 * holds, the host's root when the pid namespace is shared with a host
 * process (tests/integration/test_oci_escape.py). */
static int open_in_container(const char *path, int flags)
{
    struct open_how how = { .flags = (uint64_t)flags | O_CLOEXEC,
                            .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    _cleanup_close_ int root = open("/", O_PATH | O_DIRECTORY | O_CLOEXEC);
    return root < 0 ? -1 : (int)syscall(SYS_openat2, root, path, &how, sizeof how);
}

/* An executable regular file for execve, checked on what the path resolves to
 * in the container (see open_in_container). */
static int is_executable(const char *path)
{
    _cleanup_close_ int fd = open_in_container(path, O_PATH);
    struct stat st;
    return fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && faccessat(fd, "", X_OK, AT_EMPTY_PATH) == 0;
}

/* process.args[0] as execvp would find it, in the container's root (now /). */
static void find_exe(const struct oci_init_args *a, char *out, size_t size)
{
    const char *cmd = a->spec->args[0];
    const char *path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    for (size_t i = 0; i < a->spec->n_env; i++)
        if (strncmp(a->spec->env[i], "PATH=", 5) == 0)
            path = a->spec->env[i] + 5;
    if (strchr(cmd, '/')) {
        snprintf(out, size, "%s", cmd);
        if (!is_executable(out))
            FAIL("process.args[0] %s cannot be executed", cmd);
        return;
    }
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, ":");
        if (n > 0 && (size_t)snprintf(out, size, "%.*s/%s", (int)n, p, cmd) < size && is_executable(out))
            return;
        p += n + (p[n] == ':');
    }
    errno = ENOENT;
    FAIL("process.args[0] %s is not in the container's PATH (%.200s)", cmd, path);
}

/* process.env, plus HOME from the container's /etc/passwd for process.user
 * (or "/") when the spec sets none, as runc does. */
static char **make_env(const struct oci_init_args *a)
{
    const struct oci_spec *s = a->spec;
    char **env = calloc(s->n_env + 2, sizeof *env);
    if (!env)
        FAIL("no memory for process.env");
    int has_home = 0;
    for (size_t i = 0; i < s->n_env; i++) {
        env[i] = (char *)s->env[i];
        has_home |= strncmp(s->env[i], "HOME=", 5) == 0;
    }
    if (has_home)
        return env;
    static char home[PATH_MAX + 8];
    snprintf(home, sizeof home, "HOME=/");
    /* The image's file: a FIFO would hold the init (and create) forever, a
     * device or a huge file would read without end; a regular file only,
     * and at most 4 MiB of it. */
    int fd = open_in_container("/etc/passwd", O_RDONLY | O_NONBLOCK);
    struct stat st;
    FILE *f = NULL;
    if (fd >= 0 && fstat(fd, &st) == 0 && S_ISREG(st.st_mode))
        f = fdopen(fd, "re");
    if (!f && fd >= 0)
        close(fd);
    char line[1024];
    size_t seen = 0;
    while (f && seen < (4u << 20) && fgets(line, sizeof line, f)) {
        seen += strlen(line);
        /* name:x:uid:gid:gecos:home:shell */
        char *field[7] = { 0 }, *p = line;
        int n = 0;
        while (n < 7 && (field[n++] = strsep(&p, ":\n")))
            ;
        if (n >= 6 && field[2] && field[5] && *field[5] && strtoul(field[2], NULL, 10) == s->uid &&
            strspn(field[2], "0123456789") == strlen(field[2])) {
            snprintf(home, sizeof home, "HOME=%s", field[5]);
            break;
        }
    }
    if (f)
        fclose(f);
    env[s->n_env] = home;
    return env;
}

static void set_rlimits(const struct oci_init_args *a)
{
    for (size_t i = 0; i < a->spec->n_rlimits; i++) {
        const struct oci_rlimit *r = &a->spec->rlimits[i];
        struct rlimit rl = { r->soft, r->hard };
        if (setrlimit(r->resource, &rl) < 0)
            FAIL("cannot set process.rlimits[%zu]", i);
    }
    /* No core dumps, whatever the spec says: the kernel writes them through
     * core_pattern, a host path or a host helper run as root. */
    struct rlimit core = { 0, 0 };
    if (setrlimit(RLIMIT_CORE, &core) < 0)
        FAIL("cannot disable core dumps");
}

/* The spec's capabilities, each set cut to cell's kept set (which
 * isolate_caps_drop already made the bounding set). */
static void drop_bounding(const struct oci_init_args *a)
{
    /* While still root (CAP_SETPCAP), before process.user takes effect. */
    for (int cap = 0; cap < 64; cap++)
        if (!(a->spec->caps[OCI_CAP_BOUNDING] & (1ull << cap)) && prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) < 0 &&
            errno != EINVAL)
            FAIL("cannot drop capability %d from the bounding set", cap);
}

static void set_caps(const struct oci_init_args *a)
{
    const struct oci_spec *s = a->spec;
    uint64_t kept = 0;
    for (const int *c = isolate_caps_kept; *c >= 0; c++)
        kept |= 1ull << *c;
    if (a->rw_binds)
        kept &= ~(1ull << CAP_SETFCAP);
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    uint64_t eff = s->caps[OCI_CAP_EFFECTIVE] & kept, perm = s->caps[OCI_CAP_PERMITTED] & kept,
             inh = s->caps[OCI_CAP_INHERITABLE] & kept;
    for (int i = 0; i < 2; i++) {
        d[i].effective = (uint32_t)(eff >> (32 * i));
        d[i].permitted = (uint32_t)((perm | eff) >> (32 * i));
        d[i].inheritable = (uint32_t)(inh >> (32 * i));
    }
    if (syscall(SYS_capset, &h, d) < 0)
        FAIL("cannot set the process's capabilities");
    uint64_t amb = s->caps[OCI_CAP_AMBIENT] & perm & inh;
    for (int cap = 0; cap < 64; cap++)
        if ((amb & (1ull << cap)) && prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) < 0)
            FAIL("cannot raise ambient capability %s", oci_cap_name(cap));
}

static void confine(const struct oci_init_args *a)
{
    const struct oci_spec *s = a->spec;
    set_rlimits(a);
    if (s->has_oom_score_adj) {
        char v[16];
        int n = snprintf(v, sizeof v, "%d", s->oom_score_adj);
        _cleanup_close_ int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
        if (fd < 0 || util_write_all(fd, v, (size_t)n) < 0)
            FAIL("cannot set process.oomScoreAdj %d (lowering it needs CAP_SYS_RESOURCE)", s->oom_score_adj);
    }
    /* The spec's (opened before pivot_root) or the init's for exec, else new. */
    if (a->cgroupns_fd >= 0 ? setns(a->cgroupns_fd, CLONE_NEWCGROUP) < 0 : unshare(CLONE_NEWCGROUP) < 0)
        FAIL("cannot enter a cgroup namespace");
    if (setns(a->userns_fd, CLONE_NEWUSER) < 0)
        FAIL("cannot enter the container's user namespace");
    if (syscall(SYS_setresgid, 0, 0, 0) < 0 || syscall(SYS_setresuid, 0, 0, 0) < 0)
        FAIL("cannot become root of the container's user namespace");
    if (isolate_caps_drop(!a->rw_binds) < 0)
        FAIL("cannot drop capabilities to cell's set");
    drop_bounding(a);
    gid_t gids[OCI_MAX_GIDS];
    for (size_t i = 0; i < s->n_gids; i++)
        gids[i] = s->gids[i];
    if (setgroups(s->n_gids, gids) < 0)
        FAIL("cannot set process.user.additionalGids");
    if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) < 0 || syscall(SYS_setresgid, s->gid, s->gid, s->gid) < 0 ||
        syscall(SYS_setresuid, s->uid, s->uid, s->uid) < 0)
        FAIL("cannot become uid %u gid %u (process.user)", (unsigned)s->uid, (unsigned)s->gid);
    if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) < 0)
        FAIL("cannot clear keep-caps");
    set_caps(a);
    /* Always, whatever process.noNewPrivileges says. */
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        FAIL("cannot set no_new_privs");
    struct sock_fprog cell_prog, nosuid;
    isolate_seccomp_prebuilt(&cell_prog, &nosuid);
    if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &cell_prog) < 0)
        FAIL("cannot install cell's seccomp filter");
    /* A read-write host bind: in-container root writes as host root there,
     * so no set-id modes (cell's nosuid filter, as cells with such mounts). */
    if (a->rw_binds && prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &nosuid) < 0)
        FAIL("cannot install cell's nosuid filter");
    cell_error err = { 0 };
    if (a->seccomp && oci_seccomp_load(a->seccomp, &err) < 0) {
        errno = 0;
        FAIL("%s", err.message);
    }
}

/* process.terminal: a pty of the container's devpts; the master goes to
 * --console-socket (SCM_RIGHTS, as runc sends it), the slave is returned. */
static int make_console(const struct oci_init_args *a)
{
    int master = open_in_container("/dev/pts/ptmx", O_RDWR | O_NOCTTY);
    if (master < 0)
        master = open_in_container("/dev/ptmx", O_RDWR | O_NOCTTY);
    int unlock = 0;
    if (master < 0 || ioctl(master, TIOCSPTLCK, &unlock) < 0)
        FAIL("process.terminal: cannot open a pty in the container's /dev/pts");
    int slave = ioctl(master, TIOCGPTPEER, O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (slave < 0)
        FAIL("process.terminal: cannot open the pty's terminal side");
    if (a->spec->uid < a->uid_count && fchown(slave, a->uid_base + a->spec->uid, (gid_t)-1) < 0)
        FAIL("process.terminal: cannot give the pty to process.user.uid");
    char name[] = "console";
    struct iovec iov = { .iov_base = name, .iov_len = sizeof name - 1 };
    union { struct cmsghdr h; char buf[CMSG_SPACE(sizeof(int))]; } ctl = { 0 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = ctl.buf, .msg_controllen = sizeof ctl.buf };
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &master, sizeof master);
    if (sendmsg(a->console_fd, &msg, MSG_NOSIGNAL) < 0)
        FAIL("--console-socket: cannot send the pty");
    close(master);
    close(a->console_fd);
    return slave;
}

/* The pty as the process's controlling terminal and stdio. */
static void use_console(const struct oci_init_args *a, int slave)
{
    if (setsid() < 0 || ioctl(slave, TIOCSCTTY, 0) < 0)
        FAIL("process.terminal: cannot make the pty the controlling terminal");
    for (int fd = 0; fd < 3; fd++)
        if (dup2(slave, fd) < 0)
            FAIL("process.terminal: cannot make the pty fd %d", fd);
    if (slave > 2)
        close(slave);
}

/* The hooks' state as the init reports it: its own pid (in its pid
 * namespace, as runc's init reports it). */
static json_t *init_hook_state(const struct oci_init_args *a, const char *status)
{
    if (json_object_set_new(a->hook_state, "status", json_string(status)) < 0 ||
        json_object_set_new(a->hook_state, "pid", json_integer(getpid())) < 0)
        FAIL("no memory for the hooks' state");
    return a->hook_state;
}

/* With the mounts made, before pivot_root: the creator runs prestart and
 * createRuntime in the runtime's namespaces (we wait for its "go"), then
 * createContainer runs here, in the container's, from the root's directory. */
static void container_hooks(const struct oci_init_args *a)
{
    const struct oci_hooks *h = &a->spec->hooks;
    if (h->n[OCI_HOOK_PRESTART] || h->n[OCI_HOOK_CREATE_RUNTIME]) {
        char go[4];
        if (write(a->sync_fd, "hooks", 5) != 5)
            FAIL("cannot ask for the createRuntime hooks");
        if (read(a->sync_fd, go, sizeof go) != 2 || memcmp(go, "go", 2) != 0)
            _exit(127); /* the creator failed a hook: it reports it */
    }
    if (!h->n[OCI_HOOK_CREATE_CONTAINER])
        return;
    cell_error err = { 0 };
    if (oci_hooks_run(h, OCI_HOOK_CREATE_CONTAINER, init_hook_state(a, "creating"), a->spec->root, &err) < 0) {
        errno = 0;
        FAIL("%s", err.message);
    }
}

/* What the init (once started) and an exec'd process share: the terminal,
 * cell's confinement, the runtime's descriptors gone, process.cwd, exec.
 * Failures go to a->sync_fd while it is open: it closes at the exec. */
__attribute__((noreturn))
static void become_process(const struct oci_init_args *a, const char *exe, char **env, int slave)
{
    if (slave >= 0)
        use_console(a, slave);
    confine(a);
    if (syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC) < 0)
        FAIL("cannot close the runtime's descriptors");
    if (chdir(a->spec->cwd) < 0)
        FAIL("cannot enter process.cwd %s", a->spec->cwd);
    /* A cwd through a magic link to a descriptor of the runtime's (runc's
     * CVE-2024-21626: /proc/self/fd/N of a host directory) would leave the
     * process a working directory outside its root: the kernel then gives
     * no path from / (glibc: ENOENT, "(unreachable)" from the syscall). */
    char cwd[PATH_MAX];
    if (!getcwd(cwd, sizeof cwd) || cwd[0] != '/')
        FAIL("process.cwd %s is outside the container's root", a->spec->cwd);
    /* startContainer: confined as the process is, its path in the
     * container's root; a failure ends the container, as in runc. */
    if (a->hook_state && a->spec->hooks.n[OCI_HOOK_START_CONTAINER]) {
        cell_error err = { 0 };
        if (oci_hooks_run(&a->spec->hooks, OCI_HOOK_START_CONTAINER, init_hook_state(a, "created"), NULL, &err) < 0) {
            errno = 0;
            FAIL("%s", err.message);
        }
    }
    execve(exe, (char *const *)a->spec->args, env);
    FAIL("cannot exec %s", exe);
}

/* Into the container's cgroup before anything else (v1 moves a process
 * that writes "0" itself without the global lock's RCU wait). */
static void join_cgroup(const struct oci_init_args *a)
{
    for (size_t i = 0; i < a->n_cgroup_fds; i++)
        if (write(a->cgroup_fds[i], "0", 1) != 1)
            FAIL("cannot join the container's cgroup");
}

/* linux.namespaces cgroup with a path: opened (and checked) now, on the
 * host's paths, and joined at start; after pivot_root the path would be
 * resolved in the image. */
static int open_cgroupns(const struct oci_init_args *a)
{
    const struct oci_ns *cg = oci_spec_ns(a->spec, CLONE_NEWCGROUP);
    if (!cg || !cg->path)
        return -1;
    cell_error err = { 0 };
    int fd = oci_ns_open(cg->path, CLONE_NEWCGROUP, &err);
    if (fd < 0) {
        errno = 0;
        FAIL("%s", err.message);
    }
    return fd;
}

void oci_init_main(const struct oci_init_args *a)
{
    const struct oci_spec *s = a->spec;
    /* Real root and cell-oci until its execve, visible in a pid namespace
     * joined by path (a pod's) while parked: not dumpable, as an exec'd
     * process (oci_exec.c); execve makes the container's program dumpable. */
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
        FAIL("cannot make the init non-dumpable");
    join_cgroup(a);
    join_namespaces(a);
    int cgroupns = open_cgroupns(a);
    const struct oci_ns *uts = oci_spec_ns(s, CLONE_NEWUTS);
    if (s->hostname && !(uts && uts->path) && sethostname(s->hostname, strlen(s->hostname)) < 0)
        FAIL("cannot set the hostname %s", s->hostname);
    setup_new_netns(a);
    set_sysctls(a);
    int root_fd = build_root(a);
    container_hooks(a);
    pivot(a, root_fd);
    close(root_fd);
    char exe[PATH_MAX];
    find_exe(a, exe, sizeof exe);
    int slave = a->console_fd >= 0 ? make_console(a) : -1;
    char **env = make_env(a);

    /* Ready: the creator writes the state and exits; we wait for `start`. */
    if (write(a->sync_fd, "ok", 2) != 2)
        _exit(127);
    close(a->sync_fd);
    char c;
    ssize_t r;
    while ((r = read(a->fifo_fd, &c, 1)) < 0 && errno == EINTR)
        ;
    if (r != 1)
        _exit(127);
    close(a->fifo_fd);

    struct oci_init_args late = *a;
    late.sync_fd = -1; /* failures from here go to stderr */
    late.cgroupns_fd = cgroupns;
    become_process(&late, exe, env, slave);
}

void oci_exec_main(const struct oci_init_args *a)
{
    join_cgroup(a);
    char exe[PATH_MAX];
    find_exe(a, exe, sizeof exe);
    int slave = a->console_fd >= 0 ? make_console(a) : -1;
    become_process(a, exe, make_env(a), slave);
}
