/* oci_egress.c: a pod's egress policy, enforced by the node's daemon.
 * At create of a pod sandbox that carries cell.dev/egress-policy, cell-oci
 * asks the daemon named in /etc/cell/oci.conf (cell serve --pods, over its
 * root-only unix socket, with the node token) to police the pod's netns,
 * before the sandbox's init is released and before any container of the
 * pod exists; no answer, no pod (fail closed).  docs/kubernetes.md
 * "Egress: the node daemon" has the design. */
#include "oci/oci_egress.h"
#include "cli/http1.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

/* The daemon starts a helper and installs rules: well under this. */
#define EGRESS_TIMEOUT_S 20
#define TOKEN_MAX        128

struct egress_conf {
    int  found;                          /* the file exists */
    char path[PATH_MAX];                 /* the file, for errors */
    char socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
    char token_file[PATH_MAX];
    int  all;                            /* "pods": "all" */
};

static const char *annotation(const struct oci_spec *s, const char *key)
{
    return s->annotations ? json_string_value(json_object_get(s->annotations, key)) : NULL;
}

int oci_egress_check_policy(json_t *a, cell_error *err)
{
    if (!a)
        return 0;
    if (!json_is_string(a))
        return util_fail(err, EINVAL, "annotation %s: must be a string (the policy's JSON text)", OCI_EGRESS_ANNOTATION);
    size_t len = json_string_length(a);
    if (len > OCI_EGRESS_POLICY_MAX)
        return util_fail(err, EINVAL, "annotation %s: %zu bytes, more than %d KiB", OCI_EGRESS_ANNOTATION, len,
                         OCI_EGRESS_POLICY_MAX / 1024);
    json_error_t je;
    json_t *doc = json_loadb(json_string_value(a), len, JSON_REJECT_DUPLICATES, &je);
    if (!doc)
        return util_fail(err, EINVAL, "annotation %s: not JSON: %s (line %d, column %d)", OCI_EGRESS_ANNOTATION,
                         je.text, je.line, je.column);
    int obj = json_is_object(doc), rules = obj && json_is_array(json_object_get(doc, "rules"));
    json_decref(doc);
    if (!obj)
        return util_fail(err, EINVAL, "annotation %s: must be a JSON object (a policy, {\"rules\": [...]})",
                         OCI_EGRESS_ANNOTATION);
    if (!rules)
        return util_fail(err, EINVAL, "annotation %s: field \"rules\" must be an array", OCI_EGRESS_ANNOTATION);
    return 0;
}

/* An absolute path of at most size - 1 bytes from key. */
static int conf_path(json_t *o, const char *key, const char *file, char *out, size_t size, cell_error *err)
{
    json_t *v = json_object_get(o, key);
    const char *s = json_string_value(v);
    if (!v)
        return util_fail(err, EINVAL, "%s: key \"%s\" is missing", file, key);
    if (!s || s[0] != '/' || json_string_length(v) >= size || strlen(s) != json_string_length(v))
        return util_fail(err, EINVAL, "%s: key \"%s\" must be an absolute path of at most %zu bytes", file, key,
                         size - 1);
    snprintf(out, size, "%s", s);
    return 0;
}

static int conf_load(struct egress_conf *c, cell_error *err)
{
    const char *env = getenv("CELL_OCI_CONFIG");
    snprintf(c->path, sizeof c->path, "%s", env && *env ? env : OCI_EGRESS_CONFIG);
    if (access(c->path, F_OK) < 0) {
        if (errno == ENOENT)
            return 0;
        return util_fail_errno(err, "%s", c->path);
    }
    json_error_t je;
    json_t *o = json_load_file(c->path, JSON_REJECT_DUPLICATES, &je);
    if (!o)
        return util_fail(err, EINVAL, "%s: not JSON: %s (line %d)", c->path, je.text, je.line);
    int rc = -1;
    const char *key;
    json_t *v;
    if (!json_is_object(o)) {
        util_fail(err, EINVAL, "%s: must be a JSON object {\"socket\", \"tokenFile\", \"pods\"}", c->path);
        goto out;
    }
    json_object_foreach(o, key, v)
        if (strcmp(key, "socket") != 0 && strcmp(key, "tokenFile") != 0 && strcmp(key, "pods") != 0) {
            util_fail(err, EINVAL, "%s: unknown key \"%.64s\" (known: socket, tokenFile, pods)", c->path, key);
            goto out;
        }
    if (conf_path(o, "socket", c->path, c->socket, sizeof c->socket, err) < 0 ||
        conf_path(o, "tokenFile", c->path, c->token_file, sizeof c->token_file, err) < 0)
        goto out;
    const char *pods = json_string_value(json_object_get(o, "pods"));
    if (json_object_get(o, "pods") && (!pods || (strcmp(pods, "annotated") != 0 && strcmp(pods, "all") != 0))) {
        util_fail(err, EINVAL, "%s: key \"pods\" must be \"annotated\" or \"all\"", c->path);
        goto out;
    }
    c->all = pods && strcmp(pods, "all") == 0;
    c->found = 1;
    rc = 0;
out:
    json_decref(o);
    return rc;
}

static int read_token(const char *path, char *out, size_t size, cell_error *err)
{
    char *text = NULL;
    size_t len = 0;
    if (util_read_file(path, TOKEN_MAX, &text, &len, err) < 0)
        return -1;
    while (len && (text[len - 1] == '\n' || text[len - 1] == '\r'))
        len--;
    int ok = len > 0 && len < size && memchr(text, '\0', len) == NULL;
    for (size_t i = 0; ok && i < len; i++)
        ok = text[i] > ' ' && text[i] < 0x7f;
    if (ok)
        snprintf(out, size, "%.*s", (int)len, text);
    free(text);
    return ok ? 0 : util_fail(err, EINVAL, "%s: not a node token", path);
}

/* One request to the daemon; *status and *reply (malloc()ed, NUL-ended). */
static int ask(const char *sock, const char *token, const char *method, const char *target, const char *body,
               int *status, char **reply, cell_error *err)
{
    char why[256] = "";
    int fd = cli_http1_connect(sock, NULL, NULL, why, sizeof why);
    if (fd < 0)
        return util_fail(err, ECONNREFUSED, "cannot connect to the node daemon at %s: %s (is cell serve --pods "
                         "running?)", sock, why);
    struct timeval tv = { .tv_sec = EGRESS_TIMEOUT_S };
    if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv) < 0) {
        int saved = errno;
        close(fd);
        errno = saved;
        return util_fail_errno(err, "node daemon socket");
    }
    http1_req rq = { .method = method, .host = "localhost", .target = target, .token = token,
                     .content_type = body ? "application/json" : NULL, .body = body,
                     .body_len = body ? strlen(body) : 0, .body_fd = -1 };
    http1_resp rs = { 0 };
    int rc = cli_http1_exchange(fd, &rq, &rs);
    close(fd);
    if (rc != HTTP1_OK) {
        cli_http1_strerror(rc, &rs, why, sizeof why);
        free(rs.body.data);
        return util_fail(err, EIO, "the node daemon at %s did not answer: %s", sock, why);
    }
    *status = rs.status;
    *reply = malloc(rs.body.len + 1);
    if (!*reply) {
        free(rs.body.data);
        return util_fail(err, ENOMEM, "out of memory");
    }
    if (rs.body.len)
        memcpy(*reply, rs.body.data, rs.body.len);
    (*reply)[rs.body.len] = '\0';
    free(rs.body.data);
    return 0;
}

/* The daemon's problem detail, or the whole answer (bounded). */
static void detail_of(const char *reply, char *out, size_t size)
{
    json_t *o = json_loads(reply, 0, NULL);
    const char *d = json_string_value(json_object_get(o, "detail"));
    snprintf(out, size, "%s", d ? d : reply);
    json_decref(o);
}

/* Whether the spec joins an existing network namespace. */
static const char *joined_netns(const struct oci_spec *s)
{
    for (size_t i = 0; i < s->n_ns; i++)
        if (s->ns[i].type == CLONE_NEWNET)
            return s->ns[i].path;
    return NULL;
}

/* DELETE /v1/pods/ID; a pod the daemon no longer knows (404) is gone already. */
static void unregister_at(const char *sock, const char *token_file, const char *id)
{
    char token[TOKEN_MAX + 1], target[64 + OCI_ID_MAX];
    int status = 0;
    char *reply = NULL;
    cell_error err = { 0 };
    snprintf(target, sizeof target, "/v1/pods/%s", id);
    if (read_token(token_file, token, sizeof token, &err) < 0 ||
        ask(sock, token, "DELETE", target, NULL, &status, &reply, &err) < 0)
        oci_log("warning", "container %s: unregistering its pod's egress: %s (the daemon lets go of it when its "
                "init exits)", id, err.message);
    else if (status != 204 && status != 404)
        oci_log("warning", "container %s: unregistering its pod's egress: HTTP %d: %.200s", id, status, reply);
    free(reply);
}

void oci_egress_unregister(const char *root, const char *id)
{
    char path[PATH_MAX];
    if (oci_state_path(path, sizeof path, root, id, OCI_EGRESS_FILE, NULL) < 0 || access(path, F_OK) < 0)
        return;
    json_t *rec = json_load_file(path, JSON_REJECT_DUPLICATES, NULL);
    const char *sock = json_string_value(json_object_get(rec, "socket"));
    const char *tok = json_string_value(json_object_get(rec, "tokenFile"));
    if (sock && tok)
        unregister_at(sock, tok, id);
    else
        oci_log("warning", "container %s: %s is not a registration record; its pod is unregistered when its "
                "init exits", id, path);
    json_decref(rec);
}

int oci_egress_register(const char *root, const char *id, const struct oci_spec *spec, pid_t pid, cell_error *err)
{
    json_t *pol = spec->annotations ? json_object_get(spec->annotations, OCI_EGRESS_ANNOTATION) : NULL;
    if (oci_egress_check_policy(pol, err) < 0)
        return -1;
    /* containerd's CRI (and CRI-O's) name the sandbox; the pod's other
     * containers join its netns, which its registration covers. */
    const char *type = annotation(spec, "io.kubernetes.cri.container-type");
    if (!type)
        type = annotation(spec, "io.kubernetes.cri-o.ContainerType");
    if (type && strcmp(type, "sandbox") != 0)
        return 0;
    const char *joined = joined_netns(spec);
    if (!type && joined) {
        if (pol)
            return util_fail(err, EINVAL, "annotation %s: the container joins the network namespace %s, which "
                             "cell-oci cannot police on its own: set it on the pod (its sandbox), or give the "
                             "container a network namespace of its own", OCI_EGRESS_ANNOTATION, joined);
        return 0;
    }
    struct egress_conf conf = { 0 };
    if (conf_load(&conf, err) < 0) {
        if (!pol)
            return -1;
        /* Name the annotation: it is why the file was needed. */
        cell_error why = *err;
        return util_fail(err, why.code, "annotation %s: %s", OCI_EGRESS_ANNOTATION, why.message);
    }
    if (!conf.found)
        return pol ? util_fail(err, ENOENT, "annotation %s: no node daemon is configured (%s is missing): a pod "
                               "that asks for an egress policy does not run without one", OCI_EGRESS_ANNOTATION,
                               conf.path)
                   : 0;
    if (!pol && !conf.all)
        return 0;
    char token[TOKEN_MAX + 1];
    uint64_t start = oci_pid_start_time(pid);
    if (start == 0)
        return util_fail(err, ESRCH, "the container's init %d is gone", (int)pid);
    json_t *body = json_pack("{s:s, s:i, s:I, s:O?, s:{s:s?, s:s?, s:s?}}", "id", id, "pid", (int)pid, "startTime",
                             (json_int_t)start, "policy", pol, "pod", "name",
                             annotation(spec, "io.kubernetes.cri.sandbox-name"), "namespace",
                             annotation(spec, "io.kubernetes.cri.sandbox-namespace"), "uid",
                             annotation(spec, "io.kubernetes.cri.sandbox-uid"));
    char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
    json_decref(body);
    if (!text)
        return util_fail(err, ENOMEM, "out of memory");
    int status = 0, rc = -1;
    char *reply = NULL;
    cell_error why = { 0 };
    if (read_token(conf.token_file, token, sizeof token, &why) < 0 ||
        ask(conf.socket, token, "POST", "/v1/pods", text, &status, &reply, &why) < 0) {
        util_fail(err, why.code, "annotation %s: %s", OCI_EGRESS_ANNOTATION, why.message);
        goto out;
    }
    if (status != 200 && status != 201) {
        char detail[512];
        detail_of(reply, detail, sizeof detail);
        util_fail(err, status == 400 ? EINVAL : EACCES, "annotation %s: the node daemon at %s refused the pod "
                  "(HTTP %d): %s", OCI_EGRESS_ANNOTATION, conf.socket, status, detail);
        goto out;
    }
    if (status == 201) {
        /* What delete needs, even if oci.conf changes meanwhile. */
        json_t *rec = json_pack("{s:s, s:s}", "socket", conf.socket, "tokenFile", conf.token_file);
        char *r = rec ? json_dumps(rec, JSON_COMPACT) : NULL;
        json_decref(rec);
        char path[PATH_MAX];
        if (!r || oci_state_path(path, sizeof path, root, id, OCI_EGRESS_FILE, err) < 0 ||
            util_write_file(path, r, strlen(r), 0600, 0, err) < 0) {
            if (!r)
                util_fail(err, ENOMEM, "out of memory");
            free(r);
            unregister_at(conf.socket, conf.token_file, id);
            goto out;
        }
        free(r);
    }
    rc = 0;
out:
    free(text);
    free(reply);
    return rc;
}
