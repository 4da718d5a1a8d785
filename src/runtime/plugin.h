/* plugin.h: the parts of libcell that need heavy shared libraries, behind
 * tables of function pointers, so that a program that does not use them
 * does not load those libraries at all (issue 11: `cell run` without a
 * policy, `cell help`).
 *
 * - net: the owner's side of a policed cell's egress engine (src/net/sep.c
 *   and what it uses: nftables, OpenSSL, jansson) and the policy checks;
 * - archive: lane export and import (src/runtime/lane_archive.c: libarchive).
 *
 * Each table is either linked in (unit tests, benches: link with
 * $(LIBCELL_BUILTINS), which pulls the *_builtin tables out of libcell.a)
 * or, in `cell` and cell-daemon, loaded on first use from a shared object
 * embedded in the binary (build/libcell-net.so, libcell-archive.so),
 * dlopen()ed from a sealed memfd: one file to install, and nobody can swap
 * the code that is loaded.  The dynamic linker loads the plugin's own
 * dependencies (libnftables, libssl, libarchive...) only at that moment. */
#ifndef CELL_RUNTIME_PLUGIN_H
#define CELL_RUNTIME_PLUGIN_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "cell.h"
#include "net/net.h"

typedef struct runtime_net_ops {
    size_t size;                /* sizeof(runtime_net_ops) where it was built */
    int   (*engine_start)(net_engine **out, int netns_fd, const char *cell_id, const char *policy_json,
                          const net_hooks *hooks, cell_error *err);
    int   (*engine_set_policy)(net_engine *e, const char *policy_json, cell_error *err);
    int   (*engine_ca_pem)(net_engine *e, char **pem, size_t *len, cell_error *err);
    pid_t (*engine_pid)(net_engine *e);
    void  (*engine_stop)(net_engine *e);
    int   (*policy_check)(const char *policy_json, cell_error *err);
    int   (*policy_check_v2)(const char *policy_json, const char *const *owner_allow, cell_error *err);
    const char *(*screen)(const struct sockaddr *dst, const char *const *owner_allow);
} runtime_net_ops;

/* What lane_archive.c needs of the rest of libcell: the plugin gets these
 * from the program that loads it instead of a copy of lane.c's code. */
typedef struct runtime_archive_host {
    int (*lane_find)(cell_ctx *ctx, const char *name, char *dir, size_t size, struct stat *st, cell_error *err);
    int (*lane_begin)(cell_ctx *ctx, const char *name, const char *image, uint64_t disk_size, char *tmp,
                      size_t size, cell_error *err);
    int (*lane_commit)(cell_ctx *ctx, const char *name, const char *tmp, int flush, cell_error *err);
    int (*lane_open_upper)(const char *dir, int readonly, int *mnt_fd, int *upper_fd, cell_error *err);
    int (*lane_lock)(cell_ctx *ctx, const char *name, int mode, const char *who, char *dir, size_t dir_size,
                     int *lock_fd, cell_error *err);
} runtime_archive_host;

/* A file of a tar written by image_files_tar: `data` (size bytes), or else
 * the contents of `fd` (from its start); size (uint64_t)-1 = a directory. */
struct runtime_tar_file {
    const char *name;
    const void *data;
    int         fd;
    uint64_t    size;
};
int runtime_image_tree_tar(int rootfs_fd, int out_fd, cell_error *err);
int runtime_image_files_tar(int out_fd, const struct runtime_tar_file *files, size_t n, cell_error *err);

typedef struct runtime_archive_ops {
    size_t size;                /* sizeof(runtime_archive_ops) where it was built */
    int (*lane_export)(cell_ctx *ctx, const char *name, int fd, cell_error *err);
    int (*lane_import)(cell_ctx *ctx, const char *name, const char *image, uint64_t disk_size, int fd,
                       cell_error *err);
    /* `cell cp DIR ID:PATH`: DIR as a pax tar stream written to fd (files,
     * directories, symlinks as links; on_skip(path) for any other type).
     * -1 with *about_dir set when the failure is reading DIR, not a write.
     * Only in the plugin's table (src/plugin/tar_dir.c); NULL when linked in. */
    int (*tar_dir)(const char *dir, int fd, void (*on_skip)(const char *path), int *about_dir, cell_error *err);
    /* `cell image export` (src/runtime/image_tar.c): the tree below
     * rootfs_fd as a deterministic tar (sorted, ids as stored, no names,
     * whole-second mtimes), and the OCI layout's files as a tar. */
    int (*image_tree_tar)(int rootfs_fd, int out_fd, cell_error *err);
    int (*image_files_tar)(int out_fd, const struct runtime_tar_file *files, size_t n, cell_error *err);
} runtime_archive_ops;

int runtime_tar_dir(const char *dir, int fd, void (*on_skip)(const char *path), int *about_dir, cell_error *err);

/* The tables as linked in: defined by src/net/sep.c and
 * src/runtime/lane_archive.c. */
extern const runtime_net_ops runtime_net_builtin;
extern const runtime_archive_ops runtime_archive_builtin;

/* What a plugin exports (src/plugin/): its table, given the loader's host
 * table (NULL for the net plugin, which needs nothing of its loader). */
#define RUNTIME_PLUGIN_ENTRY "cell_plugin_entry"
typedef const void *(*runtime_plugin_entry_fn)(const void *host);

/* The table, linked in or loaded once (thread-safe); NULL and *err when the
 * plugin cannot be loaded (e.g. a library it needs is not installed). */
const runtime_net_ops *runtime_net(cell_error *err);
const runtime_archive_ops *runtime_archive(cell_error *err);

#endif
