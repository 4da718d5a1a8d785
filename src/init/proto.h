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
/* Types CTL_EXT_BASE..CTL_EXT_MAX-1 are other protocols on this framing
 * (the egress helper's, src/net/sep.h); cell-init and the owner's cell-init
 * reader refuse them like any unexpected type. */
#define CTL_EXT_BASE 0x100
#define CTL_EXT_MAX  0x200

enum ctl_type {
    CTL_HELLO = 1,    /* init -> owner: ready.  u0 = CTL_VERSION */
    CTL_BOOT_ERROR,   /* boot child -> owner: err = errno, s0 = message */
    CTL_SPAWN,        /* u0 argc, u1 envc, u2 flags, u3 uid, u4 gid, u5 rows, u6 cols;
                         s = argv..., env..., cwd; fds = stdin, stdout, stderr unless tty */
    CTL_SIGNAL,       /* u0 pid, u1 signal */
    CTL_RESIZE,       /* u0 pid, u1 rows, u2 cols */
    /* Data moves only through pipes: READ, WRITE and LIST fork a transfer
     * child in the cell that opens the path, replies itself (READ: u0 mode,
     * u1/u2 size low/high), copies between the file and fds[0] (the owner's
     * pipe) and ends with a ctl_xfer_status on fds[1]. */
    CTL_READ,         /* s0 path; fds = data pipe (write end), status pipe */
    CTL_WRITE,        /* u0 open flags, u1 mode; s0 path; fds = data pipe (read end), status pipe */
    CTL_LIST,         /* s0 path; fds = data pipe (write end: ctl_dirent records), status pipe */
    CTL_STAT,         /* s0 path -> u0 mode, u1/u2 size, u3/u4 mtime, u5 uid, u6 gid (in the cell) */
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
/* File requests: with CTL_F_BASE in u[CTL_U_BASE], the last string is a
 * directory the other paths resolve beneath (".." and symlinks that leave it
 * fail with EXDEV): what keeps a tar upload inside its target directory. */
#define CTL_U_BASE 7
#define CTL_F_BASE 1u
/* CTL_READ with CTL_F_NOFOLLOW in u[CTL_U_BASE]: no component of the path
 * may be a symlink (ELOOP), for files the owner made and the cell must not
 * swap for a link (a finished desktop recording). */
#define CTL_F_NOFOLLOW 2u

/* The last thing a transfer child writes, on its status pipe.  A pipe that
 * ends without one means the child died (killed, out of memory). */
struct ctl_xfer_status {
    int32_t  err;       /* 0 or errno */
    uint32_t magic;     /* CTL_XFER_MAGIC */
    uint64_t bytes;     /* copied (READ, WRITE) or records (LIST) */
};
#define CTL_XFER_MAGIC 0x63656c6cu

/* One directory entry of a CTL_LIST stream; ids as seen in the cell. */
struct ctl_dirent {
    uint32_t mode, uid, gid, pad;
    uint64_t size;
    int64_t  mtime;
    char     name[256];  /* NUL-terminated */
};

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
