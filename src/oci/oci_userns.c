/* oci_userns.c: a user namespace joined by path (linux.namespaces
 * {"type": "user", "path": ...}), for the containers of a pod that share
 * their sandbox's.  A container's user namespace is what maps its root
 * onto unprivileged host ids, so joining one is only allowed where nothing
 * is lost: the namespace must be one cell-oci made for a living container
 * of the same --root and the same pod, and the joiner takes that
 * container's uid range (and holds it too, so it is never given away while
 * the joiner runs).  Any other user namespace, the host's first
 * (/proc/1/ns/user, /proc/self/ns/user), a cell's, or one some process
 * made with its own mappings, is refused (docs/oci.md "uid ranges").
 *
 * Each container's namespace is recorded at create as ROOT/ID/userns
 * ("DEV INO" of the nsfs inode): the init enters it only at `start`, so
 * /proc/PID/ns/user cannot tell it before. */
#include "oci/oci.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <linux/nsfs.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/statfs.h>

#define USERNS_FILE "userns"

/* The pod a container belongs to, as its runtime caller names it: the
 * CRI sandbox id containerd (or CRI-O) writes into every container's
 * config.json of the pod, the sandbox's own included. */
static const char *pod_of(json_t *annotations)
{
    static const char *const keys[] = { "io.kubernetes.cri.sandbox-id", "io.kubernetes.cri-o.SandboxID", NULL };
    for (const char *const *k = keys; *k; k++) {
        const char *v = json_string_value(json_object_get(annotations, *k));
        if (v && *v)
            return v;
    }
    return NULL;
}

int oci_userns_record(const char *root, const char *id, int userns_fd, cell_error *err)
{
    struct stat st;
    char path[PATH_MAX], line[64];
    if (fstat(userns_fd, &st) < 0)
        return util_fail_errno(err, "cannot stat the container's user namespace");
    if (oci_state_path(path, sizeof path, root, id, USERNS_FILE, err) < 0)
        return -1;
    int n = snprintf(line, sizeof line, "%llu %llu\n", (unsigned long long)st.st_dev, (unsigned long long)st.st_ino);
    return util_write_file(path, line, (size_t)n, 0600, 0, err);
}

static int recorded(const char *root, const char *id, const struct stat *ns)
{
    char path[PATH_MAX], buf[64];
    if (oci_state_path(path, sizeof path, root, id, USERNS_FILE, NULL) < 0)
        return 0;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    unsigned long long dev, ino;
    return sscanf(buf, "%llu %llu", &dev, &ino) == 2 && dev == (unsigned long long)ns->st_dev &&
           ino == (unsigned long long)ns->st_ino;
}

/* Open `path` as a user namespace without side effects: O_PATH first (a
 * FIFO or a device is never opened for real), nsfs checked, then the
 * same inode reopened read-only through /proc/self/fd for setns. */
static int open_userns(const char *path, struct stat *st, cell_error *err)
{
    _cleanup_close_ int p = open(path, O_PATH | O_CLOEXEC);
    struct statfs sfs;
    if (p < 0)
        return util_fail_errno(err, "linux.namespaces user: cannot open %s", path);
    if (fstatfs(p, &sfs) < 0 || sfs.f_type != NSFS_MAGIC)
        return util_fail(err, EINVAL, "linux.namespaces user: %s is not a namespace (give /proc/PID/ns/user of "
                         "the pod's sandbox)", path);
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", p);
    int fd = open(self, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "linux.namespaces user: cannot open %s", path);
    if (ioctl(fd, NS_GET_NSTYPE) != CLONE_NEWUSER || fstat(fd, st) < 0) {
        close(fd);
        return util_fail(err, EINVAL, "linux.namespaces user: %s is not a user namespace", path);
    }
    return fd;
}

int oci_userns_join(const char *root, const char *id, const struct oci_spec *s, const char *path,
                    struct oci_userns_owner *owner, cell_error *err)
{
    struct stat ns, host;
    int fd = open_userns(path, &ns, err);
    if (fd < 0)
        return -1;
    if (stat("/proc/self/ns/user", &host) == 0 && host.st_dev == ns.st_dev && host.st_ino == ns.st_ino) {
        close(fd);
        return util_fail(err, EPERM, "linux.namespaces user: %s is the host's user namespace; a container never "
                         "runs in it", path);
    }
    const char *pod = pod_of(s->annotations);
    DIR *d = opendir(root);
    struct dirent *e;
    int found = 0;
    while (d && !found && (e = readdir(d))) {
        struct oci_state st;
        if (e->d_name[0] == '.' || strcmp(e->d_name, id) == 0 || !recorded(root, e->d_name, &ns) ||
            oci_state_read(root, e->d_name, &st, NULL) < 0)
            continue;
        const char *owner_pod = pod_of(st.annotations);
        if (oci_state_status(root, &st) == OCI_STOPPED) {
            /* Another container of the pod may still hold it: look on. */
        } else if (!pod || strcmp(pod, owner_pod ? owner_pod : st.id) != 0) {
            util_fail(err, EPERM, "linux.namespaces user: %s belongs to container %s of another pod (%s); a "
                      "container joins only its own pod's (annotation io.kubernetes.cri.sandbox-id: %s)", path,
                      st.id, owner_pod ? owner_pod : st.id, pod ? pod : "none");
            found = -1;
        } else {
            *owner = (struct oci_userns_owner){ .slot = st.slot, .pid = st.pid, .start_time = st.start_time,
                                                .uid_base = st.uid_base, .uid_count = st.uid_count };
            found = 1;
        }
        oci_state_free(&st);
    }
    if (d)
        closedir(d);
    if (found <= 0) {
        close(fd);
        return found < 0 ? -1 : util_fail(err, EPERM, "linux.namespaces user: %s is not the user namespace of a "
                                          "cell-oci container under %s (only a pod's sandbox's can be joined, once "
                                          "it has started)", path, root);
    }
    /* The mapping is the owner's: a spec that asks for another is wrong. */
    if (s->has_idmap && (s->uid_map.host_id != owner->uid_base || s->uid_map.size != owner->uid_count)) {
        close(fd);
        return util_fail(err, EINVAL, "linux.uidMappings: host ids %u+%u differ from those of the user namespace "
                         "joined (%u+%u)", (unsigned)s->uid_map.host_id, (unsigned)s->uid_map.size,
                         (unsigned)owner->uid_base, (unsigned)owner->uid_count);
    }
    owner->fd = fd;
    return 0;
}
