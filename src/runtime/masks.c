/* masks.c: masks in mounts (cell_options_add_mask): paths inside a bind or
 * overlay mount's source that the cell must not see.  Here: the check of a
 * mask's text when it is defined, and of the host tree when the cell is
 * created (symlinks, hard links, a second mount of the same tree); boot.c
 * builds the masks in the cell's mount namespace. */
#include "runtime/cell_internal.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Bounds of the hard-link search (only run when a masked file has more
 * than one link): past them the create is refused rather than unchecked. */
#define MASK_WALK_MAX_ENTRIES 2000000u
#define MASK_WALK_MAX_DEPTH   256

int runtime_mask_check(const char *path, const char *what, cell_error *err)
{
    if (!path || !*path)
        return util_fail(err, EINVAL, "%s: the mask is empty; name a path relative to the mount's source, such as "
                         ".env", what);
    size_t len = strlen(path);
    if (len > RUNTIME_MASK_MAX_LEN)
        return util_fail(err, EINVAL, "%s: the mask is %zu bytes long, over the limit of %d", what, len,
                         RUNTIME_MASK_MAX_LEN);
    if (path[0] == '/')
        return util_fail(err, EINVAL, "%s: mask '%s' is absolute; a mask is relative to the mount's source "
                         "(e.g. .git/config)", what, path);
    for (const char *p = path;;) {
        size_t n = strcspn(p, "/");
        if (n == 0)
            return util_fail(err, EINVAL, "%s: mask '%s' has an empty component (a doubled or trailing '/'); "
                             "write it as a/b", what, path);
        if (n > NAME_MAX)
            return util_fail(err, EINVAL, "%s: mask '%s' has a component longer than %d bytes", what, path,
                             NAME_MAX);
        if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
            return util_fail(err, EINVAL, "%s: mask '%s' has a '%.*s' component; a mask names a path inside its "
                             "mount, without '.' or '..'", what, path, (int)n, p);
        if (!p[n])
            return 0;
        p += n + 1;
    }
}

int runtime_mask_overlaps(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b), n = la < lb ? la : lb;
    if (strncmp(a, b, n) != 0)
        return 0;
    return la == lb || (la < lb ? b[la] : a[lb]) == '/';
}

/* 1 if rel (relative to the mount's source) is a mask or lies under one. */
static int mask_covers(const struct isolate_mount *m, const char *rel)
{
    for (size_t i = 0; i < m->n_masks; i++) {
        size_t n = strlen(m->masks[i]);
        if (strncmp(rel, m->masks[i], n) == 0 && (rel[n] == '\0' || rel[n] == '/'))
            return 1;
    }
    return 0;
}

/* ---- the hard-link search ---------------------------------------------------- */

struct mask_inode {
    dev_t dev;
    ino_t ino;
};

struct mask_walk {
    const struct isolate_mount *m;
    struct mask_inode *inodes;      /* files under masks with more than one link */
    size_t n, cap;
    size_t entries;
    int collect;                    /* 1: fill inodes; 0: look for their other links */
    char rel[PATH_MAX];             /* the entry's path relative to the source */
};

static int mask_walk_found(struct mask_walk *w, const struct stat *st)
{
    for (size_t i = 0; i < w->n; i++)
        if (w->inodes[i].dev == st->st_dev && w->inodes[i].ino == st->st_ino)
            return 1;
    return 0;
}

static int mask_walk_add(struct mask_walk *w, const struct stat *st, cell_error *err)
{
    if (mask_walk_found(w, st))
        return 0;
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 16;
        struct mask_inode *p = realloc(w->inodes, cap * sizeof *p);
        if (!p)
            return util_fail(err, ENOMEM, "out of memory");
        w->inodes = p;
        w->cap = cap;
    }
    w->inodes[w->n++] = (struct mask_inode){ st->st_dev, st->st_ino };
    return 0;
}

/* A file with more than one link: collect it (under a mask), or refuse the
 * mount when it is another link, outside every mask, to a masked file. */
static int mask_walk_file(struct mask_walk *w, const struct stat *st, cell_error *err)
{
    if (w->collect)
        return mask_walk_add(w, st, err);
    if (mask_walk_found(w, st) && !mask_covers(w->m, w->rel))
        return util_fail(err, EMLINK, "mount %s: '%s' is a hard link to a masked file and would show its content "
                         "in the cell; remove the link or mask it too", w->m->target, w->rel);
    return 0;
}

/* 1 if a directory on st_dev may hold a link to a collected inode. */
static int mask_walk_dev(const struct mask_walk *w, dev_t dev)
{
    if (w->collect)
        return 1;
    for (size_t i = 0; i < w->n; i++)
        if (w->inodes[i].dev == dev)
            return 1;
    return 0;
}

/* Every entry below the directory `dir` (consumed), w->rel its path. */
static int mask_walk_dir(struct mask_walk *w, int dir, int depth, cell_error *err)
{
    if (depth > MASK_WALK_MAX_DEPTH) {
        close(dir);
        return util_fail(err, ELOOP, "mount %s: '%s' is nested deeper than %d directories, too deep to search for "
                         "hard links to its masked files", w->m->target, w->rel, MASK_WALK_MAX_DEPTH);
    }
    DIR *d = fdopendir(dir);
    if (!d) {
        close(dir);
        return util_fail_errno(err, "mount %s: cannot list '%s'", w->m->target, w->rel);
    }
    size_t base = strlen(w->rel);
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (errno = 0, e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        if (++w->entries > MASK_WALK_MAX_ENTRIES) {
            rc = util_fail(err, E2BIG, "mount %s: more than %u files to search for hard links to its masked "
                           "files", w->m->target, MASK_WALK_MAX_ENTRIES);
            break;
        }
        if (snprintf(w->rel + base, sizeof w->rel - base, "%s%s", base ? "/" : "", e->d_name) >=
            (int)(sizeof w->rel - base)) {
            rc = util_fail(err, ENAMETOOLONG, "mount %s: a path below '%s' is too long", w->m->target, w->rel);
            break;
        }
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0) {
            rc = errno == ENOENT ? 0 : util_fail_errno(err, "mount %s: cannot stat '%s'", w->m->target, w->rel);
        } else if (S_ISDIR(st.st_mode)) {
            if (mask_walk_dev(w, st.st_dev)) {
                int sub = openat(dirfd(d), e->d_name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                if (sub < 0)
                    rc = util_fail_errno(err, "mount %s: cannot open '%s'", w->m->target, w->rel);
                else
                    rc = mask_walk_dir(w, sub, depth + 1, err);
            }
        } else if (st.st_nlink > 1) {
            rc = mask_walk_file(w, &st, err);
        }
        w->rel[base] = '\0';
    }
    if (rc == 0 && errno)
        rc = util_fail_errno(err, "mount %s: cannot list '%s'", w->m->target, w->rel);
    closedir(d);
    return rc;
}

/* ---- per mount ----------------------------------------------------------------- */

/* Open mask `path` below the source with no symlink anywhere (*fd -1 when
 * it does not exist); a symlink mask or component is refused. */
static int mask_open(const struct isolate_mount *m, const char *path, int *fd, struct stat *st, cell_error *err)
{
    struct open_how how = { .flags = O_PATH | O_NOFOLLOW | O_CLOEXEC,
                            .resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS };
    *fd = (int)syscall(SYS_openat2, m->src_fd, path, &how, sizeof how);
    if (*fd < 0 && (errno == ENOENT || errno == ENOTDIR))
        return 0;
    if (*fd < 0 && errno == ELOOP)
        return util_fail(err, ELOOP, "mount %s: mask '%s' passes through a symbolic link in %s (refused: a link "
                         "could point the mask elsewhere); mask the real path", m->target, path, m->source);
    if (*fd < 0)
        return util_fail_errno(err, "mount %s: cannot open mask '%s' in %s", m->target, path, m->source);
    if (fstat(*fd, st) < 0)
        return util_fail_errno(err, "mount %s: cannot stat mask '%s'", m->target, path);
    if (S_ISLNK(st->st_mode))
        return util_fail(err, ELOOP, "mount %s: mask '%s' is a symbolic link; masking it would not hide what it "
                         "points to, so mask the target's path instead", m->target, path);
    /* An empty copy mounted over it: only files and directories have one. */
    if (m->kind == CELL_MOUNT_BIND && !m->readonly && !S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode))
        return util_fail(err, EINVAL, "mount %s: mask '%s' is neither a file nor a directory; a read-write mount "
                         "can mask only those", m->target, path);
    return 0;
}

static int masks_check_mount(struct isolate_mount *m, cell_error *err)
{
    struct stat st;
    if (fstat(m->src_fd, &st) < 0)
        return util_fail_errno(err, "cannot stat mount source %s", m->source);
    if (!S_ISDIR(st.st_mode))
        return util_fail(err, ENOTDIR, "mount %s: masks need a directory source, and %s is not one", m->target,
                         m->source);
    struct mask_walk *w = calloc(1, sizeof *w);
    if (!w)
        return util_fail(err, ENOMEM, "out of memory");
    w->m = m;
    w->collect = 1;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < m->n_masks; i++) {
        int fd;
        if ((rc = mask_open(m, m->masks[i], &fd, &st, err)) < 0 || fd < 0) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        snprintf(w->rel, sizeof w->rel, "%s", m->masks[i]);
        if (S_ISDIR(st.st_mode)) {
            int dir = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
            rc = dir < 0 ? util_fail_errno(err, "mount %s: cannot open mask '%s'", m->target, m->masks[i])
                         : mask_walk_dir(w, dir, 0, err);
        } else if (st.st_nlink > 1) {
            rc = mask_walk_file(w, &st, err);
        }
        close(fd);
    }
    /* Only when a masked file has another link: search the whole mount. */
    if (rc == 0 && w->n) {
        w->collect = 0;
        w->rel[0] = '\0';
        int dir = openat(m->src_fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        rc = dir < 0 ? util_fail_errno(err, "cannot open mount source %s", m->source) : mask_walk_dir(w, dir, 0, err);
    }
    free(w->inodes);
    free(w);
    return rc;
}

/* 1 if `anc` (a stat) is the host path `path` or one of its ancestors. */
static int is_self_or_ancestor(const struct stat *anc, const char *path)
{
    char buf[PATH_MAX];
    snprintf(buf, sizeof buf, "%s", path);
    for (;;) {
        struct stat st;
        if (stat(*buf ? buf : "/", &st) == 0 && st.st_dev == anc->st_dev && st.st_ino == anc->st_ino)
            return 1;
        char *slash = strrchr(buf, '/');
        if (!slash || !*buf)
            return 0;
        *slash = '\0';
    }
}

/* 1 if the trees at paths a and b (stats sa, sb) share anything. */
static int trees_overlap(const char *a, const struct stat *sa, const char *b, const struct stat *sb)
{
    return is_self_or_ancestor(sa, b) || is_self_or_ancestor(sb, a);
}

/* 1 if mounts a and b hide the same paths (in any order). */
static int same_masks(const struct isolate_mount *a, const struct isolate_mount *b)
{
    if (a->n_masks != b->n_masks)
        return 0;
    for (size_t i = 0; i < a->n_masks; i++) {
        size_t j = 0;
        while (j < b->n_masks && strcmp(a->masks[i], b->masks[j]) != 0)
            j++;
        if (j == b->n_masks)
            return 0;
    }
    return 1;
}

/* Masks hold only in their own mount: another mount showing the same tree
 * (the same source, a parent or a child of it, host /usr of the host image)
 * would show the masked paths, so the create is refused, unless it is the
 * very same source with the very same masks (a run's /workspace overlay
 * and its read-only base, say). */
static int masks_check_others(const struct isolate_plan *plan, const struct isolate_mount *m, cell_error *err)
{
    struct stat sm;
    if (fstat(m->src_fd, &sm) < 0)
        return util_fail_errno(err, "cannot stat mount source %s", m->source);
    for (size_t j = 0; j < plan->n_mounts; j++) {
        const struct isolate_mount *o = &plan->mounts[j];
        struct stat so;
        if (o == m || o->src_fd < 0)
            continue;
        if (fstat(o->src_fd, &so) < 0)
            return util_fail_errno(err, "cannot stat mount source %s", o->source);
        if (so.st_dev == sm.st_dev && so.st_ino == sm.st_ino && same_masks(m, o))
            continue;
        if (trees_overlap(m->source, &sm, o->source, &so))
            return util_fail(err, EBUSY, "mount %s (%s) shares files with mount %s (%s), which has masks: a mask "
                             "holds only in its own mount, so the other would show what it hides; mount the "
                             "tree once", o->target, o->source, m->target, m->source);
    }
    struct stat usr;
    if (plan->image_is_host && stat("/usr", &usr) == 0 && trees_overlap(m->source, &sm, "/usr", &usr))
        return util_fail(err, EBUSY, "mount %s (%s) has masks but shares files with /usr, which the host image "
                         "shows in every cell; use another image or a source outside /usr", m->target, m->source);
    return 0;
}

int runtime_masks_prepare(struct isolate_plan *plan, const struct runtime_masks *masks, cell_error *err)
{
    if (!masks)
        return 0;
    for (size_t i = 0; i < plan->n_mounts; i++) {
        struct isolate_mount *m = &plan->mounts[i];
        if (!masks[i].n)
            continue;
        if (m->kind != CELL_MOUNT_BIND && m->kind != CELL_MOUNT_OVERLAY)
            return util_fail(err, EINVAL, "mount %s: only bind and overlay mounts take masks", m->target);
        if (masks[i].n > RUNTIME_MAX_MASKS)
            return util_fail(err, E2BIG, "mount %s: %zu masks, at most %d", m->target, masks[i].n,
                             RUNTIME_MAX_MASKS);
        for (size_t j = 0; j < masks[i].n; j++) {
            char what[PATH_MAX + 32];
            snprintf(what, sizeof what, "mount %s", m->target);
            if (runtime_mask_check(masks[i].paths[j], what, err) < 0)
                return -1;
            for (size_t k = 0; k < j; k++)
                if (runtime_mask_overlaps(masks[i].paths[j], masks[i].paths[k]))
                    return util_fail(err, EINVAL, "mount %s: masks '%s' and '%s' overlap; keep the outer one",
                                     m->target, masks[i].paths[k], masks[i].paths[j]);
        }
        m->masks = masks[i].paths;
        m->n_masks = masks[i].n;
        if (masks_check_mount(m, err) < 0)
            return -1;
    }
    /* Once every mount has its masks: same_masks compares them. */
    for (size_t i = 0; i < plan->n_mounts; i++)
        if (plan->mounts[i].n_masks && masks_check_others(plan, &plan->mounts[i], err) < 0)
            return -1;
    return 0;
}
