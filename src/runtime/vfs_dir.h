/* vfs_dir.h: a read-only vfs provider serving a host directory in place
 * (vfs_dir.c): cell_options_add_vfs(o, target, &runtime_vfs_dir_ops, user,
 * CELL_VFS_READONLY, ...) with user from runtime_vfs_dir_new(). */
#ifndef CELL_RUNTIME_VFS_DIR_H
#define CELL_RUNTIME_VFS_DIR_H

#include "cell.h"

extern const cell_vfs_ops runtime_vfs_dir_ops;

/* Serve `dir` (opened now, with no symbolic link in its path); *user is
 * the callbacks' `user`, freed by runtime_vfs_dir_free once no cell uses it. */
int  runtime_vfs_dir_new(const char *dir, void **user, cell_error *err);
/* The same for an open directory (dirfd is duplicated; a detached mount's
 * fd works: nothing needs a path). */
int  runtime_vfs_dir_new_fd(int dirfd, void **user, cell_error *err);
void runtime_vfs_dir_free(void *user);

#endif
