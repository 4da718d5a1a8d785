/* seccompgen: run by make, writes the cells' two seccomp programs as raw
 * classic BPF (DIR/cell.bpf, DIR/nosuid.bpf), built by the same code libcell
 * has (src/isolate/seccomp.c, with libseccomp).  libcell embeds them
 * (seccomp_blob.S), so a process that starts cells no longer builds them;
 * tests/unit/test_seccomp.c checks they are byte for byte what libseccomp
 * builds at run time. */
#include "isolate/isolate.h"
#include "util/util.h"

#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

/* Write the program to DIR/NAME through a temporary file and rename(), so
 * that an interrupted make never leaves a truncated filter to embed. */
static int write_program(const char *dir, const char *name, const struct sock_fprog *prog)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    cell_error err = { 0 };
    if (util_path(path, sizeof path, &err, "%s/%s", dir, name) < 0 ||
        util_path(tmp, sizeof tmp, &err, "%s/.%s.tmp", dir, name) < 0) {
        fprintf(stderr, "seccompgen: %s\n", err.message);
        return -1;
    }
    _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || util_write_all(fd, prog->filter, prog->len * sizeof *prog->filter) < 0 || fsync(fd) < 0 ||
        rename(tmp, path) < 0) {
        perror(path);
        return -1;
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: seccompgen DIR\n");
        return 2;
    }
    struct sock_fprog cellf = { 0 }, nosuid = { 0 };
    cell_error err = { 0 };
    int rc = 1;
    if (isolate_seccomp_build(&cellf, &err) < 0 || isolate_seccomp_build_nosuid(&nosuid, &err) < 0)
        fprintf(stderr, "seccompgen: %s\n", err.message);
    else if (write_program(argv[1], "nosuid.bpf", &nosuid) == 0 && write_program(argv[1], "cell.bpf", &cellf) == 0)
        rc = 0;
    isolate_seccomp_free(&cellf);
    isolate_seccomp_free(&nosuid);
    return rc;
}
