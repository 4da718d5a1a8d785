/* test_agentcfg.c: what the ACP proxy gets from the config a client stored
 * (agentcfg.h), against a real cell (root only): configured MCP servers in
 * session/new's mcpServers shape, and skills materialised into an agent's
 * skill directory, including skill sources that try to pull host files or
 * the whole cell in through symlinks. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cell.h"
#include "server/agentcfg.h"

static char state_dir[] = "/tmp/cell-unit-agentcfg.XXXXXX";
static char host_secret[] = "/tmp/cell-unit-agentcfg-secret.XXXXXX";
static cell_ctx *ctx;
static cell *c;

static int setup(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0;
    if (!mkdtemp(state_dir))
        return -1;
    int fd = mkstemp(host_secret);
    if (fd < 0 || write(fd, "HOSTSECRET", 10) != 10)
        return -1;
    close(fd);
    cell_error err = { 0 };
    cell_config cfg = { 0 };
    if (cell_ctx_open(&ctx, state_dir, &err) < 0 || cell_create(ctx, &cfg, &c, &err) < 0) {
        fprintf(stderr, "%s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    if (c)
        cell_destroy(c);
    if (ctx)
        cell_ctx_close(ctx);
    if (geteuid() == 0) {
        unlink(host_secret);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf %s", state_dir);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

#define NEED_ROOT() do { if (geteuid() != 0) skip(); } while (0)

static int sh(const char *script)
{
    const char *argv[] = { "sh", "-c", script, NULL };
    cell_proc_spec spec = { .argv = argv, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = 2 };
    pid_t pid;
    cell_error err = { 0 };
    assert_int_equal(cell_spawn(c, &spec, &pid, NULL, &err), 0);
    cell_exit ex;
    assert_int_equal(cell_wait_exit(c, 10000, &ex, &err), 1);
    return ex.status;
}

static void write_file(const char *path, const char *text)
{
    cell_xfer x;
    cell_error err = { 0 };
    char dir[512];
    snprintf(dir, sizeof dir, "%s", path);
    *strrchr(dir, '/') = '\0';
    assert_int_equal(cell_file_mkdir(c, dir, 0755, 1, &err), 0);
    assert_int_equal(cell_file_write(c, path, O_WRONLY | O_CREAT | O_TRUNC, 0644, &x, &err), 0);
    assert_int_equal(cell_xfer_write(&x, text, strlen(text), &err), 0);
    assert_int_equal(cell_xfer_end(&x, &err), 0);
}

static char *read_file(const char *path)
{
    static char buf[65536];
    cell_xfer x;
    cell_error err = { 0 };
    if (cell_file_read(c, path, &x, &err) < 0)
        return NULL;
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = cell_xfer_read(&x, buf + len, sizeof buf - 1 - len, &err)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    return cell_xfer_end(&x, &err) < 0 ? NULL : buf;
}

static void assert_json_eq(json_t *got, const char *want_text)
{
    json_t *want = json_loads(want_text, 0, NULL);
    assert_non_null(want);
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT);
        fprintf(stderr, "got  %s\nwant %s\n", g, want_text);
        free(g);
        fail();
    }
    json_decref(want);
}

static void names(void **state)
{
    (void)state;
    assert_true(srv_agentcfg_name_ok("a"));
    assert_true(srv_agentcfg_name_ok("my-server_1.2"));
    assert_true(srv_agentcfg_name_ok("...x"));
    const char *bad[] = { "", ".", "..", "a/b", "/", "a\\b", "a\nb", "\x7f" };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        assert_false(srv_agentcfg_name_ok(bad[i]));
    char longname[AGENTCFG_NAME_MAX + 2];
    memset(longname, 'x', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    assert_false(srv_agentcfg_name_ok(longname));
    longname[AGENTCFG_NAME_MAX] = '\0';
    assert_true(srv_agentcfg_name_ok(longname));
    assert_string_equal(srv_agentcfg_skill_dir("claude"), ".claude/skills");
    assert_null(srv_agentcfg_skill_dir("nope"));
    assert_null(srv_agentcfg_skill_dir(NULL));
}

static void mcp_servers_in_acp_shape(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    json_t *out = NULL;
    /* Nothing configured: an empty array, not an error. */
    assert_int_equal(srv_agentcfg_cell_mcp_servers(c, "/proj-none", &out, &err), 0);
    assert_json_eq(out, "[]");
    json_decref(out);
    write_file("/proj/.sandbox-agent/config/mcp.json",
               "{\"zz\": {\"type\": \"local\", \"command\": [\"node\", \"srv.js\"], \"args\": [\"--x\"],"
               "          \"env\": {\"A\": \"1\"}},"
               " \"aa\": {\"type\": \"remote\", \"url\": \"http://m/mcp\", \"headers\": {\"H\": \"v\"}},"
               " \"off\": {\"type\": \"stdio\", \"command\": \"x\", \"enabled\": false},"
               " \"sse\": {\"type\": \"http\", \"url\": \"http://s\", \"transport\": \"sse\", \"enabled\": true},"
               " \"empty\": {\"type\": \"local\", \"command\": []}}");
    assert_int_equal(srv_agentcfg_cell_mcp_servers(c, "/proj", &out, &err), 0);
    assert_json_eq(out, "[{\"type\":\"http\",\"name\":\"aa\",\"url\":\"http://m/mcp\","
                        "  \"headers\":[{\"name\":\"H\",\"value\":\"v\"}]},"
                        " {\"type\":\"sse\",\"name\":\"sse\",\"url\":\"http://s\",\"headers\":[]},"
                        " {\"name\":\"zz\",\"command\":\"node\",\"args\":[\"srv.js\",\"--x\"],"
                        "  \"env\":[{\"name\":\"A\",\"value\":\"1\"}]}]");
    json_decref(out);
    /* Relative directories are under /root, as for the HTTP routes. */
    write_file("/root/rel/.sandbox-agent/config/mcp.json", "{\"r\": {\"type\": \"local\", \"command\": \"r\"}}");
    assert_int_equal(srv_agentcfg_cell_mcp_servers(c, "rel", &out, &err), 0);
    assert_json_eq(out, "[{\"name\":\"r\",\"command\":\"r\",\"args\":[],\"env\":[]}]");
    json_decref(out);
    /* An invalid file is EINVAL, and no array. */
    write_file("/bad/.sandbox-agent/config/mcp.json", "{\"a\": {\"type\": \"bogus\"}}");
    assert_int_equal(srv_agentcfg_cell_mcp_servers(c, "/bad", &out, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_null(out);
}

static void skills_materialised(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    json_t *rep = NULL;
    /* Sources: one skill directory, a directory of skills (one without
     * SKILL.md), a listed subset below a subpath, and a github source. */
    write_file("/src/one/SKILL.md", "# one\n");
    write_file("/src/one/scripts/run.sh", "echo one\n");
    write_file("/src/many/alpha/SKILL.md", "# alpha\n");
    write_file("/src/many/beta/SKILL.md", "# beta\n");
    write_file("/src/many/notaskill/README", "x\n");
    write_file("/proj2/vendor/set/gamma/SKILL.md", "# gamma\n");
    write_file("/proj2/vendor/set/delta/SKILL.md", "# delta\n");
    write_file("/proj2/.sandbox-agent/config/skills.json",
               "{\"one\": {\"sources\": [{\"type\": \"local\", \"source\": \"/src/one\"}]},"
               " \"many\": {\"sources\": [{\"type\": \"local\", \"source\": \"/src/many\"}]},"
               " \"sub\": {\"sources\": [{\"type\": \"local\", \"source\": \"vendor\", \"subpath\": \"set\","
               "                          \"skills\": [\"gamma\", \"../../etc\"]}]},"
               " \"gh\": {\"sources\": [{\"type\": \"github\", \"source\": \"rivet-dev/skills\"}]}}");
    /* A stale copy is replaced, not merged. */
    write_file("/proj2/.claude/skills/one/stale.txt", "old\n");
    assert_int_equal(srv_agentcfg_cell_skills_materialise(c, "/proj2", "claude", &rep, &err), 0);
    assert_string_equal(read_file("/proj2/.claude/skills/one/SKILL.md"), "# one\n");
    assert_string_equal(read_file("/proj2/.claude/skills/one/scripts/run.sh"), "echo one\n");
    assert_string_equal(read_file("/proj2/.claude/skills/alpha/SKILL.md"), "# alpha\n");
    assert_string_equal(read_file("/proj2/.claude/skills/beta/SKILL.md"), "# beta\n");
    assert_string_equal(read_file("/proj2/.claude/skills/gamma/SKILL.md"), "# gamma\n");
    assert_null(read_file("/proj2/.claude/skills/one/stale.txt"));
    assert_null(read_file("/proj2/.claude/skills/delta/SKILL.md"));
    assert_null(read_file("/proj2/.claude/skills/notaskill/README"));
    /* The report: five installed, "../../etc" and the github source skipped. */
    size_t i, installed = 0, skipped = 0;
    json_t *e;
    json_array_foreach(rep, i, e) {
        const char *st = json_string_value(json_object_get(e, "status"));
        if (strcmp(st, "installed") == 0)
            installed++;
        else
            skipped++;
    }
    assert_int_equal(installed, 4);
    assert_int_equal(skipped, 2);
    json_decref(rep);
    /* Another agent, another directory; an unknown agent is EINVAL. */
    assert_int_equal(srv_agentcfg_cell_skills_materialise(c, "/proj2", "codex", NULL, &err), 0);
    assert_string_equal(read_file("/proj2/.codex/skills/alpha/SKILL.md"), "# alpha\n");
    assert_int_equal(srv_agentcfg_cell_skills_materialise(c, "/proj2", "bogus", &rep, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_null(rep);
}

/* A skill source that is (or holds) a symlink to the host's files, or to the
 * cell's whole root: the copy stays in the cell and is bounded. */
static void skills_cannot_pull_in_host_files(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    json_t *rep = NULL;
    char script[1024];
    snprintf(script, sizeof script,
             "mkdir -p /evil/s && echo x > /evil/s/SKILL.md && ln -s %s /evil/s/secret && "
             "ln -s /proc/1/root%s /evil/s/secret2 && mkdir -p /evil2/r && echo x > /evil2/r/SKILL.md && "
             "ln -s / /evil2/r/root",
             host_secret, host_secret);
    assert_int_equal(sh(script), 0);
    write_file("/proj3/.sandbox-agent/config/skills.json",
               "{\"s\": {\"sources\": [{\"type\": \"local\", \"source\": \"/evil/s\"}]}}");
    assert_int_equal(srv_agentcfg_cell_skills_materialise(c, "/proj3", "mock", &rep, &err), 0);
    json_decref(rep);
    char *got = read_file("/proj3/.sandbox-agent/skills/s/SKILL.md");
    assert_non_null(got);
    got = read_file("/proj3/.sandbox-agent/skills/s/secret");
    assert_true(got == NULL || strstr(got, "HOSTSECRET") == NULL);
    got = read_file("/proj3/.sandbox-agent/skills/s/secret2");
    assert_true(got == NULL || strstr(got, "HOSTSECRET") == NULL);
    /* A link to "/" would copy the whole cell: the bound stops it. */
    write_file("/proj4/.sandbox-agent/config/skills.json",
               "{\"r\": {\"sources\": [{\"type\": \"local\", \"source\": \"/evil2/r\"}]}}");
    assert_int_equal(srv_agentcfg_cell_skills_materialise(c, "/proj4", "mock", &rep, &err), -1);
    assert_int_equal(err.code, E2BIG);
    assert_null(rep);
}

/* What the ACP proxy calls on session/new: fills mcpServers only when the
 * client sent none, materialises skills for the agent, fails cleanly. */
static void session_new_prepared(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    json_t *rep = NULL;
    write_file("/proj5/.sandbox-agent/config/mcp.json", "{\"m\": {\"type\": \"local\", \"command\": \"m\"}}");
    write_file("/proj5/.sandbox-agent/config/skills.json",
               "{\"k\": {\"sources\": [{\"type\": \"local\", \"source\": \"/src5\"}]}}");
    write_file("/src5/SKILL.md", "# k\n");
    const char *cases[][2] = {
        { "{\"cwd\": \"/proj5\"}", "[{\"name\":\"m\",\"command\":\"m\",\"args\":[],\"env\":[]}]" },
        { "{\"cwd\": \"/proj5\", \"mcpServers\": []}", "[{\"name\":\"m\",\"command\":\"m\",\"args\":[],\"env\":[]}]" },
        { "{\"cwd\": \"/proj5\", \"mcpServers\": null}", "[{\"name\":\"m\",\"command\":\"m\",\"args\":[],\"env\":[]}]" },
        /* the client's own servers are kept */
        { "{\"cwd\": \"/proj5\", \"mcpServers\": [{\"name\":\"mine\",\"command\":\"x\",\"args\":[],\"env\":[]}]}",
          "[{\"name\":\"mine\",\"command\":\"x\",\"args\":[],\"env\":[]}]" },
        /* no cwd: /root, where nothing is configured */
        { "{}", "[]" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *params = json_loads(cases[i][0], 0, NULL);
        assert_non_null(params);
        assert_int_equal(srv_agentcfg_cell_prepare_session_new(c, "claude", params, &rep, &err), 0);
        assert_json_eq(json_object_get(params, "mcpServers"), cases[i][1]);
        json_decref(params);
        json_decref(rep);
    }
    assert_string_equal(read_file("/proj5/.claude/skills/k/SKILL.md"), "# k\n");
    /* An agent without a skill directory still gets its servers. */
    json_t *params = json_loads("{\"cwd\": \"/proj5\"}", 0, NULL);
    assert_int_equal(srv_agentcfg_cell_prepare_session_new(c, "someagent", params, &rep, &err), 0);
    assert_null(rep);
    assert_int_equal(json_array_size(json_object_get(params, "mcpServers")), 1);
    json_decref(params);
    /* An invalid config fails and leaves the params as they were. */
    write_file("/proj6/.sandbox-agent/config/mcp.json", "[]");
    params = json_loads("{\"cwd\": \"/proj6\"}", 0, NULL);
    assert_int_equal(srv_agentcfg_cell_prepare_session_new(c, "claude", params, &rep, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_null(json_object_get(params, "mcpServers"));
    json_decref(params);
    params = json_loads("[]", JSON_DECODE_ANY, NULL);
    assert_int_equal(srv_agentcfg_cell_prepare_session_new(c, "claude", params, NULL, &err), -1);
    json_decref(params);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(names),
        cmocka_unit_test(mcp_servers_in_acp_shape),
        cmocka_unit_test(skills_materialised),
        cmocka_unit_test(skills_cannot_pull_in_host_files),
        cmocka_unit_test(session_new_prepared),
    };
    return cmocka_run_group_tests_name("agent config", tests, setup, teardown);
}
