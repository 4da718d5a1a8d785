/* cp_cmd.c: `cell cp`, files and directories into and out of a cell, and
 * tar streams on stdin and stdout (`-`).  Into a cell, a directory or a tar
 * goes to POST fs/upload-batch, whose tar the daemon parses in cell-untar.
 * Out of a cell, a file is GET fs/file; a directory is a tar that `tar`
 * makes in the cell, i.e. written by the cell, hostile: it is parsed here
 * by cell-untar too (confined, runtime/untar.c), and every entry is made
 * with openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS) below DST, so that no
 * name (../x, /x) or symlink (a link then a file through it) reaches out of
 * DST; set-id bits are dropped and nothing is chowned. */
#include "cli/cells_cmds.h"
#include "runtime/plugin.h"
#include "runtime/untar.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <libgen.h>
#include <limits.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

const char cli_cp_usage[] =
    "usage: cell cp SRC ID:DST    copy a local file or directory into cell ID\n"
    "       cell cp ID:SRC DST    copy a file or directory out of cell ID\n"
    "       cell cp - ID:DIR      extract a tar read from stdin into DIR in the cell\n"
    "       cell cp ID:SRC -      write SRC (file or directory) as a tar to stdout\n"
    "\n"
    "Copy files and directories between this host and a cell.\n"
    "\n"
    "Exactly one side is ID:PATH.  A file copied onto an existing directory\n"
    "(or a path ending in /) keeps its name inside it; a directory copied onto\n"
    "an existing directory becomes DST/NAME, else it becomes DST.  Contents\n"
    "stream; nothing is held in memory.\n"
    "\n"
    "A directory comes out of a cell as a tar made by the cell's `tar` (it\n"
    "must have one): entries whose names leave DST (..) or pass through a\n"
    "symbolic link are refused (a leading / is dropped), set-id bits are\n"
    "dropped, owners are not kept, and devices, fifos and hard links are\n"
    "skipped (with a message).  `-` as DST writes the cell's tar as it is\n"
    "(NAME/... entries) and never to a terminal; `-` as SRC sends the tar to\n"
    "the daemon, which unpacks it in the cell.\n"
    "\n" EXIT_NOTE DAEMON_NOTE;

/* "ID:PATH" names a path in a cell: an id-like prefix (no '/') before the ':'. */
static int split_remote(const char *arg, char **id, const char **path)
{
    size_t n = strspn(arg, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-");
    if (n == 0 || arg[n] != ':')
        return 0;
    *id = strndup(arg, n);
    *path = arg + n + 1;
    return 1;
}

struct cp_args {
    char       *id;
    const char *remote;     /* path in the cell */
    const char *local;
    int         upload;
    const char *remote_arg; /* "ID:PATH" as given, for messages */
};

/* DST, or DST/NAME when DST is a directory (or ends in '/'). */
static char *join_target(const char *dst, int into, const char *src)
{
    char *copy = strdup(src), *out = NULL;
    if (!copy)
        return NULL;
    size_t n = strlen(copy);
    while (n > 1 && copy[n - 1] == '/')
        copy[--n] = '\0';
    const char *name = basename(copy);
    size_t dl = strlen(dst);
    if (!into && !(dl && dst[dl - 1] == '/'))
        out = strdup(dst);
    else if (asprintf(&out, "%s%s%s", dst, dl && dst[dl - 1] == '/' ? "" : "/", name) < 0)
        out = NULL;
    free(copy);
    return out;
}

static int upload_file(client *c, struct cp_args *a, const char *target, int fd, off_t size)
{
    char *path = cli_client_pathf("/cells/%s/v1/fs/file?path=%s", a->id, target);
    int rc = path ? cli_client_upload(c, "PUT", path, fd, (long long)size, a->remote_arg, NULL)
                  : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    return rc;
}

/* A directory as a tar stream, written by a thread into a pipe that the
 * request body reads.  libarchive is in the archive plugin, loaded here. */
struct tar_job {
    const char *src;
    int         fd;             /* the pipe's write end; closed by the job */
    cell_error  err;
    int         failed;
    int         local;          /* err is about reading SRC, not a stopped request */
};

static void tar_skipped(const char *path)
{
    fprintf(stderr, "cell: cp: skipping %s: only files, directories and symlinks are copied\n", path);
}

static void *tar_main(void *arg)
{
    struct tar_job *t = arg;
    /* A daemon that stops reading makes our writes fail with EPIPE, not kill us. */
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, NULL);
    const runtime_archive_ops *ar = runtime_archive(&t->err);
    int rc = !ar ? -1
           : !ar->tar_dir ? util_fail(&t->err, ENOSYS, "this program cannot pack a directory")
           : ar->tar_dir(t->src, t->fd, tar_skipped, &t->local, &t->err);
    t->failed = rc < 0;
    /* Without the plugin nothing was sent: that is what to report. */
    t->local |= rc < 0 && (!ar || !ar->tar_dir);
    close(t->fd);
    return NULL;
}

static int upload_dir(client *c, struct cp_args *a, const char *target)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return cli_fail(CLI_EXIT_INTERNAL, "pipe: %s", strerror(errno));
    struct tar_job t = { .src = a->local, .fd = p[1] };
    pthread_t th;
    int err = pthread_create(&th, NULL, tar_main, &t);
    if (err) {
        close(p[0]);
        close(p[1]);
        return cli_fail(CLI_EXIT_INTERNAL, "cannot start a thread: %s", strerror(err));
    }
    char *path = cli_client_pathf("/cells/%s/v1/fs/upload-batch?path=%s", a->id, target);
    int rc = path ? cli_client_upload(c, "POST", path, p[0], -1, a->remote_arg, NULL)
                  : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    close(p[0]);                /* unblocks a writer the daemon stopped reading */
    pthread_join(th, NULL);
    /* A failure to read SRC explains the daemon's complaint about a short
     * tar; a failed write only echoes the request's own failure. */
    if (t.failed && (t.local || rc == 0))
        return cli_fail(CLI_EXIT_REFUSED, "%s: %s", a->local, t.err.message);
    return rc;
}

/* `cell cp - ID:DIR`: stdin is a tar; the daemon unpacks it (in cell-untar). */
static int upload_stdin(client *c, struct cp_args *a)
{
    if (isatty(0))
        return cli_fail(CLI_EXIT_USAGE, "cp: stdin is a terminal, not a tar: give one with < FILE.tar or "
                        "tar -c ... | cell cp - %s", a->remote_arg);
    char *path = cli_client_pathf("/cells/%s/v1/fs/upload-batch?path=%s", a->id, a->remote);
    int rc = path ? cli_client_upload(c, "POST", path, 0, -1, a->remote_arg, NULL)
                  : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    return rc;
}

static int do_upload(client *c, struct cp_args *a)
{
    if (strcmp(a->local, "-") == 0)
        return upload_stdin(c, a);
    int fd = open(a->local, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        return cli_fail(CLI_EXIT_REFUSED, "%s: %s", a->local, strerror(e));
    }
    if (!S_ISREG(st.st_mode) && !S_ISDIR(st.st_mode)) {
        close(fd);
        return cli_fail(CLI_EXIT_REFUSED, "%s: only regular files and directories can be copied", a->local);
    }
    char *target = join_target(a->remote, cli_remote_is_dir(c, a->id, a->remote), a->local);
    int rc;
    if (!target)
        rc = cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    else if (S_ISDIR(st.st_mode))
        rc = upload_dir(c, a, target);
    else
        rc = upload_file(c, a, target, fd, st.st_size);
    close(fd);
    free(target);
    return rc;
}

/* Download: the body goes to a temporary file beside DST, renamed into
 * place on success, so a failed copy never leaves half a file. */
struct download {
    int fd;
    int write_errno;
};

static int download_write(void *user, const char *p, size_t n)
{
    struct download *d = user;
    if (util_write_all(d->fd, p, n) < 0) {
        d->write_errno = errno;
        return -1;
    }
    return 0;
}

static int open_temp(const char *dst, char **tmp)
{
    if (asprintf(tmp, "%s.cell-cp-XXXXXX", dst) < 0) {
        *tmp = NULL;
        return -1;
    }
    int fd = mkostemp(*tmp, O_CLOEXEC);
    if (fd < 0)
        return -1;
    mode_t mask = umask(0);
    umask(mask);
    fchmod(fd, 0666 & ~mask);
    return fd;
}

static int fetch(client *c, struct cp_args *a, struct download *d)
{
    char *path = cli_client_pathf("/cells/%s/v1/fs/file?path=%s", a->id, a->remote);
    int rc = path ? cli_client_get_stream(c, path, download_write, d, NULL, a->remote_arg)
                  : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    if (rc < 0)
        rc = cli_fail(CLI_EXIT_REFUSED, "%s: %s", a->local, strerror(d->write_errno));
    return rc;
}

/* ---- a directory out of a cell -------------------------------------------------------------- */
#define CP_RESOLVE (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)

/* The directory `path` below `root` (both resolved with no symlink and
 * nothing above root), made (0755) where missing: an O_PATH fd, or -1. */
static int dir_beneath(int root, const char *path)
{
    struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC, .resolve = CP_RESOLVE };
    int fd = (int)syscall(SYS_openat2, root, path, &how, sizeof how);
    if (fd >= 0 || errno != ENOENT)
        return fd;
    /* A parent the tar did not list first: each component in turn. */
    char *copy = strdup(path), *save = NULL;
    int cur = copy ? fcntl(root, F_DUPFD_CLOEXEC, 3) : -1;
    for (char *comp = copy ? strtok_r(copy, "/", &save) : NULL; comp && cur >= 0; comp = strtok_r(NULL, "/", &save)) {
        if (mkdirat(cur, comp, 0755) < 0 && errno != EEXIST) {
            close(cur);
            cur = -1;
            break;
        }
        int next = (int)syscall(SYS_openat2, cur, comp, &how, sizeof how);
        close(cur);
        cur = next;
    }
    free(copy);
    return cur;
}

struct extract {
    int         tar_fd;         /* the parser's input: the read end of the cell's tar */
    int         root;           /* DST */
    const char *dst;
    cell_error  err;
    int         failed;
};

/* An entry's name relative to DST in buf, split into its directory and its
 * last component: 1, 0 for DST itself, -1 (err set) for a name with "..". */
static int entry_name(struct extract *x, const char *name, char *buf, size_t size, const char **dir, const char **base)
{
    while (*name == '/' || (name[0] == '.' && (name[1] == '/' || !name[1])))
        name++;                     /* "/", "./" and "." prefixes: below DST, as tar(1) does */
    if (snprintf(buf, size, "%s", name) >= (int)size)
        return util_fail(&x->err, ENAMETOOLONG, "an entry's name is too long");
    size_t n = strlen(buf);
    while (n && buf[n - 1] == '/')
        buf[--n] = '\0';
    if (!n)
        return 0;
    for (const char *c = buf; c; c = strchr(c, '/') ? strchr(c, '/') + 1 : NULL)
        if (c[0] == '.' && c[1] == '.' && (!c[2] || c[2] == '/'))
            return util_fail(&x->err, EXDEV, "refusing '%s' in the cell's tar: it leads out of %s", name, x->dst);
    char *slash = strrchr(buf, '/');
    *dir = slash ? buf : ".";
    *base = slash ? slash + 1 : buf;
    if (slash)
        *slash = '\0';
    return 1;
}

/* Make room for a new entry: remove what is there unless it is a directory. */
static int clear_slot(int dir, const char *base, const char *name, struct extract *x)
{
    if (unlinkat(dir, base, 0) == 0 || errno == ENOENT)
        return 0;
    return util_fail_errno(&x->err, "%s/%s: cannot replace it", x->dst, name);
}

static int write_file(struct extract *x, runtime_untar *u, int dir, const char *base, const char *name, mode_t perm)
{
    if (clear_slot(dir, base, name, x) < 0)
        return -1;
    int fd = openat(dir, base, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, perm);
    if (fd < 0)
        return util_fail_errno(&x->err, "%s/%s", x->dst, name);
    const void *buf;
    size_t len;
    uint64_t off;
    int r;
    while ((r = runtime_untar_data(u, &buf, &len, &off, &x->err)) == 1)
        if (pwrite(fd, buf, len, (off_t)off) != (ssize_t)len) {
            r = util_fail_errno(&x->err, "%s/%s", x->dst, name);
            break;
        }
    if (close(fd) < 0 && r == 0)
        r = util_fail_errno(&x->err, "%s/%s", x->dst, name);
    return r;
}

static int make_entry(struct extract *x, runtime_untar *u, const runtime_untar_entry *e)
{
    char name[PATH_MAX];
    const char *dir_path = NULL, *base = NULL;
    int k = entry_name(x, e->name, name, sizeof name, &dir_path, &base);
    if (k <= 0)
        return k;
    if (e->kind == UNTAR_HARDLINK || e->kind == UNTAR_OTHER) {
        fprintf(stderr, "cell: cp: skipping %s/%s%s%s: only files, directories and symlinks are copied\n", x->dst,
                strcmp(dir_path, ".") ? dir_path : "", strcmp(dir_path, ".") ? "/" : "", base);
        return 0;
    }
    int dir = dir_beneath(x->root, dir_path);
    if (dir < 0)
        return util_fail(&x->err, errno, "refusing '%s' in the cell's tar: %s/%s %s", e->name, x->dst, dir_path,
                         errno == ELOOP || errno == EXDEV ? "is reached through a symbolic link" : strerror(errno));
    /* No set-id bits: the files are ours (root's, often) now, not the cell's. */
    mode_t perm = e->perm & 0777;
    int rc = 0;
    struct stat st;
    if (e->kind == UNTAR_DIR) {
        if (mkdirat(dir, base, perm | 0700) < 0 &&
            (errno != EEXIST || fstatat(dir, base, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISDIR(st.st_mode)))
            rc = util_fail(&x->err, errno == EEXIST ? EEXIST : errno, "%s/%s: cannot make a directory there",
                           x->dst, e->name);
    } else if (e->kind == UNTAR_SYMLINK) {
        if (clear_slot(dir, base, e->name, x) < 0 || symlinkat(e->link, dir, base) < 0)
            rc = x->err.code ? -1 : util_fail_errno(&x->err, "%s/%s", x->dst, e->name);
    } else {
        rc = write_file(x, u, dir, base, e->name, perm);
    }
    close(dir);
    return rc;
}

/* Most a cell's tar may write past its end-of-archive blocks: tar pads the
 * archive to its record size (10 KiB by default, -b 2048 makes 1 MiB). */
#define CP_TAIL_MAX (1u << 20)

/* Read the rest of the stream after a clean end of archive: 0 at its end,
 * -1 (err set) past CP_TAIL_MAX.  Closing at the end marker instead made
 * the cell's padding write fail with EPIPE, reported as exit 141 with the
 * files all copied: a race, lost when the padding came in a later read. */
static int drain_tail(struct extract *x)
{
    char buf[16384];
    size_t seen = 0;
    for (;;) {
        ssize_t n = read(x->tar_fd, buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return 0;               /* a read error ends the stream like EOF: exec reports how it ended */
        if ((seen += (size_t)n) > CP_TAIL_MAX)
            return util_fail(&x->err, EPROTO, "the cell's tar went on writing more than %u bytes past the end "
                             "of its archive", CP_TAIL_MAX);
    }
}

static void *extract_main(void *arg)
{
    struct extract *x = arg;
    runtime_untar u;
    /* tar_fd stays ours until the end: closed early (the parser failed) the
     * writer sees EPIPE and stops; after a clean end it is drained. */
    int r = runtime_untar_start(x->tar_fd, &u, &x->err);
    if (r == 0) {
        runtime_untar_entry e;
        while ((r = runtime_untar_next(&u, &e, &x->err)) == 1)
            if (make_entry(x, &u, &e) < 0) {
                r = -1;
                break;
            }
        runtime_untar_end(&u);
    }
    if (r == 0)
        r = drain_tail(x);
    close(x->tar_fd);
    x->failed = r < 0;
    return NULL;
}

/* An absolute path in the cell (relative ones are the API's: below /root). */
static char *cell_abs(const char *path)
{
    char *out;
    return asprintf(&out, "%s%s", path[0] == '/' ? "" : "/root/", path) < 0 ? NULL : out;
}

/* `cell cp ID:DIR DST`: the cell's `tar -C DIR -cf - .` into DST (made). */
static int download_dir(client *c, struct cp_args *a, const char *dst)
{
    if (mkdir(dst, 0777) < 0 && errno != EEXIST)
        return cli_fail(CLI_EXIT_REFUSED, "%s: %s", dst, strerror(errno));
    struct extract x = { .dst = dst, .root = open(dst, O_RDONLY | O_DIRECTORY | O_CLOEXEC) };
    if (x.root < 0)
        return cli_fail(CLI_EXIT_REFUSED, "%s: %s", dst, strerror(errno));
    int p[2];
    char *src = cell_abs(a->remote);
    pthread_t th;
    int rc = !src ? cli_fail(CLI_EXIT_INTERNAL, "out of memory")
           : pipe2(p, O_CLOEXEC) < 0 ? cli_fail(CLI_EXIT_INTERNAL, "pipe: %s", strerror(errno)) : 0;
    if (rc == 0) {
        x.tar_fd = p[0];
        int err = pthread_create(&th, NULL, extract_main, &x);
        if (err) {
            close(p[0]);
            close(p[1]);
            rc = cli_fail(CLI_EXIT_INTERNAL, "cannot start a thread: %s", strerror(err));
        } else {
            const char *const argv[] = { "tar", "-C", src, "-cf", "-", ".", NULL };
            rc = cli_exec_to_fd(c, a->id, argv, p[1]);
            close(p[1]);
            pthread_join(th, NULL);
            /* A refused entry ends the parser, and so the cell's tar (EPIPE). */
            if (x.failed && (rc == 0 || rc == 128 + SIGPIPE))
                rc = cli_fail(CLI_EXIT_REFUSED, "cp: %s", x.err.message);
            else if (rc == CLI_EXIT_NOTFOUND)
                cli_fail(0, "cp: copying a directory out of a cell needs `tar` in the cell");
            else if (rc > 0 && rc < 125)
                rc = cli_fail(CLI_EXIT_REFUSED, "cp: tar in the cell exited with %d (its message is above)", rc);
        }
    }
    free(src);
    close(x.root);
    return rc;
}

/* `cell cp ID:SRC -`: the cell's `tar -C PARENT -cf - NAME` to stdout, as is. */
static int download_stdout(client *c, struct cp_args *a)
{
    if (isatty(1))
        return cli_fail(CLI_EXIT_USAGE, "cp: refusing to write a tar to a terminal: redirect it (> FILE.tar) or "
                        "pipe it (| tar t)");
    char *src = cell_abs(a->remote), *d1 = src ? strdup(src) : NULL, *d2 = src ? strdup(src) : NULL;
    int rc;
    if (!d1 || !d2) {
        rc = cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    } else {
        size_t n = strlen(d1);
        while (n > 1 && d1[n - 1] == '/') {
            n--;
            d1[n] = d2[n] = '\0';
        }
        const char *name = basename(d2), *parent = dirname(d1);
        const char *const argv[] = { "tar", "-C", parent, "-cf", "-", strcmp(name, "/") ? name : ".", NULL };
        fflush(stdout);
        rc = cli_exec_to_fd(c, a->id, argv, 1);
        if (rc > 0 && rc < 125 && rc != 128 + SIGPIPE)
            rc = cli_fail(CLI_EXIT_REFUSED, "cp: tar in the cell exited with %d (its message is above)", rc);
    }
    free(src);
    free(d1);
    free(d2);
    return rc;
}

static int do_download(client *c, struct cp_args *a)
{
    if (strcmp(a->local, "-") == 0)
        return download_stdout(c, a);
    struct stat st;
    int into = stat(a->local, &st) == 0 && S_ISDIR(st.st_mode);
    char *dst = join_target(a->local, into, a->remote), *tmp = NULL;
    if (!dst)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    if (cli_remote_is_dir(c, a->id, a->remote)) {
        int rc = download_dir(c, a, dst);
        free(dst);
        return rc;
    }
    struct download d = { .fd = open_temp(dst, &tmp) };
    int rc;
    if (d.fd < 0) {
        rc = cli_fail(CLI_EXIT_REFUSED, "%s: cannot create a file there: %s", dst, strerror(errno));
    } else {
        rc = fetch(c, a, &d);
        if (close(d.fd) < 0 && rc == 0)
            rc = cli_fail(CLI_EXIT_REFUSED, "%s: %s", dst, strerror(errno));
        if (rc == 0 && rename(tmp, dst) < 0)
            rc = cli_fail(CLI_EXIT_REFUSED, "%s: %s", dst, strerror(errno));
        if (rc)
            unlink(tmp);
    }
    free(tmp);
    free(dst);
    return rc;
}

static int do_cp(client *c, struct cli_global *g, void *arg)
{
    (void)g;
    struct cp_args *a = arg;
    return a->upload ? do_upload(c, a) : do_download(c, a);
}

int cli_cp(struct cli_global *g, int argc, char **argv)
{
    static const struct option opts[] = { { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
    opterr = 0;
    optind = 0;
    int o;
    while ((o = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        if (o == 'h')
            return fputs(cli_cp_usage, stdout), 0;
        char opt[3] = { '-', (char)optopt, 0 };
        return cli_bad_option("cp", optopt ? opt : argv[optind - 1]);
    }
    const char *pos[2];
    int n = 0;
    for (int i = optind; i < argc; i++) {
        if (n == 2)
            return cli_fail(CLI_EXIT_USAGE, "cp: expected exactly SRC and DST (see cell cp --help)");
        pos[n++] = argv[i];
    }
    if (n != 2)
        return cli_fail(CLI_EXIT_USAGE, "cp: expected SRC and DST, one of them ID:PATH (see cell cp --help)");
    /* An option that would be ignored is refused: a script asking for JSON
     * would get nothing, or a tar stream on stdout. */
    if (g->json)
        return cli_fail(CLI_EXIT_USAGE, "cp: --json: cp has no JSON output (it prints nothing, or the tar "
                        "stream of -); leave --json out");
    struct cp_args a = { 0 };
    char *other_id = NULL;
    const char *other_path;
    int src_remote = split_remote(pos[0], &a.id, &a.remote);
    int dst_remote = src_remote ? split_remote(pos[1], &other_id, &other_path) : split_remote(pos[1], &a.id, &a.remote);
    free(other_id);
    int rc = 0;
    if (src_remote == dst_remote)
        rc = cli_fail(CLI_EXIT_USAGE, "cp: exactly one of SRC and DST must be ID:PATH, e.g. cell cp ./f ID:/tmp/f");
    else if (!a.id)
        rc = cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    else if (!*a.remote)
        rc = cli_fail(CLI_EXIT_USAGE, "cp: '%s' has no path after the ':'", src_remote ? pos[0] : pos[1]);
    if (rc == 0) {
        a.upload = dst_remote;
        a.local = src_remote ? pos[1] : pos[0];
        a.remote_arg = src_remote ? pos[0] : pos[1];
        rc = cli_with_client(g, do_cp, &a);
    }
    free(a.id);
    return rc;
}

