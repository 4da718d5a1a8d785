/* oci_spec.c: the bundle's config.json (OCI runtime spec 1.x), read with
 * jansson into struct oci_spec.  Every field is type-checked and bounded
 * here, so the init never meets a surprise; what cell narrows (namespaces,
 * capabilities, mounts) is decided later, against these values. */
#include "oci/oci.h"

#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>

#define FAIL(...) util_fail(err, EINVAL, __VA_ARGS__)

static const char *const cap_names[OCI_CAP_LAST + 1] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
};

int oci_cap_number(const char *name)
{
    for (int i = 0; i <= OCI_CAP_LAST; i++)
        if (strcmp(cap_names[i], name) == 0)
            return i;
    return -1;
}

const char *oci_cap_name(int cap)
{
    return cap >= 0 && cap <= OCI_CAP_LAST ? cap_names[cap] : "?";
}

const struct oci_ns *oci_spec_ns(const struct oci_spec *spec, int type)
{
    for (size_t i = 0; i < spec->n_ns; i++)
        if (spec->ns[i].type == type)
            return &spec->ns[i];
    return NULL;
}

/* An optional member of `obj` of the given jansson type: 1 found, 0 absent,
 * -1 present with another type (err names it). */
static int member(json_t *obj, const char *key, json_type type, const char *where, json_t **out, cell_error *err)
{
    static const char *const names[] = { "an object", "an array", "a string", "an integer", "a number",
                                         "true or false", "true or false", "null" };
    json_t *v = obj ? json_object_get(obj, key) : NULL;
    *out = NULL;
    if (!v || json_is_null(v))
        return 0;
    int ok = json_typeof(v) == type || (type == JSON_TRUE && json_is_boolean(v));
    if (!ok)
        return FAIL("config.json: %s%s must be %s", where, key, names[type]);
    *out = v;
    return 1;
}

static int get_string(json_t *obj, const char *key, const char *where, const char **out, cell_error *err)
{
    json_t *v;
    int r = member(obj, key, JSON_STRING, where, &v, err);
    if (r > 0)
        *out = json_string_value(v);
    return r;
}

static int get_bool(json_t *obj, const char *key, const char *where, int *out, cell_error *err)
{
    json_t *v;
    int r = member(obj, key, JSON_TRUE, where, &v, err);
    if (r > 0)
        *out = json_is_true(v);
    return r;
}

static int get_u32(json_t *v, const char *what, uint32_t *out, cell_error *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > UINT32_MAX)
        return FAIL("config.json: %s must be an integer from 0 to 4294967295", what);
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

/* A string array of at most max entries, as borrowed pointers (NULL-terminated). */
static int string_array(json_t *obj, const char *key, const char *where, size_t max, const char ***out, size_t *n,
                        cell_error *err)
{
    json_t *a;
    *out = NULL;
    *n = 0;
    int r = member(obj, key, JSON_ARRAY, where, &a, err);
    if (r <= 0)
        return r;
    size_t len = json_array_size(a);
    if (len > max)
        return FAIL("config.json: %s%s has %zu entries, over the limit of %zu", where, key, len, max);
    const char **v = calloc(len + 1, sizeof *v);
    if (!v)
        return util_fail(err, ENOMEM, "config.json: no memory for %s%s", where, key);
    for (size_t i = 0; i < len; i++) {
        v[i] = json_string_value(json_array_get(a, i));
        if (!v[i]) {
            free(v);
            return FAIL("config.json: %s%s[%zu] must be a string", where, key, i);
        }
    }
    *out = v;
    *n = len;
    return 1;
}

/* Absolute, no "." or ".." component, no NUL (jansson allows \u0000). */
static int clean_abs_path(const char *p, size_t len)
{
    if (len == 0 || p[0] != '/' || strlen(p) != len || len >= PATH_MAX)
        return 0;
    for (const char *c = p; *c;) {
        while (*c == '/')
            c++;
        size_t n = strcspn(c, "/");
        if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
            return 0;
        c += n;
    }
    return 1;
}

/* ---- hooks ---------------------------------------------------------------------- */

static const char *const hook_kinds[OCI_HOOK_KINDS] = { "prestart", "createRuntime", "createContainer",
                                                        "startContainer", "poststart", "poststop" };

const char *oci_hook_kind_name(int kind)
{
    return kind >= 0 && kind < OCI_HOOK_KINDS ? hook_kinds[kind] : "?";
}

void oci_hooks_free(struct oci_hooks *h)
{
    for (int k = 0; k < OCI_HOOK_KINDS; k++) {
        for (size_t i = 0; i < h->n[k]; i++) {
            free(h->list[k][i].args);
            free(h->list[k][i].env);
        }
        free(h->list[k]);
    }
    memset(h, 0, sizeof *h);
}

static int parse_hook(json_t *o, const char *where, struct oci_hook *out, cell_error *err)
{
    size_t n;
    json_t *t;
    if (!json_is_object(o))
        return FAIL("config.json: %s must be an object with a path", where);
    if (get_string(o, "path", where, &out->path, err) < 0)
        return -1;
    /* Resolved in the runtime's (or, for startContainer, the container's)
     * mount namespace: absolute, never relative to some cwd. */
    if (!out->path || !clean_abs_path(out->path, json_string_length(json_object_get(o, "path"))))
        return FAIL("config.json: %spath must be an absolute path without '.' or '..'", where);
    if (string_array(o, "args", where, OCI_MAX_ARGS, &out->args, &n, err) < 0 ||
        string_array(o, "env", where, OCI_MAX_ENV, &out->env, &n, err) < 0)
        return -1;
    for (size_t i = 0; out->env && out->env[i]; i++)
        if (!strchr(out->env[i], '=') || out->env[i][0] == '=')
            return FAIL("config.json: %senv[%zu] '%.64s' must be NAME=VALUE", where, i, out->env[i]);
    if (member(o, "timeout", JSON_INTEGER, where, &t, err) < 0)
        return -1;
    if (t && (json_integer_value(t) <= 0 || json_integer_value(t) > OCI_MAX_HOOK_TIMEOUT))
        return FAIL("config.json: %stimeout must be 1..%d seconds", where, OCI_MAX_HOOK_TIMEOUT);
    out->timeout = t ? (int)json_integer_value(t) : 0;
    return 0;
}

int oci_hooks_parse(json_t *hooks, struct oci_hooks *out, cell_error *err)
{
    cell_error local;
    if (!err)
        err = &local;
    memset(out, 0, sizeof *out);
    if (!hooks || json_is_null(hooks))
        return 0;
    if (!json_is_object(hooks))
        return FAIL("config.json: hooks must be an object");
    const char *key;
    json_t *a;
    json_object_foreach(hooks, key, a) {
        int k = 0;
        while (k < OCI_HOOK_KINDS && strcmp(hook_kinds[k], key) != 0)
            k++;
        /* An unknown kind would be a hook silently never run. */
        if (k == OCI_HOOK_KINDS) {
            FAIL("config.json: hooks.%.64s is not a hook kind (prestart, createRuntime, createContainer, "
                 "startContainer, poststart, poststop)", key);
            goto fail;
        }
        if (json_is_null(a))
            continue;
        if (!json_is_array(a) || json_array_size(a) > OCI_MAX_HOOKS) {
            FAIL("config.json: hooks.%s must be an array of at most %d hooks", key, OCI_MAX_HOOKS);
            goto fail;
        }
        out->list[k] = calloc(json_array_size(a) + 1, sizeof *out->list[k]);
        if (!out->list[k]) {
            util_fail(err, ENOMEM, "config.json: no memory for hooks.%s", key);
            goto fail;
        }
        for (size_t i = 0; i < json_array_size(a); i++) {
            char where[64];
            snprintf(where, sizeof where, "hooks.%s[%zu].", key, i);
            out->n[k] = i + 1; /* freed with what it holds, even half-parsed */
            if (parse_hook(json_array_get(a, i), where, &out->list[k][i], err) < 0)
                goto fail;
        }
    }
    return 0;
fail:
    oci_hooks_free(out);
    return -1;
}

/* ---- systemd's cgroupsPath ----------------------------------------------------------- */

/* A unit name's characters (systemd's unit_name_is_valid, roughly): no '/',
 * nothing that could climb. */
static int unit_chars_ok(const char *s, size_t n)
{
    static const char ok[] = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789:-_.\\@";
    for (size_t i = 0; i < n; i++)
        if (!strchr(ok, s[i]) || !s[i])
            return 0;
    return n > 0 && !(n == 1 && s[0] == '.') && !(n == 2 && s[0] == '.' && s[1] == '.');
}

/* "a-b-c.slice" -> "/a.slice/a-b.slice/a-b-c.slice" (systemd's slice
 * nesting by dashes); "-.slice" is the root, "". */
static int expand_slice(const char *slice, size_t len, char *out, size_t size, cell_error *err)
{
    const size_t sfx = sizeof ".slice" - 1;
    if (len <= sfx || strncmp(slice + len - sfx, ".slice", sfx) != 0 || !unit_chars_ok(slice, len - sfx))
        return FAIL("linux.cgroupsPath: slice '%.*s' must be NAME.slice", (int)(len > 64 ? 64 : len), slice);
    size_t base = len - sfx, used = 0;
    out[0] = 0;
    if (base == 1 && slice[0] == '-')
        return 0;
    if (slice[0] == '-' || slice[base - 1] == '-' || memmem(slice, base, "--", 2) || memchr(slice, '/', base))
        return FAIL("linux.cgroupsPath: slice '%.*s' has an empty part between dashes", (int)len, slice);
    for (size_t i = 0; i <= base; i++) {
        if (i < base && slice[i] != '-')
            continue;
        int w = snprintf(out + used, size - used, "/%.*s.slice", (int)i, slice);
        if (w < 0 || (size_t)w >= size - used)
            return util_fail(err, ENAMETOOLONG, "linux.cgroupsPath: slice '%.64s' is too long", slice);
        used += (size_t)w;
    }
    return 0;
}

int oci_systemd_cgroup_path(const char *spec, const char *id, char *out, size_t size, cell_error *err)
{
    const char *c1 = strchr(spec, ':'), *c2 = c1 ? strchr(c1 + 1, ':') : NULL;
    if (!c1 || !c2 || strchr(c2 + 1, ':'))
        return FAIL("linux.cgroupsPath '%.64s' must be slice:prefix:name for --systemd-cgroup", spec);
    const char *slice = spec, *prefix = c1 + 1, *name = c2 + 1;
    size_t slen = (size_t)(c1 - spec), plen = (size_t)(c2 - prefix);
    if (!*name)
        name = id;
    char parent[PATH_MAX];
    if (expand_slice(slen ? slice : "system.slice", slen ? slen : strlen("system.slice"), parent, sizeof parent,
                     err) < 0)
        return -1;
    if ((plen && !unit_chars_ok(prefix, plen)) || !unit_chars_ok(name, strlen(name)) || strlen(name) > 255)
        return FAIL("linux.cgroupsPath '%.64s': prefix and name may hold only letters, digits and -_.:@", spec);
    size_t nlen = strlen(name);
    int w;
    if (nlen > 6 && strcmp(name + nlen - 6, ".slice") == 0) {
        /* A slice of its own, placed by its name (runc: no scope). */
        char sub[PATH_MAX];
        if (expand_slice(name, nlen, sub, sizeof sub, err) < 0)
            return -1;
        w = snprintf(out, size, "%s", sub);
    } else {
        w = snprintf(out, size, "%s/%.*s%s%s.scope", parent, (int)plen, prefix, plen ? "-" : "", name);
    }
    if (w < 0 || (size_t)w >= size)
        return util_fail(err, ENAMETOOLONG, "linux.cgroupsPath '%.64s' is too long", spec);
    return 0;
}

static int parse_user(json_t *proc, struct oci_spec *s, cell_error *err)
{
    json_t *user, *v;
    if (member(proc, "user", JSON_OBJECT, "process.", &user, err) < 0)
        return -1;
    if (!user)
        return 0;
    if ((v = json_object_get(user, "uid")) && get_u32(v, "process.user.uid", &s->uid, err) < 0)
        return -1;
    if ((v = json_object_get(user, "gid")) && get_u32(v, "process.user.gid", &s->gid, err) < 0)
        return -1;
    json_t *gids;
    if (member(user, "additionalGids", JSON_ARRAY, "process.user.", &gids, err) < 0)
        return -1;
    if (gids && json_array_size(gids) > OCI_MAX_GIDS)
        return FAIL("config.json: process.user.additionalGids has %zu entries, over the limit of %d",
                    json_array_size(gids), OCI_MAX_GIDS);
    for (size_t i = 0; gids && i < json_array_size(gids); i++)
        if (get_u32(json_array_get(gids, i), "process.user.additionalGids[]", &s->gids[s->n_gids++], err) < 0)
            return -1;
    if (json_object_get(user, "username"))
        return FAIL("config.json: process.user.username is for Windows; give uid and gid");
    return 0;
}

static const struct { const char *name; int res; } rlimit_names[] = {
    { "RLIMIT_AS", RLIMIT_AS }, { "RLIMIT_CORE", RLIMIT_CORE }, { "RLIMIT_CPU", RLIMIT_CPU },
    { "RLIMIT_DATA", RLIMIT_DATA }, { "RLIMIT_FSIZE", RLIMIT_FSIZE }, { "RLIMIT_LOCKS", RLIMIT_LOCKS },
    { "RLIMIT_MEMLOCK", RLIMIT_MEMLOCK }, { "RLIMIT_MSGQUEUE", RLIMIT_MSGQUEUE }, { "RLIMIT_NICE", RLIMIT_NICE },
    { "RLIMIT_NOFILE", RLIMIT_NOFILE }, { "RLIMIT_NPROC", RLIMIT_NPROC }, { "RLIMIT_RSS", RLIMIT_RSS },
    { "RLIMIT_RTPRIO", RLIMIT_RTPRIO }, { "RLIMIT_RTTIME", RLIMIT_RTTIME }, { "RLIMIT_SIGPENDING", RLIMIT_SIGPENDING },
    { "RLIMIT_STACK", RLIMIT_STACK },
};

static int parse_rlimits(json_t *proc, struct oci_spec *s, cell_error *err)
{
    json_t *a;
    int r = member(proc, "rlimits", JSON_ARRAY, "process.", &a, err);
    if (r <= 0)
        return r;
    if (json_array_size(a) > OCI_MAX_RLIMITS)
        return FAIL("config.json: process.rlimits has %zu entries, over the limit of %d", json_array_size(a),
                    OCI_MAX_RLIMITS);
    for (size_t i = 0; i < json_array_size(a); i++) {
        json_t *e = json_array_get(a, i), *soft = json_object_get(e, "soft"), *hard = json_object_get(e, "hard");
        const char *type = json_string_value(json_object_get(e, "type"));
        if (!json_is_object(e) || !type)
            return FAIL("config.json: process.rlimits[%zu] must be an object with a string type", i);
        int res = -1;
        for (size_t k = 0; k < sizeof rlimit_names / sizeof *rlimit_names; k++)
            if (strcmp(rlimit_names[k].name, type) == 0)
                res = rlimit_names[k].res;
        if (res < 0)
            return FAIL("config.json: process.rlimits[%zu].type '%.64s' is not a Linux rlimit (RLIMIT_NOFILE...)", i,
                        type);
        if (!json_is_integer(soft) || !json_is_integer(hard) || json_integer_value(soft) < 0 ||
            json_integer_value(hard) < 0 || json_integer_value(soft) > json_integer_value(hard))
            return FAIL("config.json: process.rlimits[%zu] (%s) needs integer soft <= hard, both >= 0", i, type);
        s->rlimits[s->n_rlimits++] = (struct oci_rlimit){ res, (uint64_t)json_integer_value(soft),
                                                          (uint64_t)json_integer_value(hard) };
    }
    return 0;
}

static int parse_caps(json_t *proc, struct oci_spec *s, cell_error *err)
{
    static const char *const sets[OCI_CAP_SETS] = { "bounding", "effective", "inheritable", "permitted",
                                                    "ambient" };
    json_t *c;
    if (member(proc, "capabilities", JSON_OBJECT, "process.", &c, err) < 0)
        return -1;
    if (!c)
        return 0;
    s->has_caps = 1;
    for (int i = 0; i < OCI_CAP_SETS; i++) {
        const char **names;
        size_t n;
        if (string_array(c, sets[i], "process.capabilities.", OCI_CAP_LAST * 4, &names, &n, err) < 0)
            return -1;
        for (size_t k = 0; k < n; k++) {
            int cap = oci_cap_number(names[k]);
            if (cap < 0) {
                /* A capability newer than this table: runc warns and skips it. */
                oci_log("warning", "config.json: process.capabilities.%s: unknown capability '%.64s' ignored",
                        sets[i], names[k]);
                continue;
            }
            s->caps[i] |= 1ull << cap;
        }
        free(names);
    }
    return 0;
}

static int parse_process(json_t *doc, struct oci_spec *s, cell_error *err)
{
    json_t *proc;
    if (member(doc, "process", JSON_OBJECT, "", &proc, err) < 0)
        return -1;
    if (!proc)
        return FAIL("config.json: process is missing; it names the command (process.args) to run");
    if (string_array(proc, "args", "process.", OCI_MAX_ARGS, &s->args, &s->n_args, err) < 0)
        return -1;
    if (s->n_args == 0 || !*s->args[0])
        return FAIL("config.json: process.args must name the command to run (a non-empty array)");
    if (string_array(proc, "env", "process.", OCI_MAX_ENV, &s->env, &s->n_env, err) < 0)
        return -1;
    for (size_t i = 0; i < s->n_env; i++)
        if (!strchr(s->env[i], '='))
            return FAIL("config.json: process.env[%zu] '%.64s' must be NAME=VALUE", i, s->env[i]);
    s->cwd = "/";
    if (get_string(proc, "cwd", "process.", &s->cwd, err) < 0)
        return -1;
    if (!clean_abs_path(s->cwd, strlen(s->cwd)))
        return FAIL("config.json: process.cwd '%.64s' must be an absolute path without '.' or '..'", s->cwd);
    if (get_bool(proc, "terminal", "process.", &s->terminal, err) < 0 ||
        get_bool(proc, "noNewPrivileges", "process.", &s->no_new_privs, err) < 0)
        return -1;
    if (parse_user(proc, s, err) < 0 || parse_rlimits(proc, s, err) < 0 || parse_caps(proc, s, err) < 0)
        return -1;
    json_t *oom;
    if (member(proc, "oomScoreAdj", JSON_INTEGER, "process.", &oom, err) < 0)
        return -1;
    if (oom && (json_integer_value(oom) < -1000 || json_integer_value(oom) > 1000))
        return FAIL("config.json: process.oomScoreAdj must be from -1000 to 1000");
    s->has_oom_score_adj = oom != NULL;
    s->oom_score_adj = oom ? (int)json_integer_value(oom) : 0;
    return 0;
}

static int parse_root(json_t *doc, const char *bundle, struct oci_spec *s, cell_error *err)
{
    json_t *root;
    const char *path = NULL;
    if (member(doc, "root", JSON_OBJECT, "", &root, err) < 0)
        return -1;
    if (!root || get_string(root, "path", "root.", &path, err) <= 0)
        return err && err->code ? -1 : FAIL("config.json: root.path is missing; it names the root filesystem");
    if (get_bool(root, "readonly", "root.", &s->root_readonly, err) < 0)
        return -1;
    size_t len = strlen(path);
    if (len == 0 || len != json_string_length(json_object_get(root, "path")))
        return FAIL("config.json: root.path must be a non-empty path");
    if (path[0] == '/') {
        if (!clean_abs_path(path, len))
            return FAIL("config.json: root.path '%.64s' must not have '.' or '..' components", path);
        return util_path(s->root, sizeof s->root, err, "%s", path) < 0 ? -1 : 0;
    }
    /* Relative: inside the bundle, never above it. */
    char tmp[PATH_MAX];
    if (util_path(tmp, sizeof tmp, err, "/%s", path) < 0)
        return -1;
    if (!clean_abs_path(tmp, strlen(tmp)))
        return FAIL("config.json: root.path '%.64s' must stay inside the bundle (no '.' or '..' components)", path);
    return util_path(s->root, sizeof s->root, err, "%s%s", bundle, tmp) < 0 ? -1 : 0;
}

static const struct { const char *name; uint64_t set, clear; int recursive, bind; } mount_flags[] = {
    { "ro", MOUNT_ATTR_RDONLY, 0, 0, 0 }, { "rw", 0, MOUNT_ATTR_RDONLY, 0, 0 },
    { "nosuid", MOUNT_ATTR_NOSUID, 0, 0, 0 }, { "suid", 0, 0, 0, 0 },
    { "nodev", MOUNT_ATTR_NODEV, 0, 0, 0 }, { "dev", 0, 0, 0, 0 },
    { "noexec", MOUNT_ATTR_NOEXEC, 0, 0, 0 }, { "exec", 0, MOUNT_ATTR_NOEXEC, 0, 0 },
    { "noatime", MOUNT_ATTR_NOATIME, 0, 0, 0 }, { "nodiratime", MOUNT_ATTR_NODIRATIME, 0, 0, 0 },
    { "relatime", 0, 0, 0, 0 }, { "strictatime", 0, 0, 0, 0 },
    { "bind", 0, 0, 0, 1 }, { "rbind", 0, 0, 1, 1 },
    /* Propagation: every container mount is private (nothing crosses back). */
    { "private", 0, 0, 0, 0 }, { "rprivate", 0, 0, 0, 0 }, { "slave", 0, 0, 0, 0 }, { "rslave", 0, 0, 0, 0 },
    { "shared", 0, 0, 0, 0 }, { "rshared", 0, 0, 0, 0 }, { "unbindable", 0, 0, 0, 0 },
    { "runbindable", 0, 0, 0, 0 }, { "sync", 0, 0, 0, 0 }, { "dirsync", 0, 0, 0, 0 },
};

static int mount_options(json_t *m, size_t i, struct oci_mount *out, int *bind, cell_error *err)
{
    const char **opts;
    size_t n;
    char where[48];
    snprintf(where, sizeof where, "mounts[%zu].", i);
    if (string_array(m, "options", where, 64, &opts, &n, err) < 0)
        return -1;
    int rc = 0;
    for (size_t k = 0; k < n && rc == 0; k++) {
        size_t f = 0, nf = sizeof mount_flags / sizeof *mount_flags;
        while (f < nf && strcmp(mount_flags[f].name, opts[k]) != 0)
            f++;
        if (f < nf) {
            out->attrs = (out->attrs | mount_flags[f].set) & ~mount_flags[f].clear;
            out->recursive |= mount_flags[f].recursive;
            *bind |= mount_flags[f].bind;
        } else if (out->n_data == OCI_MAX_MOUNT_DATA) {
            rc = FAIL("config.json: %soptions has more than %d filesystem options", where, OCI_MAX_MOUNT_DATA);
        } else if (!*opts[k] || strchr(opts[k], ',') || strlen(opts[k]) > 256) {
            rc = FAIL("config.json: %soptions[%zu] '%.64s' is not a mount option", where, k, opts[k]);
        } else {
            out->data[out->n_data++] = opts[k];
        }
    }
    free(opts);
    return rc;
}

static int parse_mount(json_t *m, size_t i, struct oci_mount *out, cell_error *err)
{
    static const struct { const char *type; int kind; } kinds[] = {
        { "proc", OCI_MOUNT_PROC }, { "tmpfs", OCI_MOUNT_TMPFS }, { "sysfs", OCI_MOUNT_SYSFS },
        { "devpts", OCI_MOUNT_DEVPTS }, { "mqueue", OCI_MOUNT_MQUEUE }, { "bind", OCI_MOUNT_BIND },
        { "cgroup", OCI_MOUNT_CGROUP }, { "cgroup2", OCI_MOUNT_CGROUP },
    };
    char where[48];
    snprintf(where, sizeof where, "mounts[%zu].", i);
    if (!json_is_object(m))
        return FAIL("config.json: mounts[%zu] must be an object", i);
    const char *type = NULL;
    if (get_string(m, "destination", where, &out->destination, err) <= 0 ||
        get_string(m, "type", where, &type, err) < 0 || get_string(m, "source", where, &out->source, err) < 0)
        return err && err->code ? -1 : FAIL("config.json: mounts[%zu].destination is missing", i);
    if (!clean_abs_path(out->destination, json_string_length(json_object_get(m, "destination"))))
        return FAIL("config.json: mounts[%zu].destination '%.64s' must be an absolute path without '.' or '..'", i,
                    out->destination);
    int bind = 0;
    if (mount_options(m, i, out, &bind, err) < 0)
        return -1;
    out->kind = -1;
    if (bind || (type && strcmp(type, "bind") == 0))
        out->kind = OCI_MOUNT_BIND;
    for (size_t k = 0; out->kind < 0 && type && k < sizeof kinds / sizeof *kinds; k++)
        if (strcmp(kinds[k].type, type) == 0)
            out->kind = kinds[k].kind;
    if (out->kind < 0)
        return FAIL("config.json: mounts[%zu].type '%.64s' is not one cell mounts (proc, tmpfs, sysfs, devpts, "
                    "mqueue, cgroup, bind)", i, type ? type : "");
    if (out->kind == OCI_MOUNT_BIND &&
        (!out->source || !clean_abs_path(out->source, json_string_length(json_object_get(m, "source")))))
        return FAIL("config.json: mounts[%zu].source must be an absolute host path without '.' or '..' for a bind "
                    "mount", i);
    return 0;
}

static int parse_mounts(json_t *doc, struct oci_spec *s, cell_error *err)
{
    json_t *a;
    if (member(doc, "mounts", JSON_ARRAY, "", &a, err) < 0)
        return -1;
    size_t n = a ? json_array_size(a) : 0;
    if (n > OCI_MAX_MOUNTS)
        return FAIL("config.json: mounts has %zu entries, over the limit of %d", n, OCI_MAX_MOUNTS);
    s->mounts = calloc(n + 1, sizeof *s->mounts);
    if (!s->mounts)
        return util_fail(err, ENOMEM, "config.json: no memory for mounts");
    for (size_t i = 0; i < n; i++)
        if (parse_mount(json_array_get(a, i), i, &s->mounts[i], err) < 0)
            return -1;
    s->n_mounts = n;
    return 0;
}

static int parse_namespaces(json_t *linux_, struct oci_spec *s, cell_error *err)
{
    static const struct { const char *name; int type; } types[] = {
        { "pid", CLONE_NEWPID }, { "mount", CLONE_NEWNS }, { "ipc", CLONE_NEWIPC }, { "uts", CLONE_NEWUTS },
        { "network", CLONE_NEWNET }, { "user", CLONE_NEWUSER }, { "cgroup", CLONE_NEWCGROUP },
    };
    json_t *a;
    if (member(linux_, "namespaces", JSON_ARRAY, "linux.", &a, err) < 0)
        return -1;
    for (size_t i = 0; a && i < json_array_size(a); i++) {
        json_t *n = json_array_get(a, i);
        const char *type = json_string_value(json_object_get(n, "type"));
        if (!json_is_object(n) || !type)
            return FAIL("config.json: linux.namespaces[%zu] must be an object with a string type", i);
        int t = 0;
        for (size_t k = 0; k < sizeof types / sizeof *types; k++)
            if (strcmp(types[k].name, type) == 0)
                t = types[k].type;
        if (!t)
            return FAIL("config.json: linux.namespaces[%zu].type '%.64s' is not one of pid, mount, ipc, uts, "
                        "network, user, cgroup", i, type);
        if (oci_spec_ns(s, t))
            return FAIL("config.json: linux.namespaces lists '%s' twice", type);
        const char *path = NULL;
        char where[48];
        snprintf(where, sizeof where, "linux.namespaces[%zu].", i);
        if (get_string(n, "path", where, &path, err) < 0)
            return -1;
        if (path && !clean_abs_path(path, json_string_length(json_object_get(n, "path"))))
            return FAIL("config.json: linux.namespaces[%zu].path must be an absolute path", i);
        s->ns[s->n_ns++] = (struct oci_ns){ t, path };
    }
    return 0;
}

static int parse_idmap(json_t *linux_, const char *key, struct oci_idmap *out, cell_error *err)
{
    json_t *a;
    int r = member(linux_, key, JSON_ARRAY, "linux.", &a, err);
    if (r <= 0)
        return r;
    if (json_array_size(a) != 1)
        return FAIL("config.json: linux.%s must hold exactly one range (cell maps one contiguous range)", key);
    json_t *m = json_array_get(a, 0);
    char what[64];
    snprintf(what, sizeof what, "linux.%s[0].containerID", key);
    if (get_u32(json_object_get(m, "containerID"), what, &out->container_id, err) < 0)
        return -1;
    snprintf(what, sizeof what, "linux.%s[0].hostID", key);
    if (get_u32(json_object_get(m, "hostID"), what, &out->host_id, err) < 0)
        return -1;
    snprintf(what, sizeof what, "linux.%s[0].size", key);
    if (get_u32(json_object_get(m, "size"), what, &out->size, err) < 0)
        return -1;
    if (out->container_id != 0 || out->size == 0 || out->host_id == 0 || out->host_id > UINT32_MAX - out->size)
        return FAIL("config.json: linux.%s[0] must map container id 0 onto host ids above 0 (size >= 1)", key);
    return 1;
}

/* Only sysctls the container's own namespaces scope (network, ipc, uts):
 * the others are host-wide. */
static int parse_sysctl(json_t *l, struct oci_spec *s, cell_error *err)
{
    static const char *const scoped[] = { "net.", "kernel.shm", "kernel.msg", "kernel.sem", "fs.mqueue.",
                                          "kernel.domainname", NULL };
    if (member(l, "sysctl", JSON_OBJECT, "linux.", &s->sysctl, err) < 0)
        return -1;
    const char *name;
    json_t *v;
    if (json_object_size(s->sysctl) > 256)
        return FAIL("config.json: linux.sysctl has more than 256 entries");
    json_object_foreach(s->sysctl, name, v) {
        const char *const *p = scoped;
        while (*p && strncmp(name, *p, strlen(*p)) != 0)
            p++;
        if (!*p || strlen(name) > 128 || strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_.-") != strlen(name) ||
            strstr(name, ".."))
            return FAIL("config.json: linux.sysctl '%.64s' is not one the container's own namespaces scope (net.*, "
                        "kernel.shm*, kernel.msg*, kernel.sem, fs.mqueue.*, kernel.domainname)", name);
        if (!json_is_string(v) || json_string_length(v) > 256)
            return FAIL("config.json: linux.sysctl '%.64s' must be a string of at most 256 bytes", name);
    }
    return 0;
}

static int parse_linux(json_t *doc, struct oci_spec *s, cell_error *err)
{
    json_t *l;
    if (member(doc, "linux", JSON_OBJECT, "", &l, err) < 0)
        return -1;
    if (!l)
        return 0;
    if (parse_namespaces(l, s, err) < 0)
        return -1;
    int u = parse_idmap(l, "uidMappings", &s->uid_map, err);
    int g = u < 0 ? -1 : parse_idmap(l, "gidMappings", &s->gid_map, err);
    if (u < 0 || g < 0)
        return -1;
    if (u != g)
        return FAIL("config.json: linux.uidMappings and linux.gidMappings go together");
    s->has_idmap = u > 0;
    if (string_array(l, "maskedPaths", "linux.", OCI_MAX_PATHS, &s->masked, &s->n_masked, err) < 0 ||
        string_array(l, "readonlyPaths", "linux.", OCI_MAX_PATHS, &s->readonly, &s->n_readonly, err) < 0)
        return -1;
    for (size_t i = 0; i < s->n_masked; i++)
        if (!clean_abs_path(s->masked[i], strlen(s->masked[i])))
            return FAIL("config.json: linux.maskedPaths[%zu] '%.64s' must be an absolute path", i, s->masked[i]);
    for (size_t i = 0; i < s->n_readonly; i++)
        if (!clean_abs_path(s->readonly[i], strlen(s->readonly[i])))
            return FAIL("config.json: linux.readonlyPaths[%zu] '%.64s' must be an absolute path", i,
                        s->readonly[i]);
    if (parse_sysctl(l, s, err) < 0 || get_string(l, "cgroupsPath", "linux.", &s->cgroups_path, err) < 0 ||
        member(l, "resources", JSON_OBJECT, "linux.", &s->resources, err) < 0)
        return -1;
    /* The systemd form (slice:prefix:name) is mapped at create, which
     * knows the id (oci_systemd_cgroup_path); its syntax is checked there. */
    if (s->cgroups_path && strchr(s->cgroups_path, ':'))
        s->cgroups_systemd = 1;
    else if (s->cgroups_path && (!clean_abs_path(s->cgroups_path, strlen(s->cgroups_path)) ||
                                 !s->cgroups_path[strspn(s->cgroups_path, "/")]))
        return FAIL("config.json: linux.cgroupsPath '%.64s' must be an absolute path below the root cgroup, "
                    "without '.' or '..'", s->cgroups_path);
    if (member(l, "seccomp", JSON_OBJECT, "linux.", &s->seccomp, err) < 0)
        return -1;
    return 0;
}

int oci_spec_parse(const char *text, size_t len, const char *bundle, struct oci_spec *out, cell_error *err)
{
    cell_error local;
    if (!err)
        err = &local; /* the checks below read err->code */
    memset(out, 0, sizeof *out);
    if (len > OCI_SPEC_MAX_BYTES)
        return FAIL("config.json is %zu bytes, over the limit of %u", len, OCI_SPEC_MAX_BYTES);
    json_error_t jerr;
    out->doc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!out->doc)
        return FAIL("config.json: line %d: %s", jerr.line, jerr.text);
    if (!json_is_object(out->doc)) {
        oci_spec_free(out);
        return FAIL("config.json must hold a JSON object");
    }
    err->code = 0;
    int rc = -1;
    if (get_string(out->doc, "ociVersion", "", &out->version, err) <= 0) {
        if (!err->code)
            FAIL("config.json: ociVersion is missing (e.g. \"1.0.2\")");
    } else if (strncmp(out->version, "1.", 2) != 0) {
        FAIL("config.json: ociVersion '%.32s' is not 1.x", out->version);
    } else if (parse_process(out->doc, out, err) == 0 && parse_root(out->doc, bundle, out, err) == 0 &&
               get_string(out->doc, "hostname", "", &out->hostname, err) >= 0 &&
               parse_mounts(out->doc, out, err) == 0 && parse_linux(out->doc, out, err) == 0 &&
               member(out->doc, "annotations", JSON_OBJECT, "", &out->annotations, err) >= 0 &&
               member(out->doc, "hooks", JSON_OBJECT, "", &out->hooks_doc, err) >= 0 &&
               oci_hooks_parse(out->hooks_doc, &out->hooks, err) == 0) {
        rc = 0;
    }
    if (rc == 0 && out->hostname && (strlen(out->hostname) > 64 || strchr(out->hostname, '/')))
        rc = FAIL("config.json: hostname '%.64s' is longer than 64 bytes or has a '/'", out->hostname);
    if (rc < 0)
        oci_spec_free(out);
    return rc;
}

int oci_spec_load(const char *bundle, struct oci_spec *out, cell_error *err)
{
    char path[PATH_MAX];
    if (util_path(path, sizeof path, err, "%s/config.json", bundle) < 0)
        return -1;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", path);
    _cleanup_free_ char *text = NULL;
    size_t len;
    if (util_read_fd(fd, path, OCI_SPEC_MAX_BYTES, &text, &len, err) < 0)
        return -1;
    return oci_spec_parse(text, len, bundle, out, err);
}

int oci_process_load(const char *path, struct oci_spec *out, cell_error *err)
{
    cell_error local;
    if (!err)
        err = &local;
    memset(out, 0, sizeof *out);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return util_fail_errno(err, "--process: cannot open %s", path);
    _cleanup_free_ char *text = NULL;
    size_t len;
    if (util_read_fd(fd, path, OCI_SPEC_MAX_BYTES, &text, &len, err) < 0)
        return -1;
    json_error_t jerr;
    json_t *proc = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!proc)
        return FAIL("--process %s: line %d: %s", path, jerr.line, jerr.text);
    out->doc = json_pack("{s:o}", "process", proc);
    err->code = 0;
    if (!out->doc || parse_process(out->doc, out, err) < 0) {
        if (!out->doc)
            FAIL("--process %s: no memory", path);
        oci_spec_free(out);
        return -1;
    }
    return 0;
}

void oci_spec_free(struct oci_spec *s)
{
    free(s->args);
    free(s->env);
    free(s->mounts);
    free(s->masked);
    free(s->readonly);
    oci_hooks_free(&s->hooks);
    json_decref(s->doc);
    memset(s, 0, sizeof *s);
}
