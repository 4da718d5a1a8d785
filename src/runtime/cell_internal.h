/* cell_internal.h: the cell object shared by the runtime's cell lifecycle
 * (cell.c) and its file operations (files.c). */
#ifndef CELL_RUNTIME_CELL_INTERNAL_H
#define CELL_RUNTIME_CELL_INTERNAL_H

#include "runtime/runtime.h"
#include "isolate/isolate.h"
#include "init/proto.h"

struct cell {
    cell_ctx *ctx;
    char      id[17];
    char      run_dir[PATH_MAX];
    uid_t     uid_base;
    int       slot_fd, lane_fd, run_lock_fd;
    int       loop_fd;                  /* size-limited lane's loop device, until booted */
    int       ctl, pidfd;
    pid_t     pid;
    isolate_cgroup *cg;
    uint32_t  seq;
    int       dead;
    cell_exit *pending;             /* exits that arrived while waiting for replies */
    struct net_engine *net;         /* policed cells: the egress engine */
    struct runtime_vfs *vfs[ISOLATE_MAX_MOUNTS];   /* its vfs mounts' servers (runtime/vfs.h) */
    size_t    n_vfs;
    size_t    n_pending, cap_pending;
};

/* Send a request and wait for its reply, queueing exits that arrive first.
 * A refused request becomes *err with init's message. */
int runtime_request(cell *c, uint32_t type, const uint32_t *u, const char *const *str, uint32_t nstr,
                    const int *fds, int nfds, ctl_msg *reply, cell_error *err);
/* Absolute, no ".." components. */
int runtime_check_cell_path(const char *path, const char *what, cell_error *err);
/* 1 if h is a hostname a cell may have: 1-63 of [A-Za-z0-9-], no '-' at either end. */
int runtime_valid_hostname(const char *h);
/* Create or replace a file inside the cell with the given contents. */
int runtime_write_whole(cell *c, const char *path, const void *data, size_t len, mode_t mode, cell_error *err);
/* Check every mount's masks against its opened source (plan->mounts[i].src_fd)
 * and attach them to the plan: masks.c. */
int runtime_masks_prepare(struct isolate_plan *plan, const struct runtime_masks *masks, cell_error *err);

#endif
