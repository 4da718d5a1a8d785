/* caps.c: reduce the boot child's capabilities to the cell's kept set before
 * it execs cell-init.  Runs after clone3() in a possibly threaded owner: raw syscalls only. */
#include "isolate/isolate.h"

#include <errno.h>
#include <linux/capability.h>
#include <stdint.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/*
 * Docker's default set minus CAP_MKNOD (a cell's /dev is fixed; device nodes
 * are how a container reaches host hardware) and CAP_NET_RAW (raw sockets
 * allow spoofing inside the cell's network and are a frequent source of
 * kernel bugs; ping can use unprivileged ICMP sockets instead, enabled by
 * net.ipv4.ping_group_range in the cell's netns).
 *
 * Every capability below is held in the cell's user namespace, so it only
 * acts on objects that namespace owns: files whose owner and group map into
 * the cell's uid range, processes in the cell's pid namespace, ports in the
 * cell's network namespace.  None of them reaches the host.
 */
const int isolate_caps_kept[] = {
    CAP_CHOWN,            /* dpkg, tar, cp -a: give files to in-cell users */
    CAP_DAC_OVERRIDE,     /* root in the cell reads/writes any cell file, as users expect of root */
    CAP_FOWNER,           /* chmod, utimes, xattrs on files root does not own (package installs) */
    CAP_FSETID,           /* keep setuid/setgid bits when installing such files */
    CAP_KILL,             /* root signals any process of the cell (job control, supervisors) */
    CAP_SETGID,           /* su, setpriv, apt's _apt sandbox: switch to in-cell groups */
    CAP_SETUID,           /* ... and in-cell users */
    CAP_SETPCAP,          /* let cell processes drop bounding caps for their children (capsh, setpriv) */
    CAP_NET_BIND_SERVICE, /* dev servers on ports < 1024 in the cell's own netns */
    CAP_SYS_CHROOT,       /* build tools (debootstrap, pbuilder, dpkg --root) chroot; only narrows the view */
    CAP_SETFCAP,          /* dpkg sets file capabilities (e.g. on ping); namespaced, and no_new_privs
                           * keeps them from granting anything on exec.  Dropped in cells with a
                           * read-write host mount (see isolate_caps_drop). */
    CAP_AUDIT_WRITE,      /* PAM tools (su, login) write audit records; the kernel refuses audit
                           * messages from a non-initial user namespace with an error PAM tolerates */
    -1,
};

/* The kernel's capability words are 32 bits wide; 64 covers every cap the
 * kernel may define.  Higher numbers than the kernel knows fail with EINVAL,
 * which is how we learn the end without reading /proc. */
#define CAPS_MAX 64

static uint64_t kept_mask(void)
{
    uint64_t mask = 0;
    for (const int *c = isolate_caps_kept; *c >= 0; c++)
        mask |= 1ull << *c;
    return mask;
}

int isolate_caps_drop(int allow_file_caps)
{
    /* Through an id-mapped read-write host mount, in-cell root writes as
     * host root: a file capability set there would be a real capability on
     * the host, so such cells may not set any. */
    uint64_t keep = kept_mask();
    if (!allow_file_caps)
        keep &= ~(1ull << CAP_SETFCAP);

    /* Bounding set first: it needs CAP_SETPCAP in the effective set, which
     * we still hold, and it is what limits every later exec() (a uid-0 exec
     * gets permitted = bounding, whatever the file says). */
    for (int cap = 0; cap < CAPS_MAX; cap++) {
        if (keep & (1ull << cap))
            continue;
        if (prctl(PR_CAPBSET_DROP, (unsigned long)cap, 0UL, 0UL, 0UL) < 0 && errno != EINVAL)
            return -1;
    }

    /* Ambient caps survive exec for non-root users; start from none. */
    if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0UL, 0UL, 0UL) < 0)
        return -1;

    /* Then permitted, effective and inheritable, in one capset(). */
    struct __user_cap_header_struct hdr = {
        .version = _LINUX_CAPABILITY_VERSION_3,
        .pid = 0,
    };
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    for (int i = 0; i < _LINUX_CAPABILITY_U32S_3; i++) {
        uint32_t word = (uint32_t)(keep >> (32 * i));
        data[i].effective = word;
        data[i].permitted = word;
        data[i].inheritable = word;
    }
    if (syscall(SYS_capset, &hdr, data) < 0)
        return -1;
    return 0;
}

int isolate_caps_raise_effective(void)
{
    struct __user_cap_header_struct h = { _LINUX_CAPABILITY_VERSION_3, 0 };
    struct __user_cap_data_struct d[2];
    if (syscall(SYS_capget, &h, d) < 0)
        return -1;
    d[0].effective = d[0].permitted;
    d[1].effective = d[1].permitted;
    return (int)syscall(SYS_capset, &h, d);
}
