/* image_cmds.c: `cell image import|ls|rm`, the image store's commands. */
#include "cli/cli.h"
#include "cli/cells_cmds.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

const char cli_image_import_usage[] =
    "usage: cell image import NAME FILE|- [--max-image-size SIZE]\n"
    "\n"
    "Import an OCI image layout tar (skopeo copy ... oci-archive:FILE) or a\n"
    "docker-archive tar (docker save) as image NAME (1-63 of a-z, 0-9, '.', '_',\n"
    "'-'; not host, debian-bookworm or desktop).  linux/amd64 only.  Every blob is\n"
    "checked against its digest; layers are applied in order with their\n"
    "whiteouts; a hostile layer (paths leaving the image, devices, ids past\n"
    "65535) is refused and nothing is kept.  The image's Env, WorkingDir, User,\n"
    "Entrypoint and Cmd become the defaults of cells made from it.\n"
    "\n"
    "  --max-image-size SIZE  most bytes of archive and of files (default 8G)\n";

static void print_progress(void *user, const char *line)
{
    (void)user;
    fprintf(stderr, "%s\n", line);
}

static int image_import(struct cli_global *g, int argc, char **argv)
{
    static const struct option opts[] = {
        { "max-image-size", required_argument, NULL, 'm' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    uint64_t max = 0;
    cell_error err = { 0 };
    int o;
    opterr = 0;
    optind = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (o == 'h') {
            fputs(cli_image_import_usage, stdout);
            return 0;
        }
        if (o != 'm')
            return cli_getopt_fail("image import", o, argc, argv);
        if (cell_parse_size(optarg, &max, &err) < 0 || max == 0)
            return cli_fail(CLI_EXIT_USAGE, "--max-image-size: %s", max ? err.message : "give a size such as 8G");
    }
    if (argc - optind != 2)
        return cli_fail(CLI_EXIT_USAGE, "image import takes NAME and FILE (or - for stdin)\n%s", cli_image_import_usage);
    const char *name = argv[optind], *file = argv[optind + 1];
    int fd = 0;
    if (strcmp(file, "-") == 0) {
        if (isatty(0))
            return cli_fail(CLI_EXIT_USAGE, "image import reads a tar stream from stdin; redirect it from a file");
    } else if ((fd = open(file, O_RDONLY | O_CLOEXEC)) < 0) {
        return cli_fail(1, "cannot open %s: %s", file, strerror(errno));
    }
    cell_ctx *ctx = NULL;
    int rc = cli_open(g, &ctx);
    if (rc == 0) {
        if (cell_image_import_sized(ctx, name, fd, max, g->json ? NULL : print_progress, NULL, &err) < 0)
            rc = cli_fail_err(1, &err);
        else if (g->json)
            cli_print_json(json_pack("{s:s, s:b}", "name", name, "imported", 1));
        cell_ctx_close(ctx);
    }
    if (fd > 0)
        close(fd);
    return rc;
}

/* The lanes bound to `image`, as "a, b" (or "-"). */
static void lanes_of(const cell_lane_info *lanes, size_t n, const char *image, char *out, size_t size, json_t *arr)
{
    size_t at = 0;
    out[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        if (strcmp(lanes[i].image, image) != 0)
            continue;
        if (arr)
            json_array_append_new(arr, json_string(lanes[i].name));
        if (at + strlen(lanes[i].name) + 3 < size)
            at += (size_t)snprintf(out + at, size - at, "%s%s", at ? "," : "", lanes[i].name);
    }
    if (!at)
        snprintf(out, size, "-");
}

static int image_ls(struct cli_global *g, cell_ctx *ctx)
{
    cell_image_info *imgs = NULL;
    cell_lane_info *lanes = NULL;
    size_t n = 0, nl = 0;
    cell_error err = { 0 };
    if (cell_image_list(ctx, &imgs, &n, &err) < 0 || cell_lane_list(ctx, &lanes, &nl, &err) < 0) {
        free(imgs);
        return cli_fail_err(1, &err);
    }
    json_t *arr = g->json ? json_array() : NULL;
    if (!g->json)
        printf("%-24s %-8s %-19s %12s %-10s %s\n", "NAME", "SOURCE", "DIGEST", "SIZE", "STATUS", "LANES");
    for (size_t i = 0; i < n; i++) {
        const cell_image_info *m = &imgs[i];
        char users[256];
        json_t *ul = g->json ? json_array() : NULL;
        lanes_of(lanes, nl, m->name, users, sizeof users, ul);
        if (g->json)
            json_array_append_new(arr, json_pack("{s:s, s:s*, s:I, s:I, s:s, s:b, s:o}", "name", m->name, "digest",
                                                 m->digest[0] ? m->digest : NULL, "size", (json_int_t)m->size,
                                                 "created", (json_int_t)m->created, "source", m->source, "ready",
                                                 m->ready, "lanes", ul));
        else
            printf("%-24s %-8s %-19.19s %12llu %-10s %s\n", m->name, m->source, m->digest[0] ? m->digest : "-",
                   (unsigned long long)m->size, m->ready ? "ready" : "not built", users);
    }
    if (g->json)        /* GET /v1/images's shape: ImageListResponse in docs/openapi.json */
        cli_print_json(json_pack("{s:o}", "images", arr));
    free(imgs);
    free(lanes);
    return 0;
}

static const char image_ls_usage[] =
    "usage: cell image ls [--json]\n"
    "\n"
    "List images: builtin ones (host, debian-bookworm, desktop) and those imported or\n"
    "committed, with source, digest, size, whether they can boot, and the lanes\n"
    "that use them.\n";

static const char image_rm_usage[] =
    "usage: cell image rm NAME\n"
    "\n"
    "Remove an imported or committed image.  Refused, naming them, while lanes\n"
    "or running cells use it.  Its blobs stay in the blob store.\n";

/* --help and --json (ls) through getopt_long; 1 = printed help, -1 = bad
 * (printed, naming the option). */
static int parse_simple(struct cli_global *g, int argc, char **argv, const char *cmd, const char *usage)
{
    static const struct option opts[] = {
        { "json", no_argument, NULL, 'j' },
        { "help", no_argument, NULL, 'h' },
        { NULL, 0, NULL, 0 },
    };
    int o;
    opterr = 0;
    optind = 0;
    while ((o = getopt_long(argc, argv, ":h", opts, NULL)) != -1) {
        if (o == 'h') {
            fputs(usage, stdout);
            return 1;
        }
        if (o != 'j')
            return cli_getopt_fail(cmd, o, argc, argv), -1;
        g->json = 1;
    }
    return 0;
}

static int image_rm(struct cli_global *g, int argc, char **argv)
{
    int p = parse_simple(g, argc, argv, "image rm", image_rm_usage);
    if (p)
        return p > 0 ? 0 : CLI_EXIT_USAGE;
    if (argc - optind != 1)
        return cli_fail(CLI_EXIT_USAGE, "image rm takes one NAME\n%s", image_rm_usage);
    const char *name = argv[optind];
    cell_ctx *ctx = NULL;
    int rc = cli_open(g, &ctx);
    if (rc)
        return rc;
    cell_error err = { 0 };
    if (cell_image_remove(ctx, name, &err) < 0)
        rc = cli_fail_err(1, &err);
    else if (g->json)
        cli_print_json(json_pack("{s:s, s:b}", "name", name, "deleted", 1));
    else
        printf("removed image %s\n", name);
    cell_ctx_close(ctx);
    return rc;
}

int cli_image_store(struct cli_global *g, int argc, char **argv)
{
    const char *sub = argv[0];
    if (strcmp(sub, "import") == 0)
        return image_import(g, argc, argv);
    if (strcmp(sub, "rm") == 0)
        return image_rm(g, argc, argv);
    int p = parse_simple(g, argc, argv, "image ls", image_ls_usage);
    if (p)
        return p > 0 ? 0 : CLI_EXIT_USAGE;
    if (optind != argc)
        return cli_fail(CLI_EXIT_USAGE, "image ls takes no arguments\n%s", image_ls_usage);
    cell_ctx *ctx = NULL;
    int rc = cli_open(g, &ctx);
    if (rc)
        return rc;
    rc = image_ls(g, ctx);
    cell_ctx_close(ctx);
    return rc;
}
