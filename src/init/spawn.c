/* spawn.c: starting, signalling and reaping the cell's processes.
 * Exec failures are reported back through a CLOEXEC pipe, never as exit 127. */
#include "init/init.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

extern char **environ;

/* The processes the owner started, with the pty master of terminal ones so
 * that resize works.  Orphans that are reparented to init are reaped but not
 * reported: the owner never asked for them. */
struct tracked {
    pid_t pid;
    int   pty;
};
static struct tracked *table;
static size_t table_len, table_cap;

static struct tracked *find(pid_t pid)
{
    for (size_t i = 0; i < table_len; i++)
        if (table[i].pid == pid)
            return &table[i];
    return NULL;
}

static int track(pid_t pid, int pty)
{
    if (table_len == table_cap) {
        size_t cap = table_cap ? table_cap * 2 : 64;
        struct tracked *t = realloc(table, cap * sizeof *t);
        if (!t)
            return -1;
        table = t;
        table_cap = cap;
    }
    table[table_len++] = (struct tracked){ pid, pty };
    return 0;
}

static void untrack(struct tracked *t)
{
    if (t->pty >= 0)
        close(t->pty);
    *t = table[--table_len];
}

/* The extra filter every spawned process gets, if the cell has one. */
static struct sock_fprog child_filter;

void init_load_child_filter(void)
{
    struct stat st;
    if (fstat(INIT_NOSUID_FD, &st) < 0)
        return;
    size_t n = (size_t)st.st_size / sizeof(struct sock_filter);
    struct sock_filter *insns = n && n <= BPF_MAXINSNS ? malloc(n * sizeof *insns) : NULL;
    if (insns && pread(INIT_NOSUID_FD, insns, n * sizeof *insns, 0) == (ssize_t)(n * sizeof *insns)) {
        child_filter.filter = insns;
        child_filter.len = (unsigned short)n;
    } else {
        /* A cell that must have the filter but cannot load it runs nothing. */
        child_filter.len = 0;
        child_filter.filter = NULL;
        free(insns);
        _exit(1);
    }
    close(INIT_NOSUID_FD);
}

int init_nosuid(void)
{
    return child_filter.len != 0;
}

int init_apply_child_filter(void)
{
    return child_filter.len ? prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &child_filter) : 0;
}

enum stage { STAGE_TTY = 1, STAGE_CREDS, STAGE_CWD, STAGE_EXEC, STAGE_FILTER };
struct spawn_failure {
    int stage;
    int code;
};

__attribute__((noreturn))
static void child_report(int pipe_fd, int stage)
{
    struct spawn_failure f = { stage, errno };
    ssize_t r = write(pipe_fd, &f, sizeof f);
    (void)r;
    _exit(127);
}

/* The child of a vfork(): it shares init's memory until execve, so it
 * allocates nothing and writes no global but `environ` (restored by the
 * parent).  Everything it changes otherwise (signal dispositions, fds,
 * cwd, credentials, seccomp) is per-process state of its own. */
__attribute__((noreturn))
static void exec_child(ctl_msg *m, int err_pipe, const char *pty_name, char **argv, char **envp)
{
    uint32_t argc = m->u[0], envc = m->u[1], uid = m->u[3], gid = m->u[4];
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);    /* init's handlers are all SIG_DFL (main.c) */
    /* Its own session: no controlling terminal is shared with init or the
     * owner, which also defeats TIOCSTI injection into the owner's tty. */
    setsid();
    if (pty_name) {
        int slave = open(pty_name, O_RDWR);
        if (slave < 0 || ioctl(slave, TIOCSCTTY, 0) < 0)
            child_report(err_pipe, STAGE_TTY);
        dup2(slave, 0);
        dup2(slave, 1);
        dup2(slave, 2);
        if (slave > 2)
            close(slave);
    } else {
        int null_fd = open("/dev/null", O_RDWR);
        for (int i = 0; i < 3; i++) {
            int src = i < m->nfds && m->fds[i] >= 0 ? m->fds[i] : null_fd;
            if (src >= 0 && dup2(src, i) < 0)
                child_report(err_pipe, STAGE_TTY);
        }
    }
    if (gid != 0 || uid != 0) {
        if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
            child_report(err_pipe, STAGE_CREDS);
    }
    const char *cwd = m->str[argc + envc];
    if (chdir(*cwd ? cwd : "/") < 0)
        child_report(err_pipe, STAGE_CWD);
    /* Everything init holds (the control socket above all) stays behind. */
    syscall(SYS_close_range, 3, ~0U, CLOSE_RANGE_CLOEXEC);
    fcntl(err_pipe, F_SETFD, FD_CLOEXEC);
    /* Last, so it also binds everything above; no_new_privs is inherited. */
    if (init_apply_child_filter() < 0)
        child_report(err_pipe, STAGE_FILTER);
    /* execvp searches the PATH of `environ`, so the child's own env it is. */
    environ = envp;
    execvp(argv[0], argv);
    child_report(err_pipe, STAGE_EXEC);
}

/* argv and envp for the child, built before vfork(); envp gets a default
 * PATH when the request has none. */
static int build_vectors(ctl_msg *m, char ***argv_out, char ***envp_out)
{
    static char default_path[] = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    uint32_t argc = m->u[0], envc = m->u[1];
    char **argv = calloc(argc + 1, sizeof *argv);
    char **envp = calloc(envc + 2, sizeof *envp);
    if (!argv || !envp) {
        free(argv);
        free(envp);
        return -1;
    }
    int has_path = 0;
    for (uint32_t i = 0; i < argc; i++)
        argv[i] = (char *)m->str[i];
    for (uint32_t i = 0; i < envc; i++) {
        envp[i] = (char *)m->str[argc + i];
        has_path |= strncmp(envp[i], "PATH=", 5) == 0;
    }
    if (!has_path)
        envp[envc] = default_path;
    *argv_out = argv;
    *envp_out = envp;
    return 0;
}

static int open_pty(uint16_t rows, uint16_t cols, char *name, size_t name_size)
{
    int master = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC);
    if (master < 0)
        return -1;
    if (grantpt(master) < 0 || unlockpt(master) < 0 || ptsname_r(master, name, name_size) != 0) {
        close(master);
        return -1;
    }
    struct winsize ws = { .ws_row = rows ? rows : 24, .ws_col = cols ? cols : 80 };
    ioctl(master, TIOCSWINSZ, &ws);
    return master;
}

void init_spawn(int ctl, ctl_msg *m)
{
    uint32_t argc = m->u[0], envc = m->u[1], flags = m->u[2];
    if (argc < 1 || (uint64_t)argc + envc + 1 != m->nstr || !*m->str[0]) {
        init_reply_err(ctl, m->seq, EINVAL, "malformed spawn request: need a command");
        return;
    }
    int tty = (flags & CTL_SPAWN_TTY) != 0;
    char pty_name[128];
    int master = -1;
    if (tty && (master = open_pty((uint16_t)m->u[5], (uint16_t)m->u[6], pty_name, sizeof pty_name)) < 0) {
        init_reply_err(ctl, m->seq, errno, "cannot allocate a pseudo-terminal: %s", strerror(errno));
        return;
    }
    int err_pipe[2];
    if (pipe2(err_pipe, O_CLOEXEC) < 0) {
        init_reply_err(ctl, m->seq, errno, "cannot create a pipe: %s", strerror(errno));
        if (master >= 0)
            close(master);
        return;
    }
    char **argv = NULL, **envp = NULL;
    /* vfork: init is suspended until the child has exec'd (or failed), so
     * there is no page-table copy and no copy-on-write afterwards; spawning
     * is most of what a short command costs. */
    char **saved_environ = environ;
    pid_t pid = build_vectors(m, &argv, &envp) == 0 ? vfork() : (errno = ENOMEM, -1);
    if (pid == 0)
        exec_child(m, err_pipe[1], tty ? pty_name : NULL, argv, envp);
    environ = saved_environ;
    free(argv);
    free(envp);
    if (pid < 0) {
        int code = errno;
        init_reply_err(ctl, m->seq, code, "cannot fork: %s", strerror(code));
        close(err_pipe[0]);
        close(err_pipe[1]);
        if (master >= 0)
            close(master);
        return;
    }
    close(err_pipe[1]);
    struct spawn_failure f;
    ssize_t n;
    do
        n = read(err_pipe[0], &f, sizeof f);
    while (n < 0 && errno == EINTR);
    close(err_pipe[0]);
    if (n == (ssize_t)sizeof f) {
        while (waitpid(pid, NULL, 0) < 0 && errno == EINTR)
            ;
        if (master >= 0)
            close(master);
        const char *what = m->str[0];
        switch (f.stage) {
        case STAGE_EXEC:
            if (f.code == ENOENT)
                init_reply_err(ctl, m->seq, ENOENT, "command not found in the cell: %s", what);
            else
                init_reply_err(ctl, m->seq, f.code, "cannot execute %s: %s", what, strerror(f.code));
            break;
        case STAGE_CWD:
            init_reply_err(ctl, m->seq, f.code, "cannot change to working directory %s: %s",
                           m->str[argc + envc], strerror(f.code));
            break;
        case STAGE_FILTER:
            init_reply_err(ctl, m->seq, f.code, "cannot install the cell's seccomp filter: %s", strerror(f.code));
            break;
        case STAGE_CREDS:
            init_reply_err(ctl, m->seq, f.code, "cannot switch to uid %u gid %u: %s", m->u[3], m->u[4], strerror(f.code));
            break;
        default:
            init_reply_err(ctl, m->seq, f.code, "cannot set up the terminal: %s", strerror(f.code));
        }
        return;
    }
    if (track(pid, master) < 0) {
        kill(pid, SIGKILL);
        init_reply_err(ctl, m->seq, ENOMEM, "cell-init is out of memory");
        return;
    }
    init_reply_ok(ctl, m->seq, (uint32_t)pid, master);
}

void init_signal(int ctl, ctl_msg *m)
{
    pid_t pid = (pid_t)m->u[0];
    int sig = (int)m->u[1];
    /* Only processes the owner started (and their process groups) may be
     * signalled by pid; 0 means every process in the cell except init. */
    if (pid == 0) {
        kill(-1, sig);
        init_reply_ok(ctl, m->seq, 0, -1);
        return;
    }
    if (!find(pid)) {
        init_reply_err(ctl, m->seq, ESRCH, "no process %d was started in this cell or it has exited", (int)pid);
        return;
    }
    /* The process leads its own session and group: signal the group so
     * that shells' children get it too. */
    if (kill(-pid, sig) < 0 && kill(pid, sig) < 0) {
        init_reply_err(ctl, m->seq, errno, "cannot signal process %d: %s", (int)pid, strerror(errno));
        return;
    }
    init_reply_ok(ctl, m->seq, 0, -1);
}

void init_resize(int ctl, ctl_msg *m)
{
    struct tracked *t = find((pid_t)m->u[0]);
    if (!t || t->pty < 0) {
        init_reply_err(ctl, m->seq, ESRCH, "process %u has no terminal", m->u[0]);
        return;
    }
    struct winsize ws = { .ws_row = (unsigned short)m->u[1], .ws_col = (unsigned short)m->u[2] };
    if (ioctl(t->pty, TIOCSWINSZ, &ws) < 0) {
        init_reply_err(ctl, m->seq, errno, "cannot resize the terminal: %s", strerror(errno));
        return;
    }
    init_reply_ok(ctl, m->seq, 0, -1);
}

void init_reap(int ctl)
{
    for (;;) {
        int status;
        pid_t pid = waitpid(-1, &status, WNOHANG);
        if (pid <= 0)
            return;
        struct tracked *t = find(pid);
        if (!t)
            continue;
        untrack(t);
        uint32_t u[CTL_NU] = { (uint32_t)pid, (uint32_t)status };
        ctl_send(ctl, CTL_EXIT, 0, 0, u, NULL, 0, NULL, 0);
    }
}
