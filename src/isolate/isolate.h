/* isolate.h: the isolation primitives a cell is built from: user namespaces
 * and id-mapped mounts, the boot sequence (namespaces, root filesystem,
 * credentials), seccomp, capabilities and cgroups. */
#ifndef CELL_ISOLATE_H
#define CELL_ISOLATE_H

#include <limits.h>
#include <linux/filter.h>
#include <stdint.h>
#include <sys/types.h>

#include "cell.h"

/* ---- uid ranges ------------------------------------------------------------
 * Each running cell owns ISOLATE_UID_COUNT host uids (and the same gids)
 * starting at ISOLATE_UID_FIRST + slot * ISOLATE_UID_COUNT.  Files on disk
 * (images, lanes) are stored with in-cell ownership (0 = the cell's root) and
 * shown to each cell through an id-mapped mount onto its range. */
#define ISOLATE_UID_FIRST 0x40000000u
#define ISOLATE_UID_COUNT 65536u
#define ISOLATE_MAX_SLOTS 4096u
/* Slot N is owned by whoever flock()s ISOLATE_SLOT_DIR/N.lock; host-wide. */
#define ISOLATE_SLOT_DIR  "/run/cell/slots"

/* Create a user namespace mapping 0..count-1 to base..base+count-1 (uids
 * and gids) and return an fd to it (O_CLOEXEC).  Nothing runs in it. */
int isolate_userns_create(uid_t base, uint32_t count, int *fd_out, cell_error *err);

/* Clone the host tree at src_fd (an O_PATH fd of the directory or file
 * checked when the cell was defined; `source` names it in messages)
 * recursively as a detached mount, id-mapped through userns_fd and with
 * nosuid, nodev (and read-only if asked), ready for the boot child to
 * attach.  Done by the owner because open_tree() only clones mounts of
 * the caller's own mount namespace. */
int isolate_bind_tree(int src_fd, const char *source, int userns_fd, int readonly, int *tree_fd, cell_error *err);

/* ---- children sharing the owner's memory (vmclone.c) ---------------------------
 * A stack for a CLONE_VM child (with a guard page), and clone() of `fn` on
 * it with CLONE_VM added to `flags` (plain copy-on-write under TSan), every
 * signal blocked in the child, SIGCHLD on exit.  With CLONE_PIDFD in flags
 * *pidfd receives the child's pidfd.  The stack must stay mapped until the
 * child has exec'd or exited. */
struct isolate_vmstack {
    void  *base;
    size_t size;
};
int   isolate_vmstack_map(struct isolate_vmstack *s, size_t size, cell_error *err);
void  isolate_vmstack_unmap(struct isolate_vmstack *s);
pid_t isolate_clone_vm(int (*fn)(void *), void *arg, int flags, const struct isolate_vmstack *s, int *pidfd,
                       cell_error *err);

/* ---- loop devices --------------------------------------------------------------
 * Attach `image` to a free loop device with autoclear (it detaches once its
 * last user, the cell's mount, is gone).  *loop_fd keeps it alive until the
 * mount exists; dev receives "/dev/loopN". */
int isolate_loop_attach(const char *image, int *loop_fd, char *dev, size_t dev_size, cell_error *err);

/* ---- boot ------------------------------------------------------------------ */
#define ISOLATE_MAX_MOUNTS 32

struct isolate_mount {
    int      kind;                  /* enum cell_mount_kind */
    char     source[PATH_MAX];      /* BIND, OVERLAY: host path (for messages) */
    int      src_fd;                /* BIND, OVERLAY: O_PATH fd of the source, opened with no
                                       symlink allowed when the cell is defined; -1 = none */
    int      tree_fd;               /* BIND, OVERLAY (its lower layer, read-only): detached,
                                       id-mapped clone of src_fd made by
                                       the owner (isolate_bind_tree): what was checked is
                                       what gets mounted; -1 until made */
    char     target[PATH_MAX];      /* absolute, normalized, inside the cell */
    int      readonly;
    uint64_t size;                  /* MEMORY; OVERLAY: its upper tmpfs */
    /* Masks (cell_options_add_mask): paths relative to the source, checked
     * by the owner (runtime/masks.c); the strings belong to the caller of
     * cell_create.  A read-only bind or an overlay becomes an overlayfs with
     * a top read-only layer of whiteouts (absent: ENOENT); a read-write bind
     * gets an empty file or directory of a private tmpfs mounted over each. */
    const char *const *masks;
    size_t   n_masks;
    /* ISOLATE_MOUNT_VFS: the owner's /dev/fuse fd (runtime/vfs.h), which
     * the boot child mounts at target (read-only when `readonly`). */
    int      fuse_fd;
};
/* A kind beside enum cell_mount_kind, for the plan only (cell_options_add_vfs). */
#define ISOLATE_MOUNT_VFS 100

/* Everything the boot child needs, prepared by the owner before clone3():
 * the child must not allocate (the owner may be threaded). */
struct isolate_plan {
    char     run_dir[PATH_MAX];     /* per-cell scratch dir (0700, empty): the boot child
                                       mounts a private tmpfs on it for its mount points */
    char     image_root[PATH_MAX];  /* image tree, lower layer of the overlay */
    int      image_is_host;         /* bind the host's /usr read-only over /usr */
    char     lane_dir[PATH_MAX];    /* lane with upper/ and work/, "" = tmpfs layer */
    char     lane_dev[64];          /* size-limited lane: loop device with an ext4 holding
                                       upper/ and work/, mounted instead of lane_dir */
    uint64_t disk;                  /* tmpfs layer size (bytes) */
    uid_t    uid_base;
    int      userns_fd;
    int      ctl_fd;                /* child's end of the control socket */
    int      init_fd;               /* sealed memfd holding cell-init */
    const struct sock_fprog *seccomp;
    int      cgroup_fds[8];         /* v1 "tasks", v2 "cgroup.procs": the child joins itself ("0") */
    size_t   n_cgroup_fds;
    int      nosuid_fd;             /* memfd with the nosuid filter's instructions, -1 = none;
                                       given to cell-init as fd 5 */
    char     hostname[64];
    char     hosts[512];            /* contents of the cell's /etc/hosts */
    struct isolate_mount mounts[ISOLATE_MAX_MOUNTS];
    size_t   n_mounts;
};

/* Clone a child in new mount, pid, net, uts, ipc namespaces.  The child
 * joins its cgroups (plan->cgroup_fds), builds the root filesystem, enters the cell's user and cgroup namespaces, drops
 * privileges and execs
 * cell-init, which says CTL_HELLO on ctl_fd.  A failure before that arrives
 * as CTL_BOOT_ERROR with a message.  Returns the child's host pid. */
pid_t isolate_boot(const struct isolate_plan *plan, int *pidfd_out, cell_error *err);

/* ---- a new root (inroot.c) -----------------------------------------------------
 * Resolve `path` (absolute, inside the new root) below root_fd as its
 * processes will see it (RESOLVE_IN_ROOT: symlinks and ".." stay inside),
 * creating missing directories and, if want_file, a missing last component
 * as an empty file.  An O_PATH fd, or -1 with errno. */
int isolate_open_in_root(int root_fd, const char *path, int want_file);
/* /proc entries covered in every cell and OCI container (NULL-terminated,
 * relative to /proc): files by /dev/null, directories by an empty read-only
 * tmpfs, and trees made read-only. */
extern const char *const isolate_proc_masked_files[];
extern const char *const isolate_proc_masked_dirs[];
extern const char *const isolate_proc_readonly[];

/* ---- seccomp ----------------------------------------------------------------
 * Build the cell filter once (libseccomp, exported to classic BPF) so the
 * boot child can install it with prctl() and no allocation. */
int  isolate_seccomp_build(struct sock_fprog *out, cell_error *err);
/* The second filter for cells with a read-write host mount, where in-cell
 * root writes as host root: setuid/setgid modes (chmod, open, mkdir, mknod
 * families) fail with EPERM, and openat2, whose mode it cannot inspect,
 * with ENOSYS.  cell-init installs it in every process it spawns. */
int  isolate_seccomp_build_nosuid(struct sock_fprog *out, cell_error *err);
void isolate_seccomp_free(struct sock_fprog *prog);
/* The same two programs as built by make (src/seccompgen) and embedded in
 * libcell: what cells install.  Static storage; never freed. */
void isolate_seccomp_prebuilt(struct sock_fprog *cell_prog, struct sock_fprog *nosuid);

/* ---- capabilities -------------------------------------------------------------
 * Reduce bounding, permitted, effective and inheritable sets to the kept set
 * and clear ambient ones.  Raw syscalls only (boot child); -1 with errno. */
int  isolate_caps_drop(int allow_file_caps);
/* Every permitted capability raised into the effective set (after a
 * setfsuid() to a non-zero id cleared the file-related ones): 0 or -1. */
int  isolate_caps_raise_effective(void);
/* The kept capabilities, for docs and tests; terminated by -1. */
extern const int isolate_caps_kept[];

/* ---- cgroups ------------------------------------------------------------------
 * One cgroup per cell, under a "cell" parent, on cgroup v2 or on the v1
 * controllers (memory, pids, cpu) of a hybrid host.  A limit that the host
 * cannot enforce is an error, never silently skipped. */
typedef struct isolate_cgroup isolate_cgroup;

int  isolate_cgroup_create(const char *name, const cell_limits *lim, isolate_cgroup **out, cell_error *err);
int  isolate_cgroup_attach(isolate_cgroup *cg, pid_t pid, cell_error *err);
/* On cgroup v1, moving another process takes a global lock whose write side
 * waits for an RCU grace period (~5-10 ms); a single-threaded process that
 * writes "0" to a v1 "tasks" file moves itself without it.  This opens the
 * v1 tasks files and the v2 part's cgroup.procs, if any (O_WRONLY|O_CLOEXEC,
 * at most max), for the boot child to join them all itself before it does
 * anything else; isolate_cgroup_attach_v2() attaches a pid to the v2 part. */
int  isolate_cgroup_open_self_attach(isolate_cgroup *cg, int *fds, size_t max, size_t *n, cell_error *err);
int  isolate_cgroup_attach_v2(isolate_cgroup *cg, pid_t pid, cell_error *err);
/* SIGKILL every task in the cgroup (cgroup.kill on v2, freeze+kill on v1). */
void isolate_cgroup_kill(isolate_cgroup *cg);
/* Remove the cgroup directories (retrying while tasks drain) and free. */
void isolate_cgroup_destroy(isolate_cgroup *cg);
/* Kill and remove the cgroups named `name` left by an owner that died. */
void isolate_cgroup_sweep(const char *name);
/* Change the pids and cpu limits of a live cgroup (0 = leave it as is),
 * writing what isolate_cgroup_create writes for them. */
int  isolate_cgroup_set_pids_cpu(isolate_cgroup *cg, uint32_t pids, uint32_t cpu_millis, cell_error *err);
/* Move `pid` into the cgroups `of` is in (read from /proc/OF/cgroup), in
 * each hierarchy a cell's cgroup uses: the v1 memory, pids, cpu and freezer
 * ones and the v2 tree (cgjoin.c).  `where` (may be NULL) gets the first
 * path moved to, relative to its hierarchy's root.  A path outside this
 * process's cgroup namespace is an error. */
int  isolate_cgroup_join(pid_t of, pid_t pid, char *where, size_t where_size, cell_error *err);
/* The path of the hierarchy holding `ctrl` (NULL: the v2 line "0::") in a
 * /proc/PID/cgroup text into out: 1 found, 0 not there, -1 not usable
 * (outside the reader's cgroup namespace, or too long). */
int  isolate_cgroup_proc_path(const char *text, const char *ctrl, char *out, size_t size);

#endif
