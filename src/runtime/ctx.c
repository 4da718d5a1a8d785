/* ctx.c: the library context: the state directory, the sealed copy of
 * cell-init every cell execs, and the seccomp program every cell installs
 * (compiled at build time, src/seccompgen). */
#include "runtime/runtime.h"
#include "isolate/isolate.h"
#include "util/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>

const char *cell_default_state_dir(void)
{
    static char buf[PATH_MAX];
    const char *env = getenv("CELL_STATE");
    if (env && *env)
        return env;
    /* Run from a checkout (build/cell): keep state beside the sources. */
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n > 0) {
        exe[n] = '\0';
        char *dir = dirname(exe);           /* .../build */
        char probe[PATH_MAX];
        char *top = dirname(strdupa(dir));  /* checkout root */
        if (snprintf(probe, sizeof probe, "%s/src/init/proto.h", top) < (int)sizeof probe &&
            access(probe, F_OK) == 0 && snprintf(buf, sizeof buf, "%s/var", top) < (int)sizeof buf)
            return buf;
    }
    return "/var/lib/cell";
}

/* The nosuid filter travels to cell-init as a sealed memfd of raw BPF
 * instructions, which init installs in the processes it spawns.  Made on
 * first use: most contexts (a `cell run` without a read-write --mount)
 * never need it. */
int runtime_nosuid_fd(cell_ctx *ctx, cell_error *err)
{
    if (ctx->nosuid_memfd < 0) {
        struct sock_fprog cell_prog, nosuid;
        isolate_seccomp_prebuilt(&cell_prog, &nosuid);
        ctx->nosuid_memfd = util_sealed_memfd("cell-nosuid-filter", nosuid.filter,
                                              nosuid.len * sizeof *nosuid.filter, err);
    }
    return ctx->nosuid_memfd;
}

/* The state directory's layout.  Once a leaf exists so do its parents, so
 * an existing layout costs one mkdir() per leaf. */
static int make_layout(const cell_ctx *ctx, cell_error *err)
{
    static const char *const leaves[] = { "/images", "/lanes", "/run/cells" };
    for (size_t i = 0; i < sizeof leaves / sizeof *leaves; i++) {
        char p[PATH_MAX];
        if (util_path(p, sizeof p, err, "%s%s", ctx->state_dir, leaves[i]) < 0)
            return -1;
        if (mkdir(p, 0700) == 0 || errno == EEXIST)
            continue;
        if (errno != ENOENT)
            return util_fail_errno(err, "cannot create directory %s", p);
        if (util_mkdir_p(p, 0700, err) < 0)
            return -1;
    }
    return 0;
}

int runtime_userns_for_slot(cell_ctx *ctx, uid_t base, cell_error *err)
{
    uint32_t slot = (base - ISOLATE_UID_FIRST) / ISOLATE_UID_COUNT;
    if (slot >= ISOLATE_MAX_SLOTS)
        return util_fail(err, EINVAL, "uid base %u is not a cell range", (unsigned)base);
    if (ctx->userns_by_slot[slot] < 0 &&
        isolate_userns_create(base, ISOLATE_UID_COUNT, &ctx->userns_by_slot[slot], err) < 0)
        return -1;
    return ctx->userns_by_slot[slot];
}

/* Call fn(path, name) for every entry of state_dir/sub but "." and "..". */
static void for_each_entry(cell_ctx *ctx, const char *sub, void (*fn)(const char *path, const char *name))
{
    char dir[PATH_MAX];
    if (util_path(dir, sizeof dir, NULL, "%s/%s", ctx->state_dir, sub) < 0)
        return;
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        char path[PATH_MAX];
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
            util_path(path, sizeof path, NULL, "%s/%s", dir, e->d_name) >= 0)
            fn(path, e->d_name);
    }
    closedir(d);
}

/* A scratch dir whose owner died (its lock is free): remove it and the
 * cell's cgroups.  The directory is its own lock (cell.c); a hidden ".new-"
 * one is being set up, and only one left for a minute is from a crash. */
static void sweep_stale_cell(const char *path, const char *name)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || flock(fd, LOCK_EX | LOCK_NB) < 0 || fstat(fd, &st) < 0)
        return;
    if (name[0] == '.') {
        if (time(NULL) - st.st_mtime >= 60)
            rmdir(path);
        return;
    }
    isolate_cgroup_sweep(name);
    util_rm_rf(path, NULL);
}

/* Lanes are built and deleted under hidden names (lane.c); a crash leaves
 * one behind.  An hour-old one has no live owner. */
static void sweep_stale_lane_dir(const char *path, const char *name)
{
    struct stat st;
    if (name[0] != '.' || (!strstr(name, ".tmp-") && !strstr(name, ".deleted-")) || lstat(path, &st) < 0 ||
        !S_ISDIR(st.st_mode) || time(NULL) - st.st_mtime < 3600)
        return;
    util_rm_rf(path, NULL);
}

int cell_ctx_open(cell_ctx **out, const char *state_dir, cell_error *err)
{
    if (geteuid() != 0)
        return util_fail(err, EPERM, "cell must run as root (it maps each cell to its own unprivileged uid range)");
    cell_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx)
        return util_fail(err, ENOMEM, "out of memory");
    ctx->init_memfd = ctx->nosuid_memfd = -1;
    ctx->userns_by_slot = malloc(ISOLATE_MAX_SLOTS * sizeof *ctx->userns_by_slot);
    if (!ctx->userns_by_slot) {
        free(ctx);
        return util_fail(err, ENOMEM, "out of memory");
    }
    for (unsigned i = 0; i < ISOLATE_MAX_SLOTS; i++)
        ctx->userns_by_slot[i] = -1;
    if (!state_dir || !*state_dir)
        state_dir = cell_default_state_dir();
    if (util_path(ctx->state_dir, sizeof ctx->state_dir, err, "%s", state_dir) < 0)
        goto fail;
    if (make_layout(ctx, err) < 0)
        goto fail;
    /* Canonical: bind sources made from it (the daemon's agent cache) must
     * hold no symlink (cell.c's check_mount). */
    char canon[PATH_MAX];
    if (!realpath(ctx->state_dir, canon)) {
        util_fail_errno(err, "cannot resolve the state directory %s", ctx->state_dir);
        goto fail;
    }
    if (util_path(ctx->state_dir, sizeof ctx->state_dir, err, "%s", canon) < 0)
        goto fail;
    /* Lanes hold files owned by in-cell root (host uid 0 on disk, possibly
     * setuid): only root may ever traverse the state directory. */
    if (chmod(ctx->state_dir, 0700) < 0) {
        util_fail_errno(err, "cannot chmod 0700 %s", ctx->state_dir);
        goto fail;
    }
    if ((ctx->init_memfd = runtime_init_exe(err)) < 0)
        goto fail;
    /* Both filters were compiled by make (src/seccompgen): building them
     * with libseccomp here cost every process about half a millisecond. */
    struct sock_fprog nosuid;
    isolate_seccomp_prebuilt(&ctx->seccomp, &nosuid);
    for_each_entry(ctx, "run/cells", sweep_stale_cell);
    for_each_entry(ctx, "lanes", sweep_stale_lane_dir);
    *out = ctx;
    return 0;
fail:
    cell_ctx_close(ctx);
    return -1;
}

void cell_ctx_close(cell_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->init_memfd >= 0)
        close(ctx->init_memfd);
    if (ctx->nosuid_memfd >= 0)
        close(ctx->nosuid_memfd);
    for (unsigned i = 0; ctx->userns_by_slot && i < ISOLATE_MAX_SLOTS; i++)
        if (ctx->userns_by_slot[i] >= 0)
            close(ctx->userns_by_slot[i]);
    free(ctx->userns_by_slot);
    free(ctx);
}

const char *cell_ctx_state_dir(const cell_ctx *ctx)
{
    return ctx->state_dir;
}
