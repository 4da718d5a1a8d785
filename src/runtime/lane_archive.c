/* lane_archive.c: lane export and import as pax tar streams of the overlay
 * upper dir.  Import treats the stream as hostile input from another host. */
#include "runtime/plugin.h"
#include "runtime/runtime.h"
#include "util/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

/* A cell maps in-cell ids 0..65535; ownership outside that range cannot be
 * expressed in a lane (the id-mapped mount would show it as nobody). */
#define LANE_ID_LIMIT 65536

/* The xattr namespaces a lane layer may carry: overlayfs's own metadata
 * (opaque dirs, redirects, origins; they only steer lookups among the cell's
 * own layers) and plain user attributes.  security.* (file capabilities,
 * SELinux/SMACK labels) and system.* (ACLs) grant or describe host-side
 * privilege and never travel in a lane. */
static int allowed_xattr(const char *name)
{
    return (strncmp(name, "trusted.overlay.", 16) == 0 && name[16]) || (strncmp(name, "user.", 5) == 0 && name[5]);
}

/* Entry names come from untrusted tars: copy one for an error message with
 * control characters (terminal escapes, newlines) replaced and long names cut. */
static const char *printable(const char *in, char *out, size_t size)
{
    if (!in)
        in = "(unnamed)";
    size_t n = 0, limit = size - 1;
    for (; in[n] && n < limit; n++) {
        unsigned char ch = (unsigned char)in[n];
        out[n] = (ch < 0x20 || ch == 0x7f) ? '?' : (char)ch;
    }
    out[n] = '\0';
    if (in[n] && limit >= 3)
        memcpy(out + limit - 3, "...", 4);
    return out;
}

static const char *archive_message(struct archive *a)
{
    /* libarchive says "Write failed" for a full disk: say which. */
    if (archive_errno(a) == ENOSPC)
        return "No space left on device (the lane is full)";
    const char *m = archive_error_string(a);
    return m ? m : "unknown error";
}

/* ---- running libarchive's tree walkers in a private fs context ------------
 * archive_read_disk fchdir()s through the tree it walks and
 * archive_write_disk sets the umask and resolves names against the cwd: both
 * change process-wide state.  They run on a thread that unshare(CLONE_FS)s
 * first, so its cwd, root and umask are its own and the caller's threads
 * never see them move.  That also lets import chroot() into the new layer. */
struct fs_job {
    int (*fn)(struct fs_job *job);
    const char *lane;
    int         dir_fd;     /* the lane's upper dir */
    int         stream_fd;  /* the tar stream */
    uint64_t    limit;      /* import: most tar bytes taken (0 = no limit) */
    uint64_t    declared;   /* import: sizes of the files so far */
    cell_error *err;
    int         rc;
};

static void *fs_job_main(void *arg)
{
    struct fs_job *job = arg;
    if (unshare(CLONE_FS) < 0)
        job->rc = util_fail_errno(job->err, "lane '%s': cannot give the archive thread its own working directory",
                                  job->lane);
    else if (fchdir(job->dir_fd) < 0)
        job->rc = util_fail_errno(job->err, "lane '%s': cannot enter the lane's upper dir", job->lane);
    else
        job->rc = job->fn(job);
    return NULL;
}

static int run_fs_job(struct fs_job *job)
{
    pthread_t thread;
    job->rc = -1;
    int rc = pthread_create(&thread, NULL, fs_job_main, job);
    if (rc != 0) {
        errno = rc;
        return util_fail_errno(job->err, "lane '%s': cannot start the archive thread", job->lane);
    }
    rc = pthread_join(thread, NULL);
    if (rc != 0) {
        errno = rc;
        return util_fail_errno(job->err, "lane '%s': cannot join the archive thread", job->lane);
    }
    return job->rc;
}

/* ---- export --------------------------------------------------------------- */

/* What an export leaves out: things import would refuse.  A cell cannot
 * create device nodes (only overlayfs makes whiteouts, char 0:0), but it can
 * leave FIFOs and sockets behind; neither carries data, so they are skipped
 * rather than failing the export. */
static int export_skips(struct archive_entry *e)
{
    switch (archive_entry_filetype(e)) {
    case AE_IFREG:
    case AE_IFDIR:
    case AE_IFLNK:
        return 0;
    case AE_IFCHR:
        return archive_entry_rdev(e) != 0;
    default:
        return 1;
    }
}

/* Drop the xattrs import would refuse (see allowed_xattr). */
static int export_filter_xattrs(struct archive_entry *e, cell_error *err)
{
    int drop = 0;
    const char *name;
    const void *value;
    size_t size;
    archive_entry_xattr_reset(e);
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
        drop += !allowed_xattr(name);
    if (!drop)
        return 0;
    /* The names and values belong to `e`: copy the kept ones aside before
     * clearing. */
    struct archive_entry *kept = archive_entry_new();
    if (!kept)
        return util_fail(err, ENOMEM, "out of memory filtering extended attributes");
    archive_entry_xattr_reset(e);
    while (archive_entry_xattr_next(e, &name, &value, &size) == ARCHIVE_OK)
        if (allowed_xattr(name))
            archive_entry_xattr_add_entry(kept, name, value, size);
    archive_entry_xattr_clear(e);
    archive_entry_xattr_reset(kept);
    while (archive_entry_xattr_next(kept, &name, &value, &size) == ARCHIVE_OK)
        archive_entry_xattr_add_entry(e, name, value, size);
    archive_entry_free(kept);
    return 0;
}

/* Copy the current file's data from the disk reader to the tar writer.
 * Holes (sparse files) are written as zeros; the pax writer drops the bytes
 * that fall in the holes it recorded in the header. */
static int export_data(struct fs_job *job, struct archive *disk, struct archive *out, const char *path)
{
    static const char zeros[16384];
    char shown[160];
    const void *buf;
    size_t size;
    la_int64_t offset, done = 0;
    int r;
    while ((r = archive_read_data_block(disk, &buf, &size, &offset)) == ARCHIVE_OK) {
        while (done < offset) {
            size_t n = offset - done < (la_int64_t)sizeof zeros ? (size_t)(offset - done) : sizeof zeros;
            la_ssize_t w = archive_write_data(out, zeros, n);
            if (w <= 0)
                goto write_failed;
            done += w;
        }
        for (size_t off = 0; off < size;) {
            la_ssize_t w = archive_write_data(out, (const char *)buf + off, size - off);
            if (w <= 0)
                goto write_failed;
            off += (size_t)w;
            done += w;
        }
    }
    if (r != ARCHIVE_EOF)
        return util_fail(job->err, EIO, "lane '%s': cannot read '%s': %s", job->lane,
                         printable(path, shown, sizeof shown), archive_message(disk));
    return 0;
write_failed:
    return util_fail(job->err, EIO, "lane '%s': cannot write '%s' to the tar stream: %s", job->lane,
                     printable(path, shown, sizeof shown), archive_message(out));
}

static int export_tree(struct fs_job *job)
{
    int rc = -1, r;
    char shown[160];
    char *rel = NULL;
    struct archive *disk = archive_read_disk_new(), *out = archive_write_new();
    struct archive_entry_linkresolver *links = archive_entry_linkresolver_new();
    struct archive_entry *entry = archive_entry_new();
    if (!disk || !out || !links || !entry) {
        util_fail(job->err, ENOMEM, "lane '%s': out of memory starting the export", job->lane);
        goto done;
    }
    /* Physical walk: symlinks are entries, never followed (their targets
     * are the cell's, meaningless or hostile on the host).  No uname/gname
     * lookups: the ids are in-cell ids and host names would be wrong.
     * ACLs and file flags are not part of a lane. */
    if (archive_read_disk_set_symlink_physical(disk) != ARCHIVE_OK ||
        archive_read_disk_set_behavior(disk, ARCHIVE_READDISK_NO_TRAVERSE_MOUNTS | ARCHIVE_READDISK_NO_ACL |
                                                 ARCHIVE_READDISK_NO_FFLAGS) != ARCHIVE_OK) {
        util_fail(job->err, EIO, "lane '%s': cannot configure the disk reader: %s", job->lane, archive_message(disk));
        goto done;
    }
    /* Full pax (not pax_restricted): every entry keeps its nanosecond mtime. */
    if (archive_write_set_format_pax(out) != ARCHIVE_OK || archive_write_open_fd(out, job->stream_fd) != ARCHIVE_OK) {
        util_fail(job->err, EIO, "lane '%s': cannot start the tar stream: %s", job->lane, archive_message(out));
        goto done;
    }
    archive_entry_linkresolver_set_strategy(links, archive_format(out));
    /* The walk starts at "." (our private cwd is the upper dir), so names
     * come out as "./etc/passwd" and only need the "./" cut. */
    if (archive_read_disk_open(disk, ".") != ARCHIVE_OK) {
        util_fail(job->err, EIO, "lane '%s': cannot open the upper dir: %s", job->lane, archive_message(disk));
        goto done;
    }
    for (;;) {
        archive_entry_clear(entry);
        r = archive_read_next_header2(disk, entry);
        if (r == ARCHIVE_EOF)
            break;
        const char *path = archive_entry_pathname(entry);
        /* A warning here means part of the entry (xattrs, link target)
         * could not be read: the copy would not be faithful. */
        if (r != ARCHIVE_OK) {
            util_fail(job->err, EIO, "lane '%s': cannot read '%s': %s", job->lane, printable(path, shown, sizeof shown),
                      archive_message(disk));
            goto done;
        }
        if (archive_read_disk_can_descend(disk) && archive_read_disk_descend(disk) != ARCHIVE_OK) {
            util_fail(job->err, EIO, "lane '%s': cannot enter '%s': %s", job->lane, printable(path, shown, sizeof shown),
                      archive_message(disk));
            goto done;
        }
        /* The upper dir itself is the lane's root, recreated by import. */
        if (!path || strcmp(path, ".") == 0)
            continue;
        if (strncmp(path, "./", 2) != 0) {
            util_fail(job->err, EIO, "lane '%s': unexpected name '%s' in the upper dir", job->lane,
                      printable(path, shown, sizeof shown));
            goto done;
        }
        if (export_skips(entry))
            continue;
        if (archive_entry_uid(entry) >= LANE_ID_LIMIT || archive_entry_gid(entry) >= LANE_ID_LIMIT) {
            util_fail(job->err, ERANGE, "lane '%s': '%s' is owned by %lld:%lld, outside the cell's ids 0-65535",
                      job->lane, printable(path + 2, shown, sizeof shown), (long long)archive_entry_uid(entry),
                      (long long)archive_entry_gid(entry));
            goto done;
        }
        free(rel);
        if (!(rel = strdup(path + 2))) {
            util_fail(job->err, ENOMEM, "lane '%s': out of memory", job->lane);
            goto done;
        }
        archive_entry_set_pathname(entry, rel);
        if (export_filter_xattrs(entry, job->err) < 0)
            goto done;
        /* The resolver turns second and later names of a multiply linked
         * file into hard link entries to the first one.  With the tar
         * strategy it hands back `entry` itself and never a deferred one. */
        struct archive_entry *e = entry, *spare = NULL;
        archive_entry_linkify(links, &e, &spare);
        if (!e || spare) {
            util_fail(job->err, EIO, "lane '%s': unexpected hard link bookkeeping at '%s'", job->lane,
                      printable(rel, shown, sizeof shown));
            goto done;
        }
        /* ARCHIVE_WARN: a name that is not valid in the locale's charset is
         * stored as raw bytes (hdrcharset=BINARY), which import restores. */
        r = archive_write_header(out, e);
        if (r < ARCHIVE_WARN) {
            util_fail(job->err, EIO, "lane '%s': cannot write the header of '%s': %s", job->lane,
                      printable(rel, shown, sizeof shown), archive_message(out));
            goto done;
        }
        if (archive_entry_size(e) > 0 && !archive_entry_hardlink(e) && export_data(job, disk, out, rel) < 0)
            goto done;
        if (archive_write_finish_entry(out) != ARCHIVE_OK) {
            util_fail(job->err, EIO, "lane '%s': cannot finish '%s' in the tar stream: %s", job->lane,
                      printable(rel, shown, sizeof shown), archive_message(out));
            goto done;
        }
    }
    if (archive_write_close(out) != ARCHIVE_OK) {
        util_fail(job->err, EIO, "lane '%s': cannot finish the tar stream: %s", job->lane, archive_message(out));
        goto done;
    }
    rc = 0;
done:
    free(rel);
    if (entry)
        archive_entry_free(entry);
    if (links)
        archive_entry_linkresolver_free(links);
    if (disk)
        archive_read_free(disk);
    if (out)
        archive_write_free(out);
    return rc;
}

static int archive_export(cell_ctx *ctx, const char *name, int fd, cell_error *err)
{
    char dir[PATH_MAX];
    /* A running cell holds the lock exclusively; a shared hold tells us no
     * cell is writing the layer and keeps one from attaching (or the lane
     * from being deleted or committed) until the stream is complete. */
    _cleanup_close_ int lock = -1;
    if (runtime_lane_lock(ctx, name, LOCK_SH, NULL, dir, sizeof dir, &lock, err) < 0)
        return -1;
    /* A size-limited lane's image is mounted read-only for the walk. */
    _cleanup_close_ int mnt = -1, upper = -1;
    cell_error why = { 0 };
    if (runtime_lane_open_upper(dir, 1, &mnt, &upper, &why) < 0)
        return util_fail(err, why.code, "lane '%s': %s", name, why.message);
    struct fs_job job = { .fn = export_tree, .lane = name, .dir_fd = upper, .stream_fd = fd, .err = err };
    return run_fs_job(&job); /* closing `lock` on return releases the shared hold */
}

/* ---- import --------------------------------------------------------------- */

/* Relative, non-empty, no ".." component.  The SECURE_* extract flags check
 * the same; checking first gives a clear message and does not depend on
 * libarchive's version. */
static const char *bad_path(const char *path)
{
    if (!path || !*path)
        return "has an empty name";
    if (path[0] == '/')
        return "has an absolute path";
    for (const char *p = path; *p;) {
        size_t n = strcspn(p, "/");
        if (n == 2 && p[0] == '.' && p[1] == '.')
            return "has a '..' component";
        p += n;
        p += *p == '/';
    }
    return NULL;
}

/* 1: extract, 0: skip, -1: refuse the archive. */
static int import_check(struct fs_job *job, struct archive_entry *e)
{
    char shown[160], other[160];
    const char *path = archive_entry_pathname(e), *why;
    if (!path)
        return util_fail(job->err, EINVAL, "cannot import lane '%s': an entry's name cannot be decoded", job->lane);
    /* ".", "./" (as `tar -C dir -c .` writes): the layer's root, which we
     * made; its metadata is not taken from the stream (export never writes
     * it). */
    const char *p = path;
    for (;;) {
        if (p[0] == '.' && p[1] == '/')
            p += 2;
        else if (p[0] == '/' && p != path)
            p++;
        else
            break;
    }
    if ((p != path && !*p) || strcmp(p, ".") == 0)
        return 0;
    const char *name = printable(path, shown, sizeof shown);
    if ((why = bad_path(path)))
        return util_fail(job->err, EINVAL, "cannot import lane '%s': entry '%s' %s", job->lane, name, why);
    const char *target = archive_entry_hardlink(e);
    if (target && (why = bad_path(target)))
        return util_fail(job->err, EINVAL, "cannot import lane '%s': entry '%s' is a hard link to '%s', which %s",
                         job->lane, name, printable(target, other, sizeof other), why);
    /* A hard link's type is its target's, checked when the target was
     * extracted (libarchive links it inside our root). */
    if (!target) {
        const char *kind = NULL;
        switch (archive_entry_filetype(e)) {
        case AE_IFREG:
        case AE_IFDIR:
            break;
        case AE_IFLNK:
            if (!archive_entry_symlink(e))
                return util_fail(job->err, EINVAL, "cannot import lane '%s': symlink entry '%s' has no target",
                                 job->lane, name);
            break;
        case AE_IFCHR:
            /* char 0:0 is an overlayfs whiteout: "deleted from the image". */
            if (archive_entry_rdevmajor(e) != 0 || archive_entry_rdevminor(e) != 0)
                kind = "a character device (only 0:0 whiteouts are allowed)";
            break;
        case AE_IFBLK:
            kind = "a block device";
            break;
        case AE_IFIFO:
            kind = "a FIFO";
            break;
        case AE_IFSOCK:
            kind = "a socket";
            break;
        default:
            kind = "of an unknown type";
            break;
        }
        if (kind)
            return util_fail(job->err, EINVAL,
                             "cannot import lane '%s': entry '%s' is %s; a lane holds only files, directories, "
                             "symlinks, hard links and whiteouts", job->lane, name, kind);
    }
    la_int64_t uid = archive_entry_uid(e), gid = archive_entry_gid(e);
    if (uid < 0 || uid >= LANE_ID_LIMIT || gid < 0 || gid >= LANE_ID_LIMIT)
        return util_fail(job->err, ERANGE,
                         "cannot import lane '%s': entry '%s' is owned by %lld:%lld, outside the cell's ids 0-65535",
                         job->lane, name, (long long)uid, (long long)gid);
    /* Refuse, not strip: a tar from `cell lane export` never carries these
     * (export drops them), so one that does was made elsewhere or altered,
     * and silently importing something else than it says is worse than
     * saying no.  Without ARCHIVE_EXTRACT_ACL/FFLAGS those are never
     * restored either; ACLs are refused for the same reason. */
    const char *xname;
    const void *value;
    size_t size;
    archive_entry_xattr_reset(e);
    while (archive_entry_xattr_next(e, &xname, &value, &size) == ARCHIVE_OK)
        if (!allowed_xattr(xname))
            return util_fail(job->err, EPERM,
                             "cannot import lane '%s': entry '%s' carries extended attribute '%s'; a lane may "
                             "carry only trusted.overlay.* and user.* attributes", job->lane, name,
                             printable(xname, other, sizeof other));
    if (archive_entry_acl_count(e, ARCHIVE_ENTRY_ACL_TYPE_POSIX1E | ARCHIVE_ENTRY_ACL_TYPE_NFS4) > 0)
        return util_fail(job->err, EPERM, "cannot import lane '%s': entry '%s' carries an ACL; lanes carry no ACLs",
                         job->lane, name);
    return 1;
}

/* A decompression bomb is refused as soon as the tar stream it inflates to
 * (what gzip decoded so far) outgrows the lane: every byte of it would have
 * to be stored, and the lane could not hold them.  The layer's own size
 * (ENOSPC) still bounds what is written, e.g. for sparse entries. */
static int import_too_big(struct fs_job *job, struct archive *in, struct archive_entry *e)
{
    /* The headers say how much data is coming: refuse before writing it. */
    if (e && job->limit && !archive_entry_hardlink(e) && archive_entry_size(e) > 0) {
        job->declared += (uint64_t)archive_entry_size(e);
        if (job->declared > job->limit)
            return util_fail(job->err, EFBIG, "cannot import lane '%s': its files add up to more than the lane's "
                             "size of %llu bytes", job->lane, (unsigned long long)job->limit);
    }
    la_int64_t inflated = archive_filter_bytes(in, 0);
    if (!job->limit || inflated < 0 || (uint64_t)inflated <= job->limit)
        return 0;
    return util_fail(job->err, EFBIG, "cannot import lane '%s': the archive expands to more than the lane's size of "
                     "%llu bytes (%lld compressed bytes read so far)", job->lane, (unsigned long long)job->limit,
                     (long long)archive_filter_bytes(in, -1));
}

static int import_data(struct fs_job *job, struct archive *in, struct archive *disk, const char *name)
{
    const void *buf;
    size_t size;
    la_int64_t offset;
    int r;
    while ((r = archive_read_data_block(in, &buf, &size, &offset)) == ARCHIVE_OK) {
        if (import_too_big(job, in, NULL) < 0)
            return -1;
        if (archive_write_data_block(disk, buf, size, offset) != ARCHIVE_OK)
            return util_fail(job->err, archive_errno(disk) == ENOSPC ? ENOSPC : EIO,
                             "cannot import lane '%s': cannot write entry '%s': %s", job->lane, name,
                             archive_message(disk));
    }
    /* The archive is the client's: a truncated or corrupt one is a bad
     * request (400), not the daemon's failure. */
    if (r != ARCHIVE_EOF)
        return util_fail(job->err, EINVAL, "cannot import lane '%s': cannot read the data of entry '%s': %s", job->lane,
                         name, archive_message(in));
    return 0;
}

static int import_tree(struct fs_job *job)
{
    int rc = -1, r;
    char shown[160];
    struct archive *in = archive_read_new(), *disk = archive_write_disk_new();
    struct archive_entry *entry;
    if (!in || !disk) {
        util_fail(job->err, ENOMEM, "cannot import lane '%s': out of memory", job->lane);
        goto done;
    }
    /* Our private root is the new, empty upper dir: whatever libarchive
     * does with a hostile name or link (absolute symlinks included), it
     * cannot reach outside the layer.  The checks below still refuse such
     * names, so a bad archive fails instead of landing somewhere odd. */
    if (chroot(".") < 0 || chdir("/") < 0) {
        util_fail_errno(job->err, "cannot import lane '%s': cannot confine the extraction to the new layer", job->lane);
        goto done;
    }
    /* Only tar (ustar, pax, GNU), plain or gzip.  gzip is decoded in
     * process (zlib); ARCHIVE_WARN would mean an external gzip program,
     * which does not exist inside our root. */
    if (archive_read_support_format_tar(in) != ARCHIVE_OK || archive_read_support_filter_gzip(in) != ARCHIVE_OK) {
        util_fail(job->err, EIO, "cannot import lane '%s': cannot set up the tar reader: %s", job->lane,
                  archive_message(in));
        goto done;
    }
    /* OWNER with no lookup functions set: numeric ids as stored, the
     * in-cell ids.  PERM keeps setuid bits (the state dir is root-only, so
     * host users cannot reach them).  No UNLINK: the target starts empty,
     * and UNLINK would make libarchive delete a symlink standing in the way
     * of a later entry instead of refusing to extract through it.  No ACL
     * or FFLAGS: not part of a lane. */
    int flags = ARCHIVE_EXTRACT_OWNER | ARCHIVE_EXTRACT_PERM | ARCHIVE_EXTRACT_TIME | ARCHIVE_EXTRACT_XATTR |
                ARCHIVE_EXTRACT_SECURE_NODOTDOT | ARCHIVE_EXTRACT_SECURE_SYMLINKS |
                ARCHIVE_EXTRACT_SECURE_NOABSOLUTEPATHS;
    if (archive_write_disk_set_options(disk, flags) != ARCHIVE_OK) {
        util_fail(job->err, EIO, "cannot import lane '%s': cannot set up extraction: %s", job->lane,
                  archive_message(disk));
        goto done;
    }
    if (archive_read_open_fd(in, job->stream_fd, 65536) != ARCHIVE_OK) {
        util_fail(job->err, EINVAL, "cannot import lane '%s': cannot read the tar stream: %s", job->lane,
                  archive_message(in));
        goto done;
    }
    for (;;) {
        r = archive_read_next_header(in, &entry);
        if (r == ARCHIVE_EOF)
            break;
        /* ARCHIVE_WARN: e.g. a name that is not valid in the locale's
         * charset; the raw bytes are used, as export wrote them. */
        if (r < ARCHIVE_WARN) {
            util_fail(job->err, EINVAL, "cannot import lane '%s': not a valid tar stream: %s", job->lane,
                      archive_message(in));
            goto done;
        }
        if (import_too_big(job, in, entry) < 0)
            goto done;
        int use = import_check(job, entry);
        if (use < 0)
            goto done;
        if (!use)
            continue;
        const char *name = printable(archive_entry_pathname(entry), shown, sizeof shown);
        /* Any warning from the writer (owner, mode, time or xattrs not
         * restored) means the layer would differ from the archive. */
        if (archive_write_header(disk, entry) != ARCHIVE_OK) {
            util_fail(job->err, archive_errno(disk) == ENOSPC ? ENOSPC : EINVAL,
                      "cannot import lane '%s': cannot extract entry '%s': %s", job->lane, name,
                      archive_message(disk));
            goto done;
        }
        if (import_data(job, in, disk, name) < 0)
            goto done;
        if (archive_write_finish_entry(disk) != ARCHIVE_OK) {
            util_fail(job->err, EIO, "cannot import lane '%s': cannot finish entry '%s': %s", job->lane, name,
                      archive_message(disk));
            goto done;
        }
    }
    /* Close applies the deferred directory modes and times. */
    if (archive_write_close(disk) != ARCHIVE_OK) {
        util_fail(job->err, archive_errno(disk) == ENOSPC ? ENOSPC : EIO,
                  "cannot import lane '%s': cannot finish the extraction: %s", job->lane,
                  archive_message(disk));
        goto done;
    }
    rc = 0;
done:
    if (in)
        archive_read_free(in);
    if (disk)
        archive_write_free(disk);
    return rc;
}

static int archive_import(cell_ctx *ctx, const char *name, const char *image, uint64_t disk_size, int fd,
                          cell_error *err)
{
    if (disk_size && disk_size < CELL_LANE_MIN_SIZE)
        return util_fail(err, EINVAL, "lane size %llu bytes is too small: a size-limited lane needs at least 16M",
                         (unsigned long long)disk_size);
    char tmp[PATH_MAX];
    /* Built aside and renamed into place: a failed or hostile import leaves
     * nothing, a crash only a hidden dir.  A sized lane is extracted into
     * its mounted image, so its size bounds what the archive can store. */
    if (runtime_lane_begin(ctx, name, image ? image : "host", disk_size, tmp, sizeof tmp, err) < 0)
        return -1;
    int mnt, upper;
    cell_error why = { 0 };
    if (runtime_lane_open_upper(tmp, 0, &mnt, &upper, &why) < 0) {
        util_fail(err, why.code, "cannot import lane '%s': %s", name, why.message);
        goto fail;
    }
    struct fs_job job = { .fn = import_tree, .lane = name, .dir_fd = upper, .stream_fd = fd, .limit = disk_size,
                          .err = err };
    int rc = run_fs_job(&job);
    close(upper);
    /* Unmounting writes the layer back to its image before the flush. */
    if (mnt >= 0)
        close(mnt);
    if (rc < 0)
        goto fail;
    return runtime_lane_commit(ctx, name, tmp, 1, err);
fail:
    util_rm_rf(tmp, NULL);
    return -1;
}

/* libcell's table (src/runtime/plugin.h): linked into the daemon, or the
 * entry of libcell-archive.so in the lean CLI; cell_lane_export() and
 * cell_lane_import*() are in plugin.c. */
const runtime_archive_ops runtime_archive_builtin = {
    .size = sizeof(runtime_archive_ops),
    .lane_export = archive_export,
    .lane_import = archive_import,
    .image_tree_tar = runtime_image_tree_tar,
    .image_files_tar = runtime_image_files_tar,
};
