/* cell.h: the public C API of libcell.
 * Define a cell (image, lane, limits, mounts), boot it, run processes in it,
 * operate on its files, destroy it. Errors are returned as values, never printed. */
#ifndef CELL_H
#define CELL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- version ---------------------------------------------------------------
 * The macros are the header a caller compiled against; cell_version() and
 * cell_version_number() the library it runs with.  CELL_VERSION_NUMBER is
 * 0xMMmmpp.  docs/libcell.md says what a change of each part promises. */
#define CELL_VERSION_MAJOR  0
#define CELL_VERSION_MINOR  3
#define CELL_VERSION_PATCH  0
#define CELL_VERSION_STRING "0.3.0"
#define CELL_VERSION_NUMBER ((CELL_VERSION_MAJOR << 16) | (CELL_VERSION_MINOR << 8) | CELL_VERSION_PATCH)
const char *cell_version(void);
int         cell_version_number(void);

/* ---- errors --------------------------------------------------------------
 * Every fallible call takes a `cell_error *` (may be NULL) and returns 0 on
 * success or -1 on failure.  On failure `code` holds an errno value that
 * classifies the failure and `message` a sentence naming what failed and on
 * what (path, field, id).  The library never prints and never exits. */
typedef struct cell_error {
    int  code;
    char message[512];
} cell_error;

/* ---- context -------------------------------------------------------------
 * A context owns a state directory (images, lanes, run-time files) and the
 * sealed copy of cell-init.  One per process is enough; it is not
 * thread-safe, callers serialize their own calls. */
typedef struct cell_ctx cell_ctx;

/* Open (creating if needed, mode 0700) the state directory `state_dir`.
 * NULL means cell_default_state_dir(). Requires root. */
int  cell_ctx_open(cell_ctx **out, const char *state_dir, cell_error *err);
void cell_ctx_close(cell_ctx *ctx);
const char *cell_ctx_state_dir(const cell_ctx *ctx);

/* $CELL_STATE if set, else "./var" when running from a source checkout,
 * else "/var/lib/cell".  Returns a static buffer. */
const char *cell_default_state_dir(void);

/* ---- sizes ---------------------------------------------------------------
 * "512", "64K", "256M", "2G", "1T" (binary units, optional trailing "iB"
 * or "B").  Rejects empty strings, unknown suffixes, overflow. */
int cell_parse_size(const char *text, uint64_t *out, cell_error *err);

/* ---- images --------------------------------------------------------------
 * "host": the host's /usr (and the /bin, /lib* links into it) read-only
 * plus a generated minimal /etc; built on demand, never needs a network.
 * "debian-bookworm": debootstrap minbase + bash, coreutils, ca-certificates,
 * curl, git, python3; built once by cell_image_build(). */
typedef void (*cell_progress_fn)(void *user, const char *line);
int cell_image_build(cell_ctx *ctx, const char *name, cell_progress_fn progress,
                     void *user, cell_error *err);
/* 1 if the image is ready to boot, 0 if known but not built; -1 if unknown. */
int cell_image_status(cell_ctx *ctx, const char *name, cell_error *err);
/* Import an OCI image layout tar or a docker-archive tar read from `fd` as
 * image `name` (1-63 of a-z0-9._-, not a builtin): linux/amd64 only, every
 * blob checked against its digest, layers applied in order with whiteouts,
 * hostile entries refused (docs/security.md, "Hostile images"), all or
 * nothing.  EEXIST if the image exists; EFBIG past max_size bytes of
 * archive or of files (0 = CELL_IMAGE_DEFAULT_MAX_SIZE). */
#define CELL_IMAGE_DEFAULT_MAX_SIZE (8ull << 30)
int cell_image_import(cell_ctx *ctx, const char *name, int fd, cell_progress_fn progress, void *user,
                      cell_error *err);
int cell_image_import_sized(cell_ctx *ctx, const char *name, int fd, uint64_t max_size, cell_progress_fn progress,
                            void *user, cell_error *err);
typedef struct cell_image_info {
    char     name[64];
    char     digest[72];  /* "sha256:<hex>", "" when unknown (a builtin not built) */
    char     source[16];  /* "builtin", "import" or "commit" */
    uint64_t size;        /* bytes of its files, 0 for builtins */
    int64_t  created;     /* ms since the epoch, 0 for builtins */
    int      ready;       /* 1 if it can boot now */
} cell_image_info;
/* The builtin images, then the stored ones by name; the caller frees *out. */
int cell_image_list(cell_ctx *ctx, cell_image_info **out, size_t *count, cell_error *err);
/* Remove an imported or committed image: EBUSY naming them while lanes or
 * running cells use it, EINVAL for a builtin, ENOENT if unknown.  The blobs
 * no remaining image names are then deleted (now, or by the next import to
 * finish while one is under way), and the daemon's share list of the name. */
int cell_image_remove(cell_ctx *ctx, const char *name, cell_error *err);
/* An imported or committed image's config as a cell's defaults: Env
 * ("K=V"), WorkingDir, User (resolved in the image's /etc/passwd and
 * /etc/group; has_user 0 when unset) and Entrypoint followed by Cmd.  All
 * empty for builtin images.  Free with cell_image_config_free. */
typedef struct cell_image_config {
    char  **env;
    size_t  n_env;
    char   *cwd;
    int     has_user;
    uid_t   uid;
    gid_t   gid;
    char  **argv;
    size_t  n_argv;
} cell_image_config;
int  cell_image_config_get(cell_ctx *ctx, const char *image, cell_image_config *out, cell_error *err);
void cell_image_config_free(cell_image_config *c);
/* Flatten lane `lane` over its image into the new image `name` (rootfs and
 * image.json with source "commit", the base's config, a new digest),
 * atomically; EBUSY while a cell has the lane attached, EEXIST if `name`
 * exists or is a builtin, EINVAL for a lane on "host" (whose /usr is the
 * host's, bound at boot).  Lanes record their image's digest and refuse to
 * attach to an image of the same name with another digest (EBUSY). */
int cell_image_commit(cell_ctx *ctx, const char *lane, const char *name, cell_error *err);
/* Write image `name` to fd as an OCI image layout tar: one layer (the rootfs
 * as a tar, sorted, ids as stored, no user or group names, whole-second
 * mtimes), the config from image.json, the manifest, index.json and
 * oci-layout; what `cell image import` and other OCI tools read.  Not for
 * "host" (EINVAL). */
int cell_image_export(cell_ctx *ctx, const char *name, int fd, cell_error *err);

/* ---- lanes ---------------------------------------------------------------
 * A lane is a durable writable layer bound to one image.  Names are
 * 1..63 characters of [A-Za-z0-9_.-], not starting with '.' or '-'. */
typedef struct cell_lane_info {
    char     name[64];
    char     image[64];
    uint64_t created;     /* unix seconds */
    int      attached;    /* 1 while a running cell holds it */
    uint64_t size;        /* size limit of its layer in bytes, 0 = none */
} cell_lane_info;

int cell_lane_create(cell_ctx *ctx, const char *name, const char *image, cell_error *err);
/* A lane whose layer is limited to disk_size bytes (>= CELL_LANE_MIN_SIZE):
 * it is an ext4 image on the state directory, attached through a loop
 * device at boot, so a cell that fills it gets ENOSPC and the host disk is
 * untouched.  disk_size 0 = cell_lane_create(). */
int cell_lane_create_sized(cell_ctx *ctx, const char *name, const char *image, uint64_t disk_size, cell_error *err);
#define CELL_LANE_MIN_SIZE (16ull << 20)
int cell_lane_delete(cell_ctx *ctx, const char *name, cell_error *err);
/* Fills a malloc()ed array; the caller frees *out. */
int cell_lane_list(cell_ctx *ctx, cell_lane_info **out, size_t *count, cell_error *err);
int cell_lane_get(cell_ctx *ctx, const char *name, cell_lane_info *out, cell_error *err);
/* Write the lane's contents as a tar stream (pax) to `fd`; read one from `fd`
 * into a new lane.  Ownership inside the tar is as seen inside the cell. */
int cell_lane_export(cell_ctx *ctx, const char *name, int fd, cell_error *err);
int cell_lane_import(cell_ctx *ctx, const char *name, const char *image, int fd, cell_error *err);
/* Import into a lane of disk_size bytes (see cell_lane_create_sized): the
 * archive is extracted into the mounted image, so it fails with ENOSPC when
 * full, and with EFBIG as soon as the decompressed tar outgrows disk_size. */
int cell_lane_import_sized(cell_ctx *ctx, const char *name, const char *image, uint64_t disk_size, int fd,
                           cell_error *err);

/* ---- scratch filesystems -------------------------------------------------
 * A size-limited directory for what an untrusted writer fills (a cell,
 * through a bind mount): an ext4 image of `size` bytes (>= CELL_LANE_MIN_SIZE,
 * sparse, no journal) made at the new file `image`, attached through a loop
 * device, mounted nodev,nosuid on the directory `target` and unlinked at
 * once.  Writes past `size` get ENOSPC; the blocks go back to the host
 * when cell_scratch_unmount() unmounts it (0 if `target` is no mount). */
int cell_scratch_mount(const char *image, const char *target, uint64_t size, cell_error *err);
int cell_scratch_unmount(const char *target, cell_error *err);

/* ---- cell definition ----------------------------------------------------- */
enum cell_mount_kind {
    CELL_MOUNT_BIND   = 0,  /* host directory or file at `source` */
    CELL_MOUNT_MEMORY = 1,  /* tmpfs, seeded from `seed` files */
    /* A writable view of the host directory `source` that never writes it:
     * overlayfs with the directory (id-mapped 1:1, read-only) as its lower
     * layer and a tmpfs private to the cell (`size` bytes) as its upper. */
    CELL_MOUNT_OVERLAY = 2,
};

typedef struct cell_seed_file {
    const char *path;       /* relative to the mount target */
    const void *data;
    size_t      size;
    mode_t      mode;
} cell_seed_file;

typedef struct cell_mount {
    enum cell_mount_kind kind;
    const char *source;     /* BIND: host path; OVERLAY: host directory; must exist and
                               hold no symlink (ELOOP; pass its realpath()) */
    const char *target;     /* absolute path inside the cell, no ".." */
    int         readonly;
    uint64_t    size;       /* MEMORY: tmpfs size in bytes, 0 = 64 MiB;
                               OVERLAY: its upper tmpfs, 0 = 1 GiB */
    const cell_seed_file *seed;
    size_t      n_seed;
} cell_mount;

typedef struct cell_limits {
    uint64_t memory;        /* bytes, 0 = unlimited */
    uint32_t pids;          /* max tasks, 0 = unlimited */
    uint32_t cpu_millis;    /* 1000 = one full CPU, 0 = unlimited */
    uint64_t disk;          /* writable layer size in bytes, 0 = default */
} cell_limits;

/* ---- network ---------------------------------------------------------------
 * A cell without a policy has no network at all (only lo).  With one, every
 * TCP flow and DNS query leaving the cell goes to the cell's egress engine,
 * a helper process libcell starts (fork+exec, unprivileged, seccomp), which
 * decides by the policy (JSON; see docs/egress.md) and relays what it
 * allows.  The callbacks below answer the helper's requests; they run on
 * libcell's threads (one per cell, and one per decide question). */
typedef struct cell_net_flow {
    const char *cell;           /* cell id */
    const char *transport;      /* "tcp" | "udp" */
    const char *src, *dst;      /* "IP:PORT" */
    const char *host;           /* name pinned to dst by the cell's DNS, or NULL */
    int         rule;           /* index of the "decide" rule asking */
    int         cache_s;        /* how long the rule lets an answer be reused */
} cell_net_flow;
/* For "decide" rules: return 1 to allow, 0 to deny; must answer within
 * timeout_ms (the engine denies when it does not). */
typedef int (*cell_net_decide_fn)(void *user, const cell_net_flow *flow, const char *url, int timeout_ms);
/* Every decision and DNS answer, as one JSON object (text). */
typedef void (*cell_net_event_fn)(void *user, const char *json);
/* For "http" rules' ${secret:NAME}: return 0 with *value a malloc()ed copy
 * (NUL-terminated; *len excludes the NUL), which the engine wipes and
 * frees, or -1 if there is no such secret (the request is refused). */
typedef int (*cell_net_secret_fn)(void *user, const char *name, char **value, size_t *len);
/* Validate a policy document without a cell: 0, or EINVAL with a message
 * naming the rule index and field. */
int cell_policy_check(const char *policy_json, cell_error *err);
/* The same, and also refuse (EACCES, naming the rule and field) a policy
 * that would make the owner itself connect to the host's own services on
 * the policy author's behalf: DNS upstreams and decide URLs at loopback,
 * link-local, unspecified, multicast or broadcast addresses, or at this
 * host's or a cell's addresses, unless inside one of `owner_allow`
 * (NULL-terminated CIDRs; NULL = none).  For policies from less trusted
 * authors (the daemon's non-admin tokens). */
int cell_policy_check_v2(const char *policy_json, const char *const *owner_allow, cell_error *err);
/* Why the owner must not connect to `dst` for such an author (the same
 * rules, for names resolved later), or NULL when it may. */
struct sockaddr;
const char *cell_net_screen(const struct sockaddr *dst, const char *const *owner_allow);

typedef struct cell_config {
    const char       *image;       /* NULL = "host" */
    const char       *lane;        /* NULL = throwaway layer */
    const char       *hostname;    /* NULL = "cell-<id prefix>" */
    cell_limits       limits;
    const cell_mount *mounts;
    size_t            n_mounts;
    const char       *policy;      /* network policy (JSON); NULL = no network */
    cell_net_decide_fn net_decide; /* NULL: "decide" rules deny */
    cell_net_event_fn net_event;   /* NULL: decisions are not reported */
    void             *net_user;
    cell_net_secret_fn net_secret; /* NULL: requests naming a secret are refused */
    /* PEM file of extra roots trusted for upstream TLS of "http" rules, on
     * top of the host's trust store (tests, private CAs); NULL = none. */
    const char       *upstream_ca_file;
} cell_config;

/* The writable layer of a cell without a lane lives in memory (tmpfs) and
 * is capped by limits.disk or this default. */
#define CELL_DEFAULT_DISK (1024ull * 1024 * 1024)

typedef struct cell cell;

/* Boot a cell: namespaces, root filesystem, limits, cell-init.  On return
 * cell-init is running and ready for cell_spawn(). */
int  cell_create(cell_ctx *ctx, const cell_config *cfg, cell **out, cell_error *err);
/* Kill everything in the cell and release its resources (cgroups, uid range,
 * lane).  Always succeeds; safe on NULL. */
void cell_destroy(cell *c);
const char *cell_id(const cell *c);
/* Replace a running cell's network policy (JSON).  EINVAL names the rule
 * and field; EPERM if the cell was created without a policy (its network
 * namespace has no route to be policed). */
int cell_set_policy(cell *c, const char *policy_json, cell_error *err);
/* Rename a running cell: its hostname and /etc/hosts, as cell_config's
 * hostname sets them at boot (EINVAL for a bad name).  Meant for a cell
 * that has run nothing yet (a daemon's warm pool): processes that already
 * run may have read the old name. */
int cell_set_hostname(cell *c, const char *hostname, cell_error *err);
/* Change a running cell's pids and CPU limits (cell_limits' pids and
 * cpu_millis; 0 = leave it as is).  Its memory limit is fixed at boot. */
int cell_set_pids_cpu(cell *c, uint32_t pids, uint32_t cpu_millis, cell_error *err);
/* The host pid of cell-init (PID 1 inside the cell). */
pid_t cell_init_pid(const cell *c);
/* First host uid of the cell's range; uid N inside is host uid base+N. */
uid_t cell_uid_base(const cell *c);

/* ---- options (API v2) -------------------------------------------------------
 * cell_config above is frozen: a field added to it would change its size
 * under callers built against an older header.  New code describes a cell
 * with an opaque cell_options filled by setters, which later versions can
 * add to without breaking anything (docs/libcell.md).  Options copy what
 * they are given (strings, seed data, egress settings); the caller's buffers
 * may go away after each call.  Every setter checks its argument at once and
 * fails with EINVAL (ERANGE for a number out of range, E2BIG past 32 mounts,
 * ENOENT for a seed file without its tmpfs) naming the option and what to
 * use instead, leaving the options as they were; what depends on the host
 * (the image is known and built, a bind source exists, the lane is free) is
 * checked by cell_create_v2.  An options object is not changed by cell_create_v2 and
 * may create any number of cells; it is not thread-safe. */
typedef struct cell_options cell_options;
/* Egress settings: the network policy, the callbacks answering the engine
 * and the extra upstream roots.  Attached to options by copy. */
typedef struct cell_egress cell_egress;

int  cell_options_new(cell_options **out, cell_error *err);
void cell_options_free(cell_options *o);
/* NULL restores the default ("host"; the lane's image with a lane). */
int  cell_options_set_image(cell_options *o, const char *image, cell_error *err);
/* NULL = a throwaway layer. */
int  cell_options_set_lane(cell_options *o, const char *lane, cell_error *err);
/* 1-63 letters, digits and '-', not starting or ending with '-'; NULL = "cell-<id prefix>". */
int  cell_options_set_hostname(cell_options *o, const char *hostname, cell_error *err);
/* Limits; 0 means unlimited (disk: CELL_DEFAULT_DISK). */
#define CELL_MIN_MEMORY (16ull << 20)
#define CELL_MIN_DISK   (1ull << 20)
#define CELL_MIN_CPU_MILLIS 10
int  cell_options_set_memory(cell_options *o, uint64_t bytes, cell_error *err);  /* >= CELL_MIN_MEMORY */
int  cell_options_set_pids(cell_options *o, uint32_t max, cell_error *err);      /* <= 4194304 */
int  cell_options_set_cpu(cell_options *o, uint32_t millis, cell_error *err);    /* 1000 = one CPU, >= 10 */
int  cell_options_set_disk(cell_options *o, uint64_t bytes, cell_error *err);    /* >= CELL_MIN_DISK */
/* Mounts, at most 32 in all.  target: absolute, no "..", not "/".
 * add_bind: the host path `source` (canonicalised by this call, relative
 * to the caller's cwd) at `target`; flags 0 or CELL_MOUNT_READONLY.  The
 * create refuses a source that has come to hold a symlink since (ELOOP).
 * add_tmpfs: an empty in-memory directory of `size` bytes (0 = 64 MiB).
 * add_overlay: the host directory `source` at `target`, writable in the
 * cell, with every change kept in a tmpfs of `size` bytes (0 = 1 GiB) that
 * vanishes with the cell: the host directory is never written.
 * add_seed: a file put into the tmpfs mounted at `target` before the cell
 * is handed over: `path` relative to it, mode 0 = 0644. */
#define CELL_MOUNT_READONLY 1u
int  cell_options_add_bind(cell_options *o, const char *source, const char *target, unsigned flags, cell_error *err);
int  cell_options_add_tmpfs(cell_options *o, const char *target, uint64_t size, cell_error *err);
int  cell_options_add_overlay(cell_options *o, const char *source, const char *target, uint64_t size,
                              cell_error *err);
int  cell_options_add_seed(cell_options *o, const char *target, const char *path, const void *data, size_t size,
                           mode_t mode, cell_error *err);
/* add_mask: hide `path` (relative to the source, no "." or "..", at most 64
 * per mount) of the bind or overlay mount last added at `target` (ENOENT
 * without one).  Read-only binds and overlays show no such entry (ENOENT);
 * a read-write bind shows an empty file or directory of a private tmpfs
 * over it, whose writes never reach the host.  cell_create_v2 refuses a
 * mask through a symlink, a masked file with another hard link in the
 * mount, and another mount sharing the tree (docs/security.md, "Masks"). */
int  cell_options_add_mask(cell_options *o, const char *target, const char *path, cell_error *err);
/* A copy of `e` (NULL = no network at all, the default). */
int  cell_options_set_egress(cell_options *o, const cell_egress *e, cell_error *err);

/* ---- virtual filesystems (vfs) ---------------------------------------------
 * A mount whose files are served by callbacks of the process that creates
 * the cell, through FUSE (docs/libcell.md, "Virtual filesystems").  The
 * callbacks run on libcell's threads, outside the cell, any number at once;
 * each returns 0 (read/write: a byte count) or a negative errno.  A callback
 * still running after the mount's timeout has its request answered EIO (its
 * late result is dropped); cell_destroy waits for callbacks in progress.
 * Inode numbers are the provider's: nonzero, stable while the file exists,
 * CELL_VFS_ROOT for the mount's root.  Only regular files and directories;
 * files show as owned by the cell's root.  A result that makes no sense (an
 * unknown type, inode 0, a count past the buffer, an errno out of range) is
 * answered EIO. */
#define CELL_VFS_ROOT 1u
enum cell_vfs_tier {
    CELL_VFS_READONLY = 0,  /* lookup/getattr/readdir/open/read; mounted read-only, page cache */
    CELL_VFS_WRITABLE = 1,  /* + write/create/unlink/rmdir/rename/mkdir/truncate, direct I/O (no mmap) */
    CELL_VFS_POSIX    = 2,  /* as WRITABLE through the page cache: shared mmap works */
};
#define CELL_VFS_DEFAULT_TIMEOUT_MS 30000u
typedef struct cell_vfs_attr {
    uint64_t ino;
    uint32_t mode;          /* S_IFREG or S_IFDIR | permission bits */
    uint64_t size;
    int64_t  mtime;         /* seconds since the epoch */
} cell_vfs_attr;
/* readdir's sink: one call per entry ("." and ".." are added by libcell);
 * returns -1 once the listing is too large (the callback should stop). */
typedef int (*cell_vfs_fill_fn)(void *dir, const char *name, uint64_t ino, uint32_t mode);
typedef struct cell_vfs_ops {
    int     (*lookup)(void *user, uint64_t parent, const char *name, cell_vfs_attr *out);
    int     (*getattr)(void *user, uint64_t ino, cell_vfs_attr *out);
    int     (*readdir)(void *user, uint64_t ino, cell_vfs_fill_fn fill, void *dir);
    int     (*open)(void *user, uint64_t ino, int flags, uint64_t *fh);             /* optional */
    ssize_t (*read)(void *user, uint64_t ino, uint64_t fh, char *buf, size_t size, uint64_t off);
    int     (*release)(void *user, uint64_t ino, uint64_t fh);                      /* optional */
    /* Writable tiers only; each optional (absent: EPERM). */
    ssize_t (*write)(void *user, uint64_t ino, uint64_t fh, const char *buf, size_t size, uint64_t off);
    int     (*create)(void *user, uint64_t parent, const char *name, uint32_t mode, cell_vfs_attr *out,
                      uint64_t *fh);
    int     (*unlink)(void *user, uint64_t parent, const char *name);
    int     (*rmdir)(void *user, uint64_t parent, const char *name);
    int     (*rename)(void *user, uint64_t parent, const char *name, uint64_t newparent, const char *newname);
    int     (*mkdir)(void *user, uint64_t parent, const char *name, uint32_t mode, cell_vfs_attr *out);
    int     (*truncate)(void *user, uint64_t ino, uint64_t size, cell_vfs_attr *out);
    void    (*reserved[8])(void);   /* NULL: room for later operations */
} cell_vfs_ops;
/* Serve `ops` (copied; lookup, getattr, readdir and read are required) at
 * `target`; `user` is passed to every callback and must outlive the cells.
 * timeout_ms 0 = CELL_VFS_DEFAULT_TIMEOUT_MS, at most 3600000.  Another
 * mount may not lie inside a vfs (EINVAL at create). */
int  cell_options_add_vfs(cell_options *o, const char *target, const cell_vfs_ops *ops, void *user, int tier,
                          uint32_t timeout_ms, cell_error *err);

/* policy_json is checked as cell_policy_check() does. */
int  cell_egress_new(cell_egress **out, const char *policy_json, cell_error *err);
void cell_egress_free(cell_egress *e);
int  cell_egress_set_policy(cell_egress *e, const char *policy_json, cell_error *err);
/* Each NULL by default: see cell_config's net_* fields for what that means.
 * `user` is passed to every callback; the caller keeps it alive as long as
 * any cell created with these settings. */
int  cell_egress_set_decide(cell_egress *e, cell_net_decide_fn fn, cell_error *err);
int  cell_egress_set_event(cell_egress *e, cell_net_event_fn fn, cell_error *err);
int  cell_egress_set_secret(cell_egress *e, cell_net_secret_fn fn, cell_error *err);
int  cell_egress_set_user(cell_egress *e, void *user, cell_error *err);
/* A readable PEM file, as cell_config.upstream_ca_file; NULL = none. */
int  cell_egress_set_upstream_ca(cell_egress *e, const char *pem_file, cell_error *err);

/* cell_create() for options. */
int  cell_create_v2(cell_ctx *ctx, const cell_options *o, cell **out, cell_error *err);

/* ---- processes ------------------------------------------------------------ */
typedef struct cell_proc_spec {
    const char *const *argv;    /* argv[0] looked up in PATH of env */
    const char *const *env;     /* NULL = a minimal default environment */
    const char *cwd;            /* NULL = "/" */
    uid_t uid;                  /* inside the cell */
    gid_t gid;
    /* Host fds handed to the process as stdin/stdout/stderr (duplicated, the
     * caller keeps its own).  -1 = /dev/null.  Ignored when tty is set. */
    int   stdin_fd, stdout_fd, stderr_fd;
    int   tty;                  /* 1 = run on a new pseudo-terminal */
    uint16_t rows, cols;
} cell_proc_spec;

/* Start a process.  *pid receives its pid inside the cell.  With tty set,
 * *pty_fd receives the terminal's master side (caller closes it), else -1.
 * A missing command fails with code ENOENT, not a process exiting 127. */
int cell_spawn(cell *c, const cell_proc_spec *spec, pid_t *pid, int *pty_fd, cell_error *err);
int cell_signal(cell *c, pid_t pid, int sig, cell_error *err);
int cell_resize(cell *c, pid_t pid, uint16_t rows, uint16_t cols, cell_error *err);

typedef struct cell_exit {
    pid_t pid;
    int   status;               /* as from waitpid() */
} cell_exit;

/* Wait up to timeout_ms (-1 = forever) for the next exit of a spawned
 * process.  Returns 1 with *out filled, 0 on timeout, -1 on error (ECONNRESET
 * when the cell itself died).  Exits are queued, none is lost. */
int cell_wait_exit(cell *c, int timeout_ms, cell_exit *out, cell_error *err);

/* The control channel's fd, readable when an exit may be pending; for
 * callers that multiplex many cells in one poll loop. */
int cell_event_fd(const cell *c);

/* ---- files ----------------------------------------------------------------
 * Paths are resolved inside the cell by cell-init: ".." stops at the cell's
 * root, absolute symlinks point into the cell, magic links are refused.  The
 * data itself flows through pipes to and from a process in the cell. */
typedef struct cell_stat {
    uint32_t mode;              /* type and permission bits, as st_mode */
    uint64_t size;
    int64_t  mtime;             /* unix seconds */
    uint32_t uid, gid;          /* as seen inside the cell */
} cell_stat;

typedef struct cell_dirent {
    char      name[256];
    cell_stat st;
} cell_dirent;

/* Reading and writing a file of the cell: a transfer process inside the
 * cell (the cell's root, seccomp filter, capabilities and cgroup) opens the
 * file and copies between it and a pipe; the caller only ever holds the
 * pipe (x->fd), never a descriptor of the file, because the kernel checks
 * the credentials of whoever reads or writes many files (/proc, /sys).
 * cell_file_read: x->fd is the read end, EOF after the whole file; x->mode
 * and x->size are the file's at open (size 0 for most /proc files).
 * cell_file_write: flags O_WRONLY|O_CREAT|O_TRUNC and friends; write with
 * cell_xfer_write.  Non-regular files fail with EINVAL, directories with
 * EISDIR.  Every started transfer must end with cell_xfer_end, which
 * closes x->fd and returns the transfer's outcome (ENOSPC, EPERM, ...). */
typedef struct cell_xfer {
    int      fd, status_fd;     /* non-blocking: use cell_xfer_read/write */
    uint32_t mode;
    uint64_t size;
    int      stall_ms;          /* 0: CELL_XFER_STALL_MS */
} cell_xfer;
/* A transfer process that makes no progress this long (stopped by a process
 * of the cell, say) fails the transfer with ETIMEDOUT instead of holding
 * the caller. */
#define CELL_XFER_STALL_MS 60000
int cell_file_read(cell *c, const char *path, cell_xfer *x, cell_error *err);
/* cell_file_read where no component of path may be a symlink (ELOOP):
 * for a file the caller made in the cell and the cell must not swap for a
 * link (the desktop's recordings).  Since 0.3. */
int cell_file_read_nofollow(cell *c, const char *path, cell_xfer *x, cell_error *err);
int cell_file_write(cell *c, const char *path, int flags, mode_t mode, cell_xfer *x, cell_error *err);
/* Up to len bytes; 0 at the end of the file. */
ssize_t cell_xfer_read(cell_xfer *x, void *buf, size_t len, cell_error *err);
/* Write all of data; a transfer that failed answers with its own error. */
int cell_xfer_write(cell_xfer *x, const void *data, size_t len, cell_error *err);
/* Safe to call again (then 0). */
int cell_xfer_end(cell_xfer *x, cell_error *err);
int cell_file_stat(cell *c, const char *path, cell_stat *out, cell_error *err);
/* malloc()ed array, sorted by name, without "." and "..". */
int cell_file_list(cell *c, const char *path, cell_dirent **out, size_t *count, cell_error *err);
int cell_file_mkdir(cell *c, const char *path, mode_t mode, int parents, cell_error *err);
int cell_file_move(cell *c, const char *from, const char *to, int overwrite, cell_error *err);
int cell_file_delete(cell *c, const char *path, int recursive, cell_error *err);
/* Unpack a tar stream read from tar_fd into directory `dir` inside the cell.
 * Entries that would land outside `dir` are refused (the whole upload fails). */
int cell_file_upload_tar(cell *c, const char *dir, int tar_fd, cell_error *err);
/* The same, calling cb(user, path) with each entry's path relative to
 * `dir` once it is in place. */
typedef void (*cell_upload_fn)(void *user, const char *path);
int cell_file_upload_tar_cb(cell *c, const char *dir, int tar_fd, cell_upload_fn cb, void *user, cell_error *err);

#ifdef __cplusplus
}
#endif
#endif
