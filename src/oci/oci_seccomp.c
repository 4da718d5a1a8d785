/* oci_seccomp.c: linux.seccomp, translated with libseccomp and loaded on
 * top of cell's own filters.  The kernel runs every installed filter and
 * takes the strictest answer, so a spec's profile can only take away from
 * what cell allows, never add to it.  Checked by `create` (a bad profile
 * fails there, naming the field) and built again in the process itself
 * just before its exec. */
#include "oci/oci.h"

#include <seccomp.h>
#include <stdio.h>
#include <string.h>

#define OCI_MAX_SECCOMP_RULES 4096
#define OCI_MAX_SECCOMP_NAMES 1024

#define FAIL(...) util_fail(err, EINVAL, __VA_ARGS__)

/* An action and its errno: `act_key` and `errno_key` name their fields
 * (defaultAction/defaultErrnoRet, or a rule's action/errnoRet). */
static int action(const char *name, json_t *errno_ret, const char *where, const char *act_key, const char *errno_key,
                  uint32_t *out, cell_error *err)
{
    uint16_t ret = 1; /* EPERM, as runc */
    if (errno_ret) {
        if (!json_is_integer(errno_ret) || json_integer_value(errno_ret) < 0 || json_integer_value(errno_ret) > 4095)
            return FAIL("config.json: %s%s must be an errno number (0..4095)", where, errno_key);
        ret = (uint16_t)json_integer_value(errno_ret);
    }
    if (!name)
        return FAIL("config.json: %s%s is missing", where, act_key);
    if (strcmp(name, "SCMP_ACT_ALLOW") == 0)
        *out = SCMP_ACT_ALLOW;
    else if (strcmp(name, "SCMP_ACT_ERRNO") == 0)
        *out = SCMP_ACT_ERRNO(ret);
    else if (strcmp(name, "SCMP_ACT_KILL") == 0 || strcmp(name, "SCMP_ACT_KILL_THREAD") == 0)
        *out = SCMP_ACT_KILL_THREAD;
    else if (strcmp(name, "SCMP_ACT_KILL_PROCESS") == 0)
        *out = SCMP_ACT_KILL_PROCESS;
    else if (strcmp(name, "SCMP_ACT_TRAP") == 0)
        *out = SCMP_ACT_TRAP;
    else if (strcmp(name, "SCMP_ACT_TRACE") == 0)
        *out = SCMP_ACT_TRACE(ret);
    else if (strcmp(name, "SCMP_ACT_LOG") == 0)
        *out = SCMP_ACT_LOG;
    else
        return FAIL("config.json: %s%s '%.40s' is not supported (SCMP_ACT_NOTIFY needs a listener cell-oci "
                    "does not have)", where, act_key, name);
    return 0;
}

static int arg_cmp(json_t *a, const char *where, struct scmp_arg_cmp *out, cell_error *err)
{
    static const struct { const char *name; enum scmp_compare op; } ops[] = {
        { "SCMP_CMP_NE", SCMP_CMP_NE }, { "SCMP_CMP_LT", SCMP_CMP_LT }, { "SCMP_CMP_LE", SCMP_CMP_LE },
        { "SCMP_CMP_EQ", SCMP_CMP_EQ }, { "SCMP_CMP_GE", SCMP_CMP_GE }, { "SCMP_CMP_GT", SCMP_CMP_GT },
        { "SCMP_CMP_MASKED_EQ", SCMP_CMP_MASKED_EQ },
    };
    json_t *index = json_object_get(a, "index"), *value = json_object_get(a, "value"),
           *two = json_object_get(a, "valueTwo");
    const char *op = json_string_value(json_object_get(a, "op"));
    if (!json_is_integer(index) || json_integer_value(index) < 0 || json_integer_value(index) > 5 ||
        !json_is_integer(value) || (two && !json_is_integer(two)) || !op)
        return FAIL("config.json: %sargs needs index 0..5, integer value (and valueTwo) and op", where);
    *out = (struct scmp_arg_cmp){ .arg = (unsigned)json_integer_value(index),
                                  .datum_a = (scmp_datum_t)json_integer_value(value),
                                  .datum_b = two ? (scmp_datum_t)json_integer_value(two) : 0 };
    for (size_t i = 0; i < sizeof ops / sizeof *ops; i++)
        if (strcmp(ops[i].name, op) == 0) {
            out->op = ops[i].op;
            return 0;
        }
    return FAIL("config.json: %sop '%.40s' is not a seccomp comparison", where, op);
}

static int add_rule(scmp_filter_ctx ctx, uint32_t dflt, json_t *r, size_t i, cell_error *err)
{
    char where[64];
    snprintf(where, sizeof where, "linux.seccomp.syscalls[%zu].", i);
    json_t *names = json_object_get(r, "names"), *args = json_object_get(r, "args");
    uint32_t act;
    if (!json_is_object(r) || !json_is_array(names) || json_array_size(names) > OCI_MAX_SECCOMP_NAMES ||
        (args && !json_is_array(args)) || json_array_size(args) > 6)
        return FAIL("config.json: %s needs names (at most %d) and at most 6 args", where, OCI_MAX_SECCOMP_NAMES);
    if (action(json_string_value(json_object_get(r, "action")), json_object_get(r, "errnoRet"), where, "action",
               "errnoRet", &act, err) < 0)
        return -1;
    struct scmp_arg_cmp cmp[6];
    for (size_t k = 0; k < json_array_size(args); k++)
        if (arg_cmp(json_array_get(args, k), where, &cmp[k], err) < 0)
            return -1;
    if (act == dflt)
        return 0; /* libseccomp refuses a rule that repeats the default */
    for (size_t k = 0; k < json_array_size(names); k++) {
        const char *name = json_string_value(json_array_get(names, k));
        if (!name)
            return FAIL("config.json: %snames[%zu] must be a string", where, k);
        int nr = seccomp_syscall_resolve_name(name);
        if (nr == __NR_SCMP_ERROR)
            continue; /* not a syscall here (as runc: profiles list every arch's) */
        int rc = seccomp_rule_add_array(ctx, act, nr, (unsigned)json_array_size(args), cmp);
        if (rc < 0) {
            errno = -rc;
            return util_fail_errno(err, "config.json: %s: libseccomp refused the rule for %s", where, name);
        }
    }
    return 0;
}

static int add_arches(scmp_filter_ctx ctx, json_t *arches, cell_error *err)
{
    for (size_t i = 0; i < json_array_size(arches); i++) {
        const char *a = json_string_value(json_array_get(arches, i));
        char name[32];
        if (!a || strncmp(a, "SCMP_ARCH_", 10) != 0 || strlen(a + 10) >= sizeof name)
            return FAIL("config.json: linux.seccomp.architectures[%zu] must be SCMP_ARCH_...", i);
        size_t k = 0;
        for (const char *c = a + 10; *c; c++)
            name[k++] = (char)(*c >= 'A' && *c <= 'Z' ? *c - 'A' + 'a' : *c);
        name[k] = 0;
        uint32_t arch = seccomp_arch_resolve_name(name);
        if (!arch)
            return FAIL("config.json: linux.seccomp.architectures[%zu] '%.40s' is unknown", i, a);
        int rc = seccomp_arch_add(ctx, arch);
        if (rc < 0 && rc != -EEXIST) {
            errno = -rc;
            return util_fail_errno(err, "config.json: linux.seccomp.architectures[%zu] %s", i, a);
        }
    }
    return 0;
}

/* linux.seccomp.flags: the filter attributes libseccomp sets from them.
 * None weakens cell: TSYNC and LOG add to what the filter does; SPEC_ALLOW
 * only spares this filter from forcing the speculative store bypass
 * mitigation, which cell's own filter (loaded first, without the flag)
 * already applied as the kernel's mode says.  The notify flags need
 * SCMP_ACT_NOTIFY's listener, which cell-oci does not have. */
static int apply_flags(scmp_filter_ctx ctx, json_t *flags, cell_error *err)
{
    static const struct { const char *name; enum scmp_filter_attr attr; } known[] = {
        { "SECCOMP_FILTER_FLAG_TSYNC", SCMP_FLTATR_CTL_TSYNC },
        { "SECCOMP_FILTER_FLAG_LOG", SCMP_FLTATR_CTL_LOG },
        { "SECCOMP_FILTER_FLAG_SPEC_ALLOW", SCMP_FLTATR_CTL_SSB },
    };
    if (flags && (!json_is_array(flags) || json_array_size(flags) > 8))
        return FAIL("config.json: linux.seccomp.flags must be an array of at most 8 flag names");
    for (size_t i = 0; i < json_array_size(flags); i++) {
        const char *f = json_string_value(json_array_get(flags, i));
        if (!f)
            return FAIL("config.json: linux.seccomp.flags[%zu] must be a string", i);
        size_t k = 0;
        while (k < sizeof known / sizeof *known && strcmp(known[k].name, f) != 0)
            k++;
        if (k == sizeof known / sizeof *known) {
            if (strcmp(f, "SECCOMP_FILTER_FLAG_NEW_LISTENER") == 0 ||
                strcmp(f, "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV") == 0)
                return FAIL("config.json: linux.seccomp.flags[%zu] %s is for SCMP_ACT_NOTIFY's listener, which "
                            "cell-oci does not support", i, f);
            return FAIL("config.json: linux.seccomp.flags[%zu] '%.64s' is not a flag cell-oci knows "
                        "(SECCOMP_FILTER_FLAG_TSYNC, _LOG, _SPEC_ALLOW)", i, f);
        }
        int rc = seccomp_attr_set(ctx, known[k].attr, 1);
        if (rc < 0) {
            errno = -rc;
            return util_fail_errno(err, "config.json: linux.seccomp.flags[%zu] %s: not supported by this kernel "
                                   "or libseccomp", i, f);
        }
    }
    return 0;
}

/* The profile as a libseccomp filter, or NULL with err. */
static scmp_filter_ctx build(json_t *sc, cell_error *err)
{
    json_t *rules = json_object_get(sc, "syscalls"), *arches = json_object_get(sc, "architectures");
    uint32_t dflt;
    if (!json_is_object(sc))
        return FAIL("config.json: linux.seccomp must be an object"), NULL;
    /* The agent behind a listener decides syscalls for the container:
     * cell-oci has none to give it (and refuses SCMP_ACT_NOTIFY). */
    if (json_object_get(sc, "listenerPath") || json_object_get(sc, "listenerMetadata"))
        return FAIL("config.json: linux.seccomp.listenerPath (and listenerMetadata) are not supported: cell-oci "
                    "has no seccomp notify listener"), NULL;
    if ((rules && !json_is_array(rules)) || json_array_size(rules) > OCI_MAX_SECCOMP_RULES ||
        (arches && !json_is_array(arches)))
        return FAIL("config.json: linux.seccomp.syscalls and architectures must be arrays (at most %d rules)",
                    OCI_MAX_SECCOMP_RULES), NULL;
    if (action(json_string_value(json_object_get(sc, "defaultAction")), json_object_get(sc, "defaultErrnoRet"),
               "linux.seccomp.", "defaultAction", "defaultErrnoRet", &dflt, err) < 0)
        return NULL;
    scmp_filter_ctx ctx = seccomp_init(dflt);
    if (!ctx)
        return util_fail(err, ENOMEM, "config.json: linux.seccomp: libseccomp could not start a filter"), NULL;
    int rc = add_arches(ctx, arches, err);
    if (rc == 0)
        rc = apply_flags(ctx, json_object_get(sc, "flags"), err);
    for (size_t i = 0; rc == 0 && i < json_array_size(rules); i++)
        rc = add_rule(ctx, dflt, json_array_get(rules, i), i, err);
    if (rc < 0) {
        seccomp_release(ctx);
        return NULL;
    }
    return ctx;
}

int oci_seccomp_check(json_t *sc, cell_error *err)
{
    scmp_filter_ctx ctx = build(sc, err);
    if (!ctx)
        return -1;
    seccomp_release(ctx);
    return 0;
}

int oci_seccomp_load(json_t *sc, cell_error *err)
{
    scmp_filter_ctx ctx = build(sc, err);
    if (!ctx)
        return -1;
    int rc = seccomp_load(ctx);
    seccomp_release(ctx);
    if (rc < 0) {
        errno = -rc;
        return util_fail_errno(err, "cannot load linux.seccomp");
    }
    return 0;
}
