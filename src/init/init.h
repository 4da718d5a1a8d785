/* init.h: cell-init's internal pieces: the process table and spawning
 * (spawn.c) and file operations resolved inside the cell (fileops.c). */
#ifndef CELL_INIT_INIT_H
#define CELL_INIT_INIT_H

#include "init/proto.h"

#define INIT_CTL_FD 3
/* Present only in cells with a read-write host mount: raw BPF instructions
 * of the nosuid filter (isolate_seccomp_build_nosuid), for every child. */
#define INIT_NOSUID_FD 5

/* Read the nosuid filter from INIT_NOSUID_FD if there is one. */
void init_load_child_filter(void);
/* 1 when the cell has that filter: modes init itself creates files and
 * directories with must then drop S_ISUID and S_ISGID, as the filter would. */
int  init_nosuid(void);
/* Install it on the calling child (no-op without one); -1 with errno. */
int  init_apply_child_filter(void);

/* Handle one request; replies on `ctl` with CTL_REPLY and the request's seq. */
void init_spawn(int ctl, ctl_msg *m);
void init_signal(int ctl, ctl_msg *m);
void init_resize(int ctl, ctl_msg *m);
void init_fileop(int ctl, ctl_msg *m);
/* CTL_READ, CTL_WRITE, CTL_LIST: fork the transfer child, which replies. */
void init_transfer(int ctl, ctl_msg *m);
/* Reap every exited child; report the ones we spawned with CTL_EXIT. */
void init_reap(int ctl);

/* Reply helpers. */
void init_reply_ok(int ctl, uint32_t seq, uint32_t u0, int fd);
void init_reply_err(int ctl, uint32_t seq, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif
