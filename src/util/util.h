/* util.h: small helpers every module shares: error values, cleanup
 * attributes, whole-file I/O, names and sizes.  Nothing here allocates globals. */
#ifndef CELL_UTIL_H
#define CELL_UTIL_H

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/types.h>

#include "cell.h"

/* Fill *err (if non-NULL) and return -1, so failures read `return util_fail(...)`. */
int util_fail(cell_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Same, with code = errno and ": strerror(errno)" appended. */
int util_fail_errno(cell_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Cleanup attributes: the variable's owner is its scope. */
static inline void util_closep(int *fd) { if (*fd >= 0) { int saved = errno; close(*fd); errno = saved; } }
static inline void util_freep(void *p) { free(*(void **)p); }
#define _cleanup_close_ __attribute__((cleanup(util_closep)))
#define _cleanup_free_  __attribute__((cleanup(util_freep)))
/* Hand ownership out of a cleanup variable. */
static inline int util_steal_fd(int *fd) { int r = *fd; *fd = -1; return r; }

ssize_t util_write_all(int fd, const void *buf, size_t len);
/* The same for a non-blocking fd (a pipe or pty whose reader may stall):
 * waits for room at most timeout_ms in all, then fails with ETIMEDOUT
 * (some bytes may have been written by then). */
ssize_t util_write_all_until(int fd, const void *buf, size_t len, int timeout_ms);
/* A memfd (close-on-exec) holding `len` bytes of `data`, sealed against
 * writes, growth, shrinking and further seals: what the runtime execs
 * (cell-init, cell-egress, cell-untar) or hands to a cell, so nothing can
 * rewrite it afterwards (the runc /proc/self/exe overwrite, CVE-2019-5736).
 * The fd, or -1 with err naming `name`. */
int util_sealed_memfd(const char *name, const void *data, size_t len, cell_error *err);
/* Seal a memfd its writer has filled (never mapped writable) against any
 * change: F_SEAL_WRITE, or F_SEAL_FUTURE_WRITE where the kernel still holds
 * a just-written page (EBUSY), with SEAL, SHRINK and GROW.  NAME is for the
 * error. */
int util_memfd_seal(int fd, const char *name, cell_error *err);
/* Whether fd carries util_memfd_seal's seals. */
int util_memfd_is_sealed(int fd);
/* Start fn(arg) on a detached thread: 0, or pthread_create()'s error
 * number (the caller still owns arg then). */
int util_thread_detached(void *(*fn)(void *), void *arg);
ssize_t util_read_all(int fd, void *buf, size_t len);
/* Read fd to its end in 64 KiB chunks, handing each to fn (EINTR retried):
 * 0, fn's first non-zero result, or -1 with err naming `path`. */
int util_read_each(int fd, const char *path, int (*fn)(void *user, const void *data, size_t len, cell_error *err),
                   void *user, cell_error *err);
/* The entries of the directory dirfd but "." and "..", sorted with strcmp,
 * so a walk is the same whatever order the filesystem lists them in. */
struct dirent;
typedef struct util_names { struct dirent **v; int n; } util_names;
int util_dir_names(int dirfd, const char *path, util_names *out, cell_error *err);
void util_names_free(util_names *names);
#define _cleanup_names_ __attribute__((cleanup(util_names_free)))
/* Write `len` bytes to path (O_CREAT|O_TRUNC, mode), fsync if `durable`. */
int util_write_file(const char *path, const void *data, size_t len, mode_t mode, int durable, cell_error *err);
/* Read a whole small file (<= max bytes) into a NUL-terminated malloc()ed buffer. */
int util_read_file(const char *path, size_t max, char **out, size_t *len, cell_error *err);
/* The same from an open fd (`what` names it in errors); the buffer grows
 * from the file's size, never past max + 1. */
int util_read_fd(int fd, const char *what, size_t max, char **out, size_t *len, cell_error *err);
int util_mkdir_p(const char *path, mode_t mode, cell_error *err);
/* Remove a tree without following symlinks or crossing mount points. */
int util_rm_rf(const char *path, cell_error *err);
/* 2*bytes lowercase hex chars from getrandom(), NUL-terminated. */
int util_random_hex(char *out, size_t bytes);
/* s[0..len) as valid UTF-8: each byte of an invalid sequence becomes U+FFFD,
 * as the reference's lossy conversion does (output shown as JSON strings,
 * which jansson refuses unless valid).  malloc()ed, NUL-terminated, its
 * length in *out_len; NULL when out of memory. */
char *util_utf8_lossy(const unsigned char *s, size_t len, size_t *out_len);
/* Lane, image and cell names: 1..63 of [A-Za-z0-9_.-], no leading '.' or '-'. */
int util_valid_name(const char *name);
/* Run argv[0] (searched in a PATH that includes the sbin directories) with
 * stdin from /dev/null and its output captured; a non-zero exit becomes
 * *err with the last line of that output. */
int util_run(const char *const *argv, cell_error *err);

/* snprintf that reports truncation as ENAMETOOLONG. */
int util_path(char *buf, size_t size, cell_error *err, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
/* The path of `name` in the directory of the running executable
 * (/proc/self/exe), where the build puts its companions (cell-daemon,
 * cell-init).  0, or -1 with err filled. */
int util_exe_sibling(char *buf, size_t size, const char *name, cell_error *err);
/* /proc/PID/stat's start time (field 22), 0 when the process is gone: with
 * the pid it names one process for good (a reused pid starts later). */
uint64_t util_pid_start_time(pid_t pid);

#endif
