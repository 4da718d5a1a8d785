/* userns.c: per-cell user namespaces.  The namespace is created empty (a
 * helper process holds it just long enough to write the maps and open it). */
#include "isolate/isolate.h"
#include "util/util.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>

static int write_map(pid_t pid, const char *file, uid_t base, uint32_t count, cell_error *err)
{
    char path[64], line[64];
    snprintf(path, sizeof path, "/proc/%d/%s", (int)pid, file);
    int n = snprintf(line, sizeof line, "0 %u %u\n", (unsigned)base, count);
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", path);
    if (util_write_all(fd, line, (size_t)n) < 0)
        return util_fail_errno(err, "cannot write '%.*s' to %s", n - 1, line, path);
    return 0;
}

int isolate_userns_create(uid_t base, uint32_t count, int *fd_out, cell_error *err)
{
    int ready[2], hold[2];
    if (pipe2(ready, O_CLOEXEC) < 0)
        return util_fail_errno(err, "pipe for the user namespace helper");
    if (pipe2(hold, O_CLOEXEC) < 0) {
        close(ready[0]);
        close(ready[1]);
        return util_fail_errno(err, "pipe for the user namespace helper");
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(ready[0]); close(ready[1]); close(hold[0]); close(hold[1]);
        return util_fail_errno(err, "fork of the user namespace helper");
    }
    if (pid == 0) {
        /* The helper only exists so the namespace has a process while its
         * maps are written; it waits for the owner to close `hold`. */
        close(ready[0]);
        close(hold[1]);
        char status = unshare(CLONE_NEWUSER) == 0 ? 0 : (char)errno;
        if (write(ready[1], &status, 1) != 1)
            _exit(1);
        char c;
        while (read(hold[0], &c, 1) < 0 && errno == EINTR)
            ;
        _exit(0);
    }
    close(ready[1]);
    close(hold[0]);
    int rc = -1;
    char status = 0;
    if (util_read_all(ready[0], &status, 1) != 1) {
        util_fail(err, EIO, "user namespace helper died before reporting");
        goto out;
    }
    if (status != 0) {
        errno = status;
        util_fail_errno(err, "cannot create a user namespace (unshare CLONE_NEWUSER)");
        goto out;
    }
    if (write_map(pid, "uid_map", base, count, err) < 0 || write_map(pid, "gid_map", base, count, err) < 0)
        goto out;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/ns/user", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        util_fail_errno(err, "cannot open %s", path);
        goto out;
    }
    *fd_out = fd;
    rc = 0;
out:
    close(ready[0]);
    close(hold[1]);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    return rc;
}

int isolate_bind_tree(const char *source, int userns_fd, int readonly, int *tree_fd, cell_error *err)
{
    _cleanup_close_ int tree = open_tree(AT_FDCWD, source, OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE);
    if (tree < 0)
        return util_fail_errno(err, "cannot clone the mount source %s", source);
    struct mount_attr attr = {
        .attr_set = MOUNT_ATTR_IDMAP | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | (readonly ? MOUNT_ATTR_RDONLY : 0),
        .userns_fd = (uint64_t)userns_fd,
    };
    if (mount_setattr(tree, "", AT_EMPTY_PATH | AT_RECURSIVE, &attr, sizeof attr) < 0)
        return util_fail_errno(err, "cannot id-map the mount source %s (its filesystem may not support "
                               "id-mapped mounts)", source);
    *tree_fd = util_steal_fd(&tree);
    return 0;
}
