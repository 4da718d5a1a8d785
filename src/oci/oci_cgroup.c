/* oci_cgroup.c: the container's cgroup, at linux.cgroupsPath (or
 * /cell-oci/ID), in the freezer hierarchy on cgroup v1 or the unified one
 * on v2.  For now it carries the freezer only (pause, resume, a paused
 * container's status) and holds every process of the container, exec'd
 * ones included; limits (linux.resources) are not applied yet (docs/oci.md). */
#include "oci/oci.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define CG_ROOT_V2 "/sys/fs/cgroup"
#define CG_ROOT_V1 "/sys/fs/cgroup/freezer"
/* Bounds on waiting for the kernel to settle a freeze or empty a cgroup. */
#define CG_WAIT_STEPS 500
#define CG_WAIT_STEP_NS (10 * 1000 * 1000)

static int cg_v2(void)
{
    return access(CG_ROOT_V2 "/cgroup.controllers", F_OK) == 0;
}

int oci_cgroup_dir(const char *cgroups_path, const char *id, char *out, size_t size, cell_error *err)
{
    const char *root = cg_v2() ? CG_ROOT_V2 : CG_ROOT_V1;
    int n = cgroups_path ? util_path(out, size, err, "%s%s", root, cgroups_path)
                         : util_path(out, size, err, "%s/cell-oci/%s", root, id);
    return n < 0 ? -1 : 0;
}

int oci_cgroup_create(const char *dir, cell_error *err)
{
    if (util_mkdir_p(dir, 0755, err) < 0)
        return -1;
    char procs[PATH_MAX];
    if (util_path(procs, sizeof procs, err, "%s/cgroup.procs", dir) < 0)
        return -1;
    /* Never a cgroup that holds other processes: kill --all and delete
     * signal every process of the container's cgroup. */
    char one[2];
    _cleanup_close_ int rfd = open(procs, O_RDONLY | O_CLOEXEC);
    if (rfd < 0)
        return util_fail_errno(err, "cannot open %s", procs);
    ssize_t n = read(rfd, one, sizeof one);
    if (n != 0)
        return n < 0 ? util_fail_errno(err, "cannot read %s", procs)
                     : util_fail(err, EBUSY, "linux.cgroupsPath: %s already holds processes; a container needs a "
                                 "cgroup of its own", dir);
    int fd = open(procs, O_WRONLY | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", procs);
    return fd;
}

static void nap(void)
{
    struct timespec ts = { 0, CG_WAIT_STEP_NS };
    nanosleep(&ts, NULL);
}

int oci_cgroup_frozen(const char *dir)
{
    char path[PATH_MAX], buf[256];
    int v2 = cg_v2();
    if (util_path(path, sizeof path, NULL, "%s/%s", dir, v2 ? "cgroup.events" : "freezer.state") < 0)
        return 0;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    return v2 ? strstr(buf, "frozen 1") != NULL : strncmp(buf, "FROZEN", 6) == 0;
}

int oci_cgroup_freeze(const char *dir, int on, cell_error *err)
{
    int v2 = cg_v2();
    char path[PATH_MAX];
    if (util_path(path, sizeof path, err, "%s/%s", dir, v2 ? "cgroup.freeze" : "freezer.state") < 0)
        return -1;
    const char *value = v2 ? (on ? "1" : "0") : (on ? "FROZEN" : "THAWED");
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || util_write_all(fd, value, strlen(value)) < 0)
        return util_fail_errno(err, "cannot write %s to %s", value, path);
    /* v1 passes through FREEZING; the caller expects it settled. */
    for (int i = 0; i < CG_WAIT_STEPS; i++) {
        if (oci_cgroup_frozen(dir) == on)
            return 0;
        nap();
    }
    return util_fail(err, ETIMEDOUT, "%s did not become %s", dir, on ? "frozen" : "thawed");
}

void oci_cgroup_remove(const char *dir)
{
    /* Exited tasks leave their cgroup at exit; a moment for the last ones. */
    for (int i = 0; i < CG_WAIT_STEPS && rmdir(dir) < 0 && errno == EBUSY; i++)
        nap();
}
