/* store_cmds.c: `cell lane ...` and `cell image ...`, the commands that
 * manage what is stored in the state directory. */
#include "cli/cells_cmds.h"
#include "cli/lane_cmds.h"
#include "cli/opts.h"
#include "runtime/runtime.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

const char cli_lane_usage[] =
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
    "the state directory.  Lanes made through `cell serve` are always sized.\n"
    "\n"
    "Without --url these are the lanes of the state directory, the ones\n"
    "`cell run --lane NAME` uses.  With --url URL (or $CELL_URL) the same\n"
    "commands work on the daemon's lanes of your tenant, by name (token:\n"
    "$CELL_TOKEN, else STATE/admin.token; the daemon on this host is\n"
    "--url unix:STATE/cell.sock).  The two never mix: without --url the\n"
    "daemon's lanes are not listed, and a command naming one fails, naming its\n"
    "tenant and lane.\n"
    "\n"
    "A lane in use (by a running cell, an export, a commit or a delete) is not\n"
    "removed, exported or committed: the command fails naming the user.\n"
    "\n"
    "--json: ls prints what GET /v1/lanes answers, {\"lanes\": [Lane]} (name,\n"
    "image, size in bytes, 0 for an unsized lane, createdAtMs, attached);\n"
    "create and import print one Lane; rm {\"name\", \"deleted\"}; commit the new\n"
    "image as POST /v1/lanes/NAME/commit answers (name, lane, digest, size,\n"
    "source).\n";

static const char image_usage[] =
    "usage: cell image ls [--json]           images: name, source, digest, size, lanes\n"
    "       cell image build NAME     (host, debian-bookworm, desktop)\n"
    "       cell image import NAME FILE|- [--max-image-size SIZE]   an OCI or docker-archive tar\n"
    "       cell image rm NAME                refused while lanes or cells use it\n"
    "       cell image export NAME [FILE|-]   an OCI image layout tar (to a new FILE, else stdout)\n";

enum { LANE_OPT_JSON = 256, LANE_OPT_URL, LANE_OPT_STATE };

/* Also main.c's: a value of --image or --size is never a global option. */
const struct option cli_lane_options[] = {
    { "image", required_argument, NULL, 'i' }, { "size", required_argument, NULL, 's' },
    { "json", no_argument, NULL, LANE_OPT_JSON }, { "url", required_argument, NULL, LANE_OPT_URL },
    { "state", required_argument, NULL, LANE_OPT_STATE }, { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
};

/* How many operands each subcommand takes, and whether --image and --size
 * apply to it (commit's IMAGE is an operand). */
static const struct {
    const char *sub;
    int operands, options;
} lane_subs[] = {
    { "create", 1, 1 }, { "ls", 0, 0 }, { "rm", 1, 0 }, { "export", 1, 0 }, { "import", 1, 1 }, { "commit", 2, 0 },
};

/* `option`: --image or --size when given, else NULL. */
static int lane_operands(struct lane_args *a, const char *option, int argc, char **argv)
{
    for (size_t k = 0; k < sizeof lane_subs / sizeof *lane_subs; k++) {
        if (strcmp(a->sub, lane_subs[k].sub) != 0)
            continue;
        if (option && !lane_subs[k].options)
            return cli_fail(CLI_EXIT_USAGE, "lane %s: %s only applies to create and import (see cell lane --help)",
                            a->sub, option);
        if (argc != lane_subs[k].operands)
            return cli_fail(CLI_EXIT_USAGE, "lane %s takes %s (see cell lane --help)", a->sub,
                            lane_subs[k].operands == 0 ? "no arguments"
                            : lane_subs[k].operands == 1 ? "one lane NAME" : "a lane NAME and a new IMAGE name");
        a->name = argc > 0 ? argv[0] : NULL;
        if (argc > 1)
            a->image = argv[1];
        return 0;
    }
    return cli_fail(CLI_EXIT_USAGE, "unknown lane command '%s' (see cell lane --help)", a->sub);
}

/* argv[0] "lane", argv[1] the subcommand.  0 parsed, -1 help printed, or
 * an exit code (printed). */
static int lane_parse(struct cli_global *g, int argc, char **argv, struct lane_args *a)
{
    memset(a, 0, sizeof *a);
    a->sub = argv[1];
    const char *size_text = NULL;
    const char *option = NULL;
    int o;
    opterr = 0;
    optind = 0;
    /* argv + 1: the subcommand stands where getopt expects the program. */
    while ((o = getopt_long(argc - 1, argv + 1, ":h", cli_lane_options, NULL)) != -1) {
        switch (o) {
        case 'h': fputs(cli_lane_usage, stdout); return -1;
        case 'i': a->image = optarg; option = "--image"; break;
        case 's': size_text = optarg; option = "--size"; break;
        case LANE_OPT_JSON: g->json = 1; break;
        case LANE_OPT_URL: g->url = optarg; break;
        case LANE_OPT_STATE: g->state_dir = optarg; break;
        default: return cli_getopt_fail("lane", o, argc - 1, argv + 1);
        }
    }
    int rc = lane_operands(a, option, argc - 1 - optind, argv + 1 + optind);
    if (rc)
        return rc;
    cell_error perr = { 0 };
    if (size_text && cell_parse_size(size_text, &a->size, &perr) < 0)
        return cli_fail(CLI_EXIT_USAGE, "lane %s: --size: %s", a->sub, perr.message);
    if (size_text && a->size == 0)
        return cli_fail(CLI_EXIT_USAGE, "lane %s: --size must be at least 16M (or left out)", a->sub);
    return 0;
}

void cli_lane_print_row(const char *name, const char *image, long long created_ms, uint64_t size, int attached)
{
    if (!name) {
        printf("%-24s %-18s %-20s %-9s %s\n", "NAME", "IMAGE", "CREATED", "SIZE", "ATTACHED");
        return;
    }
    char when[32] = "-", size_col[32] = "-";
    time_t t = (time_t)(created_ms / 1000);
    struct tm tm;
    if (created_ms > 0 && gmtime_r(&t, &tm))
        strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S", &tm);
    if (size)
        snprintf(size_col, sizeof size_col, "%lluM", (unsigned long long)(size >> 20));
    printf("%-24s %-18s %-20s %-9s %s\n", name, image, when, size_col, attached ? "yes" : "no");
}

/* The API's Lane (docs/openapi.json): the same shape as through --url. */
static json_t *lane_json(const cell_lane_info *l)
{
    return json_pack("{s:s, s:s, s:I, s:I, s:b}", "name", l->name, "image", l->image, "size", (json_int_t)l->size,
                     "createdAtMs", (json_int_t)l->created * 1000, "attached", l->attached);
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
        cli_print_json(json_pack("{s:o}", "lanes", arr));
    } else {
        cli_lane_print_row(NULL, NULL, 0, 0, 0);
        for (size_t i = 0; i < n; i++)
            cli_lane_print_row(lanes[i].name, lanes[i].image, (long long)lanes[i].created * 1000, lanes[i].size,
                           lanes[i].attached);
        size_t daemons = runtime_lane_daemon_count(ctx);
        if (daemons)
            fprintf(stderr, "(%zu lane%s of the daemon not shown: `cell lane ls --url URL` lists a tenant's)\n",
                    daemons, daemons == 1 ? "" : "s");
    }
    free(lanes);
    return 0;
}

/* The committed image as POST /v1/lanes/NAME/commit answers it. */
static json_t *committed_json(cell_ctx *ctx, const char *lane, const char *image)
{
    cell_image_info *imgs = NULL;
    size_t n = 0;
    json_t *o = json_pack("{s:s, s:s, s:s}", "name", image, "lane", lane, "source", "commit");
    if (cell_image_list(ctx, &imgs, &n, NULL) < 0)
        return o;
    for (size_t i = 0; i < n; i++)
        if (strcmp(imgs[i].name, image) == 0) {
            json_object_set_new(o, "digest", json_string(imgs[i].digest));
            json_object_set_new(o, "size", json_integer((json_int_t)imgs[i].size));
        }
    free(imgs);
    return o;
}

static int lane_local_one(struct cli_global *g, cell_ctx *ctx, const struct lane_args *a)
{
    cell_error err = { 0 };
    cell_lane_info info;
    const char *sub = a->sub;
    if (strcmp(sub, "ls") == 0)
        return lane_ls(g, ctx);
    if (strcmp(sub, "create") == 0) {
        if (cell_lane_create_sized(ctx, a->name, a->image, a->size, &err) < 0 ||
            cell_lane_get(ctx, a->name, &info, &err) < 0)
            return cli_fail_err(1, &err);
        if (g->json)
            cli_print_json(lane_json(&info));
        else
            printf("created lane %s (image %s)\n", info.name, info.image);
    } else if (strcmp(sub, "rm") == 0) {
        if (cell_lane_delete(ctx, a->name, &err) < 0)
            return cli_fail_err(1, &err);
        if (g->json)
            cli_print_json(json_pack("{s:s, s:b}", "name", a->name, "deleted", 1));
        else
            printf("deleted lane %s\n", a->name);
    } else if (strcmp(sub, "export") == 0) {
        if (cell_lane_export(ctx, a->name, 1, &err) < 0)
            return cli_fail_err(1, &err);
    } else if (strcmp(sub, "import") == 0) {
        if (cell_lane_import_sized(ctx, a->name, a->image, a->size, 0, &err) < 0)
            return cli_fail_err(1, &err);
        if (g->json && cell_lane_get(ctx, a->name, &info, &err) == 0)
            cli_print_json(lane_json(&info));
        else if (!g->json)
            fprintf(stderr, "imported lane %s\n", a->name);
    } else {
        if (cell_image_commit(ctx, a->name, a->image, &err) < 0)
            return cli_fail_err(1, &err);
        if (g->json)
            cli_print_json(committed_json(ctx, a->name, a->image));
        else
            printf("committed lane %s as image %s\n", a->name, a->image);
    }
    return 0;
}

int cli_lane(struct cli_global *g, int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "help") == 0 || cli_is_help(argv[1])) {
        fputs(cli_lane_usage, argc < 2 ? stderr : stdout);
        return argc < 2 ? CLI_EXIT_USAGE : 0;
    }
    struct lane_args a;
    int rc = lane_parse(g, argc, argv, &a);
    if (rc)
        return rc < 0 ? 0 : rc;
    /* Checked before anything is asked of the daemon or the state. */
    if (strcmp(a.sub, "export") == 0 && g->json)
        return cli_fail(CLI_EXIT_USAGE, "lane export: --json: the output is a tar stream, not JSON; leave --json out");
    if (strcmp(a.sub, "export") == 0 && isatty(1))
        return cli_fail(CLI_EXIT_USAGE, "lane export: refusing to write a tar stream to a terminal: redirect it "
                        "(> FILE) or pipe it (| tar t)");
    if (strcmp(a.sub, "import") == 0 && isatty(0))
        return cli_fail(CLI_EXIT_USAGE, "lane import reads a tar stream from stdin; redirect it from a file");
    const char *url = g->url && *g->url ? g->url : getenv("CELL_URL");
    if (url && *url)
        return cli_lane_remote(g, &a);
    cell_ctx *ctx = NULL;
    if ((rc = cli_open(g, &ctx)) != 0)
        return rc;
    rc = lane_local_one(g, ctx, &a);
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
    if (g->json)
        return cli_fail(CLI_EXIT_USAGE, "image export: --json: the output is a tar stream, not JSON; leave --json out");
    if (!file && isatty(1))
        return cli_fail(CLI_EXIT_USAGE, "image export: refusing to write a tar stream to a terminal: give a FILE, "
                        "redirect it (> FILE) or pipe it (| tar t)");
    if (file && (fd = open(file, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644)) < 0)
        return errno == EEXIST ? cli_fail(1, "image export: %s exists: FILE must be a new file (or give - and "
                                          "redirect stdout)", file)
                               : cli_fail(1, "image export: cannot create %s: %s", file, strerror(errno));
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
        static const char *const names[] = { "host", "debian-bookworm", "desktop" };
        json_t *arr = json_array();
        if (!g->json)
            printf("%-20s %s\n", "NAME", "STATUS");
        for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
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
