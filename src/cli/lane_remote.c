/* lane_remote.c: `cell lane ... --url URL`: the lane commands on the
 * daemon's lanes of the token's tenant (/v1/lanes), printing what the local
 * commands print (the API's Lane with --json). */
#include "cli/cells_cmds.h"
#include "cli/lane_cmds.h"
#include "util/util.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int remote_ls(client *c, struct cli_global *g)
{
    json_t *reply = NULL;
    int rc = cli_client_json(c, "GET", "/v1/lanes", NULL, "lanes", &reply);
    if (rc)
        return rc;
    json_t *lanes = json_object_get(reply, "lanes");
    if (!json_is_array(lanes)) {
        json_decref(reply);
        return cli_fail(CLI_EXIT_INTERNAL, "the daemon's answer to GET /v1/lanes has no \"lanes\" array");
    }
    if (g->json) {
        cli_print_json(json_pack("{s:O}", "lanes", lanes));
    } else {
        size_t i;
        json_t *l;
        cli_lane_print_row(NULL, NULL, 0, 0, 0);
        json_array_foreach(lanes, i, l)
            cli_lane_print_row(cli_str_or(l, "name", "?"), cli_str_or(l, "image", "?"),
                           (long long)json_integer_value(json_object_get(l, "createdAtMs")),
                           (uint64_t)json_integer_value(json_object_get(l, "size")),
                           json_is_true(json_object_get(l, "attached")));
    }
    json_decref(reply);
    return 0;
}

/* A tar stream ends in at least two zero blocks: an export the daemon could
 * not finish is a stream cut short (its status was sent before the walk),
 * which the last bytes tell. */
struct export_out {
    unsigned long long bytes, zeros;   /* total, and zero bytes at the end */
};

static int export_data(void *user, const char *p, size_t n)
{
    struct export_out *x = user;
    if (util_write_all(1, p, n) < 0)
        return -1;
    x->bytes += n;
    size_t k = n;
    while (k && p[k - 1] == '\0')
        k--;
    x->zeros = k ? n - k : x->zeros + n;
    return 0;
}

static int remote_export(client *c, const char *name, const char *what)
{
    char *path = cli_client_pathf("/v1/lanes/%s/export", name);
    if (!path)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    struct export_out x = { 0 };
    int rc = cli_client_get_stream(c, path, export_data, &x, NULL, what);
    free(path);
    if (rc < 0)
        return cli_fail(1, "lane export: cannot write the tar stream: %s", strerror(errno));
    if (rc == 0 && (x.bytes == 0 || x.zeros < 1024))
        return cli_fail(1, "lane export: the daemon's tar stream of lane %s ended early (%llu bytes): the output "
                        "is incomplete; the daemon's log says why", name, x.bytes);
    return rc;
}

static int remote_import(client *c, struct cli_global *g, const struct lane_args *a, const char *what)
{
    char size[32] = "";
    if (a->size)
        snprintf(size, sizeof size, "%llu", (unsigned long long)a->size);
    char *path = a->image && a->size ? cli_client_pathf("/v1/lanes/%s/import?image=%s&size=%s", a->name, a->image, size)
                 : a->image          ? cli_client_pathf("/v1/lanes/%s/import?image=%s", a->name, a->image)
                 : a->size           ? cli_client_pathf("/v1/lanes/%s/import?size=%s", a->name, size)
                                     : cli_client_pathf("/v1/lanes/%s/import", a->name);
    if (!path)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    json_t *reply = NULL;
    int rc = cli_client_upload(c, "POST", path, 0, -1, what, &reply);
    free(path);
    if (rc == 0 && g->json)
        cli_print_json(reply), reply = NULL;
    else if (rc == 0)
        fprintf(stderr, "imported lane %s\n", a->name);
    json_decref(reply);
    return rc;
}

/* create, rm and commit: one JSON request each. */
static int remote_plain(client *c, struct cli_global *g, const struct lane_args *a, const char *what)
{
    const char *sub = a->sub, *method = "POST";
    char *path;
    json_t *body = NULL, *reply = NULL;
    if (strcmp(sub, "create") == 0) {
        path = strdup("/v1/lanes");
        body = json_pack("{s:s}", "name", a->name);
        if (a->image)
            json_object_set_new(body, "image", json_string(a->image));
        if (a->size)
            json_object_set_new(body, "size", json_integer((json_int_t)a->size));
    } else if (strcmp(sub, "rm") == 0) {
        method = "DELETE";
        path = cli_client_pathf("/v1/lanes/%s", a->name);
    } else {
        path = cli_client_pathf("/v1/lanes/%s/commit", a->name);
        body = json_pack("{s:s}", "image", a->image);
    }
    int rc = path ? cli_client_json(c, method, path, body, what, &reply) : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    json_decref(body);
    if (rc == 0 && g->json && strcmp(sub, "rm") == 0)
        cli_print_json(json_pack("{s:s, s:b}", "name", a->name, "deleted", 1));
    else if (rc == 0 && g->json)
        cli_print_json(reply), reply = NULL;
    else if (rc == 0 && strcmp(sub, "create") == 0)
        printf("created lane %s (image %s)\n", cli_str_or(reply, "name", a->name), cli_str_or(reply, "image", "?"));
    else if (rc == 0 && strcmp(sub, "rm") == 0)
        printf("deleted lane %s\n", a->name);
    else if (rc == 0)
        printf("committed lane %s as image %s\n", a->name, a->image);
    json_decref(reply);
    return rc;
}

static int remote_one(client *c, struct cli_global *g, void *arg)
{
    const struct lane_args *a = arg;
    if (strcmp(a->sub, "ls") == 0)
        return remote_ls(c, g);
    char what[96];
    snprintf(what, sizeof what, "lane %s", a->name);
    if (strcmp(a->sub, "export") == 0)
        return remote_export(c, a->name, what);
    if (strcmp(a->sub, "import") == 0)
        return remote_import(c, g, a, what);
    return remote_plain(c, g, a, what);
}

int cli_lane_remote(struct cli_global *g, const struct lane_args *a)
{
    return cli_with_client(g, remote_one, (void *)a);
}
