/* vmclone.c: children that share the owner's memory until they exec or
 * exit (clone with CLONE_VM, as posix_spawn does).
 *
 * A fork() copies the owner's page tables, then both sides pay copy-on-write
 * faults, and the child's exec or exit tears the copy down again: most of a
 * millisecond for a process the size of `cell` (and more for the daemon),
 * paid for children that only exist to set up namespaces.  A CLONE_VM child
 * skips all of that.  Its function runs on a stack of its own and must keep
 * to what a vfork() child may do: no allocation, no locks, nothing written
 * but its own stack (errno excepted: it shares the caller's thread-local
 * storage), since every other thread of the owner runs on in the same
 * memory. */
#include "isolate/isolate.h"
#include "util/util.h"

#include <sched.h>
#include <signal.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#endif

int isolate_vmstack_map(struct isolate_vmstack *s, size_t size, cell_error *err)
{
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    s->size = size + page;
    s->base = mmap(NULL, s->size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK,
                   -1, 0);
    if (s->base == MAP_FAILED) {
        s->base = NULL;
        return util_fail_errno(err, "cannot map a stack for a child process");
    }
    /* A guard page below it: an overflow faults instead of writing into
     * whatever the owner has mapped there. */
    if (mprotect(s->base, page, PROT_NONE) < 0) {
        util_fail_errno(err, "cannot protect the guard page of a child's stack");
        isolate_vmstack_unmap(s);
        return -1;
    }
    return 0;
}

void isolate_vmstack_unmap(struct isolate_vmstack *s)
{
    if (!s->base)
        return;
#if defined(__SANITIZE_ADDRESS__)
    /* The child's frames left their redzones poisoned in the shadow of
     * this range; a later mapping at the same address must not inherit
     * them. */
    size_t page = (size_t)sysconf(_SC_PAGESIZE);
    ASAN_UNPOISON_MEMORY_REGION((char *)s->base + page, s->size - page);
#endif
    munmap(s->base, s->size);
    s->base = NULL;
}

pid_t isolate_clone_vm(int (*fn)(void *), void *arg, int flags, const struct isolate_vmstack *s, int *pidfd,
                       cell_error *err)
{
#if !defined(__SANITIZE_THREAD__)
    flags |= CLONE_VM;
#endif
    /* With every signal blocked, no handler of the owner's can run in the
     * child on the owner's memory; the child inherits the mask (exec keeps
     * it; cell-init sets its own). */
    sigset_t all, old;
    sigfillset(&all);
    int rc = pthread_sigmask(SIG_SETMASK, &all, &old);
    if (rc != 0) {
        errno = rc;
        return util_fail_errno(err, "cannot block signals around clone");
    }
    pid_t pid = clone(fn, (char *)s->base + s->size, flags | SIGCHLD, arg, pidfd);
    int saved = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (pid < 0) {
        errno = saved;
        return util_fail_errno(err, "clone into new namespaces failed");
    }
    return pid;
}
