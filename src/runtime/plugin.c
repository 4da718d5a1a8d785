/* plugin.c: libcell's entry points into its plugins (plugin.h): the net.h
 * API that cell.c uses, the policy checks and lane export/import of
 * include/cell.h, each forwarded to a table that is linked in or loaded on
 * first use. */
#include "runtime/plugin.h"
#include "runtime/runtime.h"
#include "runtime/vfs.h"
#include "util/util.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <unistd.h>

/* Weak: present only when the program is linked with $(LIBCELL_BUILTINS)
 * (the tables) or with the plugins' blobs (the lean `cell`). */
extern const runtime_net_ops runtime_net_builtin __attribute__((weak));
extern const runtime_archive_ops runtime_archive_builtin __attribute__((weak));
extern const char cell_net_plugin_blob_start[] __attribute__((weak));
extern const char cell_net_plugin_blob_end[] __attribute__((weak));
extern const char cell_archive_plugin_blob_start[] __attribute__((weak));
extern const char cell_archive_plugin_blob_end[] __attribute__((weak));
extern const runtime_vfs_ops runtime_vfs_builtin __attribute__((weak));
extern const char cell_vfs_plugin_blob_start[] __attribute__((weak));
extern const char cell_vfs_plugin_blob_end[] __attribute__((weak));

struct plugin {
    const char     *name;
    const char     *start, *end;     /* the embedded .so */
    size_t          size;            /* the table's size in this build */
    const void     *host;
    pthread_once_t  once;
    const void     *ops;
    cell_error      why;             /* why it could not be loaded */
};

/* The handle stays open for the life of the process: the table points into it. */
static void plugin_load(struct plugin *p)
{
    if (!p->start || p->end <= p->start) {
        util_fail(&p->why, ENOSYS, "this program has no %s support (libcell plugin not linked in)", p->name);
        return;
    }
    int fd = util_sealed_memfd(p->name, p->start, (size_t)(p->end - p->start), &p->why);
    if (fd < 0)
        return;
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    void *h = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    /* A loaded plugin keeps its memfd open for the life of the process:
     * the dynamic linker knows objects by name, and a second plugin's
     * memfd given the same fd number ("/proc/self/fd/N" again) would be
     * taken for the first one, whose table then fails the size check. */
    if (!h) {
        close(fd);
        const char *m = dlerror();
        util_fail(&p->why, ELIBACC, "cannot load %s: %s", p->name, m ? m : "dlopen failed");
        return;
    }
    runtime_plugin_entry_fn entry = (runtime_plugin_entry_fn)dlsym(h, RUNTIME_PLUGIN_ENTRY);
    const void *ops = entry ? entry(p->host) : NULL;
    /* Built with this program and embedded in it, so a mismatch is a build error. */
    if (!ops || *(const size_t *)ops != p->size) {
        util_fail(&p->why, ELIBBAD, "%s: not the plugin this program was built with", p->name);
        dlclose(h);
        close(fd);
        return;
    }
    p->ops = ops;
}

static const void *plugin_get(struct plugin *p, void (*once)(void), cell_error *err)
{
    pthread_once(&p->once, once);
    if (!p->ops && err)
        *err = p->why;
    return p->ops;
}

/* ---- net ------------------------------------------------------------------ */
static struct plugin net_plugin = { .name = "libcell-net.so", .size = sizeof(runtime_net_ops),
                                    .once = PTHREAD_ONCE_INIT };

static void net_once(void)
{
    if (&runtime_net_builtin) {
        net_plugin.ops = &runtime_net_builtin;
        return;
    }
    net_plugin.start = cell_net_plugin_blob_start;
    net_plugin.end = cell_net_plugin_blob_end;
    plugin_load(&net_plugin);
}

const runtime_net_ops *runtime_net(cell_error *err)
{
    return plugin_get(&net_plugin, net_once, err);
}

/* net_engine exists only once a plugin made one: no load needed below. */
int net_engine_start(net_engine **out, int netns_fd, const char *cell_id, const char *policy_json,
                     const net_hooks *hooks, cell_error *err)
{
    const runtime_net_ops *n = runtime_net(err);
    *out = NULL;
    return n ? n->engine_start(out, netns_fd, cell_id, policy_json, hooks, err) : -1;
}

int net_engine_set_policy(net_engine *e, const char *policy_json, cell_error *err)
{
    return runtime_net(NULL)->engine_set_policy(e, policy_json, err);
}

int net_engine_ca_pem(net_engine *e, char **pem, size_t *len, cell_error *err)
{
    return runtime_net(NULL)->engine_ca_pem(e, pem, len, err);
}

pid_t net_engine_pid(net_engine *e)
{
    return runtime_net(NULL)->engine_pid(e);
}

void net_engine_stop(net_engine *e)
{
    if (e)
        runtime_net(NULL)->engine_stop(e);
}

int cell_policy_check(const char *policy_json, cell_error *err)
{
    const runtime_net_ops *n = runtime_net(err);
    return n ? n->policy_check(policy_json, err) : -1;
}

int cell_policy_check_v2(const char *policy_json, const char *const *owner_allow, cell_error *err)
{
    const runtime_net_ops *n = runtime_net(err);
    return n ? n->policy_check_v2(policy_json, owner_allow, err) : -1;
}

/* Fails closed: without the plugin every destination is refused. */
const char *cell_net_screen(const struct sockaddr *dst, const char *const *owner_allow)
{
    const runtime_net_ops *n = runtime_net(NULL);
    return n ? n->screen(dst, owner_allow) : "network support could not be loaded";
}

/* ---- archive -------------------------------------------------------------- */
static const runtime_archive_host archive_host = {
    .lane_find = runtime_lane_find,
    .lane_begin = runtime_lane_begin,
    .lane_commit = runtime_lane_commit,
    .lane_open_upper = runtime_lane_open_upper,
    .lane_lock = runtime_lane_lock,
};

static struct plugin archive_plugin = { .name = "libcell-archive.so", .size = sizeof(runtime_archive_ops),
                                        .host = &archive_host, .once = PTHREAD_ONCE_INIT };

static void archive_once(void)
{
    if (&runtime_archive_builtin) {
        archive_plugin.ops = &runtime_archive_builtin;
        return;
    }
    archive_plugin.start = cell_archive_plugin_blob_start;
    archive_plugin.end = cell_archive_plugin_blob_end;
    plugin_load(&archive_plugin);
}

const runtime_archive_ops *runtime_archive(cell_error *err)
{
    return plugin_get(&archive_plugin, archive_once, err);
}

int cell_lane_export(cell_ctx *ctx, const char *name, int fd, cell_error *err)
{
    const runtime_archive_ops *a = runtime_archive(err);
    return a ? a->lane_export(ctx, name, fd, err) : -1;
}

int cell_lane_import_sized(cell_ctx *ctx, const char *name, const char *image, uint64_t disk_size, int fd,
                           cell_error *err)
{
    const runtime_archive_ops *a = runtime_archive(err);
    return a ? a->lane_import(ctx, name, image, disk_size, fd, err) : -1;
}

int cell_lane_import(cell_ctx *ctx, const char *name, const char *image, int fd, cell_error *err)
{
    return cell_lane_import_sized(ctx, name, image, 0, fd, err);
}

/* ---- vfs ------------------------------------------------------------------ */
static struct plugin vfs_plugin = { .name = "libcell-vfs.so", .size = sizeof(runtime_vfs_ops),
                                    .once = PTHREAD_ONCE_INIT };

static void vfs_once(void)
{
    if (&runtime_vfs_builtin) {
        vfs_plugin.ops = &runtime_vfs_builtin;
        return;
    }
    vfs_plugin.start = cell_vfs_plugin_blob_start;
    vfs_plugin.end = cell_vfs_plugin_blob_end;
    plugin_load(&vfs_plugin);
}

const runtime_vfs_ops *runtime_vfs(cell_error *err)
{
    return plugin_get(&vfs_plugin, vfs_once, err);
}
