/* inroot.c: what building a root filesystem needs besides the boot
 * sequence, shared by cells (boot.c) and OCI containers (src/oci): paths
 * resolved inside a new root, and the /proc masks every cell and container
 * gets. */
#include "isolate/isolate.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Files in /proc that expose host state or host-wide knobs are covered, as
 * container runtimes do: files by /dev/null, directories by an empty
 * read-only tmpfs, and the sysctl and irq trees are made read-only. */
const char *const isolate_proc_masked_files[] = { "kcore", "keys", "timer_list", "sched_debug",
                                                  "latency_stats", "kallsyms", "sysrq-trigger", NULL };
const char *const isolate_proc_masked_dirs[] = { "acpi", "scsi", "asound", "driver", NULL };
const char *const isolate_proc_readonly[] = { "sys", "irq", "bus", "fs", NULL };


/* Resolve `path` (absolute, inside the cell) below root_fd as the cell
 * would see it: symlinks and ".." cannot leave the cell's tree.  Missing
 * directories are created (owned by the cell's root); a missing last
 * component is created as a directory, or as an empty file if want_file. */
int isolate_open_in_root(int root_fd, const char *path, int want_file)
{
    struct open_how how = { .flags = O_PATH | O_CLOEXEC,
                            .resolve = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS };
    int fd = (int)syscall(SYS_openat2, root_fd, path, &how, sizeof how);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    /* Walk the path one component at a time, but resolve every prefix from
     * the cell's root (not from the parent's fd, which RESOLVE_IN_ROOT would
     * take as the root): absolute symlinks such as /var/run -> /run then
     * mean what they mean inside the cell. */
    char prefix[PATH_MAX];
    size_t len = 0;
    const char *p = path;
    for (;;) {
        while (*p == '/')
            p++;
        size_t n = strcspn(p, "/");
        if (n == 0)
            return (int)syscall(SYS_openat2, root_fd, "/", &how, sizeof how);
        const char *rest = p + n;
        while (*rest == '/')
            rest++;
        int last = *rest == '\0';
        if (len + 1 + n >= sizeof prefix) {
            errno = ENAMETOOLONG;
            return -1;
        }
        size_t parent_len = len;
        prefix[len++] = '/';
        memcpy(prefix + len, p, n);
        len += n;
        prefix[len] = '\0';
        int child = (int)syscall(SYS_openat2, root_fd, prefix, &how, sizeof how);
        if (child < 0 && errno == ENOENT) {
            char parent[PATH_MAX], name[NAME_MAX + 1];
            if (n > NAME_MAX) {
                errno = ENAMETOOLONG;
                return -1;
            }
            memcpy(parent, prefix, parent_len);
            parent[parent_len] = '\0';
            memcpy(name, p, n);
            name[n] = '\0';
            int dir = (int)syscall(SYS_openat2, root_fd, parent_len ? parent : "/", &how, sizeof how);
            if (dir < 0)
                return -1;
            int r;
            if (last && want_file) {
                int f = openat(dir, name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, 0644);
                r = f < 0 ? -1 : close(f);
            } else {
                r = mkdirat(dir, name, 0755);
            }
            int saved = errno;
            close(dir);
            if (r < 0 && saved != EEXIST) {
                errno = saved;
                return -1;
            }
            /* Re-resolve from the root so a racing symlink cannot win. */
            child = (int)syscall(SYS_openat2, root_fd, prefix, &how, sizeof how);
        }
        if (child < 0)
            return -1;
        if (last)
            return child;
        close(child);
        p = rest;
    }
}
