/* image.c: the image catalogue.  "host" is generated on demand from the
 * host's /usr plus a minimal /etc; "debian-bookworm" and "desktop" (the same
 * with an X desktop, docs/desktop.md) are built by debootstrap. */
#include "runtime/image_meta.h"
#include "runtime/runtime.h"
#include "util/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

const char *const runtime_image_names[] = { "host", "debian-bookworm", "desktop", NULL };

/* Bumped whenever the generated host tree changes, so old states rebuild. */
#define HOST_IMAGE_VERSION "2"

static int builtin_image(const char *name)
{
    for (const char *const *n = runtime_image_names; *n; n++)
        if (name && strcmp(*n, name) == 0)
            return 1;
    return 0;
}

static int image_dir(cell_ctx *ctx, const char *name, char *out, size_t size, cell_error *err)
{
    return util_path(out, size, err, "%s/images/%s", ctx->state_dir, name) < 0 ? -1 : 0;
}

/* An imported or committed image (image_meta.h): complete once its
 * directory exists, since it is renamed into place whole with its image.json. */
static int stored_image(cell_ctx *ctx, const char *name)
{
    char path[PATH_MAX];
    if (!name || runtime_image_meta_check_name(name, NULL) < 0 ||
        util_path(path, sizeof path, NULL, "%s/images/%s/image.json", ctx->state_dir, name) < 0)
        return 0;
    return access(path, F_OK) == 0;
}

static int known_image(cell_ctx *ctx, const char *name)
{
    return builtin_image(name) || stored_image(ctx, name);
}

static int is_ready(const char *dir, const char *want)
{
    char path[PATH_MAX], *text = NULL;
    if (snprintf(path, sizeof path, "%s/ready", dir) >= (int)sizeof path)
        return 0;
    if (util_read_file(path, 256, &text, NULL, NULL) < 0)
        return 0;
    int ok = !want || strcmp(text, want) == 0;
    free(text);
    return ok;
}

struct gen_file {
    const char *path;
    const char *text;
    mode_t      mode;
};

/* The whole of the host image's own /etc: no account, key or config of the
 * host's leaks in; only what programs need to start. */
static const struct gen_file host_etc[] = {
    { "etc/passwd", "root:x:0:0:root:/root:/bin/bash\n"
                    "user:x:1000:1000:cell user:/home/user:/bin/bash\n"
                    "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n", 0644 },
    { "etc/group", "root:x:0:\ntty:x:5:\nusers:x:100:\nuser:x:1000:\nnogroup:x:65534:\n", 0644 },
    { "etc/shadow", "root:*:19000:0:99999:7:::\nuser:*:19000:0:99999:7:::\nnobody:*:19000:0:99999:7:::\n", 0640 },
    { "etc/hosts", "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n", 0644 },
    { "etc/resolv.conf", "", 0644 },
    { "etc/nsswitch.conf", "passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"
                           "networks: files\nprotocols: files\nservices: files\n", 0644 },
    { "etc/hostname", "cell\n", 0644 },
    { "etc/profile", "export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n"
                     "export PS1='\\u@\\h:\\w\\$ '\n", 0644 },
    { NULL, NULL, 0 },
};

static const char *const host_dirs[] = { "usr", "proc", "dev", "sys", "tmp", "root", "home", "home/user",
                                         "var", "var/tmp", "var/lib", "var/cache", "var/log", "run", "mnt",
                                         "opt", "srv", "etc", "etc/ssl", "etc/ssl/certs", "etc/alternatives",
                                         "etc/ld.so.conf.d", NULL };

/* Harmless host files that make programs work as on the host: the loader
 * cache, Debian's alternatives symlinks, CA certificates, OS identity. */
static const char *const host_copies[] = { "etc/ld.so.cache", "etc/ld.so.conf", "etc/debian_version",
                                           "etc/ssl/certs/ca-certificates.crt", "etc/bash.bashrc",
                                           "etc/inputrc", "etc/mime.types", NULL };

static int copy_file(const char *from, const char *to, cell_error *err)
{
    struct stat st;
    if (lstat(from, &st) < 0)
        return errno == ENOENT ? 0 : util_fail_errno(err, "cannot stat %s", from);
    if (S_ISLNK(st.st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlink(from, target, sizeof target - 1);
        if (n < 0)
            return util_fail_errno(err, "cannot read link %s", from);
        target[n] = '\0';
        if (symlink(target, to) < 0)
            return util_fail_errno(err, "cannot create link %s", to);
        return 0;
    }
    /* Only what any host user may read: the image is readable by the cell's
     * root, so a host file only root may read must not be copied in. */
    if (!S_ISREG(st.st_mode) || !(st.st_mode & S_IROTH))
        return 0;
    char *data = NULL;
    size_t len = 0;
    if (util_read_file(from, 64u << 20, &data, &len, err) < 0)
        return -1;
    int rc = util_write_file(to, data, len, st.st_mode & 0644, 0, err);
    free(data);
    return rc;
}

/* Copy every symlink of a host directory (alternatives, ld.so.conf.d). */
static int copy_dir_entries(const char *from, const char *to, cell_error *err)
{
    DIR *d = opendir(from);
    if (!d)
        return errno == ENOENT ? 0 : util_fail_errno(err, "cannot open %s", from);
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char a[PATH_MAX], b[PATH_MAX];
        if (util_path(a, sizeof a, err, "%s/%s", from, e->d_name) < 0 ||
            util_path(b, sizeof b, err, "%s/%s", to, e->d_name) < 0 || copy_file(a, b, err) < 0)
            rc = -1;
    }
    closedir(d);
    return rc;
}

static int generate_host(const char *root, cell_error *err)
{
    char p[PATH_MAX];
    for (const char *const *d = host_dirs; *d; d++)
        if (util_path(p, sizeof p, err, "%s/%s", root, *d) < 0 || util_mkdir_p(p, 0755, err) < 0)
            return -1;
    static const struct { const char *dir; mode_t mode; } modes[] = {
        { "tmp", 01777 }, { "var/tmp", 01777 }, { "root", 0700 },
    };
    for (size_t i = 0; i < sizeof modes / sizeof *modes; i++)
        if (util_path(p, sizeof p, err, "%s/%s", root, modes[i].dir) < 0 || chmod(p, modes[i].mode) < 0)
            return util_fail_errno(err, "cannot chmod %s", p);
    if (util_path(p, sizeof p, err, "%s/home/user", root) < 0 || chown(p, 1000, 1000) < 0)
        return util_fail_errno(err, "cannot chown %s", p);
    /* Merged-/usr hosts: /bin, /lib... are links into /usr; keep them. */
    static const char *const top_links[] = { "bin", "sbin", "lib", "lib32", "lib64", "libx32", NULL };
    for (const char *const *l = top_links; *l; l++) {
        char host[PATH_MAX], target[PATH_MAX];
        snprintf(host, sizeof host, "/%s", *l);
        ssize_t n = readlink(host, target, sizeof target - 1);
        if (n < 0)
            continue; /* absent, or a real directory (not merged-/usr): not shown */
        target[n] = '\0';
        if (util_path(p, sizeof p, err, "%s/%s", root, *l) < 0 || symlink(target, p) < 0)
            return util_fail_errno(err, "cannot create link %s", p);
    }
    for (const struct gen_file *f = host_etc; f->path; f++)
        if (util_path(p, sizeof p, err, "%s/%s", root, f->path) < 0 ||
            util_write_file(p, f->text, strlen(f->text), f->mode, 0, err) < 0)
            return -1;
    for (const char *const *c = host_copies; *c; c++) {
        char from[PATH_MAX];
        snprintf(from, sizeof from, "/%s", *c);
        if (util_path(p, sizeof p, err, "%s/%s", root, *c) < 0 || copy_file(from, p, err) < 0)
            return -1;
    }
    if (util_path(p, sizeof p, err, "%s/etc/alternatives", root) < 0 || copy_dir_entries("/etc/alternatives", p, err) < 0)
        return -1;
    if (util_path(p, sizeof p, err, "%s/etc/ld.so.conf.d", root) < 0 || copy_dir_entries("/etc/ld.so.conf.d", p, err) < 0)
        return -1;
    if (util_path(p, sizeof p, err, "%s/etc/os-release", root) < 0 || symlink("../usr/lib/os-release", p) < 0)
        return util_fail_errno(err, "cannot create %s", p);
    return 0;
}

static int ensure_host(cell_ctx *ctx, cell_error *err)
{
    char dir[PATH_MAX], tmp[PATH_MAX], root[PATH_MAX], ready[PATH_MAX], suffix[17];
    if (image_dir(ctx, "host", dir, sizeof dir, err) < 0)
        return -1;
    if (is_ready(dir, HOST_IMAGE_VERSION))
        return 0;
    /* Two owners on a fresh state directory would otherwise both generate
     * it, and the second rename would pull the tree from under the first
     * one's booting cell.  The loser of the lock finds it ready. */
    char lock_path[PATH_MAX];
    if (util_path(lock_path, sizeof lock_path, err, "%s/images/.host.lock", ctx->state_dir) < 0)
        return -1;
    _cleanup_close_ int lock = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock < 0 || flock(lock, LOCK_EX) < 0)
        return util_fail_errno(err, "cannot lock %s", lock_path);
    if (is_ready(dir, HOST_IMAGE_VERSION))
        return 0;
    if (util_random_hex(suffix, 8) < 0)
        return util_fail_errno(err, "getrandom");
    if (util_path(tmp, sizeof tmp, err, "%s/images/.host.tmp-%s", ctx->state_dir, suffix) < 0 ||
        util_path(root, sizeof root, err, "%s/rootfs", tmp) < 0 ||
        util_path(ready, sizeof ready, err, "%s/ready", tmp) < 0)
        return -1;
    if (util_mkdir_p(root, 0755, err) < 0 || generate_host(root, err) < 0 ||
        util_write_file(ready, HOST_IMAGE_VERSION, strlen(HOST_IMAGE_VERSION), 0644, 1, err) < 0) {
        util_rm_rf(tmp, NULL);
        return -1;
    }
    /* Replace an old version atomically enough: a concurrent reader sees
     * either the old tree or the new one. */
    char old[PATH_MAX];
    if (util_path(old, sizeof old, err, "%s/images/.host.old-%s", ctx->state_dir, suffix) < 0)
        return -1;
    if (rename(dir, old) < 0 && errno != ENOENT) {
        util_rm_rf(tmp, NULL);
        return util_fail_errno(err, "cannot replace %s", dir);
    }
    if (rename(tmp, dir) < 0) {
        int saved = errno;
        util_rm_rf(tmp, NULL);
        errno = saved;
        return util_fail_errno(err, "cannot install %s", dir);
    }
    util_rm_rf(old, NULL);
    return 0;
}

int runtime_image_rootfs(cell_ctx *ctx, const char *name, char *out, size_t size, cell_error *err)
{
    if (!known_image(ctx, name))
        return util_fail(err, ENOENT, "unknown image '%s' (builtin images: host, debian-bookworm, desktop; "
                         "`cell image ls` lists the others)", name ? name : "");
    if (strcmp(name, "host") == 0 && ensure_host(ctx, err) < 0)
        return -1;
    char dir[PATH_MAX];
    if (image_dir(ctx, name, dir, sizeof dir, err) < 0)
        return -1;
    if (!builtin_image(name))
        return util_path(out, size, err, "%s/rootfs", dir) < 0 ? -1 : 0;
    if (!is_ready(dir, NULL))
        return util_fail(err, ENOENT, "image '%s' is not built yet: run `cell image build %s`", name, name);
    return util_path(out, size, err, "%s/rootfs", dir) < 0 ? -1 : 0;
}

int cell_image_status(cell_ctx *ctx, const char *name, cell_error *err)
{
    if (!known_image(ctx, name))
        return util_fail(err, ENOENT, "unknown image '%s' (builtin images: host, debian-bookworm, desktop; "
                         "`cell image ls` lists the others)", name ? name : "");
    if (strcmp(name, "host") == 0 || !builtin_image(name))
        return 1; /* host: generated on first use; stored images: complete once present */
    char dir[PATH_MAX];
    if (image_dir(ctx, name, dir, sizeof dir, err) < 0)
        return -1;
    return is_ready(dir, NULL);
}

int cell_image_build(cell_ctx *ctx, const char *name, cell_progress_fn progress, void *user, cell_error *err)
{
    if (stored_image(ctx, name))
        return util_fail(err, EINVAL, "image '%s' was imported or committed: there is nothing to build", name);
    if (!builtin_image(name))
        return util_fail(err, ENOENT, "unknown image '%s' (known images: host, debian-bookworm, desktop)", name ? name : "");
    if (strcmp(name, "host") == 0) {
        if (progress)
            progress(user, "image host is generated from this host's /usr; nothing to download");
        return ensure_host(ctx, err);
    }
    return runtime_image_build_debian(ctx, name, progress, user, err);
}
