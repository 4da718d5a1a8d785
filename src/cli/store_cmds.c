/* store_cmds.c: `cell lane ...` and `cell image ...`, the commands that
 * manage what is stored in the state directory. */
#include "cli/cli.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char lane_usage[] =
    "usage: cell lane create NAME [--image IMAGE] [--size SIZE]\n"
    "       cell lane ls\n"
    "       cell lane rm NAME\n"
    "       cell lane export NAME > lane.tar\n"
    "       cell lane import NAME [--image IMAGE] [--size SIZE] < lane.tar\n"
    "       cell lane commit NAME IMAGE   flatten the lane over its image into a new image\n"
    "\n"
    "--size SIZE makes the lane an ext4 image of SIZE (at least 16M): writes past\n"
    "it fail with ENOSPC, and an import that would not fit is refused.  Without\n"
    "it a lane made here is unsized: a plain directory that can fill the disk of\n"
    "the state directory.  Lanes made through `cell serve` are always sized.\n";

static const char image_usage[] =
    "usage: cell image ls [--json]           images: name, source, digest, size, lanes\n"
    "       cell image build NAME     (host, debian-bookworm)\n"
    "       cell image import NAME FILE|- [--max-image-size SIZE]   an OCI or docker-archive tar\n"
    "       cell image rm NAME                refused while lanes or cells use it\n"
    "       cell image export NAME [FILE|-]   an OCI image layout tar (to stdout without FILE)\n";

/* NAME [--image IMAGE] [--size SIZE] */
static int name_and_image(int argc, char **argv, const char **name, const char **image, const char **size)
{
    *name = NULL;
    *image = NULL;
    *size = NULL;
    for (int i = 2; i < argc; i++) {
        if (strcmp(argv[i], "--image") == 0 && i + 1 < argc)
            *image = argv[++i];
        else if (strncmp(argv[i], "--image=", 8) == 0)
            *image = argv[i] + 8;
        else if (strcmp(argv[i], "--size") == 0 && i + 1 < argc)
            *size = argv[++i];
        else if (strncmp(argv[i], "--size=", 7) == 0)
            *size = argv[i] + 7;
        else if (argv[i][0] == '-')
            return cli_fail(CLI_EXIT_USAGE, "unknown option '%s'\n%s", argv[i], lane_usage);
        else if (!*name)
            *name = argv[i];
        else
            return cli_fail(CLI_EXIT_USAGE, "unexpected argument '%s'\n%s", argv[i], lane_usage);
    }
    if (!*name)
        return cli_fail(CLI_EXIT_USAGE, "missing lane NAME\n%s", lane_usage);
    return 0;
}

static json_t *lane_json(const cell_lane_info *l)
{
    return json_pack("{s:s, s:s, s:I, s:b, s:I}", "name", l->name, "image", l->image, "created", (json_int_t)l->created,
                     "attached", l->attached, "size", (json_int_t)l->size);
}

static int lane_ls(struct cli_global *g, cell_ctx *ctx)
{
    cell_lane_info *lanes = NULL;
    size_t n = 0;
    cell_error err = { 0 };
    if (cell_lane_list(ctx, &lanes, &n, &err) < 0)
        return cli_fail_err(1, &err);
    if (g->json) {
        json_t *arr = json_array();
        for (size_t i = 0; i < n; i++)
            json_array_append_new(arr, lane_json(&lanes[i]));
        cli_print_json(arr);
    } else {
        printf("%-24s %-18s %-20s %-9s %s\n", "NAME", "IMAGE", "CREATED", "SIZE", "ATTACHED");
        for (size_t i = 0; i < n; i++) {
            char when[32], size_col[32] = "-";
            time_t t = (time_t)lanes[i].created;
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", gmtime(&t));
            if (lanes[i].size)
                snprintf(size_col, sizeof size_col, "%lluM", (unsigned long long)(lanes[i].size >> 20));
            printf("%-24s %-18s %-20s %-9s %s\n", lanes[i].name, lanes[i].image, when, size_col,
                   lanes[i].attached ? "yes" : "no");
        }
    }
    free(lanes);
    return 0;
}

/* cell lane commit LANE IMAGE */
static int lane_commit(struct cli_global *g, int argc, char **argv)
{
    if (argc != 4 || argv[2][0] == '-' || argv[3][0] == '-')
        return cli_fail(CLI_EXIT_USAGE, "lane commit takes a lane NAME and a new IMAGE name\n%s", lane_usage);
    cell_ctx *ctx = NULL;
    int rc = cli_open(g, &ctx);
    if (rc)
        return rc;
    cell_error err = { 0 };
    if (cell_image_commit(ctx, argv[2], argv[3], &err) < 0)
        rc = cli_fail_err(1, &err);
    else if (g->json)
        cli_print_json(json_pack("{s:s, s:s}", "lane", argv[2], "image", argv[3]));
    else
        printf("committed lane %s as image %s\n", argv[2], argv[3]);
    cell_ctx_close(ctx);
    return rc;
}

int cli_lane(struct cli_global *g, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(lane_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    const char *sub = argv[1], *name = NULL, *image = NULL, *size_text = NULL;
    uint64_t size = 0;
    if (strcmp(sub, "commit") == 0)
        return lane_commit(g, argc, argv);
    int known = !strcmp(sub, "create") || !strcmp(sub, "ls") || !strcmp(sub, "rm") || !strcmp(sub, "export") ||
                !strcmp(sub, "import");
    if (!known)
        return cli_fail(CLI_EXIT_USAGE, "unknown lane command '%s'\n%s", sub, lane_usage);
    if (strcmp(sub, "ls") != 0) {
        int rc = name_and_image(argc, argv, &name, &image, &size_text);
        if (rc)
            return rc;
        cell_error perr = { 0 };
        if (size_text && strcmp(sub, "create") != 0 && strcmp(sub, "import") != 0)
            return cli_fail(CLI_EXIT_USAGE, "--size only applies to `cell lane create` and `cell lane import`");
        if (size_text && cell_parse_size(size_text, &size, &perr) < 0)
            return cli_fail(CLI_EXIT_USAGE, "--size: %s", perr.message);
    }
    cell_ctx *ctx = NULL;
    int rc = cli_open(g, &ctx);
    if (rc)
        return rc;
    cell_error err = { 0 };
    if (strcmp(sub, "ls") == 0) {
        rc = lane_ls(g, ctx);
    } else if (strcmp(sub, "create") == 0) {
        cell_lane_info info;
        if (cell_lane_create_sized(ctx, name, image, size, &err) < 0 || cell_lane_get(ctx, name, &info, &err) < 0)
            rc = cli_fail_err(1, &err);
        else if (g->json)
            cli_print_json(lane_json(&info));
        else
            printf("created lane %s (image %s)\n", info.name, info.image);
    } else if (strcmp(sub, "rm") == 0) {
        if (cell_lane_delete(ctx, name, &err) < 0)
            rc = cli_fail_err(1, &err);
        else if (g->json)
            cli_print_json(json_pack("{s:s, s:b}", "name", name, "deleted", 1));
        else
            printf("deleted lane %s\n", name);
    } else if (strcmp(sub, "export") == 0) {
        if (isatty(1))
            rc = cli_fail(CLI_EXIT_USAGE, "lane export: refusing to write a tar stream to a terminal: redirect it "
                          "(> FILE) or pipe it (| tar t)");
        else if (cell_lane_export(ctx, name, 1, &err) < 0)
            rc = cli_fail_err(1, &err);
    } else if (isatty(0)) {
        rc = cli_fail(CLI_EXIT_USAGE, "lane import reads a tar stream from stdin; redirect it from a file");
    } else {
        if (cell_lane_import_sized(ctx, name, image, size, 0, &err) < 0)
            rc = cli_fail_err(1, &err);
        else if (!g->json)
            fprintf(stderr, "imported lane %s\n", name);
    }
    cell_ctx_close(ctx);
    return rc;
}

static void print_progress(void *user, const char *line)
{
    (void)user;
    fprintf(stderr, "%s\n", line);
}

/* cell image export NAME [FILE|-]: a new FILE (never an existing one), or
 * stdout, which must not be a terminal. */
static int image_export(struct cli_global *g, int argc, char **argv)
{
    if (argc < 3 || argc > 4 || argv[2][0] == '-')
        return cli_fail(CLI_EXIT_USAGE, "image export takes a NAME and an optional FILE\n%s", image_usage);
    const char *file = argc == 4 && strcmp(argv[3], "-") != 0 ? argv[3] : NULL;
    int fd = 1;
    if (!file && isatty(1))
        return cli_fail(CLI_EXIT_USAGE, "image export: refusing to write a tar stream to a terminal: give a FILE, "
                        "redirect it (> FILE) or pipe it (| tar t)");
    if (file && (fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0)
        return cli_fail(1, "cannot create %s: %s", file, strerror(errno));
    cell_ctx *ctx = NULL;
    int rc = cli_open(g, &ctx);
    cell_error err = { 0 };
    if (rc == 0 && cell_image_export(ctx, argv[2], fd, &err) < 0)
        rc = cli_fail_err(1, &err);
    if (ctx)
        cell_ctx_close(ctx);
    if (file && (close(fd) < 0 || rc != 0)) {
        unlink(file); /* no half-written layout left behind */
        return rc ? rc : cli_fail(1, "cannot write %s: %s", file, strerror(errno));
    }
    return rc;
}

int cli_image(struct cli_global *g, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0 || strcmp(argv[1], "--help") == 0) {
        fputs(image_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "import") == 0 || strcmp(sub, "rm") == 0 || strcmp(sub, "ls") == 0)
        return cli_image_store(g, argc - 1, argv + 1); /* image_cmds.c */
    if (strcmp(sub, "export") == 0)
        return image_export(g, argc, argv);
    if (strcmp(sub, "ls") != 0 && strcmp(sub, "build") != 0)
        return cli_fail(CLI_EXIT_USAGE, "unknown image command '%s'\n%s", sub, image_usage);
    if (strcmp(sub, "build") == 0 && argc != 3)
        return cli_fail(CLI_EXIT_USAGE, "image build takes exactly one NAME\n%s", image_usage);
    cell_ctx *ctx = NULL;
    int rc = cli_open(g, &ctx);
    if (rc)
        return rc;
    cell_error err = { 0 };
    if (strcmp(sub, "build") == 0) {
        if (cell_image_build(ctx, argv[2], print_progress, NULL, &err) < 0)
            rc = cli_fail_err(1, &err);
        else if (g->json)
            cli_print_json(json_pack("{s:s, s:b}", "name", argv[2], "ready", 1));
        else
            printf("image %s is ready\n", argv[2]);
    } else {
        static const char *const names[] = { "host", "debian-bookworm" };
        json_t *arr = json_array();
        if (!g->json)
            printf("%-20s %s\n", "NAME", "STATUS");
        for (size_t i = 0; i < 2; i++) {
            int st = cell_image_status(ctx, names[i], NULL);
            if (g->json)
                json_array_append_new(arr, json_pack("{s:s, s:b}", "name", names[i], "ready", st == 1));
            else
                printf("%-20s %s\n", names[i], st == 1 ? "ready" : "not built (cell image build NAME)");
        }
        if (g->json)
            cli_print_json(arr);
        else
            json_decref(arr);
    }
    cell_ctx_close(ctx);
    return rc;
}
