/* test_oci_spec.c: cell-oci's config.json parser (src/oci/oci_spec.c) on
 * good specs and on malformed and hostile ones: wrong types, huge arrays,
 * missing fields, paths that climb out of the bundle, NULs in strings. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <cmocka.h>

#include "oci/oci.h"

#define BUNDLE "/b/bundle"
#define HEAD "{\"ociVersion\": \"1.0.2\", "
#define PROC "\"process\": {\"args\": [\"sh\"]}, "
#define ROOT "\"root\": {\"path\": \"rootfs\"}"

static const char *const good =
    "{\"ociVersion\": \"1.0.2-dev\","
    " \"process\": {\"terminal\": false, \"user\": {\"uid\": 1000, \"gid\": 100, \"additionalGids\": [5, 6]},"
    "   \"args\": [\"sh\", \"-c\", \"true\"], \"env\": [\"PATH=/bin\", \"A=b=c\"], \"cwd\": \"/work\","
    "   \"capabilities\": {\"bounding\": [\"CAP_CHOWN\", \"CAP_KILL\"], \"effective\": [\"CAP_KILL\"],"
    "                      \"permitted\": [\"CAP_KILL\", \"CAP_NEW_IN_2030\"]},"
    "   \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", \"hard\": 1024, \"soft\": 512}], \"noNewPrivileges\": true},"
    " \"root\": {\"path\": \"rootfs\", \"readonly\": true}, \"hostname\": \"box\","
    " \"mounts\": [{\"destination\": \"/proc\", \"type\": \"proc\", \"source\": \"proc\"},"
    "   {\"destination\": \"/dev\", \"type\": \"tmpfs\", \"source\": \"tmpfs\","
    "    \"options\": [\"nosuid\", \"strictatime\", \"mode=755\", \"size=65536k\"]},"
    "   {\"destination\": \"/data\", \"type\": \"none\", \"source\": \"/srv/data\", \"options\": [\"rbind\", \"ro\"]}],"
    " \"linux\": {\"namespaces\": [{\"type\": \"pid\"}, {\"type\": \"network\", \"path\": \"/proc/1/ns/net\"}],"
    "   \"maskedPaths\": [\"/proc/kcore\"], \"readonlyPaths\": [\"/proc/sys\"]},"
    " \"annotations\": {\"k\": \"v\"}}";

static int parse(const char *text, struct oci_spec *s, cell_error *err)
{
    memset(err, 0, sizeof *err);
    return oci_spec_parse(text, strlen(text), BUNDLE, s, err);
}

static void parses_a_good_spec(void **state)
{
    (void)state;
    struct oci_spec s;
    cell_error err;
    assert_int_equal(parse(good, &s, &err), 0);
    assert_int_equal(s.n_args, 3);
    assert_string_equal(s.args[0], "sh");
    assert_null(s.args[3]);
    assert_int_equal(s.n_env, 2);
    assert_string_equal(s.cwd, "/work");
    assert_int_equal(s.uid, 1000);
    assert_int_equal(s.gid, 100);
    assert_int_equal(s.n_gids, 2);
    assert_int_equal(s.gids[1], 6);
    assert_true(s.has_caps);
    assert_true(s.caps[OCI_CAP_BOUNDING] == ((1ull << 0) | (1ull << 5)));
    assert_true(s.caps[OCI_CAP_PERMITTED] == (1ull << 5)); /* the unknown one skipped */
    assert_int_equal(s.n_rlimits, 1);
    assert_int_equal(s.rlimits[0].resource, RLIMIT_NOFILE);
    assert_true(s.rlimits[0].soft == 512 && s.rlimits[0].hard == 1024);
    assert_string_equal(s.root, BUNDLE "/rootfs");
    assert_true(s.root_readonly);
    assert_string_equal(s.hostname, "box");
    assert_int_equal(s.n_mounts, 3);
    assert_int_equal(s.mounts[0].kind, OCI_MOUNT_PROC);
    assert_int_equal(s.mounts[1].kind, OCI_MOUNT_TMPFS);
    assert_true(s.mounts[1].attrs & MOUNT_ATTR_NOSUID);
    assert_int_equal(s.mounts[1].n_data, 2);
    assert_string_equal(s.mounts[1].data[1], "size=65536k");
    assert_int_equal(s.mounts[2].kind, OCI_MOUNT_BIND);
    assert_true(s.mounts[2].recursive);
    assert_true(s.mounts[2].attrs & MOUNT_ATTR_RDONLY);
    assert_string_equal(s.mounts[2].source, "/srv/data");
    assert_non_null(oci_spec_ns(&s, CLONE_NEWPID));
    assert_null(oci_spec_ns(&s, CLONE_NEWPID)->path);
    assert_string_equal(oci_spec_ns(&s, CLONE_NEWNET)->path, "/proc/1/ns/net");
    assert_null(oci_spec_ns(&s, CLONE_NEWUSER));
    assert_int_equal(s.n_masked, 1);
    assert_int_equal(s.n_readonly, 1);
    assert_non_null(s.annotations);
    assert_null(s.cgroups_path);
    oci_spec_free(&s);
    /* cgroupfs form kept; systemd form (slice:prefix:name) kept for create to map. */
    assert_int_equal(parse(HEAD PROC ROOT ", \"linux\": {\"cgroupsPath\": \"/k8s.io/abc\"}}", &s, &err), 0);
    assert_string_equal(s.cgroups_path, "/k8s.io/abc");
    assert_false(s.cgroups_systemd);
    oci_spec_free(&s);
    assert_int_equal(parse(HEAD PROC ROOT ", \"linux\": {\"cgroupsPath\": \"system.slice:cri:abc\"}}", &s, &err), 0);
    assert_string_equal(s.cgroups_path, "system.slice:cri:abc");
    assert_true(s.cgroups_systemd);
    oci_spec_free(&s);
}

static void absolute_root_is_kept(void **state)
{
    (void)state;
    struct oci_spec s;
    cell_error err;
    assert_int_equal(parse("{\"ociVersion\": \"1.0.0\", \"process\": {\"args\": [\"/x\"]}, \"root\": {\"path\": "
                           "\"/var/lib/snap/rootfs\"}}", &s, &err), 0);
    assert_string_equal(s.root, "/var/lib/snap/rootfs");
    assert_string_equal(s.cwd, "/");
    assert_int_equal(s.n_mounts, 0);
    oci_spec_free(&s);
}

/* Each spec must be refused with a message naming `field`. */
static void refused(const char *text, const char *field)
{
    struct oci_spec s;
    cell_error err;
    int rc = parse(text, &s, &err);
    if (rc == 0 || !strstr(err.message, field))
        fail_msg("spec %.200s: rc %d, message '%s', wanted one naming '%s'", text, rc, err.message, field);
    assert_null(s.doc); /* nothing left to free */
}


static void refuses_malformed(void **state)
{
    (void)state;
    refused("", "config.json");
    refused("{\"ociVersion\": \"1.0.2\", \"process\": ", "config.json: line");
    refused("[1, 2]", "JSON object");
    refused("{\"process\": {\"args\": [\"sh\"]}, " ROOT "}", "ociVersion");
    refused("{\"ociVersion\": \"2.0.0\", " PROC ROOT "}", "ociVersion");
    refused("{\"ociVersion\": 1, " PROC ROOT "}", "ociVersion");
    /* Duplicate keys: which one wins would differ between parsers. */
    refused(HEAD PROC ROOT ", \"root\": {\"path\": \"/\"}}", "duplicate");
}

static void refuses_wrong_types(void **state)
{
    (void)state;
    refused(HEAD "\"process\": \"sh\", " ROOT "}", "process");
    refused(HEAD "\"process\": {\"args\": \"sh\"}, " ROOT "}", "process.args");
    refused(HEAD "\"process\": {\"args\": [\"sh\", 7]}, " ROOT "}", "process.args[1]");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"env\": [\"NOEQUALS\"]}, " ROOT "}", "process.env[0]");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"terminal\": \"yes\"}, " ROOT "}", "process.terminal");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"cwd\": 5}, " ROOT "}", "process.cwd");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"cwd\": \"work\"}, " ROOT "}", "process.cwd");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"user\": {\"uid\": -1}}, " ROOT "}", "process.user.uid");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"user\": {\"uid\": \"0\"}}, " ROOT "}", "process.user.uid");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"user\": {\"uid\": 4294967296}}, " ROOT "}", "process.user.uid");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"user\": {\"additionalGids\": [1, \"x\"]}}, " ROOT "}",
            "additionalGids");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"rlimits\": [{\"type\": \"RLIMIT_NOFILE\", \"soft\": 9, "
            "\"hard\": 1}]}, " ROOT "}", "process.rlimits[0]");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"rlimits\": [{\"type\": \"RLIMIT_BOGUS\", \"soft\": 1, "
            "\"hard\": 1}]}, " ROOT "}", "process.rlimits[0]");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"capabilities\": {\"bounding\": \"CAP_KILL\"}}, " ROOT "}",
            "process.capabilities.bounding");
    refused(HEAD PROC "\"root\": {\"path\": \"rootfs\", \"readonly\": 1}}", "root.readonly");
    refused(HEAD PROC ROOT ", \"hostname\": 5}", "hostname");
    refused(HEAD PROC ROOT ", \"mounts\": {}}", "mounts");
    refused(HEAD PROC ROOT ", \"mounts\": [7]}", "mounts[0]");
    refused(HEAD PROC ROOT ", \"linux\": []}", "linux");
    refused(HEAD PROC ROOT ", \"linux\": {\"namespaces\": [{\"type\": 1}]}}", "linux.namespaces[0]");
    refused(HEAD PROC ROOT ", \"linux\": {\"maskedPaths\": [1]}}", "linux.maskedPaths[0]");
    refused(HEAD PROC ROOT ", \"annotations\": []}", "annotations");
}

static void refuses_missing_fields(void **state)
{
    (void)state;
    refused(HEAD ROOT "}", "process");
    refused(HEAD "\"process\": {}, " ROOT "}", "process.args");
    refused(HEAD "\"process\": {\"args\": []}, " ROOT "}", "process.args");
    refused(HEAD "\"process\": {\"args\": [\"\"]}, " ROOT "}", "process.args");
    refused(HEAD PROC "\"x\": 1}", "root.path");
    refused(HEAD PROC "\"root\": {}}", "root.path");
    refused(HEAD PROC ROOT ", \"mounts\": [{\"type\": \"proc\"}]}", "mounts[0].destination");
    refused(HEAD PROC ROOT ", \"mounts\": [{\"destination\": \"/x\", \"type\": \"bind\"}]}", "mounts[0].source");
    refused(HEAD PROC ROOT ", \"linux\": {\"namespaces\": [{}]}}", "linux.namespaces[0]");
}

static void refuses_paths_out_of_place(void **state)
{
    (void)state;
    static const char *const roots[] = { "../rootfs", "rootfs/../../etc", "a/./b", "..", "", "/srv/../etc" };
    for (size_t i = 0; i < sizeof roots / sizeof *roots; i++) {
        char text[256];
        snprintf(text, sizeof text, HEAD PROC "\"root\": {\"path\": \"%s\"}}", roots[i]);
        refused(text, "root.path");
    }
    /* A NUL would cut the string C sees ("rootfs", where the JSON says
     * "rootfs\0/../.."): jansson refuses it (no JSON_ALLOW_NUL). */
    refused(HEAD PROC "\"root\": {\"path\": \"rootfs\\u0000/../..\"}}", "u0000");
    refused(HEAD PROC ROOT ", \"mounts\": [{\"destination\": \"x\", \"type\": \"tmpfs\"}]}", "mounts[0].destination");
    refused(HEAD PROC ROOT ", \"mounts\": [{\"destination\": \"/a/../../b\", \"type\": \"tmpfs\"}]}",
            "mounts[0].destination");
    refused(HEAD PROC ROOT ", \"mounts\": [{\"destination\": \"/x\", \"type\": \"bind\", \"source\": \"rel\"}]}",
            "mounts[0].source");
    refused(HEAD PROC ROOT ", \"mounts\": [{\"destination\": \"/x\\u0000y\", \"type\": \"tmpfs\"}]}", "u0000");
    refused(HEAD PROC ROOT ", \"linux\": {\"namespaces\": [{\"type\": \"network\", \"path\": \"ns/net\"}]}}",
            "linux.namespaces[0].path");
    refused(HEAD PROC ROOT ", \"linux\": {\"maskedPaths\": [\"proc/kcore\"]}}", "linux.maskedPaths[0]");
    refused(HEAD PROC ROOT ", \"linux\": {\"readonlyPaths\": [\"/proc/../etc\"]}}", "linux.readonlyPaths[0]");
    refused(HEAD PROC ROOT ", \"linux\": {\"cgroupsPath\": \"/\"}}", "linux.cgroupsPath");
    refused(HEAD PROC ROOT ", \"linux\": {\"cgroupsPath\": \"//\"}}", "linux.cgroupsPath");
    refused(HEAD PROC ROOT ", \"linux\": {\"cgroupsPath\": \"/k8s/../../x\"}}", "linux.cgroupsPath");
    refused(HEAD PROC ROOT ", \"linux\": {\"cgroupsPath\": \"k8s/x\"}}", "linux.cgroupsPath");
    refused(HEAD PROC ROOT ", \"linux\": {\"cgroupsPath\": 7}}", "linux.cgroupsPath");
}

static void refuses_what_cell_does_not_mount(void **state)
{
    (void)state;
    refused(HEAD PROC ROOT ", \"mounts\": [{\"destination\": \"/x\", \"type\": \"ext4\", \"source\": \"/dev/sda\"}]}",
            "mounts[0].type");
    refused(HEAD PROC ROOT ", \"mounts\": [{\"destination\": \"/x\", \"type\": \"tmpfs\", \"options\": [\"a,b\"]}]}",
            "mounts[0].options[0]");
    refused(HEAD PROC ROOT ", \"linux\": {\"namespaces\": [{\"type\": \"time\"}]}}", "linux.namespaces[0].type");
    refused(HEAD PROC ROOT ", \"linux\": {\"namespaces\": [{\"type\": \"pid\"}, {\"type\": \"pid\"}]}}", "twice");
    refused(HEAD PROC ROOT ", \"linux\": {\"uidMappings\": [{\"containerID\": 0, \"hostID\": 0, \"size\": 1}], "
            "\"gidMappings\": [{\"containerID\": 0, \"hostID\": 0, \"size\": 1}]}}", "linux.uidMappings[0]");
    refused(HEAD PROC ROOT ", \"linux\": {\"uidMappings\": [{\"containerID\": 0, \"hostID\": 100000, \"size\": 1},"
            " {\"containerID\": 1, \"hostID\": 200000, \"size\": 1}]}}", "linux.uidMappings");
    refused(HEAD PROC ROOT ", \"linux\": {\"uidMappings\": [{\"containerID\": 0, \"hostID\": 100000, "
            "\"size\": 65536}]}}", "gidMappings");
    refused(HEAD PROC ROOT ", \"hostname\": \"a/b\"}", "hostname");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"user\": {\"username\": \"root\"}}, " ROOT "}",
            "process.user.username");
    /* Host-wide sysctls: a container would change the host. */
    refused(HEAD PROC ROOT ", \"linux\": {\"sysctl\": {\"kernel.core_pattern\": \"|/tmp/x\"}}}", "kernel.core_pattern");
    refused(HEAD PROC ROOT ", \"linux\": {\"sysctl\": {\"vm.overcommit_memory\": \"1\"}}}", "vm.overcommit_memory");
    refused(HEAD PROC ROOT ", \"linux\": {\"sysctl\": {\"net.ipv4/../../kernel/x\": \"1\"}}}", "linux.sysctl");
    refused(HEAD PROC ROOT ", \"linux\": {\"sysctl\": {\"net..x\": \"1\"}}}", "linux.sysctl");
    refused(HEAD PROC ROOT ", \"linux\": {\"sysctl\": {\"net.ipv4.ip_forward\": 1}}}", "net.ipv4.ip_forward");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"oomScoreAdj\": 5000}, " ROOT "}", "process.oomScoreAdj");
    refused(HEAD "\"process\": {\"args\": [\"sh\"], \"oomScoreAdj\": \"5\"}, " ROOT "}", "process.oomScoreAdj");
}

/* A JSON array of n copies of item, as member `key` of process or linux. */
static char *huge_spec(const char *prefix, const char *item, size_t n, const char *suffix)
{
    size_t len = strlen(prefix) + n * (strlen(item) + 1) + strlen(suffix) + 1;
    char *t = malloc(len), *p = t;
    assert_non_null(t);
    p += sprintf(p, "%s", prefix);
    for (size_t i = 0; i < n; i++)
        p += sprintf(p, "%s%s", i ? "," : "", item);
    sprintf(p, "%s", suffix);
    return t;
}

static void refuses_huge_arrays(void **state)
{
    (void)state;
    char *t = huge_spec(HEAD "\"process\": {\"args\": [", "\"a\"", OCI_MAX_ARGS + 1, "]}, " ROOT "}");
    refused(t, "process.args has 4097 entries");
    free(t);
    t = huge_spec(HEAD "\"process\": {\"args\": [\"sh\"], \"env\": [", "\"A=1\"", OCI_MAX_ENV + 1, "]}, " ROOT "}");
    refused(t, "process.env");
    free(t);
    t = huge_spec(HEAD PROC ROOT ", \"mounts\": [", "{\"destination\": \"/t\", \"type\": \"tmpfs\"}",
                  OCI_MAX_MOUNTS + 1, "]}");
    refused(t, "mounts has 257 entries");
    free(t);
    t = huge_spec(HEAD PROC ROOT ", \"linux\": {\"maskedPaths\": [", "\"/x\"", OCI_MAX_PATHS + 1, "]}}");
    refused(t, "linux.maskedPaths");
    free(t);
    t = huge_spec(HEAD "\"process\": {\"args\": [\"sh\"], \"user\": {\"additionalGids\": [", "1", OCI_MAX_GIDS + 1,
                  "]}}, " ROOT "}");
    refused(t, "additionalGids");
    free(t);
    t = huge_spec(HEAD PROC ROOT ", \"mounts\": [{\"destination\": \"/t\", \"type\": \"tmpfs\", \"options\": [",
                  "\"size=1k\"", OCI_MAX_MOUNT_DATA + 1, "]}]}");
    refused(t, "filesystem options");
    free(t);
    /* The whole document: over the limit before any parsing. */
    size_t big = OCI_SPEC_MAX_BYTES + 1;
    char *b = malloc(big + 1);
    assert_non_null(b);
    memset(b, ' ', big);
    b[big] = 0;
    refused(b, "over the limit");
    free(b);
}

/* systemd's slice:prefix:name as the cgroupfs path systemd gives it. */
static void systemd_cgroup_paths(void **state)
{
    (void)state;
    char out[PATH_MAX];
    cell_error err;
    static const char *const good_paths[][3] = {
        { "system.slice:cri-containerd:abc", "id", "/system.slice/cri-containerd-abc.scope" },
        { "kubepods-besteffort-pod12.slice:cri-containerd:c1", "id",
          "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod12.slice/cri-containerd-c1.scope" },
        { "a-b.slice:p:n", "id", "/a.slice/a-b.slice/p-n.scope" },
        { ":runc:x", "id", "/system.slice/runc-x.scope" },          /* empty slice: system.slice */
        { "system.slice:runc:", "c9", "/system.slice/runc-c9.scope" }, /* empty name: the id */
        { "-.slice:p:n", "id", "/p-n.scope" },                      /* the root slice */
        { "user.slice::n", "id", "/user.slice/n.scope" },             /* no prefix */
        { "system.slice:p:pod-a.slice", "id", "/pod.slice/pod-a.slice" }, /* a slice of its own */
    };
    for (size_t i = 0; i < sizeof good_paths / sizeof *good_paths; i++) {
        memset(&err, 0, sizeof err);
        if (oci_systemd_cgroup_path(good_paths[i][0], good_paths[i][1], out, sizeof out, &err) != 0)
            fail_msg("%s: %s", good_paths[i][0], err.message);
        assert_string_equal(out, good_paths[i][2]);
    }
    /* Hostile or malformed: never a path that climbs or leaves the mount. */
    static const char *const bad[] = {
        "system.slice:cri", "a:b:c:d", "noslice:p:n", "../x.slice:p:n", "a--b.slice:p:n", "-a.slice:p:n",
        "a-.slice:p:n", "system.slice:p:..", "system.slice:../..:n", "system.slice:p:a/b", "system.slice:a/b:n",
        ".slice:p:n", "a/b.slice:p:n", "system.slice:p:x\n",
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        memset(&err, 0, sizeof err);
        if (oci_systemd_cgroup_path(bad[i], "id", out, sizeof out, &err) == 0)
            fail_msg("'%s' was mapped to %s", bad[i], out);
        assert_non_null(strstr(err.message, "cgroupsPath"));
    }
    /* Too long for the buffer: refused, not cut. */
    char small[16];
    assert_int_equal(oci_systemd_cgroup_path("system.slice:cri-containerd:abc", "id", small, sizeof small, &err), -1);
}

#define HOOKS(h) HEAD PROC ROOT ", \"hooks\": " h "}"

static void parses_hooks(void **state)
{
    (void)state;
    struct oci_spec s;
    cell_error err;
    assert_int_equal(parse(HOOKS("{\"prestart\": [{\"path\": \"/bin/a\"}], \"createRuntime\": [{\"path\": \"/bin/b\","
                                 " \"args\": [\"b\", \"-x\"], \"env\": [\"A=1\"], \"timeout\": 5}, {\"path\": \"/c\"}],"
                                 " \"poststop\": [], \"startContainer\": null}"), &s, &err), 0);
    assert_int_equal(s.hooks.n[OCI_HOOK_PRESTART], 1);
    assert_string_equal(s.hooks.list[OCI_HOOK_PRESTART][0].path, "/bin/a");
    assert_null(s.hooks.list[OCI_HOOK_PRESTART][0].args);
    assert_null(s.hooks.list[OCI_HOOK_PRESTART][0].env);
    assert_int_equal(s.hooks.list[OCI_HOOK_PRESTART][0].timeout, 0);
    assert_int_equal(s.hooks.n[OCI_HOOK_CREATE_RUNTIME], 2);
    assert_string_equal(s.hooks.list[OCI_HOOK_CREATE_RUNTIME][0].args[1], "-x");
    assert_null(s.hooks.list[OCI_HOOK_CREATE_RUNTIME][0].args[2]);
    assert_string_equal(s.hooks.list[OCI_HOOK_CREATE_RUNTIME][0].env[0], "A=1");
    assert_int_equal(s.hooks.list[OCI_HOOK_CREATE_RUNTIME][0].timeout, 5);
    assert_int_equal(s.hooks.n[OCI_HOOK_POSTSTOP], 0);
    assert_int_equal(s.hooks.n[OCI_HOOK_START_CONTAINER], 0);
    assert_string_equal(oci_hook_kind_name(OCI_HOOK_START_CONTAINER), "startContainer");
    oci_spec_free(&s);

    refused(HOOKS("[]"), "hooks must be an object");
    refused(HOOKS("{\"preStart\": []}"), "hooks.preStart is not a hook kind");
    refused(HOOKS("{\"prestart\": {}}"), "hooks.prestart must be an array");
    refused(HOOKS("{\"prestart\": [\"/bin/a\"]}"), "hooks.prestart[0]. must be an object");
    refused(HOOKS("{\"prestart\": [{}]}"), "hooks.prestart[0].path");
    refused(HOOKS("{\"prestart\": [{\"path\": 7}]}"), "hooks.prestart[0].path");
    refused(HOOKS("{\"poststop\": [{\"path\": \"bin/a\"}]}"), "hooks.poststop[0].path must be an absolute");
    refused(HOOKS("{\"poststop\": [{\"path\": \"/bin/../a\"}]}"), "hooks.poststop[0].path");
    refused(HOOKS("{\"poststop\": [{\"path\": \"/a\\u0000b\"}]}"), "u0000");
    refused(HOOKS("{\"poststart\": [{\"path\": \"/a\", \"args\": \"a\"}]}"), "hooks.poststart[0].args");
    refused(HOOKS("{\"poststart\": [{\"path\": \"/a\", \"args\": [1]}]}"), "hooks.poststart[0].args[0]");
    refused(HOOKS("{\"poststart\": [{\"path\": \"/a\", \"env\": [\"NOEQ\"]}]}"), "hooks.poststart[0].env[0]");
    refused(HOOKS("{\"poststart\": [{\"path\": \"/a\", \"timeout\": 0}]}"), "hooks.poststart[0].timeout");
    refused(HOOKS("{\"poststart\": [{\"path\": \"/a\", \"timeout\": -3}]}"), "hooks.poststart[0].timeout");
    refused(HOOKS("{\"poststart\": [{\"path\": \"/a\", \"timeout\": \"5\"}]}"), "hooks.poststart[0].timeout");
    refused(HOOKS("{\"poststart\": [{\"path\": \"/a\", \"timeout\": 99999999999}]}"), "hooks.poststart[0].timeout");
    /* More hooks than the bound: refused before any is parsed. */
    size_t n = OCI_MAX_HOOKS + 1, len = n * 20 + 256;
    char *t = malloc(len);
    assert_non_null(t);
    size_t used = (size_t)snprintf(t, len, "%s", HEAD PROC ROOT ", \"hooks\": {\"prestart\": [");
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(t + used, len - used, "%s{\"path\": \"/a\"}", i ? "," : "");
    snprintf(t + used, len - used, "]}}");
    refused(t, "at most 64 hooks");
    free(t);
}

static void capability_names(void **state)
{
    (void)state;
    assert_int_equal(oci_cap_number("CAP_CHOWN"), 0);
    assert_int_equal(oci_cap_number("CAP_SYS_ADMIN"), 21);
    assert_int_equal(oci_cap_number("CAP_CHECKPOINT_RESTORE"), 40);
    assert_int_equal(oci_cap_number("cap_chown"), -1);
    assert_int_equal(oci_cap_number(""), -1);
    assert_string_equal(oci_cap_name(19), "CAP_SYS_PTRACE");
    assert_string_equal(oci_cap_name(99), "?");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parses_a_good_spec),
        cmocka_unit_test(absolute_root_is_kept),
        cmocka_unit_test(refuses_malformed),
        cmocka_unit_test(refuses_wrong_types),
        cmocka_unit_test(refuses_missing_fields),
        cmocka_unit_test(refuses_paths_out_of_place),
        cmocka_unit_test(refuses_what_cell_does_not_mount),
        cmocka_unit_test(refuses_huge_arrays),
        cmocka_unit_test(capability_names),
        cmocka_unit_test(systemd_cgroup_paths),
        cmocka_unit_test(parses_hooks),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
