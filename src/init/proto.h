/* proto.h: the control protocol between a cell's owner (libcell) and
 * cell-init, one SOCK_SEQPACKET message per request, reply or event. */
#ifndef CELL_INIT_PROTO_H
#define CELL_INIT_PROTO_H

#include <stddef.h>
#include <stdint.h>

/* Every message is one datagram: a fixed header, then `nstr` NUL-terminated
 * strings packed back to back, with up to CTL_MAX_FDS descriptors attached as
 * SCM_RIGHTS.  A fixed header plus strings keeps the decoder a dozen lines
 * that can be checked by eye and fuzzed; the owner treats everything init
 * sends as untrusted, because a cell's root may have subverted init. */
#define CTL_MAX_MSG  (128 * 1024)
#define CTL_MAX_FDS  4
#define CTL_MAX_STRS 8192
#define CTL_NU       8
#define CTL_VERSION  1

enum ctl_type {
    CTL_HELLO = 1,    /* init -> owner: ready.  u0 = CTL_VERSION */
    CTL_BOOT_ERROR,   /* boot child -> owner: err = errno, s0 = message */
    CTL_SPAWN,        /* u0 argc, u1 envc, u2 flags, u3 uid, u4 gid, u5 rows, u6 cols;
                         s = argv..., env..., cwd; fds = stdin, stdout, stderr unless tty */
    CTL_SIGNAL,       /* u0 pid, u1 signal */
    CTL_RESIZE,       /* u0 pid, u1 rows, u2 cols */
    CTL_OPEN,         /* u0 open flags, u1 mode; s0 path -> reply carries the fd */
    CTL_MKDIR,        /* u0 mode, u1 parents; s0 path */
    CTL_MOVE,         /* u0 overwrite; s0 from, s1 to */
    CTL_DELETE,       /* u0 recursive; s0 path */
    CTL_SYMLINK,      /* s0 target, s1 link path */
    CTL_LINK,         /* s0 existing path, s1 new path (both inside the cell) */
    CTL_REPLY,        /* init -> owner, seq of the request; err = 0 or errno;
                         s0 = message on error; SPAWN: u0 = pid, fd = pty master */
    CTL_EXIT,         /* init -> owner, unsolicited: u0 pid, u1 wait status */
    CTL_TYPE_MAX
};

#define CTL_SPAWN_TTY 1u

typedef struct ctl_msg {
    uint32_t type;
    uint32_t seq;
    int32_t  err;
    uint32_t u[CTL_NU];
    uint32_t nstr;
    const char **str;          /* nstr pointers into buf */
    int      fds[CTL_MAX_FDS];
    int      nfds;
    char    *buf;              /* owns the strings */
} ctl_msg;

/* Send one message; returns 0 or -1 with errno. */
int  ctl_send(int sock, uint32_t type, uint32_t seq, int32_t err, const uint32_t *u,
              const char *const *str, uint32_t nstr, const int *fds, int nfds);
/* Receive one message.  -1 with errno ECONNRESET when the peer is gone,
 * EBADMSG when the datagram is malformed (its fds are closed). */
int  ctl_recv(int sock, ctl_msg *m);
/* Parse a datagram already in memory (the fuzzing and unit-test entry). */
int  ctl_decode(const char *data, size_t len, ctl_msg *m);
/* Take ownership of fd i (it will not be closed by ctl_msg_free). */
int  ctl_take_fd(ctl_msg *m, int i);
void ctl_msg_free(ctl_msg *m);

#endif
