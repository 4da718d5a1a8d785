/* util.c: the shared helpers declared in util.h.
 * Every syscall is checked and every failure names what it failed on. */
#include "util/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <link.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

static int fail_v(cell_error *err, int code, const char *suffix, const char *fmt, va_list ap)
{
    if (err) {
        err->code = code;
        int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
        if (suffix && n >= 0 && (size_t)n < sizeof err->message)
            snprintf(err->message + n, sizeof err->message - (size_t)n, ": %s", suffix);
    }
    errno = code;
    return -1;
}

int util_fail(cell_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fail_v(err, code, NULL, fmt, ap);
    va_end(ap);
    return -1;
}

int util_fail_errno(cell_error *err, const char *fmt, ...)
{
    int code = errno ? errno : EIO;
    va_list ap;
    va_start(ap, fmt);
    fail_v(err, code, strerror(code), fmt, ap);
    va_end(ap);
    return -1;
}

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

ssize_t util_write_all_until(int fd, const void *buf, size_t len, int timeout_ms)
{
    const char *p = buf;
    size_t done = 0;
    int64_t deadline = mono_ms() + timeout_ms;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);
        if (n > 0) {
            done += (size_t)n;
            continue;
        }
        if (n < 0 && errno != EINTR && errno != EAGAIN)
            return -1;
        int64_t left = deadline - mono_ms();
        if (left <= 0) {
            errno = ETIMEDOUT;
            return -1;
        }
        struct pollfd pfd = { .fd = fd, .events = POLLOUT };
        if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR)
            return -1;
    }
    return (ssize_t)done;
}

int util_read_each(int fd, const char *path, int (*fn)(void *user, const void *data, size_t len, cell_error *err),
                   void *user, cell_error *err)
{
    static __thread char buf[1 << 16];
    for (;;) {
        ssize_t r = read(fd, buf, sizeof buf);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return util_fail_errno(err, "cannot read %s", path);
        if (r == 0)
            return 0;
        int rc = fn(user, buf, (size_t)r, err);
        if (rc)
            return rc;
    }
}

static int names_filter(const struct dirent *d)
{
    return strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0;
}

static int names_order(const struct dirent **a, const struct dirent **b)
{
    return strcmp((*a)->d_name, (*b)->d_name);
}

int util_dir_names(int dirfd, const char *path, util_names *out, cell_error *err)
{
    /* scandir takes a path: the fd's own /proc link names this directory
     * even if it was moved, without resolving `path` again. */
    char self[64];
    snprintf(self, sizeof self, "/proc/self/fd/%d", dirfd);
    out->v = NULL;
    out->n = scandir(self, &out->v, names_filter, names_order);
    if (out->n < 0) {
        out->n = 0;
        return util_fail_errno(err, "cannot list %s", path);
    }
    return 0;
}

void util_names_free(util_names *names)
{
    for (int i = 0; i < names->n; i++)
        free(names->v[i]);
    free(names->v);
    names->v = NULL;
    names->n = 0;
}

int util_thread_detached(void *(*fn)(void *), void *arg)
{
    pthread_t t;
    pthread_attr_t attr;
    int pe = pthread_attr_init(&attr);
    if (pe != 0)
        return pe;
    pe = pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    if (pe == 0)
        pe = pthread_create(&t, &attr, fn, arg);
    pthread_attr_destroy(&attr);
    return pe;
}

/* Where [data, data + len) lies in the running program's file: a read-only
 * PT_LOAD segment of the main executable (not a library: a library's file
 * may be rewritten while mapped, the running executable's cannot). */
struct image_find {
    uintptr_t addr;
    size_t    len;
    off_t     offset;
    int       found;
};

static int image_find_cb(struct dl_phdr_info *info, size_t size, void *arg)
{
    struct image_find *f = arg;
    (void)size;
    if (info->dlpi_name && info->dlpi_name[0])
        return 1;                   /* the main program comes first; stop */
    for (ElfW(Half) i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && !(ph->p_flags & PF_W) && f->addr >= start &&
            f->len <= ph->p_filesz && f->addr - start <= ph->p_filesz - f->len) {
            f->offset = (off_t)(ph->p_offset + (f->addr - start));
            f->found = 1;
        }
    }
    return 1;
}

/* Copy an embedded blob from the executable's file into fd in the kernel:
 * reading it through our own mapping would fault its pages into this
 * process, which keeps them (the daemon held cell-init's 1 MiB and its
 * neighbours for ever).  0, or -1 if the blob is not in the file or the
 * copy fails (the caller copies through memory then). */
static int copy_from_image(int fd, const void *data, size_t len)
{
    struct image_find f = { .addr = (uintptr_t)data, .len = len };
    dl_iterate_phdr(image_find_cb, &f);
    if (!f.found)
        return -1;
    _cleanup_close_ int exe = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (exe < 0)
        return -1;
    off_t off = f.offset;
    size_t done = 0;
    while (done < len) {
        ssize_t n = sendfile(fd, exe, &off, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        done += (size_t)n;
    }
    return 0;
}

int util_sealed_memfd(const char *name, const void *data, size_t len, cell_error *err)
{
    _cleanup_close_ int fd = memfd_create(name, MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (fd < 0)
        return util_fail_errno(err, "memfd_create for %s", name);
    if (copy_from_image(fd, data, len) < 0 &&
        (ftruncate(fd, 0) < 0 || lseek(fd, 0, SEEK_SET) < 0 || util_write_all(fd, data, len) < 0))
        return util_fail_errno(err, "cannot copy %s into its memfd", name);
    if (util_memfd_seal(fd, name, err) < 0)
        return -1;
    return util_steal_fd(&fd);
}

#define SEALS_FIXED (F_SEAL_SEAL | F_SEAL_SHRINK | F_SEAL_GROW)

int util_memfd_seal(int fd, const char *name, cell_error *err)
{
    /* F_SEAL_WRITE fails with EBUSY while any page of the file has an extra
     * reference, and a page just written can hold one for a while in another
     * CPU's LRU batch (the kernel drains only its own CPU's before giving
     * up): a flake under load.  F_SEAL_FUTURE_WRITE refuses every later
     * write() and writable mapping without that wait; it is as strong here
     * because the writer never mapped the file writable. */
    if (fcntl(fd, F_ADD_SEALS, SEALS_FIXED | F_SEAL_WRITE) < 0 &&
        (errno != EBUSY || fcntl(fd, F_ADD_SEALS, SEALS_FIXED | F_SEAL_FUTURE_WRITE) < 0))
        return util_fail_errno(err, "cannot seal the %s memfd", name);
    return 0;
}

int util_memfd_is_sealed(int fd)
{
    int seals = fcntl(fd, F_GET_SEALS);
    return seals >= 0 && (seals & SEALS_FIXED) == SEALS_FIXED && (seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE));
}

ssize_t util_write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write(fd, p + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        done += (size_t)n;
    }
    return (ssize_t)done;
}

ssize_t util_read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    size_t done = 0;
    while (done < len) {
        ssize_t n = read(fd, p + done, len - done);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        done += (size_t)n;
    }
    return (ssize_t)done;
}

int util_write_file(const char *path, const void *data, size_t len, mode_t mode, int durable, cell_error *err)
{
    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0)
        return util_fail_errno(err, "cannot create %s", path);
    if (util_write_all(fd, data, len) < 0)
        return util_fail_errno(err, "cannot write %s", path);
    if (durable && fsync(fd) < 0)
        return util_fail_errno(err, "cannot fsync %s", path);
    return 0;
}

int util_read_fd(int fd, const char *what, size_t max, char **out, size_t *len, cell_error *err)
{
    /* A file that states its size (as image.json or an image's passwd)
     * gets a buffer of that size, growing if it grew, rather than one of
     * `max`: a buffer of `max` (often 1 MiB) is an mmap, and freeing it
     * raises glibc's mmap threshold, after which the next large calloc
     * (cell_create's plan, 270 KiB) comes from the heap and is cleared page
     * by page.  Files that say 0 (/proc, sysctl, cgroup) are read in one
     * read of max + 1 as before: a sysctl read at an offset past 0 is EOF. */
    struct stat st;
    size_t cap = max + 1;
    if (fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_size > 0 && (uint64_t)st.st_size < max)
        cap = (size_t)st.st_size + 1;
    _cleanup_free_ char *buf = malloc(cap);
    size_t n = 0;
    while (buf) {
        if (n == cap) {
            if (cap > max)
                break; /* max + 1 bytes read: too large */
            size_t next = cap > (max + 1) / 2 ? max + 1 : cap * 2;
            char *p = realloc(buf, next);
            if (!p)
                return util_fail(err, ENOMEM, "out of memory reading %s", what);
            buf = p;
            cap = next;
        }
        ssize_t r = read(fd, buf + n, cap - n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0)
            return util_fail_errno(err, "cannot read %s", what);
        if (r == 0)
            break;
        n += (size_t)r;
    }
    if (!buf)
        return util_fail(err, ENOMEM, "out of memory reading %s", what);
    if (n > max)
        return util_fail(err, EFBIG, "%s is larger than %zu bytes", what, max);
    buf[n] = '\0'; /* n < cap: a full buffer was grown or refused above */
    if (len)
        *len = n;
    *out = buf;
    buf = NULL;
    return 0;
}

int util_read_file(const char *path, size_t max, char **out, size_t *len, cell_error *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", path);
    return util_read_fd(fd, path, max, out, len, err);
}

int util_mkdir_p(const char *path, mode_t mode, cell_error *err)
{
    char tmp[4096];
    if (util_path(tmp, sizeof tmp, err, "%s", path) < 0)
        return -1;
    for (char *p = tmp + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(tmp, mode) < 0 && errno != EEXIST)
            return util_fail_errno(err, "cannot create directory %s", tmp);
        *p = '/';
    }
    if (mkdir(tmp, mode) < 0 && errno != EEXIST)
        return util_fail_errno(err, "cannot create directory %s", tmp);
    return 0;
}

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    (void)st;
    (void)ftw;
    int r = (type == FTW_DP) ? rmdir(path) : unlink(path);
    return (r < 0 && errno != ENOENT) ? -1 : 0;
}

int util_rm_rf(const char *path, cell_error *err)
{
    struct stat st;
    if (lstat(path, &st) < 0)
        return errno == ENOENT ? 0 : util_fail_errno(err, "cannot stat %s", path);
    /* FTW_PHYS: never follow symlinks; FTW_MOUNT: never cross into a mount
     * that a crashed cell may have left behind. */
    if (nftw(path, rm_entry, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0)
        return util_fail_errno(err, "cannot remove %s", path);
    return 0;
}

int util_random_hex(char *out, size_t bytes)
{
    unsigned char raw[64];
    if (bytes > sizeof raw)
        return -1;
    size_t got = 0;
    while (got < bytes) {
        ssize_t n = getrandom(raw + got, bytes - got, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        got += (size_t)n;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < bytes; i++) {
        out[2 * i] = hex[raw[i] >> 4];
        out[2 * i + 1] = hex[raw[i] & 15];
    }
    out[2 * bytes] = '\0';
    return 0;
}

int util_valid_name(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > 63 || name[0] == '.' || name[0] == '-')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char ch = name[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
                 ch == '_' || ch == '.' || ch == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

int util_path(char *buf, size_t size, cell_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= size)
        return util_fail(err, ENAMETOOLONG, "path too long: %.200s...", buf);
    return n;
}

int util_exe_sibling(char *buf, size_t size, const char *name, cell_error *err)
{
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return util_fail_errno(err, "cannot find the running program (/proc/self/exe)");
    exe[n] = '\0';
    char *slash = strrchr(exe, '/');
    if (!slash)
        return util_fail(err, ENOENT, "the running program has no directory: %s", exe);
    *slash = '\0';
    return util_path(buf, size, err, "%s/%s", exe, name) < 0 ? -1 : 0;
}

int util_run(const char *const *argv, cell_error *err)
{
    int out[2];
    if (pipe2(out, O_CLOEXEC) < 0)
        return util_fail_errno(err, "pipe for %s", argv[0]);
    pid_t pid = fork();
    if (pid < 0) {
        close(out[0]);
        close(out[1]);
        return util_fail_errno(err, "fork for %s", argv[0]);
    }
    if (pid == 0) {
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd < 0 || dup2(null_fd, 0) < 0 || dup2(out[1], 1) < 0 || dup2(out[1], 2) < 0)
            _exit(127);
        setenv("PATH", "/usr/sbin:/usr/bin:/sbin:/bin", 1);
        execvp(argv[0], (char *const *)argv);
        dprintf(2, "cannot run %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(out[1]);
    /* Keep the last bytes of the output for the error message. */
    char tail[512];
    size_t len = 0;
    for (;;) {
        char buf[4096];
        ssize_t n = read(out[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        size_t add = (size_t)n < sizeof tail - 1 ? (size_t)n : sizeof tail - 1;
        if (len + add > sizeof tail - 1) {
            size_t drop = len + add - (sizeof tail - 1);
            memmove(tail, tail + drop, len - drop);
            len -= drop;
        }
        memcpy(tail + len, buf + (size_t)n - add, add);
        len += add;
    }
    tail[len] = '\0';
    close(out[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return util_fail_errno(err, "waitpid for %s", argv[0]);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    while (len && (tail[len - 1] == '\n' || tail[len - 1] == ' '))
        tail[--len] = '\0';
    char *last = strrchr(tail, '\n');
    return util_fail(err, EIO, "%s failed (%s %d): %s", argv[0], WIFEXITED(status) ? "exit status" : "signal",
                     WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status), last ? last + 1 : tail);
}

/* One pass: a valid sequence is copied, each byte that does not start one
 * becomes the 3 bytes of U+FFFD, so 3 * len + 1 bytes always suffice. */
char *util_utf8_lossy(const unsigned char *s, size_t len, size_t *out_len)
{
    char *out = len < (SIZE_MAX - 1) / 3 ? malloc(len * 3 + 1) : NULL;
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        unsigned char c = s[i];
        size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        int ok = n > 0 && i + n <= len;
        for (size_t k = 1; ok && k < n; k++)
            ok = (s[i + k] & 0xC0) == 0x80;
        if (ok && n == 2 && c < 0xC2)
            ok = 0;                                     /* overlong */
        if (ok && n == 3) {
            uint32_t cp = (uint32_t)(c & 0x0F) << 12 | (uint32_t)(s[i + 1] & 0x3F) << 6 | (s[i + 2] & 0x3F);
            ok = cp >= 0x800 && (cp < 0xD800 || cp > 0xDFFF);
        }
        if (ok && n == 4) {
            uint32_t cp = (uint32_t)(c & 0x07) << 18 | (uint32_t)(s[i + 1] & 0x3F) << 12 |
                          (uint32_t)(s[i + 2] & 0x3F) << 6 | (s[i + 3] & 0x3F);
            ok = cp >= 0x10000 && cp <= 0x10FFFF;
        }
        if (ok) {
            memcpy(out + o, s + i, n);
            o += n;
            i += n;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i++;
        }
    }
    out[o] = '\0';
    *out_len = o;
    return out;
}

uint64_t util_pid_start_time(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    if (n <= 0)
        return 0;
    buf[n] = 0;
    /* Field 2 (comm) may hold spaces and ')': count from the last ')'. */
    char *p = strrchr(buf, ')');
    for (int field = 2; p && field < 22; field++)
        p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}
