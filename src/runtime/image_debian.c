/* image_debian.c: builds the debian-bookworm and desktop images with debootstrap into the state directory.
 * The build runs in a private temp dir renamed into place with its ready marker, so a partial build never looks ready. */
#include "runtime/runtime.h"
#include "util/util.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>

/* One buildable Debian image.  A table, so the next release is one line. */
struct debian_spec {
    const char *name;
    const char *suite;
    const char *include;
};

static const struct debian_spec debian_specs[] = {
    { "debian-bookworm", "bookworm", "bash,coreutils,ca-certificates,curl,git,python3" },
    /* debian-bookworm plus what the desktop runs in a cell (src/server/desktop.c,
     * docs/desktop.md): X server, window manager, input, screenshots, window
     * list, clipboard, recordings, a terminal, a browser, xdg-open (POST
     * /desktop/open) and fonts.  dbus-x11:
     * debootstrap does not pick a provider for a virtual package, and
     * chromium's GTK needs one of dbus-session-bus's. */
    { "desktop", "bookworm", "bash,coreutils,ca-certificates,curl,git,python3,xvfb,openbox,xdotool,imagemagick,"
                             "x11-utils,xclip,ffmpeg,xterm,xfonts-base,fonts-dejavu-core,dbus-x11,chromium,xdg-utils" },
};

#define DEFAULT_MIRROR   "http://deb.debian.org/debian"
#define DEB822_SOURCES   "/etc/apt/sources.list.d/debian.sources"
#define LEGACY_SOURCES   "/etc/apt/sources.list"
#define MIRROR_MAX       512
#define SOURCES_MAX      (1024 * 1024)

/* The child's PATH is fixed: CI runs as root without sbin in PATH, and host
 * PATH entries (~/.cargo/bin, ...) mean nothing inside the chroot. */
#define CHILD_PATH       "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

/* Lines shown per progress call and kept for the failure message. */
#define LINE_MAX_LEN     1024
#define TAIL_LINES       8
#define TAIL_LINE_LEN    256
#define LOG_TAIL_BYTES   2048

/* The lock fd is handed to debootstrap as this fd number, so every process
 * of a build holds the lock until it exits, even if we die first. */
#define CHILD_LOCK_FD    3

static void say(cell_progress_fn progress, void *user, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void say(cell_progress_fn progress, void *user, const char *fmt, ...)
{
    if (!progress)
        return;
    char line[LINE_MAX_LEN];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    progress(user, line);
}

/* ---- mirror ---------------------------------------------------------------
 * The image is fetched from the host's own Debian mirror: hosts without
 * general internet access usually have exactly that one reachable. */

static int mirror_usable(const char *uri)
{
    size_t n = strlen(uri);
    if (n == 0 || n >= MIRROR_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)uri[i] <= ' ' || uri[i] == 0x7f)
            return 0;
    /* debootstrap fetches with wget or copies from file:; apt-only
     * transports (mirror+file:, tor+http:) would fail later and obscurely. */
    return strncmp(uri, "http://", 7) == 0 || strncmp(uri, "https://", 8) == 0 ||
           strncmp(uri, "file:/", 6) == 0;
}

/* "…/debian" or "…/debian/": the main archive, not debian-security, not a
 * third-party repository.  Used when no source names our suite. */
static int mirror_looks_debian(const char *uri)
{
    size_t n = strlen(uri);
    while (n > 0 && uri[n - 1] == '/')
        n--;
    return n >= 7 && strncmp(uri + n - 7, "/debian", 7) == 0;
}

static int has_token(const char *value, const char *token)
{
    size_t tlen = strlen(token);
    const char *p = value;
    while (*p) {
        p += strspn(p, " \t");
        size_t len = strcspn(p, " \t");
        if (len == tlen && strncmp(p, token, len) == 0)
            return 1;
        p += len;
    }
    return 0;
}

static void first_token(const char *value, char *out, size_t size)
{
    value += strspn(value, " \t");
    size_t len = strcspn(value, " \t");
    if (len >= size)
        len = 0;    /* too long to be a mirror we accept: treat as absent */
    memcpy(out, value, len);
    out[len] = '\0';
}

/* Candidate found while scanning: `exact` names our suite, `fallback` is a
 * Debian-looking archive kept in case nothing names it. */
struct mirror_pick {
    char exact[MIRROR_MAX];
    char fallback[MIRROR_MAX];
    const char *from;
};

static void consider(struct mirror_pick *pick, const char *uri, int suite_match, const char *from)
{
    if (!mirror_usable(uri))
        return;
    if (suite_match && !pick->exact[0]) {
        snprintf(pick->exact, sizeof pick->exact, "%s", uri);
        pick->from = from;
    } else if (!suite_match && !pick->fallback[0] && mirror_looks_debian(uri)) {
        snprintf(pick->fallback, sizeof pick->fallback, "%s", uri);
    }
}

/* deb822 stanzas: "Field: value" with continuation lines, blank-line separated. */
struct stanza {
    int  is_deb, suite_match, disabled;
    char uri[MIRROR_MAX];
};

static void stanza_end(struct stanza *st, struct mirror_pick *pick)
{
    if (st->is_deb && !st->disabled && st->uri[0])
        consider(pick, st->uri, st->suite_match, DEB822_SOURCES);
    memset(st, 0, sizeof *st);
}

static void parse_deb822(char *text, const char *suite, struct mirror_pick *pick)
{
    struct stanza st = { 0 };
    enum { F_OTHER, F_TYPES, F_URIS, F_SUITES } field = F_OTHER;
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (line[0] == '#')
            continue;
        const char *value = line;
        if (line[0] == ' ' || line[0] == '\t') {
            if (strspn(line, " \t") == strlen(line)) {
                stanza_end(&st, pick);
                field = F_OTHER;
                continue;
            }
            /* continuation of the previous field */
        } else if (line[0] == '\0') {
            stanza_end(&st, pick);
            field = F_OTHER;
            continue;
        } else {
            char *colon = strchr(line, ':');
            if (!colon)
                continue;
            *colon = '\0';
            value = colon + 1;
            if (strcasecmp(line, "Types") == 0)
                field = F_TYPES;
            else if (strcasecmp(line, "URIs") == 0)
                field = F_URIS;
            else if (strcasecmp(line, "Suites") == 0)
                field = F_SUITES;
            else {
                field = F_OTHER;
                if (strcasecmp(line, "Enabled") == 0 && has_token(value, "no"))
                    st.disabled = 1;
            }
        }
        if (field == F_TYPES && has_token(value, "deb"))
            st.is_deb = 1;
        else if (field == F_SUITES && has_token(value, suite))
            st.suite_match = 1;
        else if (field == F_URIS && !st.uri[0])
            first_token(value, st.uri, sizeof st.uri);
    }
    stanza_end(&st, pick);
}

/* One-line format: "deb [options] URI suite components...". */
static void parse_legacy(char *text, const char *suite, struct mirror_pick *pick)
{
    for (char *line = text, *next; line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        char *hash = strchr(line, '#');
        if (hash)
            *hash = '\0';
        char *save = NULL;
        char *tok = strtok_r(line, " \t", &save);
        if (!tok || strcmp(tok, "deb") != 0)
            continue;
        tok = strtok_r(NULL, " \t", &save);
        if (tok && tok[0] == '[') {
            /* options may contain spaces: skip to the token closing them */
            while (tok && !strchr(tok, ']'))
                tok = strtok_r(NULL, " \t", &save);
            if (tok && tok[strlen(tok) - 1] != ']')
                continue;   /* "[a=b]uri" without a space: malformed, skip */
            tok = strtok_r(NULL, " \t", &save);
        }
        if (!tok)
            continue;
        const char *uri = tok;
        const char *dist = strtok_r(NULL, " \t", &save);
        consider(pick, uri, dist && strcmp(dist, suite) == 0, LEGACY_SOURCES);
    }
}

static void scan_sources(const char *path, const char *suite, struct mirror_pick *pick,
                         void (*parse)(char *, const char *, struct mirror_pick *),
                         cell_progress_fn progress, void *user)
{
    cell_error rerr;
    _cleanup_free_ char *text = NULL;
    if (util_read_file(path, SOURCES_MAX, &text, NULL, &rerr) < 0) {
        /* A missing or unreadable apt config only costs us the host's
         * mirror choice; the default mirror still works. */
        if (rerr.code != ENOENT)
            say(progress, user, "ignoring apt sources: %s", rerr.message);
        return;
    }
    parse(text, suite, pick);
}

/* CELL_DEBIAN_MIRROR, else the host's apt sources, else deb.debian.org. */
static int pick_mirror(const char *suite, char *out, size_t size, cell_progress_fn progress,
                       void *user, cell_error *err)
{
    const char *env = getenv("CELL_DEBIAN_MIRROR");
    if (env && *env) {
        if (!mirror_usable(env))
            return util_fail(err, EINVAL,
                             "invalid CELL_DEBIAN_MIRROR '%.200s': expected an http://, https:// or file:/ URL without spaces",
                             env);
        say(progress, user, "mirror %s (from CELL_DEBIAN_MIRROR)", env);
        return util_path(out, size, err, "%s", env) < 0 ? -1 : 0;
    }
    struct mirror_pick pick = { .from = NULL };
    scan_sources(DEB822_SOURCES, suite, &pick, parse_deb822, progress, user);
    if (!pick.exact[0])
        scan_sources(LEGACY_SOURCES, suite, &pick, parse_legacy, progress, user);
    const char *uri = DEFAULT_MIRROR, *from = "default";
    if (pick.exact[0]) {
        uri = pick.exact;
        from = pick.from;
    } else if (pick.fallback[0]) {
        uri = pick.fallback;
        from = "host apt sources";
    }
    say(progress, user, "mirror %s (from %s)", uri, from);
    return util_path(out, size, err, "%s", uri) < 0 ? -1 : 0;
}

/* ---- locating debootstrap ------------------------------------------------ */

static int find_in_dirs(const char *dirs, const char *prog, char *out, size_t size)
{
    const char *p = dirs;
    while (p && *p) {
        size_t len = strcspn(p, ":");
        if (len > 0 && p[0] == '/') {   /* relative PATH entries are never trusted */
            int n = snprintf(out, size, "%.*s/%s", (int)len, p, prog);
            if (n > 0 && (size_t)n < size && access(out, X_OK) == 0)
                return 0;
        }
        p += len;
        if (*p == ':')
            p++;
    }
    return -1;
}

static int find_debootstrap(char *out, size_t size, cell_error *err)
{
    if (find_in_dirs(getenv("PATH"), "debootstrap", out, size) == 0 ||
        find_in_dirs("/usr/sbin:/usr/bin:/sbin:/bin", "debootstrap", out, size) == 0)
        return 0;
    return util_fail(err, ENOENT,
                     "debootstrap not found in PATH, /usr/sbin or /sbin: install the debootstrap package");
}

/* ---- running debootstrap ------------------------------------------------- */

/* Variables a build may need (proxies, a local debootstrap tree).  Nothing
 * else of the caller's environment (API keys, tokens) reaches the build. */
static const char *const env_keep[] = {
    "http_proxy", "https_proxy", "ftp_proxy", "no_proxy",
    "HTTP_PROXY", "HTTPS_PROXY", "FTP_PROXY", "NO_PROXY",
    "DEBOOTSTRAP_DIR",
};

extern char **environ;

static void build_env(const char **envp, size_t cap)
{
    size_t n = 0;
    envp[n++] = CHILD_PATH;
    envp[n++] = "LC_ALL=C";
    envp[n++] = "HOME=/root";
    envp[n++] = "DEBIAN_FRONTEND=noninteractive";
    for (char **e = environ; e && *e && n + 1 < cap; e++) {
        for (size_t i = 0; i < sizeof env_keep / sizeof env_keep[0]; i++) {
            size_t len = strlen(env_keep[i]);
            if (strncmp(*e, env_keep[i], len) == 0 && (*e)[len] == '=') {
                envp[n++] = *e;
                break;
            }
        }
    }
    envp[n] = NULL;
}

/* Child side, between fork and exec: only async-signal-safe calls. */
static void child_note(const char *msg)
{
    ssize_t r = write(STDOUT_FILENO, msg, strlen(msg));
    (void)r;    /* nowhere left to report a failed report */
}

static void __attribute__((noreturn)) child_exec(const char *path, const char *const *argv,
                                                 const char *const *envp, int out_fd, int null_fd,
                                                 int lock_fd)
{
    /* All source fds are >= 3, so these dup2s cannot clobber each other. */
    if (dup2(null_fd, STDIN_FILENO) < 0 || dup2(out_fd, STDOUT_FILENO) < 0 ||
        dup2(out_fd, STDERR_FILENO) < 0)
        _exit(126);
    if (lock_fd == CHILD_LOCK_FD) {
        if (fcntl(lock_fd, F_SETFD, 0) < 0)
            _exit(126);
    } else if (dup2(lock_fd, CHILD_LOCK_FD) < 0) {
        _exit(126);
    }
    if (close_range(CHILD_LOCK_FD + 1, ~0U, 0) < 0)
        child_note("warning: close_range failed; extra descriptors stay open in debootstrap\n");

    /* A caller's blocked or ignored signals survive exec and would break
     * debootstrap's own child handling; give it a clean slate. */
    sigset_t none;
    sigemptyset(&none);
    if (sigprocmask(SIG_SETMASK, &none, NULL) < 0)
        _exit(126);
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int sig = 1; sig < NSIG; sig++)
        if (sig != SIGKILL && sig != SIGSTOP)
            (void)sigaction(sig, &dfl, NULL);   /* EINVAL for unused numbers is expected */

    /* debootstrap mounts /proc and /sys inside the target; in a private
     * mount namespace those mounts vanish with it, even if it is killed,
     * and never show up on the host or block removing the temp dir. */
    if (unshare(CLONE_NEWNS) < 0)
        child_note("warning: cannot unshare a mount namespace; debootstrap mounts are visible on the host\n");
    else if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0)
        child_note("warning: cannot make mounts private; debootstrap mounts may propagate to the host\n");

    umask(022);     /* files debootstrap creates itself get Debian's usual modes */
    if (chdir("/") < 0)
        _exit(126);
    execve(path, (char *const *)argv, (char *const *)envp);
    child_note("cannot execute debootstrap\n");
    _exit(127);
}

/* The last lines of output, for the failure message. */
struct tail {
    char     lines[TAIL_LINES][TAIL_LINE_LEN];
    unsigned count;
    char     error[TAIL_LINE_LEN];  /* last "E: " line: debootstrap's own diagnosis */
    char     failure[TAIL_LINE_LEN];  /* last "W: Failure…": the step that broke */
};

static void emit_line(char *line, size_t len, struct tail *t, cell_progress_fn progress, void *user)
{
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
        len--;
    line[len] = '\0';
    if (len == 0)
        return;
    snprintf(t->lines[t->count % TAIL_LINES], TAIL_LINE_LEN, "%s", line);
    t->count++;
    if (strncmp(line, "E: ", 3) == 0)
        snprintf(t->error, sizeof t->error, "%s", line);
    else if (strncmp(line, "W: Failure", 10) == 0)
        snprintf(t->failure, sizeof t->failure, "%s", line);
    if (progress)
        progress(user, line);
}

static const char *tail_reason(const struct tail *t)
{
    if (t->error[0])
        return t->error;
    /* the usual last line, "W: See …/debootstrap.log", names a file that
     * is removed with the temp dir */
    if (t->failure[0])
        return t->failure;
    if (t->count > 0)
        return t->lines[(t->count - 1) % TAIL_LINES];
    return "no output";
}

/* Move fd to >= 3 so dup2 onto 0..2 in the child never overwrites another
 * source fd (a daemon may run with stdio closed). */
static int fd_above_stdio(int fd)
{
    if (fd < 0 || fd > STDERR_FILENO)
        return fd;
    int moved = fcntl(fd, F_DUPFD_CLOEXEC, STDERR_FILENO + 1);
    int saved = errno;
    close(fd);
    errno = saved;
    return moved;
}

/* Run debootstrap, stream its output line by line to `progress`, and fail
 * with its exit status and last meaningful line. */
static int run_debootstrap(const char *path, const char *const *argv, int lock_fd, cell_progress_fn progress,
                           void *user, cell_error *err)
{
    const char *envp[4 + sizeof env_keep / sizeof env_keep[0] + 1];
    build_env(envp, sizeof envp / sizeof envp[0]);

    int pipefd[2];
    if (pipe2(pipefd, O_CLOEXEC) < 0)
        return util_fail_errno(err, "cannot create a pipe for debootstrap output");
    _cleanup_close_ int rd = fd_above_stdio(pipefd[0]);
    _cleanup_close_ int wr = fd_above_stdio(pipefd[1]);
    if (rd < 0 || wr < 0)
        return util_fail_errno(err, "cannot move debootstrap pipe above stdio");
    _cleanup_close_ int null_fd = fd_above_stdio(open("/dev/null", O_RDONLY | O_CLOEXEC));
    if (null_fd < 0)
        return util_fail_errno(err, "cannot open /dev/null");

    pid_t pid = fork();
    if (pid < 0)
        return util_fail_errno(err, "cannot fork to run %s", path);
    if (pid == 0)
        child_exec(path, argv, envp, wr, null_fd, lock_fd);

    close(wr);
    wr = -1;    /* EOF arrives when the last writer (debootstrap's tree) exits */

    struct tail t;
    memset(&t, 0, sizeof t);
    char buf[LINE_MAX_LEN];
    size_t used = 0;
    int read_errno = 0;
    for (;;) {
        ssize_t n = read(rd, buf + used, sizeof buf - 1 - used);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            read_errno = errno;
            break;
        }
        if (n == 0)
            break;
        used += (size_t)n;
        size_t start = 0;
        for (size_t i = 0; i < used; i++) {
            if (buf[i] == '\n') {
                emit_line(buf + start, i - start, &t, progress, user);
                start = i + 1;
            }
        }
        memmove(buf, buf + start, used - start);
        used -= start;
        if (used == sizeof buf - 1) {   /* an overlong line: show it in pieces */
            emit_line(buf, used, &t, progress, user);
            used = 0;
        }
    }
    if (used > 0)
        emit_line(buf, used, &t, progress, user);
    /* On a read error, closing our end makes further writes fail with
     * SIGPIPE, so debootstrap ends instead of blocking forever. */
    close(rd);
    rd = -1;

    int status;
    while (waitpid(pid, &status, 0) < 0) {
        if (errno != EINTR)
            return util_fail_errno(err, "cannot wait for debootstrap (pid %d)", (int)pid);
    }
    if (read_errno) {
        errno = read_errno;
        return util_fail_errno(err, "cannot read debootstrap output");
    }
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        return 0;
    if (WIFSIGNALED(status))
        return util_fail(err, EIO, "debootstrap was killed by signal %d (%s): %s", WTERMSIG(status),
                         strsignal(WTERMSIG(status)), tail_reason(&t));
    return util_fail(err, EIO, "debootstrap failed with exit status %d: %s", WEXITSTATUS(status),
                     tail_reason(&t));
}

/* debootstrap's detailed log dies with the temp dir; show its end first. */
static void show_log_tail(const char *rootfs, cell_progress_fn progress, void *user)
{
    if (!progress)
        return;
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/debootstrap/debootstrap.log", rootfs) >= (int)sizeof path)
        return;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return;     /* no log: debootstrap failed before writing one */
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode))
        return;
    char buf[LOG_TAIL_BYTES + 1];
    off_t off = st.st_size > LOG_TAIL_BYTES ? st.st_size - LOG_TAIL_BYTES : 0;
    ssize_t n = pread(fd, buf, LOG_TAIL_BYTES, off);
    if (n <= 0)
        return;
    buf[n] = '\0';
    char *line = buf;
    if (off > 0) {  /* skip the partial first line */
        char *nl = strchr(buf, '\n');
        line = nl ? nl + 1 : buf + n;
    }
    for (char *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        if (*line)
            say(progress, user, "debootstrap.log: %s", line);
    }
}

/* ---- cleaning the fresh tree ----------------------------------------------
 * Paths inside the rootfs are walked one component at a time with
 * O_NOFOLLOW, so a symlink in the image can never point our writes at the host. */

static int open_in_root(int root_fd, const char *rel, int flags, mode_t mode)
{
    char copy[PATH_MAX];
    if (snprintf(copy, sizeof copy, "%s", rel) >= (int)sizeof copy) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int dir = root_fd;
    char *save = NULL;
    char *comp = strtok_r(copy, "/", &save);
    while (comp) {
        char *next = strtok_r(NULL, "/", &save);
        int fd = next ? openat(dir, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
                      : openat(dir, comp, flags | O_NOFOLLOW | O_CLOEXEC, mode);
        int saved = errno;
        if (dir != root_fd)
            close(dir);
        errno = saved;
        if (fd < 0)
            return -1;
        dir = fd;
        comp = next;
    }
    return dir == root_fd ? -1 : dir;
}

/* Downloaded packages are only a cache: a cell has no use for them. */
static int clean_archives(int root_fd, const char *rootfs, cell_error *err)
{
    static const char *const dirs[] = { "var/cache/apt/archives", "var/cache/apt/archives/partial" };
    for (size_t d = 0; d < sizeof dirs / sizeof dirs[0]; d++) {
        int fd = open_in_root(root_fd, dirs[d], O_RDONLY | O_DIRECTORY, 0);
        if (fd < 0) {
            if (errno == ENOENT)
                continue;
            return util_fail_errno(err, "cannot open %s/%s", rootfs, dirs[d]);
        }
        DIR *dir = fdopendir(fd);
        if (!dir) {
            int saved = errno;
            close(fd);
            errno = saved;
            return util_fail_errno(err, "cannot read %s/%s", rootfs, dirs[d]);
        }
        struct dirent *de;
        errno = 0;
        while ((de = readdir(dir))) {
            size_t len = strlen(de->d_name);
            int is_deb = len > 4 && strcmp(de->d_name + len - 4, ".deb") == 0;
            int in_partial = d == 1 && strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0;
            if ((is_deb || in_partial) && de->d_type != DT_DIR &&
                unlinkat(dirfd(dir), de->d_name, 0) < 0 && errno != ENOENT) {
                int saved = errno;
                closedir(dir);
                errno = saved;
                return util_fail_errno(err, "cannot remove %s/%s/%s", rootfs, dirs[d], de->d_name);
            }
            errno = 0;
        }
        int saved = errno;
        closedir(dir);
        if (saved) {
            errno = saved;
            return util_fail_errno(err, "cannot list %s/%s", rootfs, dirs[d]);
        }
    }
    return 0;
}

/* Replace etc/NAME with a fresh regular file (0644, root, as we run as
 * root) holding `data`; whatever was there (a copy of the host's file, a
 * symlink) goes. */
static int replace_etc_file(int etc_fd, const char *rootfs, const char *name, const char *data, cell_error *err)
{
    if (unlinkat(etc_fd, name, 0) < 0 && errno != ENOENT)
        return util_fail_errno(err, "cannot remove %s/etc/%s", rootfs, name);
    _cleanup_close_ int fd = openat(etc_fd, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
    if (fd < 0)
        return util_fail_errno(err, "cannot create %s/etc/%s", rootfs, name);
    if (fchmod(fd, 0644) < 0)   /* umask-proof */
        return util_fail_errno(err, "cannot chmod %s/etc/%s", rootfs, name);
    if (util_write_all(fd, data, strlen(data)) < 0)
        return util_fail_errno(err, "cannot write %s/etc/%s", rootfs, name);
    return 0;
}

static const char hosts_content[] =
    "127.0.0.1\tlocalhost\n"
    "::1\t\tlocalhost ip6-localhost ip6-loopback\n"
    "ff02::1\t\tip6-allnodes\n"
    "ff02::2\t\tip6-allrouters\n";

/* Remove what a cell must not inherit from the build host or the build:
 * package cache, the host's resolver, host name and machine identity. */
static int clean_rootfs(const char *rootfs, cell_error *err)
{
    _cleanup_close_ int root_fd = open(rootfs, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (root_fd < 0)
        return util_fail_errno(err, "cannot open %s", rootfs);
    if (clean_archives(root_fd, rootfs, err) < 0)
        return -1;

    _cleanup_close_ int etc_fd = openat(root_fd, "etc", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (etc_fd < 0)
        return util_fail_errno(err, "cannot open %s/etc", rootfs);
    /* debootstrap copied the host's resolv.conf and hostname in; the cell
     * runtime provides its own resolver and host name per cell. */
    if (replace_etc_file(etc_fd, rootfs, "resolv.conf", "", err) < 0 ||
        replace_etc_file(etc_fd, rootfs, "hostname", "localhost\n", err) < 0 ||
        replace_etc_file(etc_fd, rootfs, "hosts", hosts_content, err) < 0)
        return -1;

    /* Every cell from this image would share one identity; empty means
     * "not yet set" to systemd and dbus.  Absent stays absent. */
    _cleanup_close_ int mid = openat(etc_fd, "machine-id", O_WRONLY | O_TRUNC | O_NOFOLLOW | O_CLOEXEC);
    if (mid < 0 && errno == ELOOP) {
        if (unlinkat(etc_fd, "machine-id", 0) < 0)
            return util_fail_errno(err, "cannot remove %s/etc/machine-id", rootfs);
    } else if (mid < 0 && errno != ENOENT) {
        return util_fail_errno(err, "cannot truncate %s/etc/machine-id", rootfs);
    }

    /* The ready marker must never be durable before the tree it vouches for. */
    if (syncfs(root_fd) < 0)
        return util_fail_errno(err, "cannot sync the filesystem holding %s", rootfs);
    return 0;
}

/* ---- state directory ------------------------------------------------------ */

static int fsync_dir(const char *path, cell_error *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", path);
    if (fsync(fd) < 0)
        return util_fail_errno(err, "cannot fsync %s", path);
    return 0;
}

/* 1 if `path` exists, 0 if not, -1 on error. */
static int exists(const char *path, cell_error *err)
{
    struct stat st;
    if (lstat(path, &st) == 0)
        return 1;
    if (errno == ENOENT)
        return 0;
    return util_fail_errno(err, "cannot stat %s", path);
}

/* Temp dirs of builds that died (crash, power loss).  Safe under the
 * build lock: a live build's processes would still hold it. */
static int remove_stale_builds(const char *images, const char *name, cell_progress_fn progress, void *user,
                               cell_error *err)
{
    char prefix[128];
    if (util_path(prefix, sizeof prefix, err, ".%s.tmp-", name) < 0)
        return -1;
    DIR *dir = opendir(images);
    if (!dir)
        return util_fail_errno(err, "cannot open %s", images);
    struct dirent *de;
    int rc = 0;
    errno = 0;
    while ((de = readdir(dir))) {
        if (strncmp(de->d_name, prefix, strlen(prefix)) != 0)
            continue;
        char path[PATH_MAX];
        if (util_path(path, sizeof path, err, "%s/%s", images, de->d_name) < 0) {
            rc = -1;
            break;
        }
        say(progress, user, "removing unfinished build %s", path);
        if (util_rm_rf(path, err) < 0) {
            rc = -1;
            break;
        }
        errno = 0;
    }
    if (rc == 0 && errno)
        rc = util_fail_errno(err, "cannot list %s", images);
    closedir(dir);
    return rc;
}

static const struct debian_spec *find_spec(const char *name)
{
    for (size_t i = 0; i < sizeof debian_specs / sizeof debian_specs[0]; i++)
        if (strcmp(debian_specs[i].name, name) == 0)
            return &debian_specs[i];
    return NULL;
}

static double seconds_since(const struct timespec *start)
{
    struct timespec now;
    if (clock_gettime(CLOCK_MONOTONIC, &now) < 0)
        return 0;
    return (double)(now.tv_sec - start->tv_sec) + (double)(now.tv_nsec - start->tv_nsec) / 1e9;
}

/* Everything after the temp dir exists; the caller removes it on failure. */
static int build_in(const struct debian_spec *spec, const char *tmp, const char *final_dir, const char *images,
                    const char *debootstrap, const char *mirror, int lock_fd, cell_progress_fn progress,
                    void *user, cell_error *err)
{
    char rootfs[PATH_MAX], ready[PATH_MAX], include[256];
    if (util_path(rootfs, sizeof rootfs, err, "%s/rootfs", tmp) < 0 ||
        util_path(ready, sizeof ready, err, "%s/ready", tmp) < 0 ||
        util_path(include, sizeof include, err, "--include=%s", spec->include) < 0)
        return -1;
    /* The rootfs root becomes "/" in every cell: 0755 whatever our umask. */
    if (mkdir(rootfs, 0755) < 0)
        return util_fail_errno(err, "cannot create directory %s", rootfs);
    if (chmod(rootfs, 0755) < 0)
        return util_fail_errno(err, "cannot chmod %s", rootfs);

    const char *argv[] = { "debootstrap", "--variant=minbase", include, spec->suite, rootfs, mirror, NULL };
    say(progress, user, "running: %s --variant=minbase %s %s %s %s", debootstrap, include, spec->suite, rootfs,
        mirror);
    if (run_debootstrap(debootstrap, argv, lock_fd, progress, user, err) < 0) {
        show_log_tail(rootfs, progress, user);
        return -1;
    }

    say(progress, user, "cleaning the image (apt cache, resolv.conf, hostname, hosts, machine-id)");
    if (clean_rootfs(rootfs, err) < 0)
        return -1;
    /* The marker is written inside the temp dir and appears under the
     * image's name only with the rename, together with the whole tree. */
    if (util_write_file(ready, "", 0, 0644, 1, err) < 0 || fsync_dir(tmp, err) < 0)
        return -1;
    if (rename(tmp, final_dir) < 0)
        return util_fail_errno(err, "cannot rename %s to %s", tmp, final_dir);
    return fsync_dir(images, err);
}

int runtime_image_build_debian(cell_ctx *ctx, const char *name, cell_progress_fn progress, void *user,
                               cell_error *err)
{
    if (!ctx || !name)
        return util_fail(err, EINVAL, "runtime_image_build_debian: missing context or image name");
    const struct debian_spec *spec = find_spec(name);
    if (!spec)
        return util_fail(err, EINVAL, "unknown Debian image '%.100s': only debian-bookworm and desktop can be built", name);

    char images[PATH_MAX], final_dir[PATH_MAX], final_ready[PATH_MAX], lock_path[PATH_MAX];
    if (util_path(images, sizeof images, err, "%s/images", ctx->state_dir) < 0 ||
        util_path(final_dir, sizeof final_dir, err, "%s/%s", images, name) < 0 ||
        util_path(final_ready, sizeof final_ready, err, "%s/ready", final_dir) < 0 ||
        util_path(lock_path, sizeof lock_path, err, "%s/.%s.lock", images, name) < 0)
        return -1;

    int ready = exists(final_ready, err);
    if (ready < 0)
        return -1;
    if (ready) {
        say(progress, user, "image %s is already built", name);
        return 0;
    }

    /* Fail on a missing tool or bad mirror before touching the state dir. */
    char debootstrap[PATH_MAX], mirror[MIRROR_MAX];
    if (find_debootstrap(debootstrap, sizeof debootstrap, err) < 0 ||
        pick_mirror(spec->suite, mirror, sizeof mirror, progress, user, err) < 0)
        return -1;

    if (util_mkdir_p(images, 0700, err) < 0)
        return -1;
    /* The lock file stays forever: unlinking a lock file races with a
     * second builder that already opened it. */
    _cleanup_close_ int lock_fd = fd_above_stdio(
        open(lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600));
    if (lock_fd < 0)
        return util_fail_errno(err, "cannot open %s", lock_path);
    if (flock(lock_fd, LOCK_EX | LOCK_NB) < 0) {
        if (errno == EWOULDBLOCK)
            return util_fail(err, EBUSY, "image %s is being built by another process (lock %s is held)", name,
                             lock_path);
        return util_fail_errno(err, "cannot lock %s", lock_path);
    }

    /* Someone may have finished while we looked for debootstrap. */
    ready = exists(final_ready, err);
    if (ready < 0)
        return -1;
    if (ready) {
        say(progress, user, "image %s is already built", name);
        return 0;
    }
    if (remove_stale_builds(images, name, progress, user, err) < 0)
        return -1;
    int stale = exists(final_dir, err);
    if (stale < 0)
        return -1;
    if (stale) {
        say(progress, user, "removing %s: it has no ready marker", final_dir);
        if (util_rm_rf(final_dir, err) < 0)
            return -1;
    }

    char hex[17], tmp[PATH_MAX];
    if (util_random_hex(hex, 8) < 0)
        return util_fail_errno(err, "cannot get random bytes for a temp dir name");
    if (util_path(tmp, sizeof tmp, err, "%s/.%s.tmp-%s", images, name, hex) < 0)
        return -1;
    if (mkdir(tmp, 0700) < 0)
        return util_fail_errno(err, "cannot create directory %s", tmp);

    struct timespec start;
    if (clock_gettime(CLOCK_MONOTONIC, &start) < 0)
        memset(&start, 0, sizeof start);    /* only the timing line suffers */
    say(progress, user, "building image %s in %s", name, tmp);
    if (build_in(spec, tmp, final_dir, images, debootstrap, mirror, lock_fd, progress, user, err) < 0) {
        cell_error rm_err;
        if (util_rm_rf(tmp, &rm_err) < 0)
            say(progress, user, "could not remove the unfinished build: %s", rm_err.message);
        return -1;
    }
    say(progress, user, "image %s is ready in %s (%.0f s)", name, final_dir, seconds_since(&start));
    return 0;
}
