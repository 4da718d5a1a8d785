/* oci_nspath.c: a pid, network, ipc, uts or cgroup namespace joined by
 * path (linux.namespaces {"type": ..., "path": ...}), for pod members
 * that share their sandbox's.  A spec that leaves a namespace out gets a
 * new one, never the host's; a path that names the host's (cell-oci's own:
 * /proc/1/ns/pid, /proc/self/ns/net, a bind of one) would give back what
 * leaving it out cannot, so it is refused.  With the host's pid namespace
 * the container's /proc would list the host's processes and their
 * /proc/PID/root, which the init, still real root before its confinement,
 * could be led through (tests/integration/test_oci_escape.py).
 *
 * The path is opened O_PATH first (a FIFO or a device is never opened for
 * real, so a wrong path cannot hold create), checked to be a namespace of
 * the type asked (nsfs, NS_GET_NSTYPE), and the descriptor returned is
 * the one checked: the caller joins exactly what was compared. */
#include "oci/oci.h"

#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>

static const char *ns_name(int type)
{
    switch (type) {
    case CLONE_NEWPID: return "pid";
    case CLONE_NEWNET: return "net";
    case CLONE_NEWIPC: return "ipc";
    case CLONE_NEWUTS: return "uts";
    case CLONE_NEWCGROUP: return "cgroup";
    }
    return NULL;
}

int oci_ns_open(const char *path, int type, cell_error *err)
{
    const char *name = ns_name(type);
    if (!name)
        return util_fail(err, EINVAL, "linux.namespaces: %s cannot be joined by path here", path);
    _cleanup_close_ int p = open(path, O_PATH | O_CLOEXEC);
    struct statfs sfs;
    if (p < 0)
        return util_fail_errno(err, "linux.namespaces %s: cannot open %s", name, path);
    if (fstatfs(p, &sfs) < 0 || sfs.f_type != NSFS_MAGIC)
        return util_fail(err, EINVAL, "linux.namespaces %s: %s is not a namespace (give /proc/PID/ns/%s of the "
                         "pod's sandbox)", name, path, name);
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", p);
    int fd = open(self, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "linux.namespaces %s: cannot open %s", name, path);
    struct stat ns, own;
    char own_path[64];
    snprintf(own_path, sizeof own_path, "/proc/self/ns/%s", name);
    if (ioctl(fd, NS_GET_NSTYPE) != type || fstat(fd, &ns) < 0) {
        close(fd);
        return util_fail(err, EINVAL, "linux.namespaces %s: %s is not a %s namespace", name, path, name);
    }
    /* The caller's own is the runtime's, the host's (the shim's). */
    if (stat(own_path, &own) < 0 || (own.st_dev == ns.st_dev && own.st_ino == ns.st_ino)) {
        close(fd);
        return util_fail(err, EPERM, "linux.namespaces %s: %s is the host's %s namespace (cell-oci's own); a "
                         "container never shares the host's: leave the path out for a new one", name, path, name);
    }
    return fd;
}
