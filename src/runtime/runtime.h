/* runtime.h: what the runtime modules (context, images, lanes, cells) share
 * internally: the context's layout of the state directory and its caches. */
#ifndef CELL_RUNTIME_H
#define CELL_RUNTIME_H

#include <limits.h>
#include <linux/filter.h>
#include <sys/stat.h>

#include "cell.h"

/* State directory layout (all 0700, owned by root):
 *   images/NAME/rootfs     image tree, ownership as inside a cell (0 = root)
 *   images/NAME/ready      present once the image is complete
 *   lanes/NAME/upper       the lane's overlay upper dir (in-cell ownership)
 *   lanes/NAME/work        overlayfs work dir
 *   lanes/NAME/disk.ext4   instead of upper/ and work/ for a size-limited
 *                          lane: an ext4 image holding them
 *   lanes/NAME/image       name of the image the lane is bound to
 *   lanes/NAME/lock        flock()ed while a running cell holds the lane
 *   lanes/NAME/owner       a daemon's lane: its tenant and name
 *   run/cells/ID/          per-cell scratch: mount points, generated files
 * Locks are flock()s on open files, so a crashed owner releases them.  uid
 * range slots are host-wide, in ISOLATE_SLOT_DIR (/run/cell/slots). */
struct cell_ctx {
    char state_dir[PATH_MAX];
    int  init_memfd;                /* what cells exec as cell-init (runtime_init_exe), O_CLOEXEC */
    struct sock_fprog seccomp;      /* built by make (static storage), installed by every boot */
    int  nosuid_memfd;              /* sealed memfd: the nosuid filter for cells with rw host mounts;
                                       -1 until runtime_nosuid_fd() makes it */
    int *userns_by_slot;            /* ISOLATE_MAX_SLOTS fds, -1 until first used */
    char lane_owner[136];           /* "TENANT\nNAME\n" for the lanes the daemon makes next, or "" */
};

/* An fd to exec cell-init from (O_CLOEXEC): a read-only detached mount of
 * the build's cell-init beside the running executable, or else a sealed
 * memfd copy of the embedded one (init_exe.c). */
int runtime_init_exe(cell_error *err);
/* The context's nosuid filter memfd, made on first use; the context owns it. */
int runtime_nosuid_fd(cell_ctx *ctx, cell_error *err);

/* The user namespace of the uid range starting at `base`, created on first
 * use and kept by the context: it holds nothing but its id maps, so the
 * cells that use the range one after another can share it (keyrings, the
 * one other per-namespace state, are closed to cells by seccomp).  The
 * context owns the fd. */
int runtime_userns_for_slot(cell_ctx *ctx, uid_t base, cell_error *err);

/* Path to the ready rootfs of image `name` in `out`.  The host image is
 * (re)generated on demand; others must have been built. */
int runtime_image_rootfs(cell_ctx *ctx, const char *name, char *out, size_t size, cell_error *err);
/* Known image names, NULL-terminated. */
extern const char *const runtime_image_names[];

/* Build debian-bookworm or desktop with debootstrap into images/NAME, atomically:
 * a partial build never looks ready.  Progress lines go to `progress`. */
int runtime_image_build_debian(cell_ctx *ctx, const char *name, cell_progress_fn progress,
                               void *user, cell_error *err);

/* lanes/NAME for a valid name, else EINVAL with the naming rules. */
int runtime_lane_dir(cell_ctx *ctx, const char *name, char *out, size_t size, cell_error *err);
/* The same for an existing lane (stat into *st), else ENOENT naming it. */
int runtime_lane_find(cell_ctx *ctx, const char *name, char *dir, size_t size, struct stat *st, cell_error *err);
/* Start a new lane aside (lanes/.NAME.tmp-X with upper/, work/, image, lock)
 * after checking the name is free and the image exists; *tmp gets its path.
 * With disk_size, the layer is an ext4 image of that size instead.
 * Fill tmp/upper, then runtime_lane_commit() renames it into place (and
 * removes tmp on failure; flush = syncfs first, for imported data). */
int runtime_lane_begin(cell_ctx *ctx, const char *name, const char *image, uint64_t disk_size, char *tmp, size_t size,
                       cell_error *err);
#define RUNTIME_LANE_DISK "disk.ext4"
int runtime_lane_commit(cell_ctx *ctx, const char *name, const char *tmp, int flush, cell_error *err);
/* The upper dir of the lane layer in `dir` (a lane or a runtime_lane_begin
 * tmp) as *upper_fd.  A size-limited lane's ext4 image is mounted (detached,
 * nodev, nosuid; readonly if asked) and *mnt_fd holds that mount until the
 * caller closes it (after *upper_fd); -1 for a directory lane.  Writes
 * through it are bounded by the image's size (ENOSPC). */
int runtime_lane_open_upper(const char *dir, int readonly, int *mnt_fd, int *upper_fd, cell_error *err);
/* The ext4 image `disk` through a loop device (autoclear) as a detached
 * mount (nodev, nosuid; readonly if asked): returns its fd, -1 on error.
 * Lanes and scratch filesystems (scratch.c) share it. */
int runtime_ext4_mount(const char *disk, int readonly, cell_error *err);

/* Lock lane `name` for a cell: *lock_fd holds the flock.  EBUSY when another
 * cell holds it, naming the holder.  *image receives the lane's image name.
 * `who` says who holds it, for the messages of those refused meanwhile
 * (runtime_lane_lock). */
int runtime_lane_acquire(cell_ctx *ctx, const char *name, const char *who, char *image, size_t image_size,
                         char *lane_dir, size_t dir_size, int *lock_fd, cell_error *err);
/* The one way into a lane's lock: LOCK_EX (a cell, a commit, a delete) or
 * LOCK_SH (an export), never waiting.  EBUSY names the holder (what the
 * exclusive holder wrote, see below, or "being exported"); ENOENT when the
 * lane is gone, also when it was deleted between the open and the lock (the
 * lock file is checked to still be the lane's).  With LOCK_EX, `who`
 * ("cell ID", "commit IMAGE", "delete", "view") is written into the lock
 * file with this pid.  EPERM for a daemon's lane outside the daemon. */
int runtime_lane_lock(cell_ctx *ctx, const char *name, int mode, const char *who, char *dir, size_t dir_size,
                      int *lock_fd, cell_error *err);

/* ---- daemon lanes ---------------------------------------------------------
 * Lanes the daemon makes carry lanes/ID/owner ("TENANT\nNAME\n", written
 * before the lane gets its name).  Outside the daemon they are not listed
 * (cell_lane_list) and every lane operation on them fails with EPERM naming
 * the tenant's lane and the way through the daemon.  The daemon declares
 * itself once, before its first thread; it sets the owner of the lanes it
 * is about to make on the context (empty = none). */
#define RUNTIME_LANE_OWNER "owner"
void runtime_lane_daemon_mode(void);
int  runtime_lane_set_owner(cell_ctx *ctx, const char *tenant, const char *name, cell_error *err);
/* Mark an existing lane `id` as the daemon's (lanes made before owners were
 * recorded); nothing if it is marked already. */
int  runtime_lane_mark_owner(cell_ctx *ctx, const char *id, const char *tenant, const char *name, cell_error *err);
/* Every lane, the daemon's too (as their ids): for image removal's check
 * of who uses an image. */
int  runtime_lane_list_all(cell_ctx *ctx, cell_lane_info **out, size_t *count, cell_error *err);
/* "TENANT/NAME" of a daemon lane into out, 1; 0 for a lane of this host's CLI. */
int  runtime_lane_owner(cell_ctx *ctx, const char *id, char *out, size_t size);
/* Lanes of the daemon that cell_lane_list leaves out (the CLI's hint). */
size_t runtime_lane_daemon_count(cell_ctx *ctx);

/* ---- masks in mounts (masks.c) ----------------------------------------------
 * A mask is a path relative to a bind or overlay mount's source that the
 * cell must not see (cell_options_add_mask; docs/security.md, "Masks"). */
#define RUNTIME_MAX_MASKS    64     /* per mount */
#define RUNTIME_MASK_MAX_LEN 1024
/* Masks of one mount; runtime_cell_create takes one per cfg->mounts[i]. */
struct runtime_masks {
    const char *const *paths;
    size_t n;
};
/* A mask as given: relative, non-empty components of at most NAME_MAX
 * bytes, none "." or "..", at most RUNTIME_MASK_MAX_LEN bytes; else
 * EINVAL naming `what` and the fix. */
int runtime_mask_check(const char *path, const char *what, cell_error *err);
/* 1 if masks a and b are the same path or one lies inside the other. */
int runtime_mask_overlaps(const char *a, const char *b);
/* cell_create with masks[i] for cfg->mounts[i] (masks NULL: none). */
int runtime_cell_create(cell_ctx *ctx, const cell_config *cfg, const struct runtime_masks *masks, cell **out,
                        cell_error *err);
/* runtime_cell_create with n_vfs virtual filesystems (runtime/vfs.h)
 * mounted after cfg->mounts. */
struct runtime_vfs_spec;
int runtime_cell_create_vfs(cell_ctx *ctx, const cell_config *cfg, const struct runtime_masks *masks,
                            const struct runtime_vfs_spec *vfs, size_t n_vfs, cell **out, cell_error *err);

#endif
