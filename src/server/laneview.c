/* laneview.c: POST /v1/cells mounts[] {"type":"lane","lane":NAME,"target"}:
 * a read-only view of one of the tenant's lanes in a cell, served by the
 * daemon through a virtual filesystem (src/runtime/vfs_dir.c) without
 * copying the lane.
 *
 * At each boot the lane (looked up by the cell's tenant) is locked as a cell
 * locks the lane it is attached to (so no cell attaches it, writable,
 * while it is viewed, and a lane attached to a running cell is refused with
 * EBUSY), its layer is opened read-only (an API lane's ext4 image is
 * mounted read-only, detached: nothing of it is reachable by path) and
 * served from that fd.  The view shows the lane's own files (its layer: an
 * imported archive's tree, a cell's changes), not the image below them.
 * Everything is released after the cell is destroyed (halt). */
#include "server/handlers.h"
#include "runtime/runtime.h"
#include "runtime/vfs.h"
#include "runtime/vfs_dir.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct laneview {
    int   lock_fd, mnt_fd, upper_fd;
    void *dir;                          /* runtime_vfs_dir_new_fd's */
};

struct laneviews {
    struct laneview v[16];              /* POST /v1/cells takes 16 mounts at most */
    size_t n;
};

size_t srv_laneview_count(json_t *spec)
{
    size_t i, n = 0;
    json_t *m;
    json_array_foreach(json_object_get(spec, "mounts"), i, m) {
        const char *type = json_string_value(json_object_get(m, "type"));
        n += type && strcmp(type, "lane") == 0;
    }
    return n;
}

void srv_laneview_close(struct laneviews *lv)
{
    if (!lv)
        return;
    for (size_t i = 0; i < lv->n; i++) {
        struct laneview *v = &lv->v[i];
        runtime_vfs_dir_free(v->dir);
        if (v->upper_fd >= 0)
            close(v->upper_fd);
        if (v->mnt_fd >= 0)
            close(v->mnt_fd);
        if (v->lock_fd >= 0)
            close(v->lock_fd);
    }
    free(lv);
}

static int view_open(srv *s, const char *tenant, const char *name, struct laneview *v, cell_error *err)
{
    store_lane l;
    if (store_lane_get(s->st, tenant, name, &l, NULL) < 0 || strcmp(l.state, "ready") != 0)
        return util_fail(err, ENOENT, "lane %s does not exist (any more); a lane mount names one of the "
                         "tenant's lanes", name);
    char image[64], dir[PATH_MAX];
    if (runtime_lane_acquire(s->ctx, l.id, "view", image, sizeof image, dir, sizeof dir, &v->lock_fd, err) < 0) {
        if (err->code == EBUSY)
            snprintf(err->message, sizeof err->message, "lane %s is attached to a running cell; a lane "
                     "mount shows a lane no cell is attached to (stop that cell first)", name);
        return -1;
    }
    if (runtime_lane_open_upper(dir, 1, &v->mnt_fd, &v->upper_fd, err) < 0)
        return -1;
    return runtime_vfs_dir_new_fd(v->upper_fd, &v->dir, err);
}

/* On the owner thread, with the context lock held (lanes are the
 * context's). specs[] gets one spec per lane mount, in order. */
int srv_laneview_open(srv *s, const char *tenant, json_t *spec, struct runtime_vfs_spec *specs, size_t *n,
                  struct laneviews **out, cell_error *err)
{
    *n = 0;
    *out = NULL;
    struct laneviews *lv = calloc(1, sizeof *lv);
    if (!lv)
        return util_fail(err, ENOMEM, "out of memory");
    size_t i;
    json_t *m;
    json_array_foreach(json_object_get(spec, "mounts"), i, m) {
        const char *type = json_string_value(json_object_get(m, "type"));
        if (!type || strcmp(type, "lane") != 0 || lv->n >= sizeof lv->v / sizeof *lv->v)
            continue;
        struct laneview *v = &lv->v[lv->n++];
        *v = (struct laneview){ .lock_fd = -1, .mnt_fd = -1, .upper_fd = -1 };
        const char *name = json_string_value(json_object_get(m, "lane"));
        if (view_open(s, tenant, name ? name : "", v, err) < 0) {
            srv_laneview_close(lv);
            *n = 0;
            return -1;
        }
        /* The target string stays in the spec, which outlives the cell. */
        specs[*n] = (struct runtime_vfs_spec){ .target = (char *)json_string_value(json_object_get(m, "target")),
                                               .ops = runtime_vfs_dir_ops, .user = v->dir,
                                               .tier = CELL_VFS_READONLY, .timeout_ms = CELL_VFS_DEFAULT_TIMEOUT_MS };
        (*n)++;
    }
    *out = lv;
    return 0;
}
