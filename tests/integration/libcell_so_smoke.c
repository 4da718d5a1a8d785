/* libcell_so_smoke.c: a program that links build/libcell.so.0 and nothing
 * else of cell (test_libcell_so.py runs it as root): the library it runs
 * with is the one it was compiled for, the symbols come from the .so,
 * internals are not reachable, and API v2 boots a cell that runs `true`,
 * has the hostname and seeded file its options asked for, and (policy)
 * gets the network plugin the .so embeds.  Built with -DCELL_SMOKE_STATIC
 * it is libcell_static_smoke, linked with build/libcell-public.a instead.
 *   libcell_so_smoke STATE_DIR */
#include "cell.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static int fails;

#define CHECK(cond, ...)                                 \
    do {                                                 \
        if (!(cond)) {                                   \
            fprintf(stderr, "FAIL %s: ", #cond);         \
            fprintf(stderr, __VA_ARGS__);                \
            fputc('\n', stderr);                         \
            fails++;                                     \
        }                                                \
    } while (0)

/* The exit status of `sh -c script` in c, or -1. */
static int run(cell *c, const char *script)
{
    const char *argv[] = { "sh", "-c", script, NULL };
    cell_proc_spec spec = { .argv = argv, .stdin_fd = -1, .stdout_fd = 2, .stderr_fd = 2 };
    cell_error err = { 0 };
    pid_t pid;
    cell_exit ex;
    if (cell_spawn(c, &spec, &pid, NULL, &err) < 0 || cell_wait_exit(c, 60000, &ex, &err) != 1) {
        fprintf(stderr, "%s: %s\n", script, err.message);
        return -1;
    }
    return WIFEXITED(ex.status) ? WEXITSTATUS(ex.status) : 128 + WTERMSIG(ex.status);
}

static void check_linkage(void)
{
    CHECK(cell_version_number() == CELL_VERSION_NUMBER, "library %s, header %s", cell_version(), CELL_VERSION_STRING);
#ifndef CELL_SMOKE_STATIC
    Dl_info info;
    CHECK(dladdr((void *)cell_create_v2, &info) && info.dli_fname && strstr(info.dli_fname, "libcell.so.0"),
          "cell_create_v2 comes from %s", info.dli_fname ? info.dli_fname : "?");
#endif
    /* Internal functions and data of libcell are not visible to anyone. */
    static const char *const hidden[] = { "util_fail", "runtime_check_cell_path", "isolate_boot", "net_engine_start",
                                          "cell_init_blob_start", "cell_net_plugin_blob_start", "runtime_net" };
    for (size_t i = 0; i < sizeof hidden / sizeof *hidden; i++)
        CHECK(dlsym(RTLD_DEFAULT, hidden[i]) == NULL, "%s is reachable with dlsym", hidden[i]);
}

static void check_cell(cell_ctx *ctx, const char *policy)
{
    cell_options *o = NULL;
    cell_egress *e = NULL;
    cell_error err = { 0 };
    static const char seed[] = "from the options";
    if (cell_options_new(&o, &err) < 0 || cell_options_set_hostname(o, "so-smoke", &err) < 0 ||
        cell_options_add_tmpfs(o, "/seeded", 0, &err) < 0 ||
        cell_options_add_seed(o, "/seeded", "f.txt", seed, sizeof seed - 1, 0, &err) < 0 ||
        (policy && (cell_egress_new(&e, policy, &err) < 0 || cell_options_set_egress(o, e, &err) < 0))) {
        CHECK(0, "options: %s", err.message);
        goto out;
    }
    cell *c = NULL;
    if (cell_create_v2(ctx, o, &c, &err) < 0) {
        CHECK(0, "cell_create_v2: %s", err.message);
        goto out;
    }
    CHECK(run(c, "exec true") == 0, "true in the cell");
    CHECK(run(c, "test \"$(cat /proc/sys/kernel/hostname)\" = so-smoke") == 0, "hostname");
    CHECK(run(c, "test \"$(cat /seeded/f.txt)\" = 'from the options'") == 0, "seeded file");
    if (policy)
        CHECK(run(c, "grep -q 127.0.0.1 /etc/resolv.conf") == 0, "the policed cell resolves through its engine");
    else
        CHECK(run(c, "test \"$(grep -c : /proc/net/dev)\" = 1") == 0, "no network without a policy");
    cell_destroy(c);
    printf("cell with%s a policy: ok\n", policy ? "" : "out");
out:
    cell_egress_free(e);
    cell_options_free(o);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s STATE_DIR\n", argv[0]);
        return 2;
    }
    printf("libcell %s\n", cell_version());
    check_linkage();
    cell_ctx *ctx = NULL;
    cell_error err = { 0 };
    if (cell_ctx_open(&ctx, argv[1], &err) < 0) {
        fprintf(stderr, "cell_ctx_open: %s\n", err.message);
        return 1;
    }
    check_cell(ctx, NULL);
    check_cell(ctx, "{\"rules\": []}");
    cell_ctx_close(ctx);
    if (fails)
        return 1;
    printf("ok\n");
    return 0;
}
