/* cell-untar: the tar parser of uploads (src/runtime/untar.c runs it).  It
 * reads an archive on fd 0 with libarchive and writes its entries and data
 * as frames (runtime/untar.h) on fd 1, as nobody, with no_new_privs, no
 * capabilities and a seccomp allow list of reading, writing and memory, so
 * that a libarchive bug exploited by a tenant's tar has nothing to act on:
 * a fresh program, it holds none of the daemon's memory either. */
#include "runtime/untar.h"
#include "util/util.h"

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <grp.h>
#include <seccomp.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#define UNTAR_NOBODY 65534

static int send_frame(uint32_t kind, uint32_t mode, uint64_t off, const void *a, size_t alen, const void *b,
                      size_t blen)
{
    struct untar_frame f = { kind, mode, (uint32_t)alen, (uint32_t)blen, off };
    return util_write_all(1, &f, sizeof f) < 0 || util_write_all(1, a, alen) < 0 ||
           util_write_all(1, b, blen) < 0 ? -1 : 0;
}

static int send_error(int code, const char *what, struct archive *a)
{
    const char *m = archive_error_string(a);
    char msg[512];
    int n = snprintf(msg, sizeof msg, "%s: %s", what, m ? m : "unknown error");
    return send_frame(UNTAR_ERROR, (uint32_t)code, 0, msg, n < 0 ? 0 : strnlen(msg, sizeof msg), "", 0);
}

static int send_data(struct archive *a, const char *name)
{
    const void *buf;
    size_t len;
    la_int64_t off;
    int r;
    while ((r = archive_read_data_block(a, &buf, &len, &off)) == ARCHIVE_OK) {
        for (size_t done = 0; done < len;) {
            size_t k = len - done < UNTAR_BLOCK ? len - done : UNTAR_BLOCK;
            if (send_frame(UNTAR_DATA, 0, (uint64_t)off + done, (const char *)buf + done, k, "", 0) < 0)
                return -1;
            done += k;
        }
    }
    if (r != ARCHIVE_EOF) {
        char what[300];
        snprintf(what, sizeof what, "cannot read tar data for %.255s", name);
        send_error(EIO, what, a);
        return -1;
    }
    return send_frame(UNTAR_DATA_END, 0, 0, "", 0, "", 0);
}

static uint32_t kind_of(struct archive_entry *e)
{
    /* Hard links may carry no file type at all (pax): first. */
    if (archive_entry_hardlink(e))
        return UNTAR_HARDLINK;
    switch (archive_entry_filetype(e)) {
    case AE_IFDIR: return UNTAR_DIR;
    case AE_IFREG: return UNTAR_FILE;
    case AE_IFLNK: return UNTAR_SYMLINK;
    default: return UNTAR_OTHER;
    }
}

static uint32_t id32(la_int64_t id)
{
    return id < 0 || id > (la_int64_t)UINT32_MAX ? UINT32_MAX : (uint32_t)id;
}

static void parse(int tar_fd)
{
    struct archive *a = archive_read_new();
    if (!a)
        return;
    archive_read_support_format_tar(a);
    archive_read_support_format_gnutar(a);
    archive_read_support_filter_gzip(a);
#if ARCHIVE_VERSION_NUMBER >= 3003003
    archive_read_support_filter_zstd(a); /* image layers (tar+zstd); lacking it, such a tar is refused */
#endif
    archive_read_support_filter_none(a);
    if (archive_read_open_fd(a, tar_fd, 64 * 1024) != ARCHIVE_OK) {
        send_error(EBADMSG, "not a tar stream", a);
        return;
    }
    struct archive_entry *e;
    int r;
    while ((r = archive_read_next_header(a, &e)) == ARCHIVE_OK) {
        uint32_t kind = kind_of(e);
        const char *name = archive_entry_pathname(e), *link = NULL;
        if (kind == UNTAR_HARDLINK)
            link = archive_entry_hardlink(e);
        else if (kind == UNTAR_SYMLINK)
            link = archive_entry_symlink(e);
        name = name ? name : "";
        link = link ? link : "";
        /* An entry frame's off carries its owner: uid << 32 | gid (image
         * layers keep ownership; out-of-range ids saturate, for the owner
         * to refuse). */
        uint64_t owner = (uint64_t)id32(archive_entry_uid(e)) << 32 | id32(archive_entry_gid(e));
        if (send_frame(kind, (uint32_t)(archive_entry_perm(e) & 07777), owner, name, strlen(name), link,
                       strlen(link)) < 0)
            return;
        if (kind == UNTAR_FILE && send_data(a, name) < 0)
            return;
    }
    if (r == ARCHIVE_EOF)
        send_frame(UNTAR_DONE, 0, 0, "", 0, "", 0);
    else
        send_error(EBADMSG, "malformed tar stream", a);
    archive_read_free(a);
}

/* Reading, writing and memory; anything else fails with EPERM (not a kill,
 * so that a library's optional call degrades instead of losing the upload). */
static scmp_filter_ctx build_filter(void)
{
    scmp_filter_ctx f = seccomp_init(SCMP_ACT_ERRNO(EPERM));
    static const char *const allowed[] = {
        "read", "write", "close", "lseek", "fstat", "newfstatat", "brk", "munmap", "mremap", "madvise",
        "futex", "exit", "exit_group", "rt_sigreturn", "rt_sigprocmask", "getpid", "gettid", "clock_gettime",
        "sched_yield", "sigaltstack",
    };
    for (size_t i = 0; f && i < sizeof allowed / sizeof *allowed; i++) {
        int nr = seccomp_syscall_resolve_name(allowed[i]);
        if (nr != __NR_SCMP_ERROR && seccomp_rule_add(f, SCMP_ACT_ALLOW, nr, 0) < 0) {
            seccomp_release(f);
            return NULL;
        }
    }
    /* Memory, but never executable memory. */
    if (f && (seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(mmap), 1, SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) < 0 ||
              seccomp_rule_add(f, SCMP_ACT_ALLOW, SCMP_SYS(mprotect), 1,
                               SCMP_A2(SCMP_CMP_MASKED_EQ, PROT_EXEC, 0)) < 0)) {
        seccomp_release(f);
        return NULL;
    }
    return f;
}

int main(void)
{
    /* Exec'd by the owner (untar.c) as root with the tar stream on 0, the
     * frame pipe on 1 and nothing else; confinement comes first. */
    scmp_filter_ctx filter = build_filter();
    if (!filter || setgroups(0, NULL) < 0 || setresgid(UNTAR_NOBODY, UNTAR_NOBODY, UNTAR_NOBODY) < 0 ||
        setresuid(UNTAR_NOBODY, UNTAR_NOBODY, UNTAR_NOBODY) < 0 || prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0 ||
        prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0 ||
        seccomp_load(filter) < 0)
        return 1;
    seccomp_release(filter);
    parse(0);
    return 0;
}
