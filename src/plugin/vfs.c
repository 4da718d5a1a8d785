/* vfs.c: the entry of libcell-vfs.so (src/runtime/vfs.h): the FUSE server
 * of virtual filesystems (src/runtime/vfs_fuse.c and libfuse), loaded only
 * by a process that creates a cell with a vfs mount. */
#include "runtime/vfs.h"

const void *cell_plugin_entry(const void *host);

const void *cell_plugin_entry(const void *host)
{
    (void)host;
    return &runtime_vfs_builtin;
}
