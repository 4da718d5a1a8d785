/* loop.c: loop devices for size-limited lanes.  The device is configured
 * with autoclear, so it disappears with the last mount of it: the cell's. */
#include "isolate/isolate.h"
#include "util/util.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#define LOOP_MAJOR 7

/* Containers and minimal hosts often lack udev: create the node if the
 * kernel handed out a device that /dev does not show. */
static int open_loop_device(int n, char *path, size_t size, cell_error *err)
{
    if (util_path(path, size, err, "/dev/loop%d", n) < 0)
        return -1;
    int fd = open(path, O_RDWR | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        if (mknod(path, S_IFBLK | 0660, makedev(LOOP_MAJOR, (unsigned)n)) < 0 && errno != EEXIST)
            return util_fail_errno(err, "cannot create %s", path);
        fd = open(path, O_RDWR | O_CLOEXEC);
    }
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", path);
    return fd;
}

int isolate_loop_attach(const char *image, int *loop_fd, char *dev, size_t dev_size, cell_error *err)
{
    _cleanup_close_ int img = open(image, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
    if (img < 0)
        return util_fail_errno(err, "cannot open the lane disk %s", image);
    _cleanup_close_ int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
    if (ctl < 0)
        return util_fail_errno(err, "cannot open /dev/loop-control (size-limited lanes need loop devices)");
    /* Another process may take the free device between the two ioctls:
     * LOOP_CONFIGURE then fails with EBUSY and we ask again. */
    for (int attempt = 0; attempt < 16; attempt++) {
        int n = ioctl(ctl, LOOP_CTL_GET_FREE);
        if (n < 0)
            return util_fail_errno(err, "no free loop device");
        _cleanup_close_ int fd = open_loop_device(n, dev, dev_size, err);
        if (fd < 0)
            return -1;
        struct loop_config cfg = { .fd = (uint32_t)img };
        cfg.info.lo_flags = LO_FLAGS_AUTOCLEAR;
        if (ioctl(fd, LOOP_CONFIGURE, &cfg) == 0) {
            *loop_fd = util_steal_fd(&fd);
            return 0;
        }
        if (errno != EBUSY)
            return util_fail_errno(err, "cannot attach %s to %s", image, dev);
    }
    return util_fail(err, EBUSY, "cannot find a free loop device for %s", image);
}
