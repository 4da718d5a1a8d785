/* options.c: API v2's opaque cell description (cell_options, cell_egress)
 * and the library's version.  The options own copies of everything they
 * were given; cell_create_v2() lends them to cell_create() as a
 * cell_config for the duration of the call, so both APIs boot cells
 * through the one path in cell.c. */
#include "runtime/cell_internal.h"
#include "runtime/vfs.h"
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define OPT_MAX_PIDS      4194304u           /* the kernel's PID_MAX_LIMIT */
#define OPT_MAX_CPU       (4096u * 1000u)
#define OPT_DEFAULT_TMPFS (64ull << 20)

struct cell_egress {
    char              *policy;
    char              *upstream_ca_file;
    cell_net_decide_fn decide;
    cell_net_event_fn  event;
    cell_net_secret_fn secret;
    void              *user;
};

struct cell_options {
    char       *image, *lane, *hostname;
    cell_limits limits;
    /* Every pointer in mounts[] (source, target, seed[] and its paths and
     * data) is owned here, allocated by the add_* calls. */
    cell_mount  mounts[ISOLATE_MAX_MOUNTS];
    size_t      n_mounts;
    /* masks[i]: cell_options_add_mask's paths for mounts[i] (owned), kept
     * beside the mounts since struct cell_mount cannot grow (ABI). */
    char      **mask_paths[ISOLATE_MAX_MOUNTS];
    struct runtime_masks masks[ISOLATE_MAX_MOUNTS];
    cell_egress *egress;        /* NULL: no network */
    /* cell_options_add_vfs: mounted after mounts[] (targets owned). */
    struct runtime_vfs_spec vfs[ISOLATE_MAX_MOUNTS];
    size_t      n_vfs;
};

const char *cell_version(void)
{
    return CELL_VERSION_STRING;
}

int cell_version_number(void)
{
    return CELL_VERSION_NUMBER;
}

/* ---- helpers ------------------------------------------------------------- */

/* *slot = a copy of value (NULL clears it). */
static int opt_set_string(char **slot, const char *value, cell_error *err)
{
    char *copy = NULL;
    if (value && !(copy = strdup(value)))
        return util_fail(err, ENOMEM, "out of memory");
    free(*slot);
    *slot = copy;
    return 0;
}

#define OPT_NEED(ptr, call) \
    do { if (!(ptr)) return util_fail(err, EINVAL, call ": the " #ptr " argument is NULL"); } while (0)

/* ---- cell_options --------------------------------------------------------- */

int cell_options_new(cell_options **out, cell_error *err)
{
    OPT_NEED(out, "cell_options_new");
    *out = calloc(1, sizeof **out);
    return *out ? 0 : util_fail(err, ENOMEM, "out of memory");
}

static void opt_free_mount(cell_mount *m)
{
    free((char *)m->source);
    free((char *)m->target);
    for (size_t i = 0; i < m->n_seed; i++) {
        free((char *)m->seed[i].path);
        free((void *)m->seed[i].data);
    }
    free((cell_seed_file *)m->seed);
}

void cell_options_free(cell_options *o)
{
    if (!o)
        return;
    free(o->image);
    free(o->lane);
    free(o->hostname);
    for (size_t i = 0; i < o->n_mounts; i++) {
        opt_free_mount(&o->mounts[i]);
        for (size_t j = 0; j < o->masks[i].n; j++)
            free(o->mask_paths[i][j]);
        free(o->mask_paths[i]);
    }
    cell_egress_free(o->egress);
    for (size_t i = 0; i < o->n_vfs; i++)
        free(o->vfs[i].target);
    free(o);
}

int cell_options_set_image(cell_options *o, const char *image, cell_error *err)
{
    OPT_NEED(o, "cell_options_set_image");
    if (image && !util_valid_name(image))
        return util_fail(err, EINVAL, "options: invalid image name '%s': use an image's name such as host or "
                         "debian-bookworm (1-63 letters, digits, '_', '-' and '.')", image);
    return opt_set_string(&o->image, image, err);
}

int cell_options_set_lane(cell_options *o, const char *lane, cell_error *err)
{
    OPT_NEED(o, "cell_options_set_lane");
    if (lane && !util_valid_name(lane))
        return util_fail(err, EINVAL, "options: invalid lane name '%s': 1-63 letters, digits, '_', '-' and '.', "
                         "not starting with '.' or '-'", lane);
    return opt_set_string(&o->lane, lane, err);
}

int cell_options_set_hostname(cell_options *o, const char *hostname, cell_error *err)
{
    OPT_NEED(o, "cell_options_set_hostname");
    if (hostname && !runtime_valid_hostname(hostname))
        return util_fail(err, EINVAL, "options: invalid hostname '%.80s%s': use 1-63 letters, digits and '-', "
                         "not starting or ending with '-'", hostname, strlen(hostname) > 80 ? "..." : "");
    return opt_set_string(&o->hostname, hostname, err);
}

int cell_options_set_memory(cell_options *o, uint64_t bytes, cell_error *err)
{
    OPT_NEED(o, "cell_options_set_memory");
    if (bytes && bytes < CELL_MIN_MEMORY)
        return util_fail(err, ERANGE, "options: memory limit of %llu bytes is below the minimum of 16 MiB "
                         "(CELL_MIN_MEMORY); use 0 for no limit", (unsigned long long)bytes);
    o->limits.memory = bytes;
    return 0;
}

int cell_options_set_pids(cell_options *o, uint32_t max, cell_error *err)
{
    OPT_NEED(o, "cell_options_set_pids");
    if (max > OPT_MAX_PIDS)
        return util_fail(err, ERANGE, "options: pids limit %u is above the kernel's maximum of %u; use 0 for "
                         "no limit", max, OPT_MAX_PIDS);
    o->limits.pids = max;
    return 0;
}

int cell_options_set_cpu(cell_options *o, uint32_t millis, cell_error *err)
{
    OPT_NEED(o, "cell_options_set_cpu");
    /* The kernel refuses a CPU quota under 1 ms per 100 ms period. */
    if (millis && (millis < CELL_MIN_CPU_MILLIS || millis > OPT_MAX_CPU))
        return util_fail(err, ERANGE, "options: cpu limit of %u millis is outside %u..%u (1000 = one CPU); use "
                         "0 for no limit", millis, CELL_MIN_CPU_MILLIS, OPT_MAX_CPU);
    o->limits.cpu_millis = millis;
    return 0;
}

int cell_options_set_disk(cell_options *o, uint64_t bytes, cell_error *err)
{
    OPT_NEED(o, "cell_options_set_disk");
    if (bytes && bytes < CELL_MIN_DISK)
        return util_fail(err, ERANGE, "options: disk size of %llu bytes is below the minimum of 1 MiB "
                         "(CELL_MIN_DISK); use 0 for the default", (unsigned long long)bytes);
    o->limits.disk = bytes;
    return 0;
}

/* A new mount at `target`, or -1 when the target is not one a cell can have. */
static cell_mount *opt_new_mount(cell_options *o, const char *call, const char *target, cell_error *err)
{
    if (!target) {
        util_fail(err, EINVAL, "%s: the target argument is NULL", call);
        return NULL;
    }
    if (runtime_check_cell_path(target, "options: mount target", err) < 0)
        return NULL;
    if (strspn(target, "/") == strlen(target)) {
        util_fail(err, EINVAL, "options: mount target '%s' would hide the cell's root; pick a directory such as "
                  "/workspace", target);
        return NULL;
    }
    if (o->n_mounts >= ISOLATE_MAX_MOUNTS) {
        util_fail(err, E2BIG, "options: too many mounts (at most %d)", ISOLATE_MAX_MOUNTS);
        return NULL;
    }
    cell_mount *m = &o->mounts[o->n_mounts];
    memset(m, 0, sizeof *m);
    if (!(m->target = strdup(target))) {
        util_fail(err, ENOMEM, "out of memory");
        return NULL;
    }
    return m;
}

/* A copy of `source` canonicalised now, when the cell is defined: cell_create
 * then refuses any symlink in it, so one swapped in later cannot redirect
 * the mount.  A source that does not resolve is kept as given (the create
 * names the problem). */
static char *opt_source(const char *source)
{
    char canon[PATH_MAX];
    return strdup(realpath(source, canon) ? canon : source);
}

int cell_options_add_bind(cell_options *o, const char *source, const char *target, unsigned flags, cell_error *err)
{
    OPT_NEED(o, "cell_options_add_bind");
    OPT_NEED(source, "cell_options_add_bind");
    if (!*source)
        return util_fail(err, EINVAL, "options: bind mount for '%s' has an empty source; name a host directory",
                         target ? target : "");
    if (flags & ~CELL_MOUNT_READONLY)
        return util_fail(err, EINVAL, "options: bind mount flags 0x%x: only CELL_MOUNT_READONLY is known", flags);
    cell_mount *m = opt_new_mount(o, "cell_options_add_bind", target, err);
    if (!m)
        return -1;
    m->kind = CELL_MOUNT_BIND;
    m->readonly = (flags & CELL_MOUNT_READONLY) != 0;
    if (!(m->source = opt_source(source))) {
        opt_free_mount(m);
        return util_fail(err, ENOMEM, "out of memory");
    }
    o->n_mounts++;
    return 0;
}

int cell_options_add_tmpfs(cell_options *o, const char *target, uint64_t size, cell_error *err)
{
    OPT_NEED(o, "cell_options_add_tmpfs");
    if (size && size < CELL_MIN_DISK)
        return util_fail(err, ERANGE, "options: tmpfs at '%s' of %llu bytes is below the minimum of 1 MiB "
                         "(CELL_MIN_DISK); use 0 for 64 MiB", target ? target : "", (unsigned long long)size);
    cell_mount *m = opt_new_mount(o, "cell_options_add_tmpfs", target, err);
    if (!m)
        return -1;
    m->kind = CELL_MOUNT_MEMORY;
    m->size = size ? size : OPT_DEFAULT_TMPFS;
    o->n_mounts++;
    return 0;
}

int cell_options_add_overlay(cell_options *o, const char *source, const char *target, uint64_t size,
                             cell_error *err)
{
    OPT_NEED(o, "cell_options_add_overlay");
    OPT_NEED(source, "cell_options_add_overlay");
    if (!*source)
        return util_fail(err, EINVAL, "options: overlay mount for '%s' has an empty source; name a host directory",
                         target ? target : "");
    if (size && size < CELL_MIN_DISK)
        return util_fail(err, ERANGE, "options: overlay at '%s' of %llu bytes is below the minimum of 1 MiB "
                         "(CELL_MIN_DISK); use 0 for 1 GiB", target ? target : "", (unsigned long long)size);
    cell_mount *m = opt_new_mount(o, "cell_options_add_overlay", target, err);
    if (!m)
        return -1;
    m->kind = CELL_MOUNT_OVERLAY;
    m->size = size;
    if (!(m->source = opt_source(source))) {
        opt_free_mount(m);
        return util_fail(err, ENOMEM, "out of memory");
    }
    o->n_mounts++;
    return 0;
}

/* The last bind or overlay mount added at `target`, or -1. */
static int opt_find_source_mount(const cell_options *o, const char *target)
{
    for (size_t i = o->n_mounts; i-- > 0;)
        if ((o->mounts[i].kind == CELL_MOUNT_BIND || o->mounts[i].kind == CELL_MOUNT_OVERLAY) &&
            strcmp(o->mounts[i].target, target) == 0)
            return (int)i;
    return -1;
}

int cell_options_add_mask(cell_options *o, const char *target, const char *path, cell_error *err)
{
    OPT_NEED(o, "cell_options_add_mask");
    OPT_NEED(target, "cell_options_add_mask");
    OPT_NEED(path, "cell_options_add_mask");
    int i = opt_find_source_mount(o, target);
    if (i < 0)
        return util_fail(err, ENOENT, "options: no bind or overlay mount at '%s' to mask '%s' in; add the mount "
                         "first", target, path);
    char what[PATH_MAX + 32];
    snprintf(what, sizeof what, "options: mount %s", target);
    if (runtime_mask_check(path, what, err) < 0)
        return -1;
    struct runtime_masks *ms = &o->masks[i];
    if (ms->n >= RUNTIME_MAX_MASKS)
        return util_fail(err, E2BIG, "options: mount %s has %d masks already, the most one mount takes", target,
                         RUNTIME_MAX_MASKS);
    for (size_t j = 0; j < ms->n; j++)
        if (runtime_mask_overlaps(ms->paths[j], path))
            return util_fail(err, EINVAL, "options: mount %s: mask '%s' overlaps mask '%s' (the same path, or "
                             "one inside the other); keep the outer one", target, path, ms->paths[j]);
    char **paths = realloc(o->mask_paths[i], (ms->n + 1) * sizeof *paths);
    if (!paths)
        return util_fail(err, ENOMEM, "out of memory");
    o->mask_paths[i] = paths;
    ms->paths = (const char *const *)paths;
    if (!(paths[ms->n] = strdup(path)))
        return util_fail(err, ENOMEM, "out of memory");
    ms->n++;
    return 0;
}

int cell_options_add_vfs(cell_options *o, const char *target, const cell_vfs_ops *ops, void *user, int tier,
                         uint32_t timeout_ms, cell_error *err)
{
    OPT_NEED(o, "cell_options_add_vfs");
    OPT_NEED(target, "cell_options_add_vfs");
    OPT_NEED(ops, "cell_options_add_vfs");
    if (runtime_check_cell_path(target, "options: vfs target", err) < 0)
        return -1;
    if (strspn(target, "/") == strlen(target))
        return util_fail(err, EINVAL, "options: vfs target '%s' would hide the cell's root; pick a directory such "
                         "as /data", target);
    if (!ops->lookup || !ops->getattr || !ops->readdir || !ops->read)
        return util_fail(err, EINVAL, "options: vfs at '%s' lacks a required operation (lookup, getattr, readdir "
                         "and read are required)", target);
    for (size_t i = 0; i < sizeof ops->reserved / sizeof *ops->reserved; i++)
        if (ops->reserved[i])
            return util_fail(err, EINVAL, "options: vfs at '%s': cell_vfs_ops.reserved[%zu] must be NULL", target, i);
    if (tier != CELL_VFS_READONLY && tier != CELL_VFS_WRITABLE && tier != CELL_VFS_POSIX)
        return util_fail(err, EINVAL, "options: vfs at '%s' has tier %d; use CELL_VFS_READONLY, CELL_VFS_WRITABLE "
                         "or CELL_VFS_POSIX", target, tier);
    if (timeout_ms > RUNTIME_VFS_MAX_TIMEOUT_MS)
        return util_fail(err, ERANGE, "options: vfs at '%s' has a timeout of %u ms, past the maximum of %u ms; use 0 "
                         "for %u ms", target, timeout_ms, RUNTIME_VFS_MAX_TIMEOUT_MS, CELL_VFS_DEFAULT_TIMEOUT_MS);
    if (o->n_mounts + o->n_vfs >= ISOLATE_MAX_MOUNTS)
        return util_fail(err, E2BIG, "options: too many mounts (at most %d)", ISOLATE_MAX_MOUNTS);
    struct runtime_vfs_spec *v = &o->vfs[o->n_vfs];
    if (!(v->target = strdup(target)))
        return util_fail(err, ENOMEM, "out of memory");
    v->ops = *ops;
    v->user = user;
    v->tier = tier;
    v->timeout_ms = timeout_ms ? timeout_ms : CELL_VFS_DEFAULT_TIMEOUT_MS;
    o->n_vfs++;
    return 0;
}

static cell_mount *opt_find_tmpfs(cell_options *o, const char *target)
{
    for (size_t i = 0; i < o->n_mounts; i++)
        if (o->mounts[i].kind == CELL_MOUNT_MEMORY && strcmp(o->mounts[i].target, target) == 0)
            return &o->mounts[i];
    return NULL;
}

int cell_options_add_seed(cell_options *o, const char *target, const char *path, const void *data, size_t size,
                          mode_t mode, cell_error *err)
{
    OPT_NEED(o, "cell_options_add_seed");
    OPT_NEED(target, "cell_options_add_seed");
    OPT_NEED(path, "cell_options_add_seed");
    if (size && !data)
        return util_fail(err, EINVAL, "cell_options_add_seed: data is NULL but size is %zu", size);
    cell_mount *m = opt_find_tmpfs(o, target);
    if (!m)
        return util_fail(err, ENOENT, "options: no tmpfs at '%s' to seed '%s' into; add it first with "
                         "cell_options_add_tmpfs", target, path);
    /* Checked like the file's path inside the cell: relative, no "..". */
    char full[PATH_MAX];
    if (!*path || path[0] == '/')
        return util_fail(err, EINVAL, "options: seed file '%s' must be a path relative to its tmpfs '%s'", path,
                         target);
    if (util_path(full, sizeof full, err, "%s/%s", target, path) < 0 ||
        runtime_check_cell_path(full, "options: seed file", err) < 0)
        return -1;
    if (mode & ~07777u)
        return util_fail(err, EINVAL, "options: seed file '%s' mode 0%o has bits beyond 07777", path, (unsigned)mode);
    cell_seed_file *seed = realloc((cell_seed_file *)m->seed, (m->n_seed + 1) * sizeof *seed);
    if (!seed)
        return util_fail(err, ENOMEM, "out of memory");
    m->seed = seed;
    cell_seed_file *s = &seed[m->n_seed];
    *s = (cell_seed_file){ .path = strdup(path), .data = malloc(size ? size : 1), .size = size, .mode = mode };
    if (!s->path || !s->data) {
        free((char *)s->path);
        free((void *)s->data);
        return util_fail(err, ENOMEM, "out of memory");
    }
    if (size)
        memcpy((void *)s->data, data, size);
    m->n_seed++;
    return 0;
}

/* ---- cell_egress ------------------------------------------------------------- */

int cell_egress_new(cell_egress **out, const char *policy_json, cell_error *err)
{
    OPT_NEED(out, "cell_egress_new");
    *out = NULL;
    cell_egress *e = calloc(1, sizeof *e);
    if (!e)
        return util_fail(err, ENOMEM, "out of memory");
    if (cell_egress_set_policy(e, policy_json, err) < 0) {
        cell_egress_free(e);
        return -1;
    }
    *out = e;
    return 0;
}

void cell_egress_free(cell_egress *e)
{
    if (!e)
        return;
    free(e->policy);
    free(e->upstream_ca_file);
    free(e);
}

int cell_egress_set_policy(cell_egress *e, const char *policy_json, cell_error *err)
{
    OPT_NEED(e, "cell_egress_set_policy");
    if (!policy_json)
        return util_fail(err, EINVAL, "egress: the policy is NULL; a cell without network needs no egress "
                         "settings (cell_options_set_egress(o, NULL))");
    cell_error pe = { 0 };
    if (cell_policy_check(policy_json, &pe) < 0)
        return util_fail(err, pe.code ? pe.code : EINVAL, "egress: policy: %s", pe.message);
    return opt_set_string(&e->policy, policy_json, err);
}

int cell_egress_set_decide(cell_egress *e, cell_net_decide_fn fn, cell_error *err)
{
    OPT_NEED(e, "cell_egress_set_decide");
    e->decide = fn;
    return 0;
}

int cell_egress_set_event(cell_egress *e, cell_net_event_fn fn, cell_error *err)
{
    OPT_NEED(e, "cell_egress_set_event");
    e->event = fn;
    return 0;
}

int cell_egress_set_secret(cell_egress *e, cell_net_secret_fn fn, cell_error *err)
{
    OPT_NEED(e, "cell_egress_set_secret");
    e->secret = fn;
    return 0;
}

int cell_egress_set_user(cell_egress *e, void *user, cell_error *err)
{
    OPT_NEED(e, "cell_egress_set_user");
    e->user = user;
    return 0;
}

int cell_egress_set_upstream_ca(cell_egress *e, const char *pem_file, cell_error *err)
{
    OPT_NEED(e, "cell_egress_set_upstream_ca");
    if (pem_file && access(pem_file, R_OK) < 0)
        return util_fail_errno(err, "egress: upstream CA file %s cannot be read", pem_file);
    return opt_set_string(&e->upstream_ca_file, pem_file, err);
}

static cell_egress *opt_egress_dup(const cell_egress *e, cell_error *err)
{
    cell_egress *copy = calloc(1, sizeof *copy);
    if (!copy) {
        util_fail(err, ENOMEM, "out of memory");
        return NULL;
    }
    *copy = (cell_egress){ .decide = e->decide, .event = e->event, .secret = e->secret, .user = e->user };
    if (opt_set_string(&copy->policy, e->policy, err) < 0 ||
        opt_set_string(&copy->upstream_ca_file, e->upstream_ca_file, err) < 0) {
        cell_egress_free(copy);
        return NULL;
    }
    return copy;
}

int cell_options_set_egress(cell_options *o, const cell_egress *e, cell_error *err)
{
    OPT_NEED(o, "cell_options_set_egress");
    cell_egress *copy = NULL;
    if (e && !(copy = opt_egress_dup(e, err)))
        return -1;
    cell_egress_free(o->egress);
    o->egress = copy;
    return 0;
}

/* ---- creating a cell --------------------------------------------------------- */

int cell_create_v2(cell_ctx *ctx, const cell_options *o, cell **out, cell_error *err)
{
    OPT_NEED(ctx, "cell_create_v2");
    OPT_NEED(o, "cell_create_v2");
    OPT_NEED(out, "cell_create_v2");
    const cell_egress *e = o->egress;
    cell_config cfg = {
        .image = o->image, .lane = o->lane, .hostname = o->hostname, .limits = o->limits,
        .mounts = o->mounts, .n_mounts = o->n_mounts,
        .policy = e ? e->policy : NULL, .net_decide = e ? e->decide : NULL, .net_event = e ? e->event : NULL,
        .net_user = e ? e->user : NULL, .net_secret = e ? e->secret : NULL,
        .upstream_ca_file = e ? e->upstream_ca_file : NULL,
    };
    return runtime_cell_create_vfs(ctx, &cfg, o->masks, o->vfs, o->n_vfs, out, err);
}
