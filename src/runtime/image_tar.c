/* image_tar.c: the tar writing of `cell image export` (libarchive, so part
 * of libcell-archive.so and of the linked-in archive table): a tree as a
 * deterministic layer tar, and the OCI layout's outer tar. */
#include "runtime/plugin.h"
#include "runtime/runtime.h"
#include "util/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

struct tar_sink {
    struct archive *out;
    const char *path;
};

static int write_chunk(void *user, const void *data, size_t len, cell_error *err)
{
    struct tar_sink *t = user;
    if (archive_write_data(t->out, data, len) != (la_ssize_t)len)
        return util_fail(err, EIO, "cannot write %s to the tar: %s", t->path, archive_error_string(t->out));
    return 0;
}

static int write_data(struct archive *out, int fd, const char *path, cell_error *err)
{
    struct tar_sink t = { out, path };
    return util_read_each(fd, path, write_chunk, &t, err);
}

/* One entry: ownership as stored (in-cell ids), no user or group names,
 * mtime in whole seconds, no atime/ctime, hard links written as files. */
static int tar_entry(struct archive *out, int dirfd, const char *name, const char *path, const struct stat *st,
                     cell_error *err)
{
    if (!S_ISREG(st->st_mode) && !S_ISDIR(st->st_mode) && !S_ISLNK(st->st_mode))
        return 0; /* devices, FIFOs, sockets: not in an exported image */
    struct archive_entry *e = archive_entry_new();
    if (!e)
        return util_fail(err, ENOMEM, "out of memory");
    archive_entry_copy_pathname(e, path);
    archive_entry_set_mode(e, st->st_mode);
    archive_entry_set_uid(e, st->st_uid);
    archive_entry_set_gid(e, st->st_gid);
    archive_entry_set_mtime(e, st->st_mtim.tv_sec, 0);
    archive_entry_set_size(e, S_ISREG(st->st_mode) ? st->st_size : 0);
    int rc = 0;
    _cleanup_close_ int fd = -1;
    if (S_ISLNK(st->st_mode)) {
        char target[PATH_MAX];
        ssize_t n = readlinkat(dirfd, name, target, sizeof target - 1);
        if (n < 0)
            rc = util_fail_errno(err, "cannot read link %s", path);
        else {
            target[n] = '\0';
            archive_entry_copy_symlink(e, target);
        }
    } else if (S_ISREG(st->st_mode) && (fd = openat(dirfd, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)) < 0) {
        rc = util_fail_errno(err, "cannot open %s", path);
    }
    if (rc == 0 && archive_write_header(out, e) != ARCHIVE_OK)
        rc = util_fail(err, EIO, "cannot write %s to the tar: %s", path, archive_error_string(out));
    if (rc == 0 && fd >= 0)
        rc = write_data(out, fd, path, err);
    archive_entry_free(e);
    return rc;
}

static int tar_tree(struct archive *out, int dirfd, const char *prefix, cell_error *err)
{
    _cleanup_names_ util_names names = { 0 };
    if (util_dir_names(dirfd, prefix[0] ? prefix : "/", &names, err) < 0)
        return -1;
    int rc = 0;
    for (int i = 0; i < names.n && rc == 0; i++) {
        const char *name = names.v[i]->d_name;
        char path[PATH_MAX];
        struct stat st;
        if (util_path(path, sizeof path, err, "%s%s", prefix, name) < 0)
            rc = -1;
        else if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW) < 0)
            rc = util_fail_errno(err, "cannot stat %s", path);
        else if (S_ISDIR(st.st_mode)) {
            char sub[PATH_MAX];
            _cleanup_close_ int sfd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (sfd < 0)
                rc = util_fail_errno(err, "cannot open %s", path);
            else if (util_path(sub, sizeof sub, err, "%s/", path) < 0)
                rc = -1;
            else if ((rc = tar_entry(out, dirfd, name, sub, &st, err)) == 0)
                rc = tar_tree(out, sfd, sub, err);
        } else {
            rc = tar_entry(out, dirfd, name, path, &st, err);
        }
    }
    return rc;
}

static struct archive *open_writer(int fd, cell_error *err)
{
    struct archive *out = archive_write_new();
    if (!out) {
        util_fail(err, ENOMEM, "out of memory");
        return NULL;
    }
    if (archive_write_set_format_pax_restricted(out) != ARCHIVE_OK || archive_write_set_bytes_in_last_block(out, 1) ||
        archive_write_open_fd(out, fd) != ARCHIVE_OK) {
        util_fail(err, EIO, "cannot start a tar: %s", archive_error_string(out));
        archive_write_free(out);
        return NULL;
    }
    return out;
}

static int close_writer(struct archive *out, int rc, cell_error *err)
{
    if (archive_write_close(out) != ARCHIVE_OK && rc == 0)
        rc = util_fail(err, EIO, "cannot finish the tar: %s", archive_error_string(out));
    archive_write_free(out);
    return rc;
}

int runtime_image_tree_tar(int rootfs_fd, int out_fd, cell_error *err)
{
    struct archive *out = open_writer(out_fd, err);
    if (!out)
        return -1;
    return close_writer(out, tar_tree(out, rootfs_fd, "", err), err);
}

int runtime_image_files_tar(int out_fd, const struct runtime_tar_file *files, size_t n, cell_error *err)
{
    struct archive *out = open_writer(out_fd, err);
    if (!out)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        struct archive_entry *e = archive_entry_new();
        if (!e) {
            rc = util_fail(err, ENOMEM, "out of memory");
            break;
        }
        archive_entry_copy_pathname(e, files[i].name);
        archive_entry_set_filetype(e, files[i].size == (uint64_t)-1 ? AE_IFDIR : AE_IFREG);
        archive_entry_set_perm(e, files[i].size == (uint64_t)-1 ? 0755 : 0644);
        archive_entry_set_size(e, files[i].size == (uint64_t)-1 ? 0 : (la_int64_t)files[i].size);
        archive_entry_set_mtime(e, 0, 0);
        if (archive_write_header(out, e) != ARCHIVE_OK)
            rc = util_fail(err, EIO, "cannot write %s: %s", files[i].name, archive_error_string(out));
        else if (files[i].data && files[i].size &&
                 archive_write_data(out, files[i].data, files[i].size) != (la_ssize_t)files[i].size)
            rc = util_fail(err, EIO, "cannot write %s: %s", files[i].name, archive_error_string(out));
        else if (!files[i].data && files[i].fd >= 0) {
            if (lseek(files[i].fd, 0, SEEK_SET) < 0)
                rc = util_fail_errno(err, "cannot rewind %s", files[i].name);
            else
                rc = write_data(out, files[i].fd, files[i].name, err);
        }
        archive_entry_free(e);
    }
    return close_writer(out, rc, err);
}
