/* test_runagent.c: the run backends of runagent.c (runs.h), which do no
 * I/O: the request checks (hostile names, paths, secrets, TOML and YAML
 * injection attempts, caps), each agent's files, env, mcpServers and
 * prompt exactly, the event normaliser over the streams in
 * tests/unit/data/runs (and over hostile ones), the permission policy and
 * the output-schema subset. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/runs.h"

static json_t *J(const char *text)
{
    json_error_t e;
    json_t *j = json_loads(text, JSON_DECODE_ANY | JSON_ALLOW_NUL, &e);
    if (!j)
        fprintf(stderr, "bad test JSON (%s): %s\n", e.text, text);
    assert_non_null(j);
    return j;
}

static void assert_json_eq(json_t *got, json_t *want)
{
    if (!json_equal(got, want)) {
        char *g = json_dumps(got, JSON_COMPACT | JSON_ENCODE_ANY);
        char *w = json_dumps(want, JSON_COMPACT | JSON_ENCODE_ANY);
        fprintf(stderr, "got  %s\nwant %s\n", g, w);
        free(g);
        free(w);
        fail();
    }
}

/* srv_runagent_check on `spec`: 0, or -1 with `why` containing `want`. */
static void check_why(const char *spec, const char *want)
{
    json_t *s = J(spec);
    char why[512] = "";
    int rc = srv_runagent_check(s, why, sizeof why);
    if (want == NULL ? rc != 0 : (rc != -1 || !strstr(why, want))) {
        fprintf(stderr, "spec %s\n  rc %d why \"%s\", want %s\n", spec, rc, why, want ? want : "success");
        fail();
    }
    json_decref(s);
}

static void checks_name_the_field(void **state)
{
    (void)state;
    check_why("{\"agent\":\"mock\",\"prompt\":\"x\"}", NULL);
    check_why("{\"agent\":\"mock\",\"instructions\":5}", "instructions:");
    check_why("{\"agent\":\"mock\",\"model\":\"a\\nb\"}", "model:");
    /* skills */
    check_why("{\"skills\":{}}", "skills:");
    check_why("{\"skills\":[{\"name\":\"ok\",\"description\":\"d\",\"extra\":1}]}", "skills[0].extra: unknown");
    check_why("{\"skills\":[{\"name\":\"..\",\"description\":\"d\"}]}", "skills[0].name");
    check_why("{\"skills\":[{\"name\":\".\",\"description\":\"d\"}]}", "skills[0].name");
    check_why("{\"skills\":[{\"name\":\"a/b\",\"description\":\"d\"}]}", "skills[0].name");
    check_why("{\"skills\":[{\"name\":\"a]\",\"description\":\"d\"}]}", "skills[0].name");
    check_why("{\"skills\":[{\"name\":\"a\\nb\",\"description\":\"d\"}]}", "skills[0].name");
    check_why("{\"skills\":[{\"name\":\"\",\"description\":\"d\"}]}", "skills[0].name");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\"},{\"name\":\"a\",\"description\":\"d\"}]}",
              "skills[1].name: \"a\" is skills[0]'s name too");
    check_why("{\"skills\":[{\"name\":\"a\"}]}", "skills[0].description");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"files\":{\"../x\":\"t\"}}]}",
              "skills[0].files[\"../x\"]: must not have");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"files\":{\"/etc/x\":\"t\"}}]}",
              "skills[0].files[\"/etc/x\"]: must be relative");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"files\":{\"a\\\\..\\\\x\":\"t\"}}]}",
              "backslash");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"files\":{\"a/./b\":\"t\"}}]}", "components");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"files\":{\"a//b\":\"t\"}}]}", "components");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"files\":{\"x/..\":\"t\"}}]}", "components");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"files\":{\"a\\nb\":\"t\"}}]}", "control");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"files\":{\"1/2/3/4/5/6/7/8/9\":\"t\"}}]}", "8 levels");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"files\":{\"SKILL.md\":\"t\"}}]}", "SKILL.md");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"files\":{\"x\":\"t\",\"x/y\":\"u\"}}]}",
              "is a file and a directory");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"files\":{\"x\":5}}]}", "skills[0].files[\"x\"]");
    check_why("{\"skills\":[{\"name\":\"a\",\"description\":\"d\",\"body\":\"a\\u0000b\"}]}", "skills[0].body");
    /* mcp */
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"tcp\"}]}", "mcp[0].type");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"stdio\"}]}", "mcp[0].command");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"stdio\",\"command\":[]}]}", "mcp[0].command");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"stdio\",\"command\":\"x\",\"url\":\"http://a\"}]}",
              "mcp[0].url: unknown field");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"stdio\",\"command\":\"x\",\"args\":[1]}]}", "mcp[0].args[0]");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"stdio\",\"command\":\"x\",\"env\":{\"A-B\":\"v\"}}]}",
              "mcp[0].env[\"A-B\"]");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"stdio\",\"command\":\"x\",\"env\":{\"K\":\"${secret:k}\"}}]}",
              "mcp[0].env[\"K\"]");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"http\",\"url\":\"file:///etc/passwd\"}]}", "mcp[0].url");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"http\",\"url\":\"http://a/\\\"\"}]}", "mcp[0].url");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"http\",\"url\":\"http://a\",\"headers\":{\"A\":\"Bearer "
              "${secret:k}\"}}]}", "mcp[0].headers[\"A\"]: ${secret:NAME} must be the whole value");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"http\",\"url\":\"http://a\",\"headers\":{\"A\":\"${secret:}\"}}]}",
              "whole value");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"http\",\"url\":\"http://a\",\"headers\":{\"A\":\"x\\r\\nB: y\"}}]}",
              "control");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"http\",\"url\":\"http://a\",\"headers\":{\"A:\":\"x\"}}]}",
              "header name");
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"http\",\"url\":\"http://a\",\"headers\":{\"A\":\"${secret:k}\"}}]}",
              NULL);
    check_why("{\"mcp\":[{\"name\":\"m\",\"type\":\"stdio\",\"command\":\"x\"},{\"name\":\"m\",\"type\":\"stdio\","
              "\"command\":\"y\"}]}", "mcp[1].name");
    /* permissions */
    check_why("{\"permissions\":{\"default\":\"maybe\"}}", "permissions.default");
    check_why("{\"permissions\":{\"rules\":[{\"kind\":\"teleport\",\"action\":\"allow\"}]}}",
              "permissions.rules[0].kind");
    check_why("{\"permissions\":{\"rules\":[{\"kind\":\"read\"}]}}", "permissions.rules[0].action");
    check_why("{\"permissions\":{\"rules\":[{\"action\":\"deny\",\"when\":1}]}}", "permissions.rules[0].when");
    check_why("{\"permissions\":{\"rule\":[]}}", "permissions.rule: unknown");
    /* attachments */
    check_why("{\"attachments\":[{\"name\":\"../a\",\"text\":\"x\"}]}", "attachments[0].name");
    check_why("{\"attachments\":[{\"name\":\"a\"}]}", "exactly one of text and base64");
    check_why("{\"attachments\":[{\"name\":\"a\",\"text\":\"x\",\"base64\":\"eA==\"}]}", "exactly one");
    check_why("{\"attachments\":[{\"name\":\"a\",\"base64\":\"!!!\"}]}", "attachments[0].base64");
    check_why("{\"attachments\":[{\"name\":\"a\",\"base64\":\"eA==\"},{\"name\":\"a\",\"text\":\"\"}]}",
              "attachments[1].name");
    /* output_schema */
    check_why("{\"output_schema\":{\"type\":\"object\",\"properties\":{\"a\":{\"pattern\":\"x\"}}}}",
              "output_schema/properties/a/\"pattern\": unsupported keyword");
    check_why("{\"output_schema\":{\"type\":\"tuple\"}}", "output_schema/type");
    check_why("{\"output_schema\":{\"$ref\":\"#\"}}", "unsupported keyword");
    check_why("{\"output_schema\":{\"items\":5}}", "output_schema/items");
    check_why("{\"output_schema\":{\"enum\":[]}}", "output_schema/enum");
    check_why("{\"output_schema\":{\"required\":[1]}}", "output_schema/required/0");
    check_why("{\"output_schema\":{\"type\":\"object\",\"properties\":{\"a/b\":{\"type\":5}}}}",
              "output_schema/properties/a~1b/type");
    /* shell takes none of the agent config */
    check_why("{\"agent\":\"shell\",\"skills\":[]}", "skills: the shell agent");
    check_why("{\"agent\":\"shell\",\"instructions\":\"x\"}", "instructions: the shell agent");
}

static void checks_cap_big_inputs(void **state)
{
    (void)state;
    json_t *s = J("{\"agent\":\"mock\"}");
    char why[512];
    char *big = malloc((256u << 10) + 2);
    memset(big, 'a', (256u << 10) + 1);
    big[(256u << 10) + 1] = '\0';
    json_object_set_new(s, "instructions", json_string(big));
    assert_int_equal(srv_runagent_check(s, why, sizeof why), -1);
    assert_non_null(strstr(why, "instructions"));
    big[256u << 10] = '\0';
    json_object_set_new(s, "instructions", json_string(big));
    assert_int_equal(srv_runagent_check(s, why, sizeof why), 0);
    free(big);
    json_object_del(s, "instructions");

    json_t *skills = json_array();
    for (int i = 0; i < 33; i++) {
        char name[16];
        snprintf(name, sizeof name, "s%d", i);
        json_array_append_new(skills, json_pack("{s:s, s:s}", "name", name, "description", "d"));
    }
    json_object_set_new(s, "skills", skills);
    assert_int_equal(srv_runagent_check(s, why, sizeof why), -1);
    assert_non_null(strstr(why, "skills: an array of at most 32"));
    json_object_del(s, "skills");

    /* Attachments: 9 of 1 MiB each is over the 8 MiB total. */
    char *mib = malloc((1u << 20) + 1);
    memset(mib, 'x', 1u << 20);
    mib[1u << 20] = '\0';
    json_t *att = json_array();
    for (int i = 0; i < 9; i++) {
        char name[16];
        snprintf(name, sizeof name, "a%d", i);
        json_array_append_new(att, json_pack("{s:s, s:s}", "name", name, "text", mib));
    }
    json_object_set_new(s, "attachments", att);
    assert_int_equal(srv_runagent_check(s, why, sizeof why), -1);
    assert_non_null(strstr(why, "8 MiB"));
    free(mib);
    json_object_del(s, "attachments");

    /* A schema 40 deep. */
    json_t *schema = J("{\"type\":\"string\"}");
    for (int i = 0; i < 40; i++)
        schema = json_pack("{s:s, s:o}", "type", "array", "items", schema);
    json_object_set_new(s, "output_schema", schema);
    assert_int_equal(srv_runagent_check(s, why, sizeof why), -1);
    assert_non_null(strstr(why, "levels"));
    json_decref(s);
}

static const runagent_file *file_of(const runagent_plan *p, const char *path)
{
    for (size_t i = 0; i < p->n_files; i++)
        if (strcmp(p->files[i].path, path) == 0)
            return &p->files[i];
    return NULL;
}

static void assert_paths(const runagent_plan *p, const char *const *want)
{
    size_t n = 0;
    for (; want[n]; n++)
        if (!file_of(p, want[n])) {
            fprintf(stderr, "missing %s\n", want[n]);
            fail();
        }
    if (p->n_files != n) {
        for (size_t i = 0; i < p->n_files; i++)
            fprintf(stderr, "file %s\n", p->files[i].path);
        fail();
    }
}

static void assert_file(const runagent_plan *p, const char *path, const char *text, mode_t mode)
{
    const runagent_file *f = file_of(p, path);
    assert_non_null(f);
    if (f->len != strlen(text) || memcmp(f->data, text, f->len) != 0) {
        fprintf(stderr, "%s:\n---got\n%.*s\n---want\n%s\n", path, (int)f->len, f->data, text);
        fail();
    }
    assert_int_equal(f->mode, mode);
}

static const char spec_full[] =
    "{\"agent\":\"codex\",\"prompt\":\"fix it\",\"model\":\"gpt-5\",\"instructions\":\"Be brief.\","
    "\"skills\":[{\"name\":\"lint\",\"description\":\"Runs \\\"lint\\\"\\nnow\",\"body\":\"Run make lint.\","
    "\"files\":{\"scripts/run.sh\":\"#!/bin/sh\\n\"}}],"
    "\"mcp\":[{\"name\":\"fs\",\"type\":\"stdio\",\"command\":[\"npx\",\"-y\"],\"args\":[\"srv\"],\"env\":{\"K\":\"v\"}},"
    "{\"name\":\"docs.web\",\"type\":\"http\",\"url\":\"https://mcp.test/x\",\"headers\":{\"Authorization\":"
    "\"${secret:tok}\",\"X-Plain\":\"p\"}}],"
    "\"attachments\":[{\"name\":\"a.txt\",\"text\":\"hello\"},{\"name\":\"b.bin\",\"base64\":\"AAEC\"}],"
    "\"output_schema\":{\"type\":\"object\",\"required\":[\"ok\"]}}";

static const char acp_mcp_full[] =
    "[{\"name\":\"fs\",\"command\":\"npx\",\"args\":[\"-y\",\"srv\"],\"env\":[{\"name\":\"K\",\"value\":\"v\"}]},"
    "{\"type\":\"http\",\"name\":\"docs.web\",\"url\":\"https://mcp.test/x\",\"headers\":["
    "{\"name\":\"Authorization\",\"value\":\"cell-placeholder\"},{\"name\":\"X-Plain\",\"value\":\"p\"}]}]";

static const char prompt_full[] =
    "fix it\n\nAttached files:\n- /.cell-run/attachments/a.txt\n- /.cell-run/attachments/b.bin\n\n"
    "Answer with exactly one JSON value, and nothing else around it, that matches this JSON Schema: "
    "{\"required\":[\"ok\"],\"type\":\"object\"}";

static const char skill_md[] = "---\nname: \"lint\"\ndescription: \"Runs \\\"lint\\\"\\u000anow\"\n---\n\nRun make lint.";

static void build(const char *agent, const char *spec, runagent_plan *p)
{
    json_t *s = J(spec);
    char why[512] = "";
    if (srv_runagent_plan_build(agent, s, p, why, sizeof why) != 0) {
        fprintf(stderr, "plan %s: %s\n", agent, why);
        fail();
    }
    json_decref(s);
}

static void codex_plan(void **state)
{
    (void)state;
    runagent_plan p;
    build("codex", spec_full, &p);
    static const char *const paths[] = { "/root/.codex/AGENTS.md", "/root/.codex/skills/lint/SKILL.md",
                                         "/root/.codex/skills/lint/scripts/run.sh", "/root/.codex/config.toml",
                                         "/.cell-run/attachments/a.txt", "/.cell-run/attachments/b.bin", NULL };
    assert_paths(&p, paths);
    assert_file(&p, "/root/.codex/AGENTS.md", "Be brief.", 0644);
    assert_file(&p, "/root/.codex/skills/lint/SKILL.md", skill_md, 0644);
    assert_file(&p, "/root/.codex/skills/lint/scripts/run.sh", "#!/bin/sh\n", 0644);
    assert_file(&p, "/root/.codex/config.toml",
                "# Written by cell for this run (docs/api.md, \"Runs\").\n"
                "model = \"gpt-5\"\n"
                "\n[mcp_servers.\"fs\"]\ncommand = \"npx\"\nargs = [\"-y\", \"srv\"]\nenv = { \"K\" = \"v\" }\n"
                "\n[mcp_servers.\"docs.web\"]\nurl = \"https://mcp.test/x\"\n"
                "http_headers = { \"Authorization\" = \"cell-placeholder\", \"X-Plain\" = \"p\" }\n", 0600);
    const runagent_file *b = file_of(&p, "/.cell-run/attachments/b.bin");
    assert_int_equal(b->len, 3);
    assert_memory_equal(b->data, "\0\1\2", 3);
    assert_string_equal(p.env[0], "CODEX_HOME=/root/.codex");
    assert_null(p.env[1]);
    json_t *want = J(acp_mcp_full);
    assert_json_eq(p.mcp_servers, want);
    json_decref(want);
    assert_string_equal(p.prompt, prompt_full);
    /* The secret never appears in anything written or passed. */
    for (size_t i = 0; i < p.n_files; i++)
        assert_null(strstr(p.files[i].data, "secret"));
    srv_runagent_plan_free(&p);
}

static void opencode_plan(void **state)
{
    (void)state;
    runagent_plan p;
    build("opencode", spec_full, &p);
    static const char *const paths[] = { "/root/.config/opencode/AGENTS.md",
                                         "/root/.config/opencode/skills/lint/SKILL.md",
                                         "/root/.config/opencode/skills/lint/scripts/run.sh",
                                         "/root/.config/opencode/opencode.jsonc", "/.cell-run/attachments/a.txt",
                                         "/.cell-run/attachments/b.bin", NULL };
    assert_paths(&p, paths);
    assert_file(&p, "/root/.config/opencode/skills/lint/SKILL.md", skill_md, 0644);
    const runagent_file *cfg = file_of(&p, "/root/.config/opencode/opencode.jsonc");
    assert_int_equal(cfg->mode, 0600);
    json_t *got = json_loadb(cfg->data, cfg->len, 0, NULL);
    json_t *want = J("{\"$schema\":\"https://opencode.ai/config.json\",\"model\":\"gpt-5\",\"mcp\":{"
                     "\"fs\":{\"type\":\"local\",\"command\":[\"npx\",\"-y\",\"srv\"],\"environment\":{\"K\":\"v\"},"
                     "\"enabled\":true},"
                     "\"docs.web\":{\"type\":\"remote\",\"url\":\"https://mcp.test/x\",\"headers\":{\"Authorization\":"
                     "\"cell-placeholder\",\"X-Plain\":\"p\"},\"enabled\":true}}}");
    assert_json_eq(got, want);
    json_decref(got);
    json_decref(want);
    assert_null(p.env[0]);
    want = J(acp_mcp_full);
    assert_json_eq(p.mcp_servers, want);
    json_decref(want);
    assert_string_equal(p.prompt, prompt_full);
    srv_runagent_plan_free(&p);
}

static void claude_mock_shell_plans(void **state)
{
    (void)state;
    runagent_plan p;
    build("claude", spec_full, &p);
    static const char *const claude[] = { "/root/.claude/CLAUDE.md", "/root/.claude/skills/lint/SKILL.md",
                                          "/root/.claude/skills/lint/scripts/run.sh", "/.cell-run/attachments/a.txt",
                                          "/.cell-run/attachments/b.bin", NULL };
    assert_paths(&p, claude);
    assert_file(&p, "/root/.claude/CLAUDE.md", "Be brief.", 0644);
    assert_string_equal(p.env[0], "ANTHROPIC_MODEL=gpt-5");
    assert_null(p.env[1]);
    json_t *want = J(acp_mcp_full);
    assert_json_eq(p.mcp_servers, want);
    json_decref(want);
    srv_runagent_plan_free(&p);

    build("mock", spec_full, &p);
    static const char *const mock[] = { "/root/.config/cell-mock-agent/instructions.md",
                                        "/root/.config/cell-mock-agent/skills/lint/SKILL.md",
                                        "/root/.config/cell-mock-agent/skills/lint/scripts/run.sh",
                                        "/.cell-run/attachments/a.txt", "/.cell-run/attachments/b.bin", NULL };
    assert_paths(&p, mock);
    assert_null(p.env[0]);
    assert_string_equal(p.prompt, prompt_full);
    srv_runagent_plan_free(&p);

    /* shell: the prompt is the command, as given; only attachments. */
    build("shell", "{\"agent\":\"shell\",\"prompt\":\"echo hi; exit 3\",\"attachments\":[{\"name\":\"a\",\"text\":\"x\"}],"
          "\"output_schema\":{\"type\":\"object\"}}", &p);
    static const char *const shell[] = { "/.cell-run/attachments/a", NULL };
    assert_paths(&p, shell);
    assert_string_equal(p.prompt, "echo hi; exit 3");
    assert_null(p.env[0]);
    assert_int_equal(json_array_size(p.mcp_servers), 0);
    srv_runagent_plan_free(&p);

    /* Nothing given: only codex's config.toml (codex refuses a
     * CODEX_HOME that does not exist), the prompt as it is. */
    build("codex", "{\"agent\":\"codex\",\"prompt\":\"p\"}", &p);
    static const char *const bare[] = { "/root/.codex/config.toml", NULL };
    assert_paths(&p, bare);
    assert_string_equal(p.prompt, "p");
    srv_runagent_plan_free(&p);

    json_t *s = J("{\"prompt\":\"p\"}");
    char why[256];
    assert_int_equal(srv_runagent_plan_build("gemini", s, &p, why, sizeof why), -1);
    assert_non_null(strstr(why, "agent:"));
    assert_int_equal(srv_runagent_plan_build(NULL, s, &p, why, sizeof why), -1);
    json_decref(s);
}

/* Hostile names and values must stay values: the TOML and YAML written
 * parse back (Python's tomllib and PyYAML) to exactly what was given. */
static void toml_and_yaml_injection(void **state)
{
    (void)state;
    const char *spec =
        "{\"agent\":\"codex\",\"prompt\":\"p\",\"model\":\"m\\\" \\n[x]\","
        "\"skills\":[{\"name\":\"a.b-c_d\",\"description\":\"x\\n---\\nname: evil\\n\\\"'\\u0001\\u007f\"}],"
        "\"mcp\":[{\"name\":\"a.b\",\"type\":\"stdio\",\"command\":\"c\\\"\\n[mcp_servers.evil]\\ncommand = \\\"sh\\\"\","
        "\"args\":[\"]\\\\\",\"\\t\\r\\b\\f\\u001b\"],\"env\":{\"K\":\"v\\\"\\n\\u0000\"}}]}";
    json_t *s = J(spec);
    char why[512];
    runagent_plan p;
    /* A model with a newline is refused (no model name needs one). */
    assert_int_equal(srv_runagent_plan_build("codex", s, &p, why, sizeof why), -1);
    assert_non_null(strstr(why, "model:"));
    json_object_set_new(s, "model", json_string("m\" [x] = 'y'"));
    /* "\u0000" in an env value is refused. */
    assert_int_equal(srv_runagent_plan_build("codex", s, &p, why, sizeof why), -1);
    assert_non_null(strstr(why, "mcp[0].env[\"K\"]"));
    json_object_set_new(json_object_get(json_array_get(json_object_get(s, "mcp"), 0), "env"), "K",
                        json_string("v\"\n=1"));
    assert_int_equal(srv_runagent_plan_build("codex", s, &p, why, sizeof why), 0);

    const runagent_file *toml = file_of(&p, "/root/.codex/config.toml");
    const runagent_file *md = file_of(&p, "/root/.codex/skills/a.b-c_d/SKILL.md");
    assert_non_null(toml);
    assert_non_null(md);
    char tdir[] = "/tmp/test-runagent.XXXXXX";
    assert_non_null(mkdtemp(tdir));
    char path[256], cmd[1024];
    snprintf(path, sizeof path, "%s/config.toml", tdir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(toml->data, 1, toml->len, f), toml->len);
    fclose(f);
    snprintf(path, sizeof path, "%s/SKILL.md", tdir);
    f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(md->data, 1, md->len, f), md->len);
    fclose(f);
    /* The parsed values, as JSON, compared here with what was asked. */
    snprintf(cmd, sizeof cmd,
             "/usr/bin/python3 -c 'import tomllib, yaml, json, sys\n"
             "t = tomllib.load(open(\"%s/config.toml\", \"rb\"))\n"
             "y = open(\"%s/SKILL.md\").read().split(\"---\\n\")[1]\n"
             "print(json.dumps({\"toml\": t, \"yaml\": yaml.safe_load(y)}))' > %s/out.json",
             tdir, tdir, tdir);
    if (system("/usr/bin/python3 -c 'import tomllib, yaml' 2>/dev/null") != 0) {
        srv_runagent_plan_free(&p);
        json_decref(s);
        skip();
    }
    assert_int_equal(system(cmd), 0);
    snprintf(path, sizeof path, "%s/out.json", tdir);
    json_t *got = json_load_file(path, 0, NULL);
    assert_non_null(got);
    json_t *want = json_pack("{s:{s:s, s:{s:{s:s, s:[s, s], s:{s:s}}}}, s:{s:s, s:O}}",
                             "toml", "model", "m\" [x] = 'y'", "mcp_servers", "a.b",
                             "command", "c\"\n[mcp_servers.evil]\ncommand = \"sh\"",
                             "args", "]\\", "\t\r\b\f\x1b", "env", "K", "v\"\n=1",
                             "yaml", "name", "a.b-c_d", "description",
                             json_object_get(json_array_get(json_object_get(s, "skills"), 0), "description"));
    assert_json_eq(got, want);
    json_decref(got);
    json_decref(want);
    snprintf(cmd, sizeof cmd, "rm -rf %s", tdir);
    assert_int_equal(system(cmd), 0);
    srv_runagent_plan_free(&p);
    json_decref(s);
}

/* Feed data/runs/NAME.jsonl to `fn`; compare with NAME.expected.json. */
static runagent_norm *replay(const char *name, json_t *(*fn)(runagent_norm *, json_t *))
{
    char path[512];
    const char *dir = getenv("RUNAGENT_DATA") ? getenv("RUNAGENT_DATA") : "tests/unit/data/runs";
    snprintf(path, sizeof path, "%s/%s.jsonl", dir, name);
    FILE *f = fopen(path, "r");
    if (!f)
        fprintf(stderr, "%s: run from the repository's top directory or set RUNAGENT_DATA\n", path);
    assert_non_null(f);
    runagent_norm *n = srv_runagent_norm_new();
    json_t *all = json_array();
    char *line = NULL;
    size_t cap = 0;
    while (getline(&line, &cap, f) > 0) {
        json_t *msg = J(line);
        json_t *ev = fn(n, msg);
        assert_true(json_is_array(ev));
        json_array_extend(all, ev);
        json_decref(ev);
        json_decref(msg);
    }
    free(line);
    fclose(f);
    snprintf(path, sizeof path, "%s/%s.expected.json", dir, name);
    json_t *want = json_load_file(path, 0, NULL);
    assert_non_null(want);
    assert_json_eq(all, want);
    json_decref(want);
    json_decref(all);
    return n;
}

static void assert_result(runagent_norm *n, const char *output, const char *usage, const char *session)
{
    json_t *o = srv_runagent_output(n), *u = srv_runagent_usage(n), *want = J(usage);
    assert_string_equal(json_string_value(o), output);
    assert_json_eq(u, want);
    if (session)
        assert_string_equal(srv_runagent_session(n), session);
    else
        assert_null(srv_runagent_session(n));
    json_decref(o);
    json_decref(u);
    json_decref(want);
}

static void normalise_recorded_streams(void **state)
{
    (void)state;
    runagent_norm *n = replay("acp", srv_runagent_from_acp);
    assert_result(n, "I will done.", "{\"inputTokens\":100,\"outputTokens\":20,\"totalTokens\":120}", "sess-1");
    srv_runagent_norm_free(n);
    n = replay("codex", srv_runagent_from_codex);
    assert_result(n, "Made made.txt.", "{\"inputTokens\":1210,\"outputTokens\":350,\"totalTokens\":1560}",
                  "0199a213-81c0-7800-8aa1-bbab2a035a53");
    srv_runagent_norm_free(n);
    n = replay("codex-acp-0.16.0", srv_runagent_from_acp);
    assert_result(n, "Model metadata for `gpt-5` not found. Defaulting to fallback metadata; this can degrade "
                  "performance and cause issues.Let me edit.Made made.txt.", "null",
                  "01a23e1f-693d-7182-93d4-1626569cd23c");
    srv_runagent_norm_free(n);
    n = replay("codex-0.171.0", srv_runagent_from_codex);
    assert_result(n, "Let me edit.\n\nMade made.txt.", "{\"inputTokens\":40,\"outputTokens\":20,\"totalTokens\":60}",
                  "01a23e1d-57e0-7111-8e24-7920c7fa139d");
    srv_runagent_norm_free(n);
    n = replay("opencode-1.18.33", srv_runagent_from_opencode);
    assert_result(n, "Let me look.\n\nMade made.txt.", "{\"inputTokens\":40,\"outputTokens\":20,\"totalTokens\":60}",
                  "ses_dc1da43e0ffeXZ106DAepEun9k");
    srv_runagent_norm_free(n);
    n = replay("opencode", srv_runagent_from_opencode);
    assert_result(n, "Wrote new.txt.", "{\"inputTokens\":500,\"outputTokens\":50,\"totalTokens\":550}",
                  "ses_494719016ffe85dkDMj0FPRbHK");
    srv_runagent_norm_free(n);
}

/* An MCP tool call's title is "server.tool", each cut at 64 bytes: a cut
 * inside a UTF-8 character becomes U+FFFD, and the tool.call event is
 * there (json_pack refused the cut string and the event was lost). */
static void a_tool_title_cut_inside_a_character_is_kept(void **state)
{
    (void)state;
    char server[128] = "";
    for (int i = 0; i < 40; i++)
        strcat(server, "\xc3\xa9");           /* é, 2 bytes: after the "a", byte 64 is half of one */
    char line[512];
    snprintf(line, sizeof line,
             "{\"type\":\"item.started\",\"item\":{\"id\":\"i1\",\"type\":\"mcp_tool_call\",\"server\":\"a%s\","
             "\"tool\":\"t\"}}", server);
    runagent_norm *n = srv_runagent_norm_new();
    json_t *msg = J(line);
    json_t *ev = srv_runagent_from_codex(n, msg);
    assert_int_equal(json_array_size(ev), 1);
    json_t *e = json_array_get(ev, 0);
    assert_string_equal(json_string_value(json_object_get(e, "type")), "tool.call");
    const char *title = json_string_value(json_object_get(e, "title"));
    assert_non_null(title);
    assert_non_null(strstr(title, "\xef\xbf\xbd.t"));      /* U+FFFD where the cut fell, then ".t" */
    json_decref(ev);
    json_decref(msg);
    srv_runagent_norm_free(n);
}

/* What a hostile agent may send: wrong types everywhere, no events and no
 * crash; endless tool calls and text stay bounded. */
static void normalise_hostile_streams(void **state)
{
    (void)state;
    static const char *const junk[] = {
        "5", "null", "[]", "{}", "{\"update\":5}", "{\"update\":{\"sessionUpdate\":5}}",
        "{\"sessionId\":7,\"update\":{\"sessionUpdate\":\"agent_message_chunk\",\"content\":{\"text\":5}}}",
        "{\"update\":{\"sessionUpdate\":\"tool_call\"}}",
        "{\"update\":{\"sessionUpdate\":\"tool_call\",\"toolCallId\":5}}",
        "{\"update\":{\"sessionUpdate\":\"plan\",\"entries\":{}}}",
        "{\"usage\":5}", "{\"usage\":{\"inputTokens\":-5,\"outputTokens\":\"x\"}}",
        "{\"type\":\"item.completed\",\"item\":5}", "{\"type\":\"item.completed\",\"item\":{\"type\":\"command_execution\"}}",
        "{\"type\":\"turn.completed\",\"usage\":[]}", "{\"type\":\"tool_use\",\"part\":{\"callID\":1}}",
        "{\"type\":\"text\",\"part\":{\"text\":[]}}", "{\"type\":5}",
    };
    runagent_norm *n = srv_runagent_norm_new();
    for (size_t i = 0; i < sizeof junk / sizeof junk[0]; i++) {
        json_t *msg = J(junk[i]);
        json_t *(*fns[])(runagent_norm *, json_t *) = { srv_runagent_from_acp, srv_runagent_from_codex,
                                                        srv_runagent_from_opencode };
        for (size_t k = 0; k < 3; k++) {
            json_t *ev = fns[k](n, msg);
            assert_true(json_is_array(ev));
            /* {"usage":{...negative}} is a (zero) usage report; nothing else emits. */
            if (json_array_size(ev) != 0)
                assert_string_equal(json_string_value(json_object_get(json_array_get(ev, 0), "type")), "usage");
            json_decref(ev);
        }
        json_decref(msg);
    }
    json_t *u = srv_runagent_usage(n);
    json_t *want = J("{\"inputTokens\":0,\"outputTokens\":0,\"totalTokens\":0}");
    assert_json_eq(u, want);
    json_decref(u);
    json_decref(want);
    assert_null(srv_runagent_session(n));

    /* 10000 tool calls never finished: the table stays bounded (ASan and
     * the leak checker see it), and a late update still normalises. */
    for (int i = 0; i < 10000; i++) {
        json_t *m = json_pack("{s:{s:s, s:s+, s:s}}", "update", "sessionUpdate", "tool_call", "toolCallId", "c",
                              i % 2 ? "odd" : "even", "kind", "execute");
        json_object_set_new(json_object_get(m, "update"), "toolCallId", json_sprintf("c%d", i));
        json_decref(srv_runagent_from_acp(n, m));
        json_decref(m);
    }
    /* An argv's words are quoted as sh needs them. */
    json_t *q = J("{\"update\":{\"sessionUpdate\":\"tool_call\",\"toolCallId\":\"q\",\"kind\":\"execute\","
                  "\"rawInput\":{\"command\":[\"echo\",\"it's\",\"a b\",\"\",\"x=1,y\"]}}}");
    json_t *qev = srv_runagent_from_acp(n, q);
    assert_string_equal(json_string_value(json_object_get(json_array_get(qev, 1), "command")),
                        "echo 'it'\\''s' 'a b' '' x=1,y");
    json_decref(qev);
    json_decref(q);
    json_t *m = J("{\"update\":{\"sessionUpdate\":\"tool_call_update\",\"toolCallId\":\"c9999\",\"status\":"
                  "\"completed\",\"rawOutput\":{\"exitCode\":70000}}}");
    json_t *ev = srv_runagent_from_acp(n, m);
    assert_int_equal(json_array_size(ev), 1);  /* tool.result; 70000 is no exit code */
    json_decref(ev);
    json_decref(m);

    /* A 200 KiB rawInput and rawOutput: bounded in the events (a bigger
     * event would be dropped whole), the output's text kept in part. */
    char *huge = malloc(200u << 10);
    memset(huge, 'h', (200u << 10) - 1);
    huge[(200u << 10) - 1] = '\0';
    m = json_pack("{s:{s:s, s:s, s:s, s:{s:s}}}", "update", "sessionUpdate", "tool_call", "toolCallId", "big", "kind",
                  "execute", "rawInput", "command", huge);
    ev = srv_runagent_from_acp(n, m);
    json_t *in = json_object_get(json_array_get(ev, 0), "input");
    assert_true(json_is_true(json_object_get(in, "truncated")));
    assert_true(json_integer_value(json_object_get(in, "bytes")) > (200 << 10));
    assert_null(json_object_get(in, "text"));
    json_decref(ev);
    json_decref(m);
    m = json_pack("{s:{s:s, s:s, s:s, s:{s:s, s:s, s:i}}}", "update", "sessionUpdate", "tool_call_update",
                  "toolCallId", "big", "status", "completed", "rawOutput", "stdout", huge, "aggregated_output", huge,
                  "exit_code", 0);
    ev = srv_runagent_from_acp(n, m);
    json_t *res = json_array_get(ev, 0), *o = json_object_get(res, "output");
    assert_string_equal(json_string_value(json_object_get(res, "type")), "tool.result");
    assert_true(json_is_true(json_object_get(o, "truncated")));
    assert_int_equal(json_string_length(json_object_get(o, "text")), 64u << 10);
    /* A command over 64 KiB is not repeated (the title stands in); its exit is still reported. */
    assert_int_equal(json_integer_value(json_object_get(json_array_get(ev, 1), "exitCode")), 0);
    json_decref(ev);
    json_decref(m);
    free(huge);

    /* 5 MiB of text in multi-byte characters: the output stops at 4 MiB on
     * a character boundary, still valid UTF-8 (jansson checks). */
    size_t big = 5u << 20;
    char *text = malloc(big + 1);
    for (size_t i = 0; i + 2 < big; i += 3)
        memcpy(text + i, "\xe2\x82\xac", 3);
    size_t len = big / 3 * 3;
    text[len] = '\0';
    m = json_pack("{s:{s:s, s:{s:s, s:s}}}", "update", "sessionUpdate", "agent_message_chunk", "content", "type",
                  "text", "text", text);
    json_decref(srv_runagent_from_acp(n, m));
    json_decref(srv_runagent_from_acp(n, m));
    json_t *out = srv_runagent_output(n);
    assert_non_null(out);
    assert_true(json_string_length(out) <= (4u << 20) && json_string_length(out) > (4u << 20) - 3);
    json_decref(out);
    json_decref(m);
    free(text);
    srv_runagent_norm_free(n);
}

static const char *perm(const char *policy, const char *request)
{
    json_t *p = policy ? J(policy) : NULL, *r = J(request);
    const char *a = srv_runagent_permission(p, r);
    json_decref(p);
    json_decref(r);
    return a;
}

static void permission_rules(void **state)
{
    (void)state;
    const char *rm = "{\"toolCall\":{\"kind\":\"execute\",\"title\":\"Run it\",\"rawInput\":{\"command\":\"rm -rf /x\"}}}";
    const char *rm_argv = "{\"toolCall\":{\"kind\":\"execute\",\"title\":\"t\",\"rawInput\":{\"command\":[\"rm\",\"-rf\",\"/x\"]}}}";
    const char *edit = "{\"toolCall\":{\"kind\":\"edit\",\"title\":\"Write a.txt\"}}";
    const char *policy = "{\"default\":\"ask\",\"rules\":["
                         "{\"kind\":\"execute\",\"pattern\":\"rm *\",\"action\":\"deny\"},"
                         "{\"kind\":\"execute\",\"action\":\"allow\"},"
                         "{\"pattern\":\"Write *\",\"action\":\"allow\"},"
                         "{\"action\":\"deny\",\"pattern\":\"*secret*\"}]}";
    assert_string_equal(perm(NULL, rm), "allow");                         /* no policy: the cell is the sandbox */
    assert_string_equal(perm("{}", rm), "allow");
    assert_string_equal(perm(policy, rm), "deny");                        /* first match wins */
    assert_string_equal(perm(policy, rm_argv), "deny");                   /* argv joined */
    assert_string_equal(perm(policy, "{\"toolCall\":{\"kind\":\"execute\",\"title\":\"ls\"}}"), "allow");
    assert_string_equal(perm(policy, edit), "allow");                     /* pattern on the title */
    assert_string_equal(perm(policy, "{\"toolCall\":{\"kind\":\"read\",\"title\":\"cat secret.txt\"}}"), "deny");
    assert_string_equal(perm(policy, "{\"toolCall\":{\"kind\":\"read\",\"title\":\"cat a\"}}"), "ask");
    assert_string_equal(perm(policy, "{}"), "ask");                       /* no toolCall: the default */
    assert_string_equal(perm(policy, "{\"toolCall\":{\"kind\":5,\"title\":[]}}"), "ask");
    assert_string_equal(perm("{\"default\":\"deny\"}", edit), "deny");
    /* A kind rule does not match a request without a kind. */
    assert_string_equal(perm("{\"default\":\"deny\",\"rules\":[{\"kind\":\"edit\",\"action\":\"allow\"}]}",
                             "{\"toolCall\":{\"title\":\"x\"}}"), "deny");
    /* An argv is the script of [sh, -c, SCRIPT], else its words quoted. */
    const char *deny_rm = "{\"default\":\"allow\",\"rules\":[{\"pattern\":\"rm *\",\"action\":\"deny\"},"
                          "{\"pattern\":\"ls 'a b' *\",\"action\":\"ask\"}]}";
    assert_string_equal(perm(deny_rm, "{\"toolCall\":{\"kind\":\"execute\",\"rawInput\":{\"command\":"
                                      "[\"/bin/bash\",\"-lc\",\"rm -rf /\"]}}}"), "deny");
    assert_string_equal(perm(deny_rm, "{\"toolCall\":{\"kind\":\"execute\",\"rawInput\":{\"command\":"
                                      "[\"ls\",\"a b\",\"'q\"]}}}"), "ask");
    assert_string_equal(perm(deny_rm, "{\"toolCall\":{\"kind\":\"execute\",\"rawInput\":{\"command\":"
                                      "[\"/bin/bash\",\"-x\",\"rm -rf /\"]}}}"), "allow");
    json_t *call = J("{\"kind\":\"execute\",\"rawInput\":{\"command\":[\"git\",\"commit\",\"-m\",\"a b\"]}}");
    char *cmd = srv_runagent_command(call);
    assert_string_equal(cmd, "git commit -m 'a b'");
    free(cmd);
    json_object_set_new(call, "kind", json_string("edit"));
    assert_null(srv_runagent_command(call));
    json_decref(call);
    /* The pattern is on the command, not the title, for execute. */
    assert_string_equal(perm("{\"default\":\"deny\",\"rules\":[{\"pattern\":\"Run*\",\"action\":\"allow\"}]}", rm),
                        "deny");
}

static int validates(const char *schema, const char *value, const char *want_why)
{
    json_t *s = J(schema), *v = J(value);
    char why[512] = "";
    int rc = srv_runagent_schema_validate(s, v, why, sizeof why);
    if (want_why && (rc != -1 || strcmp(why, want_why) != 0)) {
        fprintf(stderr, "schema %s value %s: rc %d why \"%s\", want \"%s\"\n", schema, value, rc, why, want_why);
        fail();
    }
    json_decref(s);
    json_decref(v);
    return rc;
}

static void schema_subset(void **state)
{
    (void)state;
    const char *s = "{\"type\":\"object\",\"required\":[\"name\",\"tags\"],\"additionalProperties\":false,"
                    "\"properties\":{\"name\":{\"type\":\"string\"},\"n\":{\"type\":\"integer\"},"
                    "\"kind\":{\"enum\":[\"a\",\"b\"]},\"tags\":{\"type\":\"array\",\"items\":{\"type\":\"string\"}},"
                    "\"x/y\":{\"type\":[\"number\",\"null\"]}}}";
    assert_int_equal(validates(s, "{\"name\":\"x\",\"tags\":[],\"n\":3,\"kind\":\"a\",\"x/y\":null}", NULL), 0);
    assert_int_equal(validates(s, "{\"name\":\"x\",\"tags\":[\"a\"],\"n\":3.0,\"x/y\":1.5}", NULL), 0);
    validates(s, "[]", "/: a value of type object is required");
    validates(s, "{\"tags\":[]}", "/: the required property \"name\" is missing");
    validates(s, "{\"name\":1,\"tags\":[]}", "/name: a value of type string is required");
    validates(s, "{\"name\":\"x\",\"tags\":[\"a\",2]}", "/tags/1: a value of type string is required");
    validates(s, "{\"name\":\"x\",\"tags\":[],\"n\":1.5}", "/n: a value of type integer is required");
    validates(s, "{\"name\":\"x\",\"tags\":[],\"n\":1e300}", "/n: a value of type integer is required");
    validates(s, "{\"name\":\"x\",\"tags\":[],\"kind\":\"c\"}", "/kind: not one of the enum's values");
    validates(s, "{\"name\":\"x\",\"tags\":[],\"more\":1}",
              "/more: no such property is allowed (additionalProperties is false)");
    validates(s, "{\"name\":\"x\",\"tags\":[],\"x/y\":\"s\"}", "/x~1y: a value of none of the allowed types");
    assert_int_equal(validates("{\"additionalProperties\":{\"type\":\"boolean\"}}", "{\"a\":true}", NULL), 0);
    validates("{\"additionalProperties\":{\"type\":\"boolean\"}}", "{\"a\":1}", "/a: a value of type boolean is required");
    assert_int_equal(validates("{}", "[1,{\"a\":null}]", NULL), 0);
    /* An unchecked schema is refused here too. */
    assert_int_equal(validates("{\"minLength\":1}", "\"x\"", NULL), -1);
}


/* ---- random hostile specs: no crash, no leak (ASan), and what passes the
 * check always builds ------------------------------------------------------------------- */

static unsigned long rng_state = 12345;
static unsigned rng(unsigned n)
{
    rng_state = rng_state * 6364136223846793005UL + 1442695040888963407UL;
    return (unsigned)(rng_state >> 33) % n;
}

static json_t *rand_json(int depth)
{
    static const char *const strs[] = { "..", ".", "/", "a/../b", "a\nb", "${secret:k}", "${", "]", "\"", "",
                                        "a.b", "\x01", "ok", "stdio", "http", "http://h/x", "allow", "deny", "ask",
                                        "execute", "edit", "object", "string", "array", "integer", "SKILL.md",
                                        "a\\b", "x/y", "rm *", "eA==", "!!", "\xc3\xa9" };
    static const char *const keys[] = { "name", "description", "body", "files", "type", "command", "args", "env",
                                        "url", "headers", "default", "rules", "kind", "pattern", "action", "text",
                                        "base64", "properties", "items", "required", "enum", "additionalProperties",
                                        "a/b", "x", "..", "SKILL.md", "K" };
    switch (rng(depth > 3 ? 4 : 7)) {
    case 0: return json_string(strs[rng(sizeof strs / sizeof strs[0])]);
    case 1: return json_integer((json_int_t)rng(5) - 2);
    case 2: return rng(2) ? json_true() : json_null();
    case 3: {
        char *big = malloc(70000);
        memset(big, 'a' + (char)rng(3), 70000 - 1);
        big[70000 - 1] = '\0';
        json_t *j = json_string(big + rng(69990));
        free(big);
        return j;
    }
    case 4:
    case 5: {
        json_t *o = json_object();
        for (unsigned i = rng(5); i > 0; i--)
            json_object_set_new(o, keys[rng(sizeof keys / sizeof keys[0])], rand_json(depth + 1));
        return o;
    }
    default: {
        json_t *a = json_array();
        for (unsigned i = rng(4); i > 0; i--)
            json_array_append_new(a, rand_json(depth + 1));
        return a;
    }
    }
}

static void random_hostile_specs(void **state)
{
    (void)state;
    static const char *const fields[] = { "skills", "mcp", "permissions", "attachments", "output_schema",
                                          "instructions", "model" };
    static const char *const agents[] = { "mock", "codex", "opencode", "claude", "shell" };
    int passed = 0;
    for (int i = 0; i < 3000; i++) {
        json_t *spec = json_pack("{s:s, s:s}", "agent", agents[rng(5)], "prompt", "p");
        for (size_t f = 0; f < sizeof fields / sizeof fields[0]; f++)
            if (rng(5) == 0) {
                /* Mostly the right outer shape, so the checks go deep. */
                json_t *v = rand_json(1);
                if (f < 2 || f == 3) {
                    json_t *a = json_array();
                    json_array_append_new(a, v);
                    v = a;
                }
                json_object_set_new(spec, fields[f], v);
            }
        char why[512];
        if (srv_runagent_check(spec, why, sizeof why) == 0) {
            passed++;
            runagent_plan p;
            assert_int_equal(srv_runagent_plan_build(json_string_value(json_object_get(spec, "agent")), spec, &p, why,
                                                 sizeof why), 0);
            for (size_t k = 0; k < p.n_files; k++)
                assert_true(strncmp(p.files[k].path, "/root/", 6) == 0 ||
                            strncmp(p.files[k].path, "/.cell-run/attachments/", 23) == 0);
            srv_runagent_plan_free(&p);
            json_t *schema = json_object_get(spec, "output_schema"), *value = rand_json(1);
            if (schema)
                srv_runagent_schema_validate(schema, value, why, sizeof why);
            json_decref(value);
            json_t *req = rand_json(0);
            srv_runagent_permission(json_object_get(spec, "permissions"), req);
            json_decref(req);
        } else {
            assert_true(strlen(why) > 0);
        }
        json_decref(spec);
    }
    if (passed < 300)
        fprintf(stderr, "only %d of 3000 passed the check\n", passed);
    assert_true(passed >= 300); /* the valid side is exercised too */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(checks_name_the_field),
        cmocka_unit_test(checks_cap_big_inputs),
        cmocka_unit_test(codex_plan),
        cmocka_unit_test(opencode_plan),
        cmocka_unit_test(claude_mock_shell_plans),
        cmocka_unit_test(toml_and_yaml_injection),
        cmocka_unit_test(normalise_recorded_streams),
        cmocka_unit_test(normalise_hostile_streams),
        cmocka_unit_test(a_tool_title_cut_inside_a_character_is_kept),
        cmocka_unit_test(permission_rules),
        cmocka_unit_test(schema_subset),
        cmocka_unit_test(random_hostile_specs),
    };
    return cmocka_run_group_tests_name("run backends", tests, NULL, NULL);
}
