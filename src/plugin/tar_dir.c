/* tar_dir.c: a directory as a pax tar stream (libarchive), for `cell cp DIR
 * ID:PATH`: in libcell-archive.so only, so the lean `cell` loads libarchive
 * when a directory is copied and not before (runtime_archive_ops.tar_dir). */
#include "runtime/plugin.h"
#include "util/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct tar_walk {
    const char *src;
    size_t      src_len;        /* without trailing slashes */
    void      (*on_skip)(const char *path);
    int        *about_dir;
    cell_error *err;
};

#define TAR_WRITING "writing the tar stream"

static int tar_fail(struct tar_walk *t, const char *what, struct archive *a)
{
    const char *why = a && archive_error_string(a) ? archive_error_string(a) : "failed";
    *t->about_dir = a != NULL && strcmp(what, TAR_WRITING) != 0;
    return util_fail(t->err, EIO, "%s: %s", what, why);
}

/* The entry's path relative to the source directory; NULL for the directory itself. */
static const char *tar_rel(struct tar_walk *t, const char *full)
{
    if (strncmp(full, t->src, t->src_len) != 0)
        return full;
    full += t->src_len;
    while (*full == '/')
        full++;
    return *full ? full : NULL;
}

static int tar_data(struct tar_walk *t, struct archive *disk, struct archive *w)
{
    char block[65536];
    ssize_t n;
    while ((n = archive_read_data(disk, block, sizeof block)) > 0)
        if (archive_write_data(w, block, (size_t)n) != n)
            return tar_fail(t, TAR_WRITING, w);
    return n < 0 ? tar_fail(t, "reading a file", disk) : 0;
}

static int tar_entry(struct tar_walk *t, struct archive *disk, struct archive *w, struct archive_entry *e)
{
    const char *rel = tar_rel(t, archive_entry_pathname(e));
    mode_t type = archive_entry_filetype(e);
    if (!rel)
        return 0;
    if (type != AE_IFREG && type != AE_IFDIR && type != AE_IFLNK) {
        t->on_skip(archive_entry_pathname(e));
        return 0;
    }
    char *name = strdup(rel);
    if (!name)
        return util_fail(t->err, ENOMEM, "out of memory");
    archive_entry_set_pathname(e, name);
    free(name);
    if (archive_write_header(w, e) != ARCHIVE_OK)
        return tar_fail(t, TAR_WRITING, w);
    return type == AE_IFREG && archive_entry_size(e) > 0 ? tar_data(t, disk, w) : 0;
}

static int tar_walk(struct tar_walk *t, struct archive *disk, struct archive *w)
{
    if (archive_read_disk_open(disk, t->src) != ARCHIVE_OK)
        return tar_fail(t, t->src, disk);
    for (;;) {
        struct archive_entry *e = archive_entry_new();
        if (!e)
            return util_fail(t->err, ENOMEM, "out of memory");
        int r = archive_read_next_header2(disk, e);
        if (r == ARCHIVE_EOF) {
            archive_entry_free(e);
            return 0;
        }
        int rc = r == ARCHIVE_OK || r == ARCHIVE_WARN ? 0 : tar_fail(t, t->src, disk);
        if (rc == 0) {
            archive_read_disk_descend(disk);
            rc = tar_entry(t, disk, w, e);
        }
        archive_entry_free(e);
        if (rc < 0)
            return rc;
    }
}

int runtime_tar_dir(const char *dir, int fd, void (*on_skip)(const char *path), int *about_dir, cell_error *err)
{
    struct tar_walk t = { .src = dir, .src_len = strlen(dir), .on_skip = on_skip, .about_dir = about_dir,
                          .err = err };
    while (t.src_len > 1 && dir[t.src_len - 1] == '/')
        t.src_len--;
    *about_dir = 0;
    struct archive *disk = archive_read_disk_new(), *w = archive_write_new();
    int rc;
    if (!disk || !w) {
        rc = util_fail(err, ENOMEM, "out of memory");
    } else {
        /* Symlinks are stored as links, never followed. */
        archive_read_disk_set_symlink_physical(disk);
        archive_read_disk_set_standard_lookup(disk);
        archive_write_set_format_pax_restricted(w);
        archive_write_set_bytes_in_last_block(w, 1);
        if (archive_write_open_fd(w, fd) != ARCHIVE_OK)
            rc = tar_fail(&t, TAR_WRITING, w);
        else if ((rc = tar_walk(&t, disk, w)) == 0 && archive_write_close(w) != ARCHIVE_OK)
            rc = tar_fail(&t, TAR_WRITING, w);
    }
    archive_read_free(disk);
    archive_write_free(w);
    return rc;
}
