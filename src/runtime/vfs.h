/* vfs.h: virtual filesystems served by the owner through FUSE
 * (cell_options_add_vfs; docs/architecture.md, "Virtual filesystems").
 *
 * The owner opens /dev/fuse before the boot child is cloned; the child
 * mounts fuse with that fd on the target (mount options fd=N,
 * allow_other, default_permissions; nosuid, nodev; read-only for
 * CELL_VFS_READONLY) and closes it with every other owner fd before cell-init
 * runs.  Once cell-init says hello the owner serves the connection: one
 * reader thread decodes requests (libfuse's low-level API) and hands each to
 * a pool of workers that run the callbacks; a watchdog answers EIO to any
 * request still unanswered at its deadline and the late answer is dropped.
 * The server lives in libcell-vfs.so (src/plugin/vfs.c), so that programs
 * that never mount a vfs do not load libfuse. */
#ifndef CELL_RUNTIME_VFS_H
#define CELL_RUNTIME_VFS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "cell.h"

#define RUNTIME_VFS_MAX_TIMEOUT_MS 3600000u

/* One vfs mount as cell_options holds it. */
struct runtime_vfs_spec {
    char        *target;
    cell_vfs_ops ops;
    void        *user;
    int          tier;          /* enum cell_vfs_tier */
    uint32_t     timeout_ms;    /* > 0 */
};

struct runtime_vfs;

typedef struct runtime_vfs_ops {
    size_t size;                /* sizeof(runtime_vfs_ops) where it was built */
    /* Open /dev/fuse for `spec` (copied; its user must outlive *out); files show as
     * owned by host uid/gid (the cell's root).  *fuse_fd stays owned by *out. */
    int  (*open)(const struct runtime_vfs_spec *spec, uid_t uid, gid_t gid, struct runtime_vfs **out, int *fuse_fd,
                 cell_error *err);
    /* Start serving: only once the fd is mounted (reading an unmounted
     * /dev/fuse fails at once). */
    int  (*serve)(struct runtime_vfs *v, cell_error *err);
    /* Stop serving, wait for the threads and callbacks in progress, free.
     * The cell must be gone (its mount namespace holds the connection). */
    void (*close)(struct runtime_vfs *v);
} runtime_vfs_ops;

extern const runtime_vfs_ops runtime_vfs_builtin;

/* The table, linked in or loaded once from libcell-vfs.so (plugin.c). */
const runtime_vfs_ops *runtime_vfs(cell_error *err);

#endif
