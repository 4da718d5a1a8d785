/* vfs_bench.c: read throughput of a read-only virtual filesystem (the
 * directory provider, src/runtime/vfs_dir.c, the daemon's lane view) against
 * a read-only bind mount of the same files (bench/vfs.sh runs it).
 *
 *   vfs_bench --state DIR --dir DIR [--reps N]
 *
 * Each rep boots one cell with DIR bound read-only at /b and served as a
 * vfs at /v, and times three reads of every file of DIR in the cell, with
 * `cat FILES >/dev/null` timed from spawn to exit: the bind mount (host page
 * cache, warm), the vfs's first read (every byte through FUSE and the
 * callbacks: pread on the host, warm), and its second read (the cell's
 * FUSE page cache).  Prints a markdown table of medians in MB/s (10^6
 * bytes).  Nothing is asserted. */
#include "cell.h"
#include "runtime/vfs_dir.h"

#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Seconds for `sh -c script` in the cell to run; -1 if it failed. */
static double timed(cell *c, const char *script)
{
    const char *argv[] = { "/bin/sh", "-c", script, NULL };
    cell_proc_spec spec = { .argv = argv, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = 2 };
    cell_error err = { 0 };
    pid_t pid;
    cell_exit ex;
    double t0 = now();
    if (cell_spawn(c, &spec, &pid, NULL, &err) < 0 || cell_wait_exit(c, -1, &ex, &err) != 1) {
        fprintf(stderr, "vfs_bench: %s\n", err.message);
        return -1;
    }
    double t = now() - t0;
    return WIFEXITED(ex.status) && WEXITSTATUS(ex.status) == 0 ? t : -1;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* The bytes in DIR's regular files (not recursive). */
static double dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    double total = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[4096];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &st) == 0 && S_ISREG(st.st_mode))
            total += (double)st.st_size;
    }
    if (d)
        closedir(d);
    return total;
}

int main(int argc, char **argv)
{
    const char *state = NULL, *dir = NULL;
    int reps = 3;
    static const struct option longopts[] = {
        { "state", required_argument, NULL, 's' }, { "dir", required_argument, NULL, 'd' },
        { "reps", required_argument, NULL, 'n' }, { NULL, 0, NULL, 0 },
    };
    for (int o; (o = getopt_long(argc, argv, "", longopts, NULL)) != -1;) {
        if (o == 's')
            state = optarg;
        else if (o == 'd')
            dir = optarg;
        else if (o == 'n')
            reps = atoi(optarg);
        else
            return 2;
    }
    if (!state || !dir || reps < 1 || reps > 1000) {
        fprintf(stderr, "usage: vfs_bench --state DIR --dir DIR [--reps N]\n");
        return 2;
    }
    cell_error err = { 0 };
    cell_ctx *ctx = NULL;
    void *user = NULL;
    cell_options *o = NULL;
    if (cell_ctx_open(&ctx, state, &err) < 0 || runtime_vfs_dir_new(dir, &user, &err) < 0 ||
        cell_options_new(&o, &err) < 0 || cell_options_add_bind(o, dir, "/b", CELL_MOUNT_READONLY, &err) < 0 ||
        cell_options_add_vfs(o, "/v", &runtime_vfs_dir_ops, user, CELL_VFS_READONLY, 0, &err) < 0) {
        fprintf(stderr, "vfs_bench: %s\n", err.message);
        return 1;
    }
    double bytes = dir_bytes(dir);
    double *t[3];
    for (int k = 0; k < 3; k++)
        t[k] = calloc((size_t)reps, sizeof *t[k]);
    int rc = 0;
    for (int i = 0; i < reps && !rc; i++) {
        cell *c = NULL;
        if (cell_create_v2(ctx, o, &c, &err) < 0) {
            fprintf(stderr, "vfs_bench: %s\n", err.message);
            rc = 1;
            break;
        }
        /* The bind's first read warms the host page cache for both. */
        if (timed(c, "cat /b/* >/dev/null") < 0 || (t[0][i] = timed(c, "cat /b/* >/dev/null")) < 0 ||
            (t[1][i] = timed(c, "cat /v/* >/dev/null")) < 0 || (t[2][i] = timed(c, "cat /v/* >/dev/null")) < 0)
            rc = 1;
        cell_destroy(c);
    }
    if (!rc) {
        printf("| read of %.0f MB (%d reps, medians) | MB/s | x bind |\n|---|---|---|\n", bytes / 1e6, reps);
        static const char *const names[] = { "bind mount, read-only", "vfs (directory provider), first read",
                                             "vfs, second read (page cache)" };
        double bind = bytes / 1e6 / median(t[0], reps);
        for (int k = 0; k < 3; k++) {
            double mbs = bytes / 1e6 / median(t[k], reps);
            printf("| %s | %.0f | %.2f |\n", names[k], mbs, mbs / bind);
        }
    }
    for (int k = 0; k < 3; k++)
        free(t[k]);
    cell_options_free(o);
    runtime_vfs_dir_free(user);
    cell_ctx_close(ctx);
    return rc;
}
