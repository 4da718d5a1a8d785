/* oci_sealed.c: `create`, `run` and `exec` run from a sealed copy of the
 * cell-oci binary.  The container's init and every exec'd process are
 * cell-oci until their execve, and an execve of a script whose interpreter
 * is `#!/proc/self/exe` runs whatever /proc/self/exe is at that moment
 * inside the container, dumpable, where a container process can open its
 * /proc/PID/exe and, once it exits, reopen that for writing (runc's
 * CVE-2019-5736).  cell's user namespaces already deny the write (the
 * host's binary belongs to host root, which no container maps); the
 * sealed copy makes it hold without them: /proc/self/exe is then a memfd
 * that no one can write, not the host's file
 * (tests/integration/test_oci_escape.py).  runc 1.2 does the same. */
#include "oci/oci.h"

#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/sendfile.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MFD_EXEC
#define MFD_EXEC 0x0010U /* Linux 6.3: executable even where vm.memfd_noexec = 1 */
#endif

extern char **environ;

int oci_run_sealed(char **argv, cell_error *err)
{
    _cleanup_close_ int self = open("/proc/self/exe", O_RDONLY | O_CLOEXEC);
    if (self < 0)
        return util_fail_errno(err, "cannot open /proc/self/exe to run from a sealed copy");
    /* Already the copy: this is the process the first one became. */
    if (util_memfd_is_sealed(self))
        return 0;
    struct stat st;
    if (fstat(self, &st) < 0)
        return util_fail_errno(err, "cannot stat /proc/self/exe");
    /* Older kernels refuse MFD_EXEC (EINVAL): they have no noexec memfds. */
    _cleanup_close_ int copy = memfd_create("cell-oci", MFD_CLOEXEC | MFD_ALLOW_SEALING | MFD_EXEC);
    if (copy < 0 && errno == EINVAL)
        copy = memfd_create("cell-oci", MFD_CLOEXEC | MFD_ALLOW_SEALING);
    if (copy < 0)
        return util_fail_errno(err, "cannot make a memfd for a sealed copy of cell-oci (vm.memfd_noexec = 2?)");
    for (off_t left = st.st_size; left > 0;) {
        ssize_t n = sendfile(copy, self, NULL, (size_t)left);
        if (n <= 0)
            return util_fail(err, n < 0 ? errno : EIO, "cannot copy cell-oci into its sealed copy");
        left -= n;
    }
    if (util_memfd_seal(copy, "cell-oci copy", err) < 0)
        return -1;
    fexecve(copy, argv, environ);
    return util_fail_errno(err, "cannot execute the sealed copy of cell-oci");
}
