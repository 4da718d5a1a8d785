/* archive.c: the entry of libcell-archive.so (src/runtime/plugin.h): lane
 * export and import, and `cp DIR`'s tar stream (libarchive), for the lean
 * `cell`.  lane_archive.c's calls into lane.c go back to the loading
 * program through its host table, so that the plugin carries no second
 * copy of the lane code. */
#include "runtime/plugin.h"
#include "runtime/runtime.h"

static const runtime_archive_host *host_fns;
/* The linked-in table plus what only the lean `cell` needs (cp DIR). */
static runtime_archive_ops plugin_ops;

const void *cell_plugin_entry(const void *host);

const void *cell_plugin_entry(const void *host)
{
    host_fns = host;
    plugin_ops = runtime_archive_builtin;
    plugin_ops.tar_dir = runtime_tar_dir;
    return host ? &plugin_ops : NULL;
}

int runtime_lane_find(cell_ctx *ctx, const char *name, char *dir, size_t size, struct stat *st, cell_error *err)
{
    return host_fns->lane_find(ctx, name, dir, size, st, err);
}

int runtime_lane_begin(cell_ctx *ctx, const char *name, const char *image, uint64_t disk_size, char *tmp, size_t size,
                       cell_error *err)
{
    return host_fns->lane_begin(ctx, name, image, disk_size, tmp, size, err);
}

int runtime_lane_commit(cell_ctx *ctx, const char *name, const char *tmp, int flush, cell_error *err)
{
    return host_fns->lane_commit(ctx, name, tmp, flush, err);
}

int runtime_lane_open_upper(const char *dir, int readonly, int *mnt_fd, int *upper_fd, cell_error *err)
{
    return host_fns->lane_open_upper(dir, readonly, mnt_fd, upper_fd, err);
}

int runtime_lane_lock(cell_ctx *ctx, const char *name, int mode, const char *who, char *dir, size_t dir_size,
                      int *lock_fd, cell_error *err)
{
    return host_fns->lane_lock(ctx, name, mode, who, dir, dir_size, lock_fd, err);
}
