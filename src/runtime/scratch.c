/* scratch.c: size-limited scratch directories on the host, for what an
 * untrusted writer (a cell, through a bind mount) fills: an ext4 image like
 * a size-limited lane's (lane.c makes and mounts both), mounted on a
 * directory, its file unlinked at once so that its blocks go back to the
 * host with the mount, whatever happens to the caller. */
#include "runtime/runtime.h"
#include "util/util.h"

#include <fcntl.h>
#include <stdio.h>
#include <sys/mount.h>
#include <unistd.h>

static int scratch_make_image(const char *image, uint64_t size, cell_error *err)
{
    /* Our own new file, never one planted at the path. */
    _cleanup_close_ int fd = open(image, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0)
        return util_fail_errno(err, "cannot create %s", image);
    char kib[32];
    snprintf(kib, sizeof kib, "%lluk", (unsigned long long)(size >> 10));
    /* No journal (a scratch does not outlive a crash; it would also cost
     * 64 MiB of real blocks per GiB), no blocks reserved for root: the
     * cell's root writes as the host's through an id-mapped bind. */
    const char *argv[] = { "mke2fs", "-q", "-F", "-t", "ext4", "-O", "^has_journal", "-m", "0",
                           "-L", "cell-scratch", image, kib, NULL };
    if (util_run(argv, err) == 0)
        return 0;
    unlink(image);
    return -1;
}

int cell_scratch_mount(const char *image, const char *target, uint64_t size, cell_error *err)
{
    if (size < CELL_LANE_MIN_SIZE)
        return util_fail(err, EINVAL, "a scratch filesystem of %llu bytes is too small: it needs at least 16M",
                         (unsigned long long)size);
    if (scratch_make_image(image, size, err) < 0)
        return -1;
    int rc = 0;
    _cleanup_close_ int mnt = runtime_ext4_mount(image, 0, err);
    if (mnt < 0)
        rc = -1;
    if (rc == 0 && move_mount(mnt, "", AT_FDCWD, target, MOVE_MOUNT_F_EMPTY_PATH) < 0)
        rc = util_fail_errno(err, "cannot mount a scratch filesystem on %s", target);
    /* The loop device holds the file: the name is no longer needed. */
    if (unlink(image) < 0 && errno != ENOENT && rc == 0) {
        util_fail_errno(err, "cannot remove %s", image);
        cell_scratch_unmount(target, NULL);
        return -1;
    }
    return rc;
}

int cell_scratch_unmount(const char *target, cell_error *err)
{
    if (umount2(target, UMOUNT_NOFOLLOW) == 0 || errno == EINVAL || errno == ENOENT)
        return 0;
    /* Still busy (a reader we do not know of): detach it now, the blocks
     * go when the last user does. */
    if (errno == EBUSY && umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW) == 0)
        return 0;
    return util_fail_errno(err, "cannot unmount %s", target);
}
