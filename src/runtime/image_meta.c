/* image_meta.c: image.json and the blob store (image_meta.h). */
#include "runtime/image_meta.h"
#include "runtime/runtime.h"
#include "util/util.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

int runtime_image_meta_valid_digest(const char *s)
{
    if (!s || strncmp(s, "sha256:", 7) != 0 || strlen(s) != IMAGE_META_DIGEST_LEN)
        return 0;
    for (const char *p = s + 7; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

int runtime_image_meta_check_name(const char *name, cell_error *err)
{
    size_t n = name ? strlen(name) : 0;
    int ok = n >= 1 && n <= 63 && name[0] != '.' && name[0] != '-';
    for (size_t i = 0; ok && i < n; i++)
        ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || strchr("._-", name[i]);
    if (!ok)
        return util_fail(err, EINVAL, "invalid image name '%.80s': use 1-63 of a-z, 0-9, '.', '_' and '-', "
                         "not starting with '.' or '-'", name ? name : "");
    for (const char *const *b = runtime_image_names; *b; b++)
        if (strcmp(*b, name) == 0)
            return util_fail(err, EINVAL, "image name '%s' is a builtin image's: choose another name", name);
    if (strcmp(name, "blobs") == 0)
        return util_fail(err, EINVAL, "image name 'blobs' is reserved for the blob store: choose another name");
    return 0;
}

/* ---- JSON <-> struct -------------------------------------------------------- */

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; v && i < n; i++)
        free(v[i]);
    free(v);
}

void runtime_image_meta_config_free(struct image_meta_config *c)
{
    free_strv(c->env, c->n_env);
    free_strv(c->entrypoint, c->n_entrypoint);
    free_strv(c->cmd, c->n_cmd);
    free(c->working_dir);
    free(c->user);
    memset(c, 0, sizeof *c);
}

void runtime_image_meta_free(struct image_meta *m)
{
    free_strv(m->layers, m->n_layers);
    free_strv(m->blobs, m->n_blobs);
    runtime_image_meta_config_free(&m->config);
    memset(m, 0, sizeof *m);
}

/* An array of strings (or null/absent: none) into *out. */
static int strv_from_json(const json_t *a, const char *what, char ***out, size_t *n, cell_error *err)
{
    *out = NULL;
    *n = 0;
    if (!a || json_is_null(a))
        return 0;
    if (!json_is_array(a))
        return util_fail(err, EBADMSG, "image config: %s is not an array of strings", what);
    size_t len = json_array_size(a);
    char **v = calloc(len + 1, sizeof *v);
    if (!v)
        return util_fail(err, ENOMEM, "out of memory");
    for (size_t i = 0; i < len; i++) {
        const char *s = json_string_value(json_array_get(a, i));
        if (!s || !(v[i] = strdup(s))) {
            free_strv(v, i);
            return s ? util_fail(err, ENOMEM, "out of memory")
                     : util_fail(err, EBADMSG, "image config: %s[%zu] is not a string", what, i);
        }
    }
    *out = v;
    *n = len;
    return 0;
}

/* A string (or null/absent/"": unset) into *out. */
static int str_from_json(const json_t *s, const char *what, char **out, cell_error *err)
{
    *out = NULL;
    if (!s || json_is_null(s))
        return 0;
    if (!json_is_string(s))
        return util_fail(err, EBADMSG, "image config: %s is not a string", what);
    if (json_string_length(s) == 0)
        return 0;
    if (!(*out = strdup(json_string_value(s))))
        return util_fail(err, ENOMEM, "out of memory");
    return 0;
}

int runtime_image_meta_config_from_json(const json_t *obj, struct image_meta_config *c, cell_error *err)
{
    memset(c, 0, sizeof *c);
    if (!obj || json_is_null(obj))
        return 0;
    if (!json_is_object(obj))
        return util_fail(err, EBADMSG, "image config: config is not an object");
    if (strv_from_json(json_object_get(obj, "Env"), "Env", &c->env, &c->n_env, err) < 0 ||
        strv_from_json(json_object_get(obj, "Entrypoint"), "Entrypoint", &c->entrypoint, &c->n_entrypoint, err) < 0 ||
        strv_from_json(json_object_get(obj, "Cmd"), "Cmd", &c->cmd, &c->n_cmd, err) < 0 ||
        str_from_json(json_object_get(obj, "WorkingDir"), "WorkingDir", &c->working_dir, err) < 0 ||
        str_from_json(json_object_get(obj, "User"), "User", &c->user, err) < 0) {
        runtime_image_meta_config_free(c);
        return -1;
    }
    return 0;
}

static json_t *strv_to_json(char *const *v, size_t n)
{
    json_t *a = json_array();
    for (size_t i = 0; a && i < n; i++)
        if (json_array_append_new(a, json_string(v[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    return a;
}

json_t *runtime_image_meta_config_to_json(const struct image_meta_config *c)
{
    json_t *o = json_object();
    if (!o)
        return NULL;
    int bad = json_object_set_new(o, "Env", strv_to_json(c->env, c->n_env)) < 0 ||
              json_object_set_new(o, "Entrypoint", strv_to_json(c->entrypoint, c->n_entrypoint)) < 0 ||
              json_object_set_new(o, "Cmd", strv_to_json(c->cmd, c->n_cmd)) < 0 ||
              (c->working_dir && json_object_set_new(o, "WorkingDir", json_string(c->working_dir)) < 0) ||
              (c->user && json_object_set_new(o, "User", json_string(c->user)) < 0);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int meta_from_json(const json_t *root, const char *path, struct image_meta *m, cell_error *err)
{
    const char *name = json_string_value(json_object_get(root, "name"));
    const char *digest = json_string_value(json_object_get(root, "digest"));
    const char *source = json_string_value(json_object_get(root, "source"));
    json_t *created = json_object_get(root, "created"), *size = json_object_get(root, "size");
    if (!json_is_object(root) || !name || strlen(name) >= sizeof m->name || !runtime_image_meta_valid_digest(digest) ||
        !source || strlen(source) >= sizeof m->source || !json_is_integer(created) || !json_is_integer(size) ||
        json_integer_value(size) < 0)
        return util_fail(err, EBADMSG, "%s: malformed (name, digest, source, created or size)", path);
    snprintf(m->name, sizeof m->name, "%s", name);
    snprintf(m->digest, sizeof m->digest, "%s", digest);
    snprintf(m->source, sizeof m->source, "%s", source);
    m->created = json_integer_value(created);
    m->size = (uint64_t)json_integer_value(size);
    json_t *tenant = json_object_get(root, "tenant");
    if (tenant && (!json_is_string(tenant) || json_string_length(tenant) >= sizeof m->tenant))
        return util_fail(err, EBADMSG, "%s: malformed tenant", path);
    snprintf(m->tenant, sizeof m->tenant, "%s", tenant ? json_string_value(tenant) : "");
    if (strv_from_json(json_object_get(root, "layers"), "layers", &m->layers, &m->n_layers, err) < 0 ||
        strv_from_json(json_object_get(root, "blobs"), "blobs", &m->blobs, &m->n_blobs, err) < 0 ||
        runtime_image_meta_config_from_json(json_object_get(root, "config"), &m->config, err) < 0)
        return -1;
    for (size_t i = 0; i < m->n_layers; i++)
        if (!runtime_image_meta_valid_digest(m->layers[i]))
            return util_fail(err, EBADMSG, "%s: layer %zu is not a sha256 digest", path, i);
    for (size_t i = 0; i < m->n_blobs; i++)
        if (!runtime_image_meta_valid_digest(m->blobs[i]))
            return util_fail(err, EBADMSG, "%s: blob %zu is not a sha256 digest", path, i);
    return 0;
}

int runtime_image_meta_read_dir(const char *dir, struct image_meta *m, cell_error *err)
{
    memset(m, 0, sizeof *m);
    char path[PATH_MAX];
    if (util_path(path, sizeof path, err, "%s/image.json", dir) < 0)
        return -1;
    _cleanup_free_ char *text = NULL;
    size_t len = 0;
    if (util_read_file(path, IMAGE_META_MAX_JSON, &text, &len, err) < 0)
        return -1;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root)
        return util_fail(err, EBADMSG, "%s: not JSON (%s)", path, jerr.text);
    int rc = meta_from_json(root, path, m, err);
    json_decref(root);
    if (rc < 0)
        runtime_image_meta_free(m);
    return rc;
}

int runtime_image_meta_read(cell_ctx *ctx, const char *name, struct image_meta *m, cell_error *err)
{
    char dir[PATH_MAX];
    if (!util_valid_name(name))
        return util_fail(err, EINVAL, "invalid image name '%.80s'", name ? name : "");
    if (util_path(dir, sizeof dir, err, "%s/images/%s", ctx->state_dir, name) < 0)
        return -1;
    return runtime_image_meta_read_dir(dir, m, err);
}

int runtime_image_meta_write_dir(const char *dir, const struct image_meta *m, cell_error *err)
{
    json_t *layers = strv_to_json(m->layers, m->n_layers);
    json_t *blobs = strv_to_json(m->blobs, m->n_blobs);
    json_t *config = runtime_image_meta_config_to_json(&m->config);
    json_t *root = layers && blobs && config
                       ? json_pack("{s:s, s:s, s:I, s:I, s:s, s:o, s:o, s:o}", "name", m->name, "digest", m->digest,
                                   "created", (json_int_t)m->created, "size", (json_int_t)m->size, "source",
                                   m->source, "layers", layers, "blobs", blobs, "config", config)
                       : NULL;
    if (!root) {
        if (!layers || !blobs || !config) {
            json_decref(layers);
            json_decref(blobs);
            json_decref(config);
        }
        return util_fail(err, ENOMEM, "cannot build image.json for '%s'", m->name);
    }
    if (m->tenant[0] && json_object_set_new(root, "tenant", json_string(m->tenant)) < 0) {
        json_decref(root);
        return util_fail(err, ENOMEM, "cannot build image.json for '%s'", m->name);
    }
    char *text = json_dumps(root, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    if (!text)
        return util_fail(err, ENOMEM, "out of memory");
    char tmp[PATH_MAX], path[PATH_MAX];
    int rc = -1;
    if (util_path(tmp, sizeof tmp, err, "%s/.image.json.tmp", dir) >= 0 &&
        util_path(path, sizeof path, err, "%s/image.json", dir) >= 0 &&
        util_write_file(tmp, text, strlen(text), 0644, 1, err) == 0) {
        rc = rename(tmp, path) < 0 ? util_fail_errno(err, "cannot rename %s", tmp) : 0;
        if (rc < 0)
            unlink(tmp);
    }
    free(text);
    return rc;
}

/* ---- blobs ------------------------------------------------------------------ */

int runtime_image_meta_blob_dir(cell_ctx *ctx, char *out, size_t size, cell_error *err)
{
    if (util_path(out, size, err, "%s/images/blobs/sha256", ctx->state_dir) < 0)
        return -1;
    return util_mkdir_p(out, 0700, err);
}

int runtime_image_meta_blob_path(cell_ctx *ctx, const char *digest, char *out, size_t size, cell_error *err)
{
    if (!runtime_image_meta_valid_digest(digest))
        return util_fail(err, EINVAL, "'%.80s' is not a sha256 digest (sha256:<64 hex digits>)", digest ? digest : "");
    return util_path(out, size, err, "%s/images/blobs/sha256/%s", ctx->state_dir, digest + 7);
}

int runtime_image_meta_blob_store(cell_ctx *ctx, const char *tmp, const char *digest, cell_error *err)
{
    char dir[PATH_MAX], path[PATH_MAX];
    if (runtime_image_meta_blob_dir(ctx, dir, sizeof dir, err) < 0 || runtime_image_meta_blob_path(ctx, digest, path, sizeof path, err) < 0)
        return -1;
    /* link() rather than rename(): it never replaces a blob already stored
     * (which a reader may have open), so two imports sharing a layer race
     * harmlessly; the loser's copy is identical and goes. */
    if (link(tmp, path) < 0 && errno != EEXIST)
        return util_fail_errno(err, "cannot store blob %s", digest);
    if (unlink(tmp) < 0)
        return util_fail_errno(err, "cannot remove %s", tmp);
    return 0;
}
