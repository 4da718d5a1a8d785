/* oci.h: cell-oci, a runc-compatible OCI runtime (issue 15; docs/oci.md).
 * oci_spec.c parses a bundle's config.json, oci_state.c keeps one state
 * directory per container under --root, oci_log.c writes runc's log lines,
 * oci_init.c is the container's init (namespaces, mounts, the park until
 * `start`, cell's confinement, exec), oci_container.c the life cycle
 * commands and oci_main.c the command line.  The confinement itself is
 * cell's: src/isolate's seccomp programs, capability set, user namespaces
 * and /proc masks. */
#ifndef CELL_OCI_H
#define CELL_OCI_H

#include <limits.h>
#include <stdint.h>
#include <sys/types.h>

#include <jansson.h>

#include "util/util.h"

/* ---- config.json (oci_spec.c) ------------------------------------------------
 * Bounds on what a spec may hold: past them the spec is refused (a hostile
 * bundle must not make the runtime allocate without limit). */
#define OCI_SPEC_MAX_BYTES   (4u << 20)
#define OCI_MAX_ARGS         4096
#define OCI_MAX_ENV          4096
#define OCI_MAX_MOUNTS       256
#define OCI_MAX_PATHS        1024 /* maskedPaths, readonlyPaths */
#define OCI_MAX_GIDS         256
#define OCI_MAX_RLIMITS      32
#define OCI_MAX_MOUNT_DATA   32   /* filesystem options of one mount */
#define OCI_MAX_NS           8

enum oci_cap_set { OCI_CAP_BOUNDING, OCI_CAP_EFFECTIVE, OCI_CAP_INHERITABLE, OCI_CAP_PERMITTED, OCI_CAP_AMBIENT,
                   OCI_CAP_SETS };

enum oci_mount_kind { OCI_MOUNT_PROC, OCI_MOUNT_TMPFS, OCI_MOUNT_SYSFS, OCI_MOUNT_DEVPTS, OCI_MOUNT_MQUEUE,
                      OCI_MOUNT_BIND, OCI_MOUNT_CGROUP };

struct oci_mount {
    int         kind;             /* enum oci_mount_kind */
    const char *destination;      /* absolute, inside the container's root */
    const char *source;           /* BIND: absolute host path */
    int         recursive;        /* rbind */
    uint64_t    attrs;            /* MOUNT_ATTR_RDONLY, NOSUID, NODEV, NOEXEC, ... */
    const char *data[OCI_MAX_MOUNT_DATA]; /* filesystem options ("size=65536k", "newinstance") */
    size_t      n_data;
};

struct oci_ns {
    int         type;             /* CLONE_NEWPID, CLONE_NEWNS, ... */
    const char *path;             /* join this one (setns), or NULL = a new one */
};

struct oci_rlimit {
    int      resource;
    uint64_t soft, hard;
};

struct oci_idmap {
    uint32_t container_id, host_id, size;
};

/* hooks (oci_hooks.c runs them; the parser checks them).  Each kind runs
 * where the runtime spec says: prestart, createRuntime, poststart and
 * poststop in the runtime's namespaces (cwd the bundle),
 * createContainer in the container's before pivot_root (cwd the root),
 * startContainer in the container's, confined, just before the exec. */
enum oci_hook_kind { OCI_HOOK_PRESTART, OCI_HOOK_CREATE_RUNTIME, OCI_HOOK_CREATE_CONTAINER, OCI_HOOK_START_CONTAINER,
                     OCI_HOOK_POSTSTART, OCI_HOOK_POSTSTOP, OCI_HOOK_KINDS };
#define OCI_MAX_HOOKS 64          /* per kind */
#define OCI_MAX_HOOK_TIMEOUT 3600 /* seconds */

struct oci_hook {
    const char  *path;            /* absolute */
    const char **args;            /* argv (NULL-terminated), or NULL: just path */
    const char **env;             /* the whole environment, or NULL: the runtime's */
    int          timeout;         /* seconds, 0 = none */
};

struct oci_hooks {
    struct oci_hook *list[OCI_HOOK_KINDS];
    size_t           n[OCI_HOOK_KINDS];
};

/* Strings point into `doc`, which the spec owns. */
struct oci_spec {
    json_t           *doc;
    const char       *version;
    const char      **args;
    size_t            n_args;
    const char      **env;
    size_t            n_env;
    const char       *cwd;
    uint32_t          uid, gid;
    uint32_t          gids[OCI_MAX_GIDS];
    size_t            n_gids;
    int               terminal;
    int               no_new_privs;   /* as asked; cell sets it whatever the spec says */
    struct oci_rlimit rlimits[OCI_MAX_RLIMITS];
    size_t            n_rlimits;
    int               has_caps;
    uint64_t          caps[OCI_CAP_SETS];
    char              root[PATH_MAX]; /* absolute: root.path resolved against the bundle */
    int               root_readonly;
    const char       *hostname;
    struct oci_mount *mounts;
    size_t            n_mounts;
    struct oci_ns     ns[OCI_MAX_NS];
    size_t            n_ns;
    int               has_idmap;      /* linux.uidMappings/gidMappings (one range each) */
    struct oci_idmap  uid_map, gid_map;
    const char      **masked;
    size_t            n_masked;
    const char      **readonly;
    size_t            n_readonly;
    json_t           *seccomp;        /* linux.seccomp (borrowed from doc), or NULL */
    json_t           *sysctl;         /* linux.sysctl, names and values checked (borrowed), or NULL */
    json_t           *resources;      /* linux.resources (borrowed; checked as it is applied), or NULL */
    int               has_oom_score_adj;
    int               oom_score_adj;  /* process.oomScoreAdj */
    const char       *cgroups_path;   /* linux.cgroupsPath as given (cgroupfs or systemd form), or NULL */
    int               cgroups_systemd;/* cgroups_path is systemd's slice:prefix:name */
    json_t           *hooks_doc;      /* "hooks" (borrowed), or NULL */
    struct oci_hooks  hooks;
    json_t           *annotations;    /* borrowed from doc; may be NULL */
};

/* Parse config.json's text; `bundle` is the absolute bundle directory that a
 * relative root.path is resolved against.  On failure *err names the field. */
int  oci_spec_parse(const char *text, size_t len, const char *bundle, struct oci_spec *out, cell_error *err);
/* Read and parse BUNDLE/config.json. */
int  oci_spec_load(const char *bundle, struct oci_spec *out, cell_error *err);
void oci_spec_free(struct oci_spec *spec);
/* The namespace entry of `type` (CLONE_NEW*), or NULL when the spec has none. */
const struct oci_ns *oci_spec_ns(const struct oci_spec *spec, int type);
/* "CAP_CHOWN" -> 0; -1 when unknown. */
int  oci_cap_number(const char *name);
const char *oci_cap_name(int cap);
#define OCI_CAP_LAST 40
/* A "hooks" object (config.json's, or the copy create keeps); strings are
 * borrowed from it. */
int  oci_hooks_parse(json_t *hooks, struct oci_hooks *out, cell_error *err);
void oci_hooks_free(struct oci_hooks *h);
const char *oci_hook_kind_name(int kind);
/* systemd's cgroupsPath "slice:prefix:name" as the cgroupfs path systemd
 * would give it ("system.slice:cri:ID" -> "/system.slice/cri-ID.scope",
 * "a-b.slice" -> "/a.slice/a-b.slice/..."); an empty slice is
 * system.slice, an empty name `id`. */
int  oci_systemd_cgroup_path(const char *spec, const char *id, char *out, size_t size, cell_error *err);

/* ---- state (oci_state.c) -------------------------------------------------------
 * ROOT/ID/state.json, written to a temporary name and renamed. */
#define OCI_ID_MAX 1024
#define OCI_STATE_FILE "state.json"
#define OCI_FIFO_FILE  "exec.fifo"

struct oci_state {
    char     id[OCI_ID_MAX + 1];
    pid_t    pid;
    uint64_t start_time;           /* /proc/PID/stat field 22: tells our init from a reused pid */
    char     bundle[PATH_MAX];
    char     rootfs[PATH_MAX];
    char     created[64];          /* RFC 3339, UTC */
    uid_t    owner;
    int      slot;                 /* uid range (oci_slot_*), -1 = the spec's own mappings */
    uid_t    uid_base;             /* host id of the container's root */
    uint32_t uid_count;
    int      nosuid;               /* writable host directories: cell's nosuid filter, no CAP_SETFCAP */
    char     cgroup[PATH_MAX];     /* the container's cgroup directory (oci_cgroup.c) */
    json_t  *annotations;          /* owned; may be NULL */
};

enum oci_status { OCI_CREATED, OCI_RUNNING, OCI_PAUSED, OCI_STOPPED };

/* An id is 1..OCI_ID_MAX of [A-Za-z0-9_.+-], not "." or "..": it names a
 * directory under --root. */
int  oci_id_check(const char *id, cell_error *err);
int  oci_state_path(char *buf, size_t size, const char *root, const char *id, const char *file, cell_error *err);
int  oci_state_write(const char *root, const struct oci_state *st, cell_error *err);
int  oci_state_read(const char *root, const char *id, struct oci_state *st, cell_error *err);
void oci_state_free(struct oci_state *st);
enum oci_status oci_state_status(const char *root, const struct oci_state *st);
const char *oci_status_name(enum oci_status s);
/* runc's `state` document (status included). */
json_t *oci_state_json(const char *root, const struct oci_state *st);
/* The process start time of pid (0 when it is gone). */
uint64_t oci_pid_start_time(pid_t pid);
/* A pidfd of the state's init if it is still that process, else -1. */
int  oci_state_pidfd(const struct oci_state *st);

/* ---- uid ranges (oci_state.c) ---------------------------------------------------
 * Containers without uidMappings run in a user namespace of their own,
 * 65536 ids from OCI_UID_FIRST + slot * 65536: above cells' ranges, so a
 * container never shares ids with a cell.  A slot is held by a file
 * OCI_SLOT_DIR/N naming the init's pid and start time; a holder that is
 * gone frees it. */
#define OCI_SLOT_DIR  "/run/cell/oci-slots"
#define OCI_UID_FIRST 0x50000000u
#define OCI_MAX_SLOTS 4096
int  oci_slot_take(int *slot, cell_error *err);
int  oci_slot_own(int slot, pid_t pid, uint64_t start_time, cell_error *err);
/* Hold a range through a living holder via_pid/via_start (the container
 * whose user namespace is joined by path, or whose processes `exec`
 * joins); refused when that holder is gone (the range may be another
 * container's by then). */
int  oci_slot_join(int slot, pid_t via_pid, uint64_t via_start, pid_t pid, uint64_t start_time, cell_error *err);
/* Frees the slot if the holder is still pid/start_time (not a later taker). */
void oci_slot_release(int slot, pid_t pid, uint64_t start_time);

/* ---- a user namespace joined by path (oci_userns.c) ------------------------------
 * Only one cell-oci made for a living container of the same --root and
 * pod (the CRI sandbox-id annotation): the joiner takes its uid range. */
struct oci_userns_owner {
    int      fd;                   /* the namespace, checked, for setns */
    int      slot;                 /* the owner's uid range slot (-1: the spec's own mapping) */
    pid_t    pid;                  /* the owner's init, a holder of the slot */
    uint64_t start_time;
    uid_t    uid_base;
    uint32_t uid_count;
};
int oci_userns_join(const char *root, const char *id, const struct oci_spec *s, const char *path,
                    struct oci_userns_owner *owner, cell_error *err);
/* ROOT/ID/userns: which user namespace the container's is. */
int oci_userns_record(const char *root, const char *id, int userns_fd, cell_error *err);

/* ---- a pid, net, ipc, uts or cgroup namespace joined by path (oci_nspath.c) ------
 * The checked descriptor for setns: a namespace of that type, never the
 * caller's own (the host's); errors name linux.namespaces and the path. */
int oci_ns_open(const char *path, int type, cell_error *err);

/* create, run and exec: re-execute from a sealed memfd copy of the binary
 * (oci_sealed.c), so /proc/self/exe is never the host's file; 0 when this
 * process is the copy already, else -1 (it returns only on failure). */
int oci_run_sealed(char **argv, cell_error *err);

/* ---- the container's cgroup (oci_cgroup.c) ----------------------------------------
 * linux.cgroupsPath (or /cell-oci/ID) in the freezer hierarchy (v1) or the
 * unified one (v2): the freezer for pause/resume; no limits yet. */
int  oci_cgroup_dir(const char *cgroups_path, const char *id, char *out, size_t size, cell_error *err);
#define OCI_CG_MAX 4
/* mkdir -p every directory (refused if one holds processes), apply
 * linux.resources, open each cgroup.procs for writing. */
int  oci_cgroup_create(const char *primary, json_t *resources, int fds[OCI_CG_MAX], size_t *nfds, cell_error *err);
int  oci_cgroup_procs(const char *primary, int fds[OCI_CG_MAX], size_t *nfds, cell_error *err);
int  oci_cgroup_update(const char *primary, json_t *resources, cell_error *err);
int  oci_cgroup_frozen(const char *dir);
int  oci_cgroup_freeze(const char *dir, int on, cell_error *err);
void oci_cgroup_remove(const char *dir);

/* ---- linux.seccomp (oci_seccomp.c) -------------------------------------------------
 * Translated with libseccomp; loaded after cell's filters (the kernel takes
 * the strictest answer of all, so it can only narrow). */
int  oci_seccomp_check(json_t *seccomp, cell_error *err);
int  oci_seccomp_load(json_t *seccomp, cell_error *err);

/* ---- hooks (oci_hooks.c) --------------------------------------------------------
 * Run the hooks of one kind in order, each with `state` (runc's state JSON)
 * on its stdin, its stdout and stderr captured for the error, and its
 * timeout.  dir: the hooks' cwd (NULL: ours).  The first failure stops the
 * kind: -1 with err naming hooks.KIND[i], its exit and its output. */
int  oci_hooks_run(const struct oci_hooks *h, int kind, json_t *state, const char *dir, cell_error *err);
/* The state a hook reads; pid 0 is left out (runc's poststop). */
json_t *oci_hook_state(const char *id, const char *status, pid_t pid, const char *bundle, json_t *annotations);
/* ROOT/ID/hooks.json: the spec's hooks as create saw them, for the
 * poststart of `start` and the poststop of `delete`. */
int  oci_hooks_save(const char *root, const char *id, json_t *hooks, cell_error *err);
/* 0 with *doc NULL when the container kept no hooks. */
int  oci_hooks_load(const char *root, const char *id, json_t **doc, struct oci_hooks *h, cell_error *err);

/* ---- log (oci_log.c) ------------------------------------------------------------ */
int  oci_log_open(const char *path, int json, int debug, cell_error *err);
void oci_log(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* An error for the caller: stderr, and the log file as level "error". */
void oci_log_error(const cell_error *err);
int  oci_log_debug_on(void);

/* ---- the container (oci_container.c, oci_init.c) ------------------------------- */
struct oci_create_opts {
    const char *root;              /* --root */
    const char *id;
    const char *bundle;            /* absolute */
    const char *pid_file;          /* may be NULL */
    const char *console_socket;    /* may be NULL */
    int         keep_child;        /* `run`: the init stays our child, waited for */
    int         systemd_cgroup;    /* --systemd-cgroup: cgroupsPath is slice:prefix:name */
};

/* Everything the init needs, made before it is cloned. */
struct oci_init_args {
    const struct oci_spec *spec;
    int         sync_fd;           /* socket: init -> creator "ok" or an error message */
    int         fifo_fd;           /* exec.fifo, O_RDWR: the init reads a byte from it to start */
    int         userns_fd;
    uid_t       uid_base;          /* host id of the container's root */
    uint32_t    uid_count;
    int         console_fd;        /* connected --console-socket, or -1 */
    int         cgroupns_fd;       /* the init's (exec) or the spec's (init, opened before pivot); -1: a new one */
    int         cgroup_fds[4];     /* the container cgroup's cgroup.procs files: the process joins them first */
    size_t      n_cgroup_fds;
    json_t     *seccomp;           /* linux.seccomp, loaded on top of cell's filters; NULL = none */
    const char *scratch;           /* create: ROOT/ID/ovl, where an overlay root's layers are mapped */
    int         rw_binds;          /* a writable root or read-write bind: cell's nosuid filter
                                      applies and CAP_SETFCAP goes */
    json_t     *hook_state;        /* create: the state createContainer and startContainer hooks
                                      read (the init sets status and pid); NULL for exec */
};

/* The init's body (oci_init.c): never returns; failures go to sync_fd. */
__attribute__((noreturn)) void oci_init_main(const struct oci_init_args *a);
/* An exec'd process, already in the container's namespaces but its user
 * namespace (a->userns_fd): confine and exec (oci_init.c). */
__attribute__((noreturn)) void oci_exec_main(const struct oci_init_args *a);

struct oci_exec_opts {
    const char  *root, *id;
    const char  *process;          /* --process FILE, or NULL: the bundle's process with these: */
    char *const *args;             /* the command (when no --process) */
    const char **env;              /* --env additions */
    size_t       n_env;
    const char  *cwd, *user;       /* --cwd, --user UID[:GID] */
    int          tty, detach;
    const char  *pid_file, *console_socket;
};

/* A connected --console-socket (the caller's AF_UNIX stream socket that
 * receives the pty master), or -1 with err set; create and exec share it. */
int oci_console_connect(const char *path, cell_error *err);
int oci_create(const struct oci_create_opts *o, pid_t *child, cell_error *err);
/* exec: 0 and *code = the process's exit code (or 0 with detach). */
int oci_exec(const struct oci_exec_opts *o, int *code, cell_error *err);
/* `process.json` of exec --process (oci_spec.c): the process fields only. */
int oci_process_load(const char *path, struct oci_spec *out, cell_error *err);
int oci_start(const char *root, const char *id, cell_error *err);
int oci_kill(const char *root, const char *id, int sig, int all, cell_error *err);
int oci_pause(const char *root, const char *id, int on, cell_error *err);
/* `update --resources FILE` ("-" = stdin): linux.resources on a live container. */
int oci_update(const char *root, const char *id, const char *file, cell_error *err);
int oci_delete(const char *root, const char *id, int force, cell_error *err);
int oci_state_print(const char *root, const char *id, cell_error *err);
/* `ps --format json`: the host pids of the container's processes. */
int oci_ps(const char *root, const char *id, cell_error *err);
/* `list --format json`: every container's state (null when none). */
int oci_list(const char *root, cell_error *err);
/* Wait for the child `run` created; its exit code as a shell reports it. */
int oci_wait_exit(pid_t child);

#endif
