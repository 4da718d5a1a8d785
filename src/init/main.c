/* main.c: cell-init, PID 1 of every cell.  It serves the owner's control
 * socket, reaps every process, and takes the whole cell down with it. */
#include "init/init.h"

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

void init_reply_ok(int ctl, uint32_t seq, uint32_t u0, int fd)
{
    uint32_t u[CTL_NU] = { u0 };
    ctl_send(ctl, CTL_REPLY, seq, 0, u, NULL, 0, fd >= 0 ? &fd : NULL, fd >= 0 ? 1 : 0);
}

void init_reply_err(int ctl, uint32_t seq, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    const char *strs[1] = { msg };
    ctl_send(ctl, CTL_REPLY, seq, code ? code : EIO, NULL, strs, 1, NULL, 0);
}

/* When the owner goes away the cell must not outlive it: killing every
 * process and exiting makes the kernel tear down the pid namespace. */
__attribute__((noreturn))
static void shutdown_cell(void)
{
    kill(-1, SIGKILL);
    _exit(0);
}

int main(void)
{
    int ctl = INIT_CTL_FD;
    /* Not dumpable: processes in the cell (same uid) cannot ptrace init or
     * read its memory, so they cannot speak on its control socket. */
    prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
    umask(022);
    init_load_child_filter();
    /* Dispositions the owner ignored (SIGPIPE in the daemon) would survive
     * every exec; reset them once here, so spawning need not. */
    for (int sig = 1; sig < NSIG; sig++)
        signal(sig, SIG_DFL);

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    /* SETMASK, not BLOCK: the boot child may have passed every signal
     * blocked (isolate_clone_vm); init needs only SIGCHLD held. */
    if (sigprocmask(SIG_SETMASK, &mask, NULL) < 0)
        return 1;
    int sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
    if (sfd < 0)
        return 1;

    uint32_t hello[CTL_NU] = { CTL_VERSION };
    if (ctl_send(ctl, CTL_HELLO, 0, 0, hello, NULL, 0, NULL, 0) < 0)
        shutdown_cell();

    for (;;) {
        struct pollfd fds[2] = { { .fd = ctl, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
        if (poll(fds, 2, -1) < 0) {
            if (errno == EINTR)
                continue;
            shutdown_cell();
        }
        if (fds[1].revents & POLLIN) {
            struct signalfd_siginfo si;
            while (read(sfd, &si, sizeof si) == (ssize_t)sizeof si)
                ;
            init_reap(ctl);
        }
        if (fds[0].revents & POLLIN) {
            ctl_msg m;
            if (ctl_recv(ctl, &m) < 0) {
                if (errno == EBADMSG)
                    continue;
                shutdown_cell();
            }
            switch (m.type) {
            case CTL_SPAWN:   init_spawn(ctl, &m); break;
            case CTL_SIGNAL:  init_signal(ctl, &m); break;
            case CTL_RESIZE:  init_resize(ctl, &m); break;
            case CTL_READ: case CTL_WRITE: case CTL_LIST:
                init_transfer(ctl, &m);
                break;
            case CTL_STAT: case CTL_MKDIR: case CTL_MOVE: case CTL_DELETE: case CTL_SYMLINK: case CTL_LINK:
                init_fileop(ctl, &m);
                break;
            default:
                init_reply_err(ctl, m.seq, EINVAL, "cell-init: unexpected message type %u", m.type);
            }
            ctl_msg_free(&m);
        } else if (fds[0].revents & (POLLHUP | POLLERR | POLLNVAL)) {
            shutdown_cell();
        }
    }
}
