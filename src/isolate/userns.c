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
#include <sys/syscall.h>
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

/* The helper only exists so the namespace has a process while its maps are
 * written: it shares the owner's memory (vmclone.c) and waits for EOF on
 * `hold`, which comes when the owner closes its end or dies. */
struct userns_helper {
    int hold_r, hold_w;
};

static int userns_helper_main(void *arg)
{
    const struct userns_helper *h = arg;
    char c;
    /* The fd table is the child's own copy: drop its write end, or EOF
     * never comes.  Errors need no report: the child exits either way.
     * Raw syscalls, so that no sanitizer interceptor (and none of its
     * locks, which another thread of the owner may hold) runs here. */
    syscall(SYS_close, h->hold_w);
    while (syscall(SYS_read, h->hold_r, &c, 1) < 0 && errno == EINTR)
        ;
    return 0;
}

int isolate_userns_create(uid_t base, uint32_t count, int *fd_out, cell_error *err)
{
    int hold[2];
    if (pipe2(hold, O_CLOEXEC) < 0)
        return util_fail_errno(err, "pipe for the user namespace helper");
    struct userns_helper h = { hold[0], hold[1] };
    struct isolate_vmstack stack = { 0 };
    pid_t pid = -1;
    int rc = -1;
    if (isolate_vmstack_map(&stack, 64 * 1024, err) < 0)
        goto out;
    /* Born in the new namespace: it exists when clone() returns. */
    pid = isolate_clone_vm(userns_helper_main, &h, CLONE_NEWUSER, &stack, NULL, err);
    if (pid < 0) {
        if (err)
            snprintf(err->message, sizeof err->message, "cannot create a user namespace: %s", strerror(err->code));
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
    close(hold[0]);
    close(hold[1]);
    while (pid > 0 && waitpid(pid, NULL, 0) < 0 && errno == EINTR)
        ;
    isolate_vmstack_unmap(&stack);
    return rc;
}

int isolate_bind_tree(int src_fd, const char *source, int userns_fd, int readonly, int *tree_fd, cell_error *err)
{
    _cleanup_close_ int tree = open_tree(src_fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_RECURSIVE | AT_EMPTY_PATH);
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
