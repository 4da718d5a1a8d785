/* files.c: libcell's file operations.  cell-init resolves every path inside
 * the cell and hands back descriptors; the data flows through those fds. */
#include "runtime/cell_internal.h"
#include "util/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

/* Open through init.  Whatever init returns is checked again here: a cell
 * that subverted its init must not hand the owner a FIFO to block on. */
static int open_in_cell(cell *c, const char *path, int flags, mode_t mode, int base, cell_error *err)
{
    if (base < 0 && runtime_check_cell_path(path, "path", err) < 0)
        return -1;
    uint32_t u[CTL_NU] = { (uint32_t)flags, (uint32_t)mode };
    const char *strs[1] = { path };
    ctl_msg reply;
    if (runtime_request(c, CTL_OPEN, u, strs, 1, base >= 0 ? &base : NULL, base >= 0 ? 1 : 0, &reply, err) < 0)
        return -1;
    int fd = ctl_take_fd(&reply, 0);
    ctl_msg_free(&reply);
    if (fd < 0)
        return util_fail(err, EPROTO, "cell-init returned no descriptor for %s", path);
    struct stat st;
    int ok = fstat(fd, &st) == 0 && ((flags & O_PATH) || S_ISREG(st.st_mode) || S_ISDIR(st.st_mode));
    if (!ok) {
        close(fd);
        return util_fail(err, EINVAL, "%s is not a regular file or directory", path);
    }
    return fd;
}

static int simple_request(cell *c, uint32_t type, uint32_t u0, uint32_t u1, const char *a, const char *b,
                          int base, cell_error *err)
{
    uint32_t u[CTL_NU] = { u0, u1 };
    const char *strs[2] = { a, b };
    ctl_msg reply;
    if (runtime_request(c, type, u, strs, b ? 2 : 1, base >= 0 ? &base : NULL, base >= 0 ? 1 : 0, &reply, err) < 0)
        return -1;
    ctl_msg_free(&reply);
    return 0;
}

int cell_file_open(cell *c, const char *path, int flags, mode_t mode, int *fd, cell_error *err)
{
    int f = open_in_cell(c, path, flags, mode, -1, err);
    if (f < 0)
        return -1;
    *fd = f;
    return 0;
}

static void to_cell_stat(const cell *c, const struct stat *st, cell_stat *out)
{
    out->mode = st->st_mode;
    out->size = (uint64_t)st->st_size;
    out->mtime = st->st_mtim.tv_sec;
    /* Host ids outside the cell's range show as nobody, as inside. */
    out->uid = st->st_uid >= c->uid_base && st->st_uid - c->uid_base < ISOLATE_UID_COUNT ? st->st_uid - c->uid_base : 65534;
    out->gid = st->st_gid >= c->uid_base && st->st_gid - c->uid_base < ISOLATE_UID_COUNT ? st->st_gid - c->uid_base : 65534;
}

int cell_file_stat(cell *c, const char *path, cell_stat *out, cell_error *err)
{
    _cleanup_close_ int fd = open_in_cell(c, path, O_PATH, 0, -1, err);
    if (fd < 0)
        return -1;
    struct stat st;
    if (fstat(fd, &st) < 0)
        return util_fail_errno(err, "cannot stat %s", path);
    to_cell_stat(c, &st, out);
    return 0;
}

static int compare_dirents(const void *a, const void *b)
{
    return strcmp(((const cell_dirent *)a)->name, ((const cell_dirent *)b)->name);
}

int cell_file_list(cell *c, const char *path, cell_dirent **out, size_t *count, cell_error *err)
{
    int fd = open_in_cell(c, path, O_RDONLY | O_DIRECTORY, 0, -1, err);
    if (fd < 0)
        return -1;
    DIR *d = fdopendir(fd);
    if (!d) {
        close(fd);
        return util_fail_errno(err, "cannot list %s", path);
    }
    cell_dirent *list = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        struct stat st;
        /* A single name relative to the opened directory: nothing to follow. */
        if (fstatat(dirfd(d), e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            continue; /* removed meanwhile */
        if (n == cap) {
            cap = cap ? cap * 2 : 32;
            cell_dirent *grown = realloc(list, cap * sizeof *list);
            if (!grown) {
                free(list);
                closedir(d);
                return util_fail(err, ENOMEM, "out of memory listing %s", path);
            }
            list = grown;
        }
        snprintf(list[n].name, sizeof list[n].name, "%s", e->d_name);
        to_cell_stat(c, &st, &list[n].st);
        n++;
    }
    closedir(d);
    if (n)
        qsort(list, n, sizeof *list, compare_dirents);
    *out = list;
    *count = n;
    return 0;
}

int cell_file_mkdir(cell *c, const char *path, mode_t mode, int parents, cell_error *err)
{
    if (runtime_check_cell_path(path, "path", err) < 0)
        return -1;
    return simple_request(c, CTL_MKDIR, mode ? mode : 0755, parents ? 1 : 0, path, NULL, -1, err);
}

int cell_file_move(cell *c, const char *from, const char *to, int overwrite, cell_error *err)
{
    if (runtime_check_cell_path(from, "source path", err) < 0 || runtime_check_cell_path(to, "destination path", err) < 0)
        return -1;
    return simple_request(c, CTL_MOVE, overwrite ? 1 : 0, 0, from, to, -1, err);
}

int cell_file_delete(cell *c, const char *path, int recursive, cell_error *err)
{
    if (runtime_check_cell_path(path, "path", err) < 0)
        return -1;
    if (strcmp(path, "/") == 0)
        return util_fail(err, EINVAL, "refusing to delete the cell's root directory");
    return simple_request(c, CTL_DELETE, recursive ? 1 : 0, 0, path, NULL, -1, err);
}

/* mkdir -p the directory part of `path` (relative to base, or absolute in
 * the cell with base -1); nothing to do for a name in the top directory. */
static int ensure_parent(cell *c, const char *path, int base, cell_error *err)
{
    char parent[PATH_MAX];
    snprintf(parent, sizeof parent, "%s", path);
    char *slash = strrchr(parent, '/');
    if (!slash || slash == parent)
        return 0;
    *slash = '\0';
    return simple_request(c, CTL_MKDIR, 0755, 1, parent, NULL, base, err);
}

int runtime_write_whole(cell *c, const char *path, const void *data, size_t len, mode_t mode, cell_error *err)
{
    if (runtime_check_cell_path(path, "path", err) < 0 || ensure_parent(c, path, -1, err) < 0)
        return -1;
    _cleanup_close_ int fd = open_in_cell(c, path, O_WRONLY | O_CREAT | O_TRUNC, mode, -1, err);
    if (fd < 0)
        return -1;
    if (util_write_all(fd, data, len) < 0)
        return util_fail_errno(err, "cannot write %s in the cell", path);
    return 0;
}

/* ---- tar upload ------------------------------------------------------------ */

/* Lexical check of one entry name: relative after stripping leading "/" and
 * "./", no ".." component.  Symlinks planted by earlier entries are stopped
 * by init (RESOLVE_BENEATH on the target directory). */
static int entry_path(const char *raw, char *out, size_t size, cell_error *err)
{
    while (*raw == '/')
        raw++;
    while (raw[0] == '.' && raw[1] == '/')
        raw += 2;
    if (!*raw || strcmp(raw, ".") == 0)
        return 0; /* the directory itself */
    for (const char *p = raw; (p = strstr(p, "..")); p += 2)
        if ((p == raw || p[-1] == '/') && (p[2] == '\0' || p[2] == '/'))
            return util_fail(err, EINVAL, "tar entry '%s' leaves the target directory (contains '..')", raw);
    if (util_path(out, size, err, "%s", raw) < 0)
        return -1;
    size_t n = strlen(out);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0';
    return 1;
}


static int upload_entry(cell *c, struct archive *a, struct archive_entry *e, int base, char *rel,
                        size_t rel_size, cell_error *err)
{
    const char *name = archive_entry_pathname(e);
    int r = entry_path(name ? name : "", rel, rel_size, err);
    if (r <= 0)
        return r;
    mode_t mode = archive_entry_perm(e) & 07777;
    /* Hard links may carry no file type at all (pax), so test them first;
     * both names resolve beneath the target directory in init. */
    const char *hard = archive_entry_hardlink(e);
    if (hard) {
        char target[PATH_MAX];
        if (entry_path(hard, target, sizeof target, err) <= 0)
            return util_fail(err, EINVAL, "tar hard link '%s' has an invalid target '%s'", rel, hard);
        if (ensure_parent(c, rel, base, err) < 0)
            return -1;
        return simple_request(c, CTL_LINK, 0, 0, target, rel, base, err) < 0 ? -1 : 1;
    }
    switch (archive_entry_filetype(e)) {
    case AE_IFDIR:
        return simple_request(c, CTL_MKDIR, mode ? mode : 0755, 1, rel, NULL, base, err) < 0 ? -1 : 1;
    case AE_IFREG: {
        if (ensure_parent(c, rel, base, err) < 0)
            return -1;
        _cleanup_close_ int fd = open_in_cell(c, rel, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW, mode, base, err);
        if (fd < 0)
            return -1;
        const void *buf;
        size_t len;
        la_int64_t off;
        int rr;
        while ((rr = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK) {
            if (lseek(fd, off, SEEK_SET) < 0 || util_write_all(fd, buf, len) < 0)
                return util_fail_errno(err, "cannot write %s in the cell", rel);
        }
        if (rr != ARCHIVE_EOF)
            return util_fail(err, EIO, "cannot read tar data for %s: %s", rel, archive_error_string(a));
        return 1;
    }
    case AE_IFLNK: {
        const char *target = archive_entry_symlink(e);
        if (ensure_parent(c, rel, base, err) < 0)
            return -1;
        return simple_request(c, CTL_SYMLINK, 0, 0, target ? target : "", rel, base, err) < 0 ? -1 : 1;
    }
    default:
        return util_fail(err, EINVAL, "tar entry '%s' is a device, FIFO or socket; only files, directories "
                         "and links can be uploaded", rel);
    }
}

int cell_file_upload_tar(cell *c, const char *dir, int tar_fd, cell_error *err)
{
    return cell_file_upload_tar_cb(c, dir, tar_fd, NULL, NULL, err);
}

int cell_file_upload_tar_cb(cell *c, const char *dir, int tar_fd, cell_upload_fn cb, void *user, cell_error *err)
{
    if (cell_file_mkdir(c, dir, 0755, 1, err) < 0)
        return -1;
    _cleanup_close_ int base = open_in_cell(c, dir, O_RDONLY | O_DIRECTORY, 0, -1, err);
    if (base < 0)
        return -1;
    struct archive *a = archive_read_new();
    if (!a)
        return util_fail(err, ENOMEM, "out of memory");
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    archive_read_support_filter_gzip(a);
    archive_read_support_filter_none(a);
    int rc = 0;
    if (archive_read_open_fd(a, tar_fd, 64 * 1024) != ARCHIVE_OK) {
        rc = util_fail(err, EBADMSG, "not a tar stream: %s", archive_error_string(a));
    } else {
        struct archive_entry *e;
        int r;
        char rel[PATH_MAX];
        while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
            int done = upload_entry(c, a, e, base, rel, sizeof rel, err);
            if (done < 0) {
                rc = -1;
                break;
            }
            if (done && cb)
                cb(user, rel);
        }
        if (rc == 0 && r != ARCHIVE_EOF)
            rc = util_fail(err, EBADMSG, "malformed tar stream: %s", archive_error_string(a));
    }
    archive_read_free(a);
    return rc;
}
