/* hostname.c: rename a running cell: its UTS hostname and the 127.0.1.1
 * line of its /etc/hosts, as cell_create() sets them at boot.  The daemon's
 * warm pool boots cells before it knows the hostname a create asks for. */
#include "runtime/cell_internal.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/mount.h>
#include <linux/openat2.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

static int set_readonly(int fd, int on)
{
    struct mount_attr a = { .attr_set = on ? MOUNT_ATTR_RDONLY : 0, .attr_clr = on ? 0 : MOUNT_ATTR_RDONLY };
    return (int)syscall(SYS_mount_setattr, fd, "", AT_EMPTY_PATH, &a, sizeof a);
}

struct rename_job {
    int         pidfd;
    const char *name, *hosts;
    size_t      len;
};

/* The child, sharing the caller's memory (isolate_clone_vm): system calls
 * only, nothing written but its own stack.  It joins the cell's mount and
 * UTS namespaces (as host root it holds every capability over them);
 * /etc/hosts there is a read-only bind of a file on the cell's own scratch
 * tmpfs, made writable for the one write.  Returns 0 or an errno value,
 * its exit status. */
/* /etc/hosts as the cell sees it, never through a symbolic link in any
 * component: the processes of a cell that ran can replace /etc with a link
 * (to /usr/..., a read-only bind of the host's files), and this child is
 * host root.  O_PATH with flags = O_PATH only, as openat2 wants. */
static int open_hosts(int flags)
{
    struct open_how how = { .flags = (uint64_t)(flags | O_CLOEXEC),
                            .resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
    return (int)syscall(SYS_openat2, AT_FDCWD, "/etc/hosts", &how, sizeof how);
}

/* The file cell_create() put there: a mount of its own (the bind) on a
 * tmpfs (the cell's scratch), so that clearing its mount's read-only flag
 * can never make a host-backed mount writable.  0 or an errno value. */
static int hosts_is_ours(int fd)
{
    struct statx stx;
    struct statfs sfs;
    if (statx(fd, "", AT_EMPTY_PATH, STATX_TYPE, &stx) < 0 || fstatfs(fd, &sfs) < 0)
        return errno;
    if (!S_ISREG(stx.stx_mode) || !(stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) ||
        !(stx.stx_attributes & STATX_ATTR_MOUNT_ROOT) || sfs.f_type != TMPFS_MAGIC)
        return EPERM;
    return 0;
}

static int same_file(int a, int b)
{
    struct stat sa, sb;
    return fstat(a, &sa) == 0 && fstat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static int rename_child(int pidfd, const char *name, const char *hosts, size_t len)
{
    if (setns(pidfd, CLONE_NEWNS | CLONE_NEWUTS) < 0 || sethostname(name, strlen(name)) < 0)
        return errno;
    int path = open_hosts(O_PATH);
    if (path < 0)
        return errno;
    int rc = hosts_is_ours(path);
    if (rc)
        return rc;
    if (set_readonly(path, 0) < 0)
        return errno;
    /* Truncated only once it is known to be the same file. */
    int fd = open_hosts(O_WRONLY);
    if (fd < 0) {
        rc = errno;
    } else if (!same_file(fd, path)) {
        rc = EPERM;
        close(fd);
    } else if (ftruncate(fd, 0) < 0) {
        rc = errno;
        close(fd);
    } else {
        ssize_t n = write(fd, hosts, len);
        rc = n < 0 ? errno : (size_t)n != len ? EIO : 0;
        if (close(fd) < 0 && !rc)
            rc = errno;
    }
    /* Read-only again whatever happened, or the caller must not use the cell. */
    if (set_readonly(path, 1) < 0)
        return errno ? errno : EIO;
    return rc;
}

static int rename_main(void *arg)
{
    const struct rename_job *j = arg;
    return rename_child(j->pidfd, j->name, j->hosts, j->len);
}

int cell_set_hostname(cell *c, const char *hostname, cell_error *err)
{
    if (!hostname || !runtime_valid_hostname(hostname))
        return util_fail(err, EINVAL, "invalid hostname '%s': use 1-63 letters, digits and '-'",
                         hostname ? hostname : "");
    if (c->dead || c->pidfd < 0)
        return util_fail(err, ECONNRESET, "cell %s has stopped", c->id);
    char hosts[256];
    int len = snprintf(hosts, sizeof hosts, "127.0.0.1\tlocalhost\n127.0.1.1\t%s\n::1\tlocalhost ip6-localhost "
                       "ip6-loopback\n", hostname);
    if (len < 0 || (size_t)len >= sizeof hosts)
        return util_fail(err, ENAMETOOLONG, "hostname '%s' is too long", hostname);
    /* Not fork(): copying the daemon's page tables cost about a millisecond.
     * CLONE_VFORK: this thread waits, so the child's errno (shared) is alone. */
    struct rename_job job = { .pidfd = c->pidfd, .name = hostname, .hosts = hosts, .len = (size_t)len };
    struct isolate_vmstack stack;
    if (isolate_vmstack_map(&stack, 64 << 10, err) < 0)
        return -1;
    pid_t pid = isolate_clone_vm(rename_main, &job, CLONE_VFORK, &stack, NULL, err);
    int status = 0, waited = pid < 0 ? -1 : 0;
    while (pid >= 0 && (waited = waitpid(pid, &status, 0)) < 0 && errno == EINTR)
        ;
    if (pid >= 0 && waited < 0)
        util_fail_errno(err, "waitpid for renaming cell %s", c->id);
    isolate_vmstack_unmap(&stack);
    if (waited < 0)
        return -1;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        errno = WIFEXITED(status) ? WEXITSTATUS(status) : EIO;
        return util_fail_errno(err, "cannot rename cell %s to %s", c->id, hostname);
    }
    return 0;
}
