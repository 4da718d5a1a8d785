/* seccomp_prebuilt.c: the seccomp programs compiled at build time
 * (src/seccompgen, embedded by seccomp_blob.S).  Kept apart from seccomp.c
 * so that a program using only these does not link libseccomp. */
#include "isolate/isolate.h"

extern const struct sock_filter isolate_seccomp_cell_start[], isolate_seccomp_cell_end[];
extern const struct sock_filter isolate_seccomp_nosuid_start[], isolate_seccomp_nosuid_end[];

static struct sock_fprog prog(const struct sock_filter *start, const struct sock_filter *end)
{
    /* The kernel's struct is not const, but it only reads the program. */
    return (struct sock_fprog){ .len = (unsigned short)(end - start), .filter = (struct sock_filter *)start };
}

void isolate_seccomp_prebuilt(struct sock_fprog *cell_prog, struct sock_fprog *nosuid)
{
    *cell_prog = prog(isolate_seccomp_cell_start, isolate_seccomp_cell_end);
    *nosuid = prog(isolate_seccomp_nosuid_start, isolate_seccomp_nosuid_end);
}
