/* agent_cmds.c: `cell agent run` and `cell agent runs ...`: issue 12's runs
 * (POST /v1/runs and friends, docs/api.md "Runs") from the terminal.
 *
 * Everything the daemon sends is the agent's work or passes through it:
 * event text is escaped before it reaches a terminal, ids are checked
 * before they go into a path or a header, and every size is capped. */
#include "cli/cli.h"
#include "cli/cells_cmds.h"
#include "cli/client.h"
#include "cli/opts.h"
#include "cli/http1.h"
#include "util/util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <spawn.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

/* The API's limits (docs/api.md "Runs"), checked here for a clear message. */
#define PROMPT_MAX       (1u << 20)
#define INSTR_MAX        (256u << 10)
#define SKILLS_MAX       32
#define SKILL_FILES_MAX  64
#define SKILL_BYTES_MAX  (1u << 20)
#define MCP_MAX          16
#define ATTACH_MAX       16
#define ATTACH_BYTES_MAX (8u << 20)
#define SCHEMA_MAX       (1u << 20)
/* An event line or event larger than this is a broken or hostile daemon: skipped. */
#define SSE_MAX          (16u << 20)
/* Reconnects of the event stream in a row that bring no new event. */
#define FOLLOW_RETRIES   8

#define EXIT_CANCELED    130

/* ---- help ------------------------------------------------------------------------------ */
static const char agent_usage[] =
    "usage: cell agent run [OPTIONS] PROMPT...\n"
    "       cell agent runs [ls|show|events|cancel|rm|apply|diff] ...\n"
    "\n"
    "Run a coding agent on a repository in a throwaway cell and get its output,\n"
    "its events and the change it made (as a diff; the repository itself is\n"
    "never written unless you ask with --apply).  See `cell agent run --help`\n"
    "and `cell agent runs --help`.\n";

static const char run_usage[] =
    "usage: cell agent run [OPTIONS] PROMPT...   (PROMPT '-': read it from stdin)\n"
    "\n"
    "Start a run in the daemon, stream its progress to stderr (what the agent\n"
    "runs with its exit codes, file changes, permission asks) and its messages\n"
    "to stdout, then print a summary (status, changed files, usage, duration).\n"
    "The repository is mounted read-only under the agent's copy: nothing is\n"
    "written to it unless you pass --apply.\n"
    "\n"
    "options:\n"
    "  --agent NAME            codex (default), claude, opencode, mock or shell\n"
    "                          (shell: PROMPT is the command line)\n"
    "  --repo DIR              the repository (default .); a local daemon reads it\n"
    "                          in place, a remote one gets it uploaded as a tar\n"
    "                          (git repositories: the files `git ls-files -co\n"
    "                          --exclude-standard` names)\n"
    "  --no-repo               start in an empty /workspace\n"
    "  --upload                upload DIR even to a local daemon\n"
    "  --model M               the model the agent asks for\n"
    "  --instructions FILE     instructions (e.g. AGENTS.md), at most 256 KiB\n"
    "  --skill DIR             a skill: DIR/SKILL.md (front matter name and\n"
    "                          description) and DIR's other files, at most 64\n"
    "                          text files and 1 MiB (repeatable, 32 at most)\n"
    "  --mcp NAME=CMD [ARG...] an MCP server the agent starts in the cell (one\n"
    "                          string, split on spaces); --mcp NAME=URL (http://\n"
    "                          or https://) for an HTTP one (repeatable, 16 at most)\n"
    "  --policy FILE           the cell's egress policy (JSON, docs/egress.md)\n"
    "  --key SECRET[,base=URL][,provider=P]\n"
    "                          the model key: your secret SECRET is put in the\n"
    "                          provider's auth header on the host, never in the cell\n"
    "  --timeout SECONDS       end the run after this long (1-86400; default 1800)\n"
    "  --keep nothing|lane|cell  what to keep after the run (default nothing)\n"
    "  --output-schema FILE    a JSON Schema the final answer must match\n"
    "  --attach FILE           a file the agent gets under /.cell-run/attachments\n"
    "                          (repeatable, 16 files and 8 MiB at most)\n"
    "  --resume RUN|last       continue a run's session on its changed repository\n"
    "  --fork                  with --resume: leave the resumed run as it is\n"
    "  --allow PATTERN, --deny PATTERN, --ask PATTERN\n"
    "                          permission rules for the agent's tool calls, first\n"
    "                          match wins (default: allow, the cell is the sandbox).\n"
    "                          PATTERN is a glob on the command or title, or\n"
    "                          kind=KIND (read, edit, delete, move, search, execute,\n"
    "                          think, fetch, other).  ask: on a terminal you are\n"
    "                          asked y/N; otherwise the daemon decides\n"
    "  --image NAME            the cell's image (default host)\n"
    "  --json                  every event as one JSON line on stdout, then the run\n"
    "  --diff                  print the run's patch on stdout at the end (with\n"
    "                          --json it is the last line's result.diff)\n"
    "  --apply                 apply the patch to DIR when the run succeeded\n"
    "                          (refused, with the conflicts, when it does not apply)\n"
    "  --detach                print the run's id and exit\n"
    "\n"
    "Ctrl-C cancels the run (its agent is stopped) and waits for it to end;\n"
    "a second Ctrl-C stops waiting.\n"
    "\n"
    "exit codes: the agent's (shell: the command's; ACP agents: 0 end of turn,\n"
    "1 refusal or a limit); 130 canceled; 124 timed out; 1 failed without a code,\n"
    "the daemon refused the request (4xx) or --apply did not apply; 2 usage;\n"
    "125 the daemon is unreachable or failed.\n"
    "\n"
    "The daemon is reached at STATE/cell.sock, or at --url URL / $CELL_URL\n"
    "(http://HOST:PORT or unix:PATH); the token is $CELL_TOKEN, else STATE/admin.token.\n";

static const char runs_usage[] =
    "usage: cell agent runs [ls] [--status S] [--limit N]\n"
    "       cell agent runs show ID\n"
    "       cell agent runs events ID [--follow]\n"
    "       cell agent runs cancel ID\n"
    "       cell agent runs rm ID\n"
    "       cell agent runs apply ID [--repo DIR]\n"
    "       cell agent runs diff ID\n"
    "\n"
    "ls: your tenant's runs, newest first (ID STATUS AGENT EXIT CREATED DURATION).\n"
    "show: a run and its result.  events: its events (--follow: until it ends).\n"
    "cancel: stop an active run.  rm: delete a finished run and its files.\n"
    "apply: apply a finished run's patch: a run on a host directory in the\n"
    "daemon, an uploaded one here, in DIR (default .).  diff: print its patch.\n"
    "--json prints the daemon's answers (events: one per line).\n"
    "\n"
    "exit codes: 0 done; 1 the daemon refused (4xx: unknown run, not finished,\n"
    "conflict); 2 usage; 125 the daemon is unreachable or failed.\n";

const char *cli_agentcmd_usage(int argc, char **argv)
{
    if (argc > 0 && strcmp(argv[0], "run") == 0)
        return run_usage;
    if (argc > 0 && strcmp(argv[0], "runs") == 0)
        return runs_usage;
    return agent_usage;
}

static int usage_fail(const char *cmd, const char *fmt, const char *arg)
{
    fputs("cell: ", stderr);
    fprintf(stderr, fmt, arg);
    fprintf(stderr, " (see cell agent %s --help)\n", cmd);
    return CLI_EXIT_USAGE;
}

/* ---- signals ------------------------------------------------------------------------------- */
/* SIGINT, SIGTERM and SIGHUP during a run ask for its cancel: the stream's
 * stop flag ends the request being made, the loop then sends the DELETE. */
static atomic_int interrupted;
static atomic_int stream_stop;

static void on_interrupt(int sig)
{
    (void)sig;
    atomic_fetch_add(&interrupted, 1);
    atomic_store(&stream_stop, 1);
}

static void catch_interrupts(void)
{
    /* No SA_RESTART: a blocked prompt read returns EINTR. */
    struct sigaction sa = { .sa_handler = on_interrupt };
    sigemptyset(&sa.sa_mask);
    int sigs[] = { SIGINT, SIGTERM, SIGHUP };
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++)
        if (sigaction(sigs[i], &sa, NULL) < 0)
            cli_fail(0, "sigaction: %s", strerror(errno));
}

/* ---- safe output --------------------------------------------------------------------------- */
/* The agent chooses this text: on a terminal its control bytes (and the
 * C1 controls UTF-8 can spell) would move the cursor, retitle the window or
 * worse, so they are written as \xNN.  `nl`: keep newlines and tabs. */
static void put_safe(FILE *f, const char *s, size_t n, int nl)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = p[i];
        if (ch == 0xc2 && i + 1 < n && p[i + 1] >= 0x80 && p[i + 1] <= 0x9f) {
            fprintf(f, "\\u%04x", p[++i]);
        } else if ((ch < 0x20 && !(nl && (ch == '\n' || ch == '\t'))) || ch == 0x7f) {
            fprintf(f, "\\x%02x", ch);
        } else {
            fputc(ch, f);
        }
    }
}

static void put_str(FILE *f, json_t *v, size_t max)
{
    const char *s = json_string_value(v);
    size_t n = json_string_length(v);
    if (!s)
        return;
    put_safe(f, s, n > max ? max : n, 0);
    if (n > max)
        fputs("...", f);
}

static const char *str_of(json_t *o, const char *key)
{
    return json_string_value(json_object_get(o, key));
}

/* ---- reading local files --------------------------------------------------------------- */
static int read_small(const char *opt, const char *path, size_t max, char **out, size_t *len)
{
    cell_error err = { 0 };
    if (util_read_file(path, max, out, len, &err) < 0)
        return cli_fail(CLI_EXIT_USAGE, "%s: %s", opt, err.message);
    return 0;
}

/* A file as a JSON string: UTF-8 text without NUL bytes, or NULL. */
static json_t *text_of(const char *data, size_t len)
{
    return memchr(data, '\0', len) ? NULL : json_stringn(data, len);
}

static int load_json_file(const char *opt, const char *path, json_t **out)
{
    json_error_t je;
    char *text = NULL;
    size_t len = 0;
    if (read_small(opt, path, SCHEMA_MAX, &text, &len))
        return CLI_EXIT_USAGE;
    *out = json_loadb(text, len, 0, &je);
    free(text);
    if (!*out)
        return cli_fail(CLI_EXIT_USAGE, "%s %s: not JSON: %s (line %d)", opt, path, je.text, je.line);
    return 0;
}

/* ---- skills ------------------------------------------------------------------------------- */
/* One "key: value" of SKILL.md's front matter; quotes around the value go.
 * The CLI has no YAML library: only the two plain scalars are read. */
static json_t *front_value(const char *line, size_t len, const char *key)
{
    size_t k = strlen(key);
    if (len <= k || strncmp(line, key, k) != 0 || line[k] != ':')
        return NULL;
    const char *v = line + k + 1, *end = line + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r'))
        end--;
    if (end - v >= 2 && (*v == '"' || *v == '\'') && end[-1] == *v)
        v++, end--;
    return json_stringn(v, (size_t)(end - v));
}

/* A YAML block scalar's indented lines from *p on (after a "key: >" or
 * "key: |" line): joined by spaces (">") or newlines ("|"); *p moves past them. */
static json_t *block_scalar(const char **p, int fold)
{
    http1_buf b = { 0 };
    while (**p == ' ' || **p == '\t' || **p == '\n' || **p == '\r') {
        const char *line = *p, *nl = strchr(line, '\n');
        size_t len = nl ? (size_t)(nl - line) : strlen(line);
        while (len && (*line == ' ' || *line == '\t'))
            line++, len--;
        if (len && line[len - 1] == '\r')
            len--;
        if (len) {
            if (b.len)
                cli_http1_buf_add(&b, fold ? " " : "\n", 1);
            cli_http1_buf_add(&b, line, len);
        }
        if (!nl)
            break;
        *p = nl + 1;
    }
    json_t *v = b.oom ? NULL : json_stringn(b.data ? b.data : "", b.len);
    free(b.data);
    return v;
}

/* SKILL.md's text into name, description and body (what follows the front matter). */
static int parse_skill_md(const char *dir, const char *text, json_t *skill)
{
    if (strncmp(text, "---\n", 4) != 0 && strncmp(text, "---\r\n", 5) != 0)
        return cli_fail(CLI_EXIT_USAGE, "--skill %s: SKILL.md must start with a '---' front matter holding "
                        "name: and description:", dir);
    const char *p = strchr(text, '\n') + 1;
    for (;;) {
        const char *nl = strchr(p, '\n');
        size_t len = nl ? (size_t)(nl - p) : strlen(p);
        if (len >= 3 && strncmp(p, "---", 3) == 0 && (len == 3 || p[3] == '\r')) {
            json_object_set_new(skill, "body", json_string(nl ? nl + 1 : ""));
            break;
        }
        if (!nl)
            return cli_fail(CLI_EXIT_USAGE, "--skill %s: SKILL.md's front matter has no closing '---'", dir);
        static const char *const keys[] = { "name", "description" };
        p = nl + 1;
        for (int i = 0; i < 2; i++) {
            json_t *v = front_value(nl - len, len, keys[i]);
            const char *t = json_string_value(v);
            if (t && (*t == '>' || *t == '|') && strspn(t + 1, "+-") == strlen(t + 1)) {
                int fold = *t == '>';
                json_decref(v);
                v = block_scalar(&p, fold);
            }
            if (v)
                json_object_set_new(skill, keys[i], v);
        }
    }
    if (!json_string_length(json_object_get(skill, "description")))
        return cli_fail(CLI_EXIT_USAGE, "--skill %s: SKILL.md's front matter needs a description: line", dir);
    return 0;
}

struct skill_walk {
    const char *top;
    json_t     *files;
    size_t      bytes;
};

/* DIR's regular files below `rel` ("" at the top), SKILL.md at the top left
 * out.  Links are not followed: a skill is what its directory holds. */
static int skill_files(struct skill_walk *w, const char *rel, int depth)
{
    char path[PATH_MAX];
    if (depth > 8 || snprintf(path, sizeof path, "%s/%s", w->top, rel) >= (int)sizeof path)
        return cli_fail(CLI_EXIT_USAGE, "--skill %s: nested too deep", w->top);
    int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *d = fd >= 0 ? fdopendir(fd) : NULL;
    if (!d) {
        if (fd >= 0)
            close(fd);
        return cli_fail(CLI_EXIT_USAGE, "--skill %s: %s: %s", w->top, path, strerror(errno));
    }
    int rc = 0;
    struct dirent *e;
    while (rc == 0 && (e = readdir(d))) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0 || (!*rel && strcmp(e->d_name, "SKILL.md") == 0))
            continue;
        char sub[PATH_MAX], full[PATH_MAX * 2];
        if (snprintf(sub, sizeof sub, "%s%s%s", rel, *rel ? "/" : "", e->d_name) >= (int)sizeof sub)
            return closedir(d), cli_fail(CLI_EXIT_USAGE, "--skill %s: a path is too long", w->top);
        snprintf(full, sizeof full, "%s/%s", w->top, sub);
        struct stat st;
        if (lstat(full, &st) < 0) {
            rc = cli_fail(CLI_EXIT_USAGE, "--skill %s: %s: %s", w->top, sub, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            rc = skill_files(w, sub, depth + 1);
        } else if (!S_ISREG(st.st_mode)) {
            fprintf(stderr, "cell: --skill %s: skipping %s (not a regular file)\n", w->top, sub);
        } else if (json_object_size(w->files) >= SKILL_FILES_MAX || st.st_size > SKILL_BYTES_MAX ||
                   w->bytes + (size_t)st.st_size > SKILL_BYTES_MAX) {
            rc = cli_fail(CLI_EXIT_USAGE, "--skill %s: more than %d files or %u bytes", w->top, SKILL_FILES_MAX,
                          SKILL_BYTES_MAX);
        } else {
            char *data = NULL;
            size_t len = 0;
            rc = read_small("--skill", full, SKILL_BYTES_MAX, &data, &len);
            json_t *t = rc ? NULL : text_of(data, len);
            free(data);
            if (!rc && !t)
                rc = cli_fail(CLI_EXIT_USAGE, "--skill %s: %s is not UTF-8 text (skills carry text files)", w->top, sub);
            else if (!rc)
                json_object_set_new(w->files, sub, t);
            w->bytes += len;
        }
    }
    closedir(d);
    return rc;
}

static int add_skill(json_t *skills, const char *dir)
{
    if (json_array_size(skills) >= SKILLS_MAX)
        return cli_fail(CLI_EXIT_USAGE, "--skill: at most %d skills", SKILLS_MAX);
    char md[PATH_MAX], *text = NULL;
    size_t len = 0;
    if (snprintf(md, sizeof md, "%s/SKILL.md", dir) >= (int)sizeof md)
        return cli_fail(CLI_EXIT_USAGE, "--skill %s: the path is too long", dir);
    if (read_small("--skill", md, SKILL_BYTES_MAX, &text, &len))
        return CLI_EXIT_USAGE;
    json_t *skill = json_object(), *files = json_object();
    int rc = memchr(text, '\0', len) ? cli_fail(CLI_EXIT_USAGE, "--skill %s: SKILL.md is not text", dir)
                                     : parse_skill_md(dir, text, skill);
    free(text);
    if (rc == 0 && !json_object_get(skill, "name")) {
        /* Without a name: the directory's. */
        const char *slash = strrchr(dir, '/');
        json_object_set_new(skill, "name", json_string(slash && slash[1] ? slash + 1 : dir));
    }
    struct skill_walk w = { .top = dir, .files = files, .bytes = len };
    if (rc == 0)
        rc = skill_files(&w, "", 0);
    if (rc == 0 && json_object_size(files))
        json_object_set(skill, "files", files);
    json_decref(files);
    if (rc == 0 && !json_object_get(skill, "body"))
        rc = cli_fail(CLI_EXIT_USAGE, "--skill %s: SKILL.md must be UTF-8", dir);
    if (rc == 0)
        json_array_append(skills, skill);
    json_decref(skill);
    return rc;
}

/* ---- the request ------------------------------------------------------------------------- */
struct run_args {
    json_t     *body;
    const char *repo;           /* DIR, NULL with --no-repo */
    int         upload, json, diff, apply, detach;
};

/* NAME=URL (http) or NAME=CMD [ARG...] (stdio, split on spaces). */
static int add_mcp(json_t *mcp, const char *spec)
{
    const char *eq = strchr(spec, '=');
    if (!eq || eq == spec || !eq[1])
        return usage_fail("run", "--mcp '%s': expected NAME=COMMAND [ARGS...] or NAME=URL", spec);
    if (json_array_size(mcp) >= MCP_MAX)
        return cli_fail(CLI_EXIT_USAGE, "--mcp: at most %d servers", MCP_MAX);
    json_t *s = json_pack("{s:s%}", "name", spec, (size_t)(eq - spec));
    const char *v = eq + 1;
    if (strncmp(v, "http://", 7) == 0 || strncmp(v, "https://", 8) == 0) {
        json_object_set_new(s, "type", json_string("http"));
        json_object_set_new(s, "url", json_string(v));
    } else {
        json_t *args = json_array();
        for (const char *p = v; *p;) {
            size_t n = strcspn(p, " ");
            if (n && json_object_get(s, "command"))
                json_array_append_new(args, json_stringn(p, n));
            else if (n)
                json_object_set_new(s, "command", json_stringn(p, n));
            p += n + (p[n] == ' ');
        }
        json_object_set_new(s, "type", json_string("stdio"));
        json_object_set_new(s, "args", args);
        if (!json_object_get(s, "command")) {
            json_decref(s);
            return usage_fail("run", "--mcp '%s': the command is empty", spec);
        }
    }
    json_array_append_new(mcp, s);
    return 0;
}

static int add_attachment(json_t *atts, const char *path, size_t *total)
{
    if (json_array_size(atts) >= ATTACH_MAX)
        return cli_fail(CLI_EXIT_USAGE, "--attach: at most %d files", ATTACH_MAX);
    char *data = NULL;
    size_t len = 0;
    if (read_small("--attach", path, ATTACH_BYTES_MAX, &data, &len))
        return CLI_EXIT_USAGE;
    if ((*total += len) > ATTACH_BYTES_MAX) {
        free(data);
        return cli_fail(CLI_EXIT_USAGE, "--attach: the files add up to more than %u bytes", ATTACH_BYTES_MAX);
    }
    const char *slash = strrchr(path, '/');
    json_t *a = json_pack("{s:s}", "name", slash ? slash + 1 : path), *t = text_of(data, len);
    if (t) {
        json_object_set_new(a, "text", t);
    } else {
        char *b = cli_client_b64_encode(data, len);
        json_object_set_new(a, "base64", json_string(b ? b : ""));
        free(b);
    }
    free(data);
    json_array_append_new(atts, a);
    return 0;
}

static int add_rule(json_t *body, const char *action, const char *pattern)
{
    json_t *perm = json_object_get(body, "permissions");
    if (!perm)
        json_object_set_new(body, "permissions", perm = json_pack("{s:s,s:[]}", "default", "allow", "rules"));
    json_t *rule = strncmp(pattern, "kind=", 5) == 0 ? json_pack("{s:s}", "kind", pattern + 5)
                                                      : json_pack("{s:s}", "pattern", pattern);
    if (!rule)
        return cli_fail(CLI_EXIT_USAGE, "--%s '%s': must be UTF-8", action, pattern);
    json_object_set_new(rule, "action", json_string(action));
    json_array_append_new(json_object_get(perm, "rules"), rule);
    return 0;
}

static json_t *array_at(json_t *body, const char *key)
{
    json_t *a = json_object_get(body, key);
    if (!a)
        json_object_set_new(body, key, a = json_array());
    return a;
}

/* The prompt: the words joined by spaces, or stdin for "-". */
static int set_prompt(json_t *body, int argc, char **argv)
{
    if (argc == 0)
        return usage_fail("run", "%sa PROMPT is required, e.g. cell agent run 'fix the failing test'", "");
    char *text = NULL;
    size_t len = 0;
    if (argc == 1 && strcmp(argv[0], "-") == 0) {
        text = malloc(PROMPT_MAX + 1);
        ssize_t n = text ? util_read_all(0, text, PROMPT_MAX + 1) : -1;
        if (n < 0) {
            free(text);
            return cli_fail(CLI_EXIT_USAGE, "cannot read the prompt from stdin: %s", strerror(errno));
        }
        len = (size_t)n;
    } else {
        http1_buf b = { 0 };
        for (int i = 0; i < argc; i++) {
            if (i)
                cli_http1_buf_add(&b, " ", 1);
            cli_http1_buf_add(&b, argv[i], strlen(argv[i]));
        }
        text = b.data, len = b.len;
    }
    json_t *p = len <= PROMPT_MAX && text ? text_of(text, len) : NULL;
    free(text);
    if (!p)
        return cli_fail(CLI_EXIT_USAGE, len > PROMPT_MAX ? "the prompt is larger than 1 MiB"
                                                         : "the prompt must be non-empty UTF-8 text");
    if (!json_string_length(p)) {
        json_decref(p);
        return cli_fail(CLI_EXIT_USAGE, "the prompt is empty");
    }
    json_object_set_new(body, "prompt", p);
    return 0;
}

enum {
    O_AGENT = 256, O_REPO, O_NO_REPO, O_MODEL, O_INSTR, O_SKILL, O_MCP, O_POLICY, O_KEY, O_TIMEOUT, O_KEEP,
    O_SCHEMA, O_ATTACH, O_RESUME, O_FORK, O_ALLOW, O_DENY, O_ASK, O_IMAGE, O_JSON, O_DIFF, O_APPLY, O_DETACH,
    O_UPLOAD, O_HELP,
};

const struct option cli_agent_run_options[] = {
    { "agent", required_argument, NULL, O_AGENT }, { "repo", required_argument, NULL, O_REPO },
    { "no-repo", no_argument, NULL, O_NO_REPO }, { "model", required_argument, NULL, O_MODEL },
    { "instructions", required_argument, NULL, O_INSTR }, { "skill", required_argument, NULL, O_SKILL },
    { "mcp", required_argument, NULL, O_MCP }, { "policy", required_argument, NULL, O_POLICY },
    { "key", required_argument, NULL, O_KEY }, { "timeout", required_argument, NULL, O_TIMEOUT },
    { "keep", required_argument, NULL, O_KEEP }, { "output-schema", required_argument, NULL, O_SCHEMA },
    { "attach", required_argument, NULL, O_ATTACH }, { "resume", required_argument, NULL, O_RESUME },
    { "fork", no_argument, NULL, O_FORK }, { "allow", required_argument, NULL, O_ALLOW },
    { "deny", required_argument, NULL, O_DENY }, { "ask", required_argument, NULL, O_ASK },
    { "image", required_argument, NULL, O_IMAGE }, { "json", no_argument, NULL, O_JSON },
    { "diff", no_argument, NULL, O_DIFF }, { "apply", no_argument, NULL, O_APPLY },
    { "detach", no_argument, NULL, O_DETACH }, { "upload", no_argument, NULL, O_UPLOAD },
    { "help", no_argument, NULL, O_HELP }, { 0 },
};

static int set_string(json_t *body, const char *key, const char *opt, const char *v)
{
    json_t *s = json_string(v);
    if (!s)
        return cli_fail(CLI_EXIT_USAGE, "%s '%s': must be UTF-8", opt, v);
    json_object_set_new(body, key, s);
    return 0;
}

static int run_option(struct run_args *a, int o, const char *v, size_t *att_total)
{
    json_t *b = a->body, *j = NULL;
    char *text = NULL;
    size_t len = 0;
    long long n;
    char *end;
    switch (o) {
    case O_AGENT: return set_string(b, "agent", "--agent", v);
    case O_REPO: a->repo = v; return 0;
    case O_NO_REPO: a->repo = NULL; return 0;
    case O_MODEL: return set_string(b, "model", "--model", v);
    case O_IMAGE: return set_string(b, "image", "--image", v);
    case O_INSTR:
        if (read_small("--instructions", v, INSTR_MAX, &text, &len))
            return CLI_EXIT_USAGE;
        j = text_of(text, len);
        free(text);
        if (!j)
            return cli_fail(CLI_EXIT_USAGE, "--instructions %s: not UTF-8 text", v);
        return json_object_set_new(b, "instructions", j), 0;
    case O_SKILL: return add_skill(array_at(b, "skills"), v);
    case O_MCP: return add_mcp(array_at(b, "mcp"), v);
    case O_POLICY:
        if (load_json_file("--policy", v, &j))
            return CLI_EXIT_USAGE;
        return json_object_set_new(b, "policy", j), 0;
    case O_SCHEMA:
        if (load_json_file("--output-schema", v, &j))
            return CLI_EXIT_USAGE;
        return json_object_set_new(b, "output_schema", j), 0;
    case O_KEY:
        if (!*v || *v == ',')
            return usage_fail("run", "--key '%s': expected SECRET[,base=URL][,provider=P], SECRET being the name "
                              "of one of your secrets (cell secret set)", v);
        j = cli_key_spec("--key", v, v);
        return j ? (json_object_set_new(b, "key", j), 0) : CLI_EXIT_USAGE;
    case O_TIMEOUT:
        errno = 0;
        n = strtoll(v, &end, 10);
        if (!*v || *end || errno || n < 1 || n > 86400)
            return usage_fail("run", "--timeout '%s': expected whole seconds from 1 to 86400", v);
        return json_object_set_new(b, "timeout_s", json_integer(n)), 0;
    case O_KEEP:
        if (strcmp(v, "nothing") && strcmp(v, "lane") && strcmp(v, "cell"))
            return usage_fail("run", "--keep '%s': expected nothing, lane or cell", v);
        return set_string(b, "keep", "--keep", v);
    case O_ATTACH: return add_attachment(array_at(b, "attachments"), v, att_total);
    case O_RESUME:
        if (!*v)
            return usage_fail("run", "--resume '%s': expected a run id or last", v);
        j = strcmp(v, "last") == 0 ? json_pack("{s:b}", "last", 1) : json_pack("{s:s}", "run", v);
        if (!j)
            return cli_fail(CLI_EXIT_USAGE, "--resume: must be UTF-8");
        return json_object_set_new(b, "resume", j), 0;
    case O_FORK:
        if (!json_object_get(b, "resume"))
            return usage_fail("run", "--fork %sgoes after --resume RUN|last", "");
        return json_object_set_new(json_object_get(b, "resume"), "fork", json_true()), 0;
    case O_ALLOW: return add_rule(b, "allow", v);
    case O_DENY: return add_rule(b, "deny", v);
    case O_ASK: return add_rule(b, "ask", v);
    case O_JSON: a->json = 1; return 0;
    case O_DIFF: a->diff = 1; return 0;
    case O_APPLY: a->apply = 1; return 0;
    case O_DETACH: a->detach = 1; return 0;
    case O_UPLOAD: a->upload = 1; return 0;
    }
    return CLI_EXIT_USAGE;
}

static int parse_run(struct run_args *a, int argc, char **argv)
{
    size_t att_total = 0;
    a->repo = ".";
    json_object_set_new(a->body, "agent", json_string("codex"));
    optind = 0;
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, ":h", cli_agent_run_options, NULL)) != -1) {
        if (o == 'h' || o == O_HELP) {
            fputs(run_usage, stdout);
            return -1;
        }
        if (o == '?' || o == ':')
            return cli_getopt_fail("agent run", o, argc, argv);
        int rc = run_option(a, o, optarg, &att_total);
        if (rc)
            return rc;
    }
    if (json_object_get(a->body, "resume") && a->repo && strcmp(a->repo, ".") == 0)
        a->repo = NULL;         /* a resumed run starts on its predecessor's repository */
    return set_prompt(a->body, argc - optind, argv + optind);
}

/* ---- children (git, tar) ---------------------------------------------------------------------- */
/* Start argv (searched in PATH, no shell) with the given stdin/stdout/stderr
 * (-1: /dev/null).  0 with *pid, or -1 with errno. */
static int spawn(const char *const *argv, int in, int out, int err, pid_t *pid)
{
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0)
        return -1;
    int fds[3] = { in, out, err }, rc = 0;
    for (int i = 0; i < 3 && rc == 0; i++)
        rc = fds[i] >= 0 ? posix_spawn_file_actions_adddup2(&fa, fds[i], i)
                         : posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i ? O_WRONLY : O_RDONLY, 0);
    if (rc == 0)
        rc = posix_spawnp(pid, argv[0], &fa, NULL, (char *const *)argv, environ);
    posix_spawn_file_actions_destroy(&fa);
    if (rc)
        errno = rc;
    return rc ? -1 : 0;
}

/* Its exit code; 128+N for a signal, -1 when it could not be waited for. */
static int reap(pid_t pid)
{
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* Run argv to completion with stdin `in`; its stdout (up to `max` bytes, when
 * `out` is given) and exit code.  -1 when it could not start. */
static int run_capture(const char *const *argv, int in, char **out, size_t max, int merge_err)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0)
        return -1;
    pid_t pid;
    if (spawn(argv, in, p[1], merge_err ? p[1] : -1, &pid) < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    close(p[1]);
    http1_buf b = { 0 };
    char buf[4096];
    for (;;) {
        ssize_t n = read(p[0], buf, sizeof buf);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        if (b.len < max)
            cli_http1_buf_add(&b, buf, (size_t)n > max - b.len ? max - b.len : (size_t)n);
    }
    close(p[0]);
    int code = reap(pid);
    if (out)
        *out = b.data ? b.data : strdup("");
    else
        free(b.data);
    return code;
}

static int is_git_worktree(const char *dir)
{
    const char *argv[] = { "git", "-C", dir, "rev-parse", "--is-inside-work-tree", NULL };
    char *out = NULL;
    int code = run_capture(argv, -1, &out, 64, 0);
    int yes = code == 0 && out && strncmp(out, "true", 4) == 0;
    free(out);
    return yes;
}

/* ---- upload ----------------------------------------------------------------------------------- */
/* DIR as a tar stream (GNU tar; a git work tree: the files git lists,
 * honouring .gitignore) sent as POST /v1/runs/uploads; the upload's id. */
static int upload_repo(client *c, const char *dir, char **id)
{
    int git = is_git_worktree(dir);
    int list[2] = { -1, -1 }, tarp[2];
    if (git && pipe2(list, O_CLOEXEC) < 0)
        return cli_fail(CLI_EXIT_INTERNAL, "pipe: %s", strerror(errno));
    if (pipe2(tarp, O_CLOEXEC) < 0) {
        int e = errno;
        if (git) {
            close(list[0]);
            close(list[1]);
        }
        return cli_fail(CLI_EXIT_INTERNAL, "pipe: %s", strerror(e));
    }
    const char *git_argv[] = { "git", "-c", "core.fsmonitor=false", "-C", dir, "ls-files", "-z", "-c", "-o",
                               "--exclude-standard", NULL };
    const char *tar_git[] = { "tar", "--create", "--file=-", "--directory", dir, "--owner=0", "--group=0",
                              "--numeric-owner", "--ignore-failed-read", "--null", "--verbatim-files-from",
                              "--files-from=-", NULL };
    const char *tar_all[] = { "tar", "--create", "--file=-", "--directory", dir, "--owner=0", "--group=0",
                              "--numeric-owner", ".", NULL };
    pid_t gpid = -1, tpid = -1;
    int rc = 0;
    if (git && spawn(git_argv, -1, list[1], 2, &gpid) < 0)
        rc = cli_fail(CLI_EXIT_INTERNAL, "cannot run git: %s", strerror(errno));
    if (rc == 0 && spawn(git ? tar_git : tar_all, git ? list[0] : -1, tarp[1], 2, &tpid) < 0)
        rc = cli_fail(CLI_EXIT_INTERNAL, "cannot run tar (GNU tar is needed to upload %s): %s", dir, strerror(errno));
    if (git) {
        close(list[0]);
        close(list[1]);
    }
    close(tarp[1]);
    json_t *reply = NULL;
    if (rc == 0) {
        fprintf(stderr, "cell: uploading %s%s\n", dir, git ? " (the files git tracks or does not ignore)" : "");
        rc = cli_client_upload(c, "POST", "/v1/runs/uploads", tarp[0], -1, "upload", &reply);
    }
    close(tarp[0]);
    /* A refused upload leaves them writing into a closed pipe: SIGPIPE ends them. */
    int gcode = gpid > 0 ? reap(gpid) : 0, tcode = tpid > 0 ? reap(tpid) : 0;
    if (rc == 0 && (gcode != 0 || tcode > 1))
        rc = cli_fail(CLI_EXIT_INTERNAL, "packing %s failed (%s exited with %d)", dir, gcode ? "git" : "tar",
                      gcode ? gcode : tcode);
    const char *up = str_of(reply, "upload");
    if (rc == 0 && (!up || !*up || strlen(up) > 64))
        rc = cli_fail(CLI_EXIT_INTERNAL, "the daemon's answer to the upload has no upload id");
    if (rc == 0)
        *id = strdup(up);
    json_decref(reply);
    return rc;
}

/* ---- creating the run ------------------------------------------------------------------------ */
/* A run id from the daemon goes into paths: exactly what the API makes. */
static int valid_run_id(const char *id)
{
    if (!id || strlen(id) != 16)
        return 0;
    for (const char *p = id; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
            return 0;
    return 1;
}

static int post_run(client *c, json_t *body, long *status, json_t **reply)
{
    return cli_client_json_status(c, "POST", "/v1/runs", body, status, reply);
}

/* The repository: a local daemon reads DIR in place unless it refuses the
 * path (403) or --upload; a remote one always gets a tar. */
static int create_run(client *c, struct run_args *a, char **dir, json_t **run)
{
    long status = 0;
    json_t *reply = NULL;
    int rc = 0, path_sent = 0;
    if (a->repo) {
        *dir = realpath(a->repo, NULL);
        struct stat st;
        if (!*dir || stat(*dir, &st) < 0 || !S_ISDIR(st.st_mode))
            return cli_fail(CLI_EXIT_USAGE, "--repo %s: %s", a->repo, *dir ? "not a directory" : strerror(errno));
        if (c->sock && !a->upload) {
            json_object_set_new(a->body, "repo", json_pack("{s:s}", "path", *dir));
            path_sent = 1;
        }
    }
    if (!a->repo || path_sent) {
        rc = post_run(c, a->body, &status, &reply);
        if (rc)
            return rc;
        if (path_sent && status == 403) {
            fprintf(stderr, "cell: the daemon does not let this token run on a host directory; uploading it\n");
            json_decref(reply);
            reply = NULL;
            status = 0;
        }
    }
    if (a->repo && !status) {
        char *up = NULL;
        if ((rc = upload_repo(c, *dir, &up)))
            return rc;
        json_object_set_new(a->body, "repo", json_pack("{s:s}", "upload", up));
        free(up);
        if ((rc = post_run(c, a->body, &status, &reply)))
            return rc;
    }
    if (status < 200 || status >= 300) {
        rc = cli_client_reply_error(c, status, reply, "run");
        json_decref(reply);
        return rc;
    }
    if (!json_is_object(reply) || !valid_run_id(str_of(reply, "id"))) {
        json_decref(reply);
        return cli_fail(CLI_EXIT_INTERNAL, "the daemon's answer to POST /v1/runs has no valid run id (16 hex digits)");
    }
    *run = reply;
    return 0;
}

/* ---- events --------------------------------------------------------------------------------- */
enum mid { MID_NONE, MID_OUT, MID_THOUGHT };

struct follow {
    client     *c;
    const char *id;
    FILE       *prog;           /* progress lines: stderr (run) or stdout (runs events) */
    int         json;
    int         ask;            /* permission asks are answered on this terminal */
    int         out_tty;
    enum mid    mid;            /* a message is being written without its newline yet */
    http1_buf   line;           /* the SSE line being received */
    int         skip_line;      /* the rest of an oversized line is dropped */
    int         skipping;       /* the rest of the event (up to its blank line) is dropped */
    http1_buf   data;           /* the event's data lines */
    char        event_id[24];   /* the event's id: field, digits only */
    char        last_id[24];    /* the last dispatched event's id (Last-Event-ID) */
    long long   last_seq;
    int         finished;       /* run.finished came */
    int         progressed;     /* an event came on this connection */
    int         bad;            /* events skipped as malformed or oversized */
    int         text_seen;      /* an assistant message.delta was written */
};

static void end_mid(struct follow *f)
{
    if (f->mid == MID_OUT && (f->out_tty || f->prog == stdout))
        fputc('\n', stdout);
    else if (f->mid == MID_THOUGHT)
        fputc('\n', f->prog);
    fflush(stdout);
    f->mid = MID_NONE;
}

/* A progress line: its prefix, after any message in flight is ended. */
static FILE *prog_line(struct follow *f)
{
    end_mid(f);
    return f->prog;
}

static void print_delta(struct follow *f, json_t *ev)
{
    json_t *text = json_object_get(ev, "text");
    const char *s = json_string_value(text);
    if (!s)
        return;
    size_t n = json_string_length(text);
    const char *role = str_of(ev, "role");
    if (role && strcmp(role, "thought") == 0) {
        if (f->mid != MID_THOUGHT) {
            end_mid(f);
            fputs("(thinking) ", f->prog);
        }
        put_safe(f->prog, s, n, 0);
        f->mid = MID_THOUGHT;
        return;
    }
    if (f->mid == MID_THOUGHT)
        end_mid(f);
    f->text_seen = 1;
    /* To a pipe or file the text goes as it is: it is the run's output. */
    if (f->out_tty)
        put_safe(stdout, s, n, 1);
    else
        fwrite(s, 1, n, stdout);
    f->mid = n && s[n - 1] == '\n' ? MID_NONE : MID_OUT;
    fflush(stdout);
}

static long long int_of(json_t *o, const char *key, long long dflt)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) ? (long long)json_integer_value(v) : dflt;
}

/* y/N on the terminal, then the decision POSTed; a failed POST is only reported. */
static void ask_permission(struct follow *f, json_t *ev)
{
    const char *req = str_of(ev, "requestId");
    if (!req || !f->ask) {
        fputs("  waiting for a decision (the run's policy, or POST .../permissions/REQID)\n", f->prog);
        return;
    }
    fputs("  allow? [y/N] ", stderr);
    fflush(stderr);
    char line[64];
    const char *decision = "deny";
    if (fgets(line, sizeof line, stdin) && (line[0] == 'y' || line[0] == 'Y'))
        decision = "allow";
    if (atomic_load(&interrupted))
        return;                 /* Ctrl-C at the prompt: the run is canceled instead */
    char *path = cli_client_pathf("/v1/runs/%s/permissions/%s", f->id, req);
    json_t *body = json_pack("{s:s}", "decision", decision), *reply = NULL;
    long status = 0;
    if (path && cli_client_json_status(f->c, "POST", path, body, &status, &reply) == 0) {
        if (status == 409)
            fputs("  (already decided)\n", stderr);
        else if (status < 200 || status >= 300)
            cli_client_reply_error(f->c, status, reply, "permission");
    }
    json_decref(reply);
    json_decref(body);
    free(path);
}

static void print_plan(FILE *p, json_t *entries)
{
    size_t i;
    json_t *e;
    fputs("plan:\n", p);
    json_array_foreach(entries, i, e) {
        if (i >= 50)
            break;
        fputs("  [", p);
        put_str(p, json_object_get(e, "status"), 20);
        fputs("] ", p);
        put_str(p, json_object_get(e, "content"), 300);
        fputc('\n', p);
    }
}

static void print_event(struct follow *f, const char *type, json_t *ev)
{
    FILE *p;
    if (strcmp(type, "message.delta") == 0) {
        print_delta(f, ev);
    } else if (strcmp(type, "run.status") == 0) {
        fprintf(p = prog_line(f), "run %s: ", f->id);
        put_str(p, json_object_get(ev, "status"), 20);
        fputc('\n', p);
    } else if (strcmp(type, "run.started") == 0) {
        fprintf(p = prog_line(f), "run %s: agent ", f->id);
        put_str(p, json_object_get(ev, "agent"), 40);
        fputs(" in cell ", p);
        put_str(p, json_object_get(ev, "cellId"), 40);
        fputc('\n', p);
    } else if (strcmp(type, "agent.started") == 0) {
        fputs("agent started\n", prog_line(f));
    } else if (strcmp(type, "tool.call") == 0) {
        fputs("* ", p = prog_line(f));
        put_str(p, json_object_get(ev, "title"), 300);
        fputs(" [", p);
        put_str(p, json_object_get(ev, "kind"), 20);
        fputs("]\n", p);
    } else if (strcmp(type, "tool.result") == 0) {
        const char *st = str_of(ev, "status");
        if (st && strcmp(st, "failed") == 0) {
            fputs("  failed", p = prog_line(f));
            if (json_is_string(json_object_get(ev, "output"))) {
                fputs(": ", p);
                put_str(p, json_object_get(ev, "output"), 300);
            }
            fputc('\n', p);
        }
    } else if (strcmp(type, "command") == 0) {
        fputs("$ ", p = prog_line(f));
        put_str(p, json_object_get(ev, "command"), 1000);
        fputc('\n', p);
    } else if (strcmp(type, "command.exit") == 0) {
        fprintf(prog_line(f), "  exit %lld\n", int_of(ev, "exitCode", -1));
    } else if (strcmp(type, "file.change") == 0) {
        const char *k = str_of(ev, "kind");
        fprintf(p = prog_line(f), "  %c ", k && strcmp(k, "added") == 0 ? 'A' : k && strcmp(k, "deleted") == 0 ? 'D' : 'M');
        put_str(p, json_object_get(ev, "path"), 1000);
        fputc('\n', p);
    } else if (strcmp(type, "plan") == 0) {
        print_plan(prog_line(f), json_object_get(ev, "entries"));
    } else if (strcmp(type, "permission.asked") == 0) {
        fputs("? permission for ", p = prog_line(f));
        put_str(p, json_object_get(ev, "kind"), 20);
        fputs(": ", p);
        put_str(p, json_object_get(ev, "title"), 300);
        if (json_is_string(json_object_get(ev, "command"))) {
            fputs("\n  $ ", p);
            put_str(p, json_object_get(ev, "command"), 1000);
        }
        fputc('\n', p);
        fflush(p);
        ask_permission(f, ev);
    } else if (strcmp(type, "permission.decided") == 0) {
        fputs("  ", p = prog_line(f));
        put_str(p, json_object_get(ev, "decision"), 10);
        fputs(" (by ", p);
        put_str(p, json_object_get(ev, "by"), 10);
        fputs(")\n", p);
    } else if (strcmp(type, "agent.exited") == 0) {
        fprintf(prog_line(f), "agent exited with %lld\n", int_of(ev, "exitCode", -1));
    } else if (strcmp(type, "error") == 0) {
        fputs("error: ", p = prog_line(f));
        put_str(p, json_object_get(ev, "message"), 2000);
        fputc('\n', p);
    } else if (strcmp(type, "events.dropped") == 0) {
        fprintf(prog_line(f), "(%lld events were dropped by the daemon)\n", int_of(ev, "count", 0));
    }
    fflush(f->prog);
}

/* One whole event: its JSON printed (--json) or told, once. */
static void dispatch(struct follow *f)
{
    if (f->data.oom || !f->data.len)
        return;
    json_t *ev = json_loadb(f->data.data, f->data.len, 0, NULL);
    const char *type = str_of(ev, "type");
    long long seq = int_of(ev, "seq", -1);
    if (!json_is_object(ev) || !type) {
        f->bad++;
        fprintf(prog_line(f), "cell: skipped an event that is not a JSON object with a type\n");
    } else if (seq >= 0 && seq <= f->last_seq) {
        /* A replay after a reconnect: seen already. */
    } else {
        if (seq >= 0)
            f->last_seq = seq;
        f->progressed = 1;
        if (f->json) {
            json_dumpf(ev, stdout, JSON_COMPACT);
            fputc('\n', stdout);
            fflush(stdout);
        } else {
            print_event(f, type, ev);
        }
        if (strcmp(type, "run.finished") == 0)
            f->finished = 1;
    }
    if (f->event_id[0])
        memcpy(f->last_id, f->event_id, sizeof f->last_id);
    json_decref(ev);
}

/* One SSE line (RFC: "field: value"; a blank line ends the event). */
static void sse_line(struct follow *f, const char *s, size_t n)
{
    if (n == 0) {
        if (!f->skipping)
            dispatch(f);
        f->skipping = 0;
        f->data.len = 0;
        f->data.oom = 0;
        f->event_id[0] = '\0';
        return;
    }
    if (f->skipping || s[0] == ':')
        return;
    const char *colon = memchr(s, ':', n);
    size_t name = colon ? (size_t)(colon - s) : n;
    const char *v = colon ? colon + 1 : s + n;
    if (v < s + n && *v == ' ')
        v++;
    size_t vn = (size_t)(s + n - v);
    if (name == 4 && strncmp(s, "data", 4) == 0) {
        if (f->data.len)
            cli_http1_buf_add(&f->data, "\n", 1);
        if (f->data.len + vn > SSE_MAX) {
            f->skipping = 1;
            f->bad++;
            fprintf(prog_line(f), "cell: skipped an event larger than %u MiB\n", SSE_MAX >> 20);
            return;
        }
        cli_http1_buf_add(&f->data, v, vn);
    } else if (name == 2 && strncmp(s, "id", 2) == 0) {
        /* It goes back in a header: digits only, or it is ignored. */
        int ok = vn > 0 && vn < sizeof f->event_id;
        for (size_t i = 0; ok && i < vn; i++)
            ok = v[i] >= '0' && v[i] <= '9';
        if (ok) {
            memcpy(f->event_id, v, vn);
            f->event_id[vn] = '\0';
        }
    }
}

static int sse_data(void *user, const char *p, size_t n)
{
    struct follow *f = user;
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        if (!f->skip_line && f->line.len + take > SSE_MAX) {
            f->bad++;
            fprintf(prog_line(f), "cell: skipped an event line larger than %u MiB\n", SSE_MAX >> 20);
            f->skip_line = 1;
            f->line.len = 0;
        } else if (!f->skip_line) {
            cli_http1_buf_add(&f->line, p, take);
        }
        if (nl && f->skip_line) {
            /* The oversized line ends; the event it was part of goes too. */
            f->skip_line = 0;
            f->skipping = 1;
        } else if (nl) {
            size_t len = f->line.len;
            if (len && f->line.data[len - 1] == '\r')
                len--;
            if (f->line.oom)
                return -1;
            sse_line(f, f->line.data ? f->line.data : "", len);
            f->line.len = 0;
        }
        p += take + (nl != NULL), n -= take + (nl != NULL);
        if (f->finished)
            return -1;          /* nothing after run.finished is ours to read */
    }
    return 0;
}

/* Wait `ms`, or less when a signal comes. */
static void nap(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    nanosleep(&ts, NULL);
}

static int cancel_run(client *c, const char *id)
{
    char *path = cli_client_pathf("/v1/runs/%s", id);
    long status = 0;
    json_t *reply = NULL;
    int rc = path ? cli_client_json_status(c, "DELETE", path, NULL, &status, &reply) : CLI_EXIT_INTERNAL;
    if (rc == 0 && status != 202 && status != 204)
        rc = cli_client_reply_error(c, status, reply, "cancel");
    json_decref(reply);
    free(path);
    return rc;
}

/* GET the events (following unless !follow) until run.finished, reconnecting
 * from the last event's id when the stream ends early.  During a run (cancel
 * set) an interrupt sends the cancel once; a second one gives up. */
static int follow_events(struct follow *f, int follow, int cancel)
{
    char *path = cli_client_pathf(follow ? "/v1/runs/%s/events" : "/v1/runs/%s/events?follow=false", f->id);
    if (!path)
        return cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    int rc = 0, idle = 0, canceled = 0;
    for (;;) {
        char hdr[64];
        snprintf(hdr, sizeof hdr, "Last-Event-ID: %s", f->last_id);
        f->progressed = 0;
        f->line.len = f->data.len = 0;
        f->skipping = f->skip_line = 0;
        rc = cli_client_get_stream_hdr(f->c, path, f->last_id[0] ? hdr : NULL, sse_data, f, &stream_stop, "events");
        end_mid(f);
        if (f->finished || !follow) {
            if (rc < 0)         /* -1: sse_data stopped it, at run.finished or out of memory */
                rc = f->finished ? 0 : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
            break;
        }
        if (atomic_load(&interrupted)) {
            if (!cancel || canceled || atomic_load(&interrupted) > 1) {
                rc = EXIT_CANCELED;
                break;
            }
            fprintf(stderr, "cell: canceling run %s (Ctrl-C again to stop waiting)\n", f->id);
            canceled = 1;
            atomic_store(&stream_stop, 0);
            if ((rc = cancel_run(f->c, f->id)) != 0)
                break;
            continue;
        }
        if (rc == CLI_EXIT_REFUSED || rc == CLI_EXIT_USAGE)
            break;              /* 4xx: the run is gone or not ours */
        idle = f->progressed ? 0 : idle + 1;
        if (idle > FOLLOW_RETRIES) {
            rc = cli_fail(CLI_EXIT_INTERNAL, "the events of run %s keep ending before run.finished; giving up "
                          "(see cell agent runs show %s)", f->id, f->id);
            break;
        }
        fprintf(stderr, "cell: the event stream ended early; reconnecting\n");
        /* Backing off to 1 s: long enough for a daemon's restart to be waited out. */
        nap(idle == 0 ? 50 : idle < 4 ? 100L << idle : 1000);
    }
    free(path);
    free(f->line.data);
    free(f->data.data);
    f->line = f->data = (http1_buf){ 0 };
    return rc;
}

/* ---- results ----------------------------------------------------------------------------------- */
static int get_run(client *c, const char *id, json_t **run)
{
    char *path = cli_client_pathf("/v1/runs/%s", id);
    int rc = path ? cli_client_json(c, "GET", path, NULL, "run", run) : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    if (rc == 0 && !json_is_object(*run)) {
        json_decref(*run);
        *run = NULL;
        rc = cli_fail(CLI_EXIT_INTERNAL, "the daemon's answer for run %s is not a run", id);
    }
    return rc;
}

/* The run's exit code: the agent's, 130 canceled, 124 timed out, else 1. */
static int exit_of(json_t *run)
{
    const char *st = str_of(run, "status");
    json_t *code = json_object_get(json_object_get(run, "result"), "exitCode");
    if (!st)
        return CLI_EXIT_INTERNAL;
    if (strcmp(st, "canceled") == 0)
        return EXIT_CANCELED;
    if (strcmp(st, "timed_out") == 0)
        return CLI_EXIT_TIMEOUT;
    int ok = strcmp(st, "succeeded") == 0;
    if (json_is_integer(code)) {
        json_int_t v = json_integer_value(code);
        if (v > 0 && v < 256)
            return (int)v;
        if (v == 0)
            return ok ? 0 : 1;
        return 1;
    }
    return ok ? 0 : 1;
}

static void print_files(FILE *p, json_t *files)
{
    size_t i;
    json_t *e;
    json_array_foreach(files, i, e) {
        const char *st = str_of(e, "status");
        char k = !st ? '?' : strcmp(st, "added") == 0 ? 'A' : strcmp(st, "deleted") == 0 ? 'D'
               : strcmp(st, "renamed") == 0 ? 'R' : 'M';
        fprintf(p, "  %c ", k);
        put_str(p, json_object_get(e, "path"), 1000);
        fputs(json_is_true(json_object_get(e, "binary")) ? " (binary)\n" : "\n", p);
    }
}

static void print_summary(FILE *p, const char *id, json_t *run)
{
    json_t *res = json_object_get(run, "result"), *usage = json_object_get(res, "usage");
    json_t *err = json_object_get(res, "error"), *files = json_object_get(res, "changedFiles");
    fprintf(p, "run %s ", id);
    put_str(p, json_object_get(run, "status"), 20);
    json_t *code = json_object_get(res, "exitCode");
    if (json_is_integer(code))
        fprintf(p, ", exit %lld", (long long)json_integer_value(code));
    if (json_is_integer(json_object_get(res, "durationMs")))
        fprintf(p, ", %.1f s", (double)int_of(res, "durationMs", 0) / 1000.0);
    fputc('\n', p);
    if (json_is_object(err)) {
        fputs("error: ", p);
        put_str(p, json_object_get(err, "type"), 100);
        fputs(": ", p);
        put_str(p, json_object_get(err, "message"), 2000);
        fputc('\n', p);
    }
    fprintf(p, "changed files: %zu\n", json_array_size(files));
    print_files(p, files);
    if (json_is_object(usage))
        fprintf(p, "usage: %lld input, %lld output, %lld total tokens\n", int_of(usage, "inputTokens", 0),
                int_of(usage, "outputTokens", 0), int_of(usage, "totalTokens", 0));
    static const char *const kept[] = { "cellId", "lane" };
    for (int i = 0; i < 2; i++)
        if (json_is_string(json_object_get(res, kept[i]))) {
            fprintf(p, "kept %s: ", i ? "lane" : "cell");
            put_str(p, json_object_get(res, kept[i]), 100);
            fputc('\n', p);
        }
    fflush(p);
}

/* The daemon keeps at most 64 MiB of patch; more is a hostile daemon filling a disk. */
#define PATCH_MAX (64ull << 20)

struct to_fd {
    int    fd;
    int    tty;
    int    failed;
    size_t bytes;
};

static int write_piece(void *user, const char *p, size_t n)
{
    struct to_fd *t = user;
    if ((t->bytes += n) > PATCH_MAX) {
        t->failed = EFBIG;
        return -1;
    }
    if (t->tty) {
        put_safe(stdout, p, n, 1);
        return 0;
    }
    if (util_write_all(t->fd, p, n) < 0) {
        t->failed = errno;
        return -1;
    }
    return 0;
}

/* GET the run's diff.patch artifact into fd (stdout: escaped on a terminal). */
static int fetch_patch(client *c, const char *id, int fd)
{
    char *path = cli_client_pathf("/v1/runs/%s/artifacts/diff.patch", id);
    struct to_fd t = { .fd = fd, .tty = fd == 1 && isatty(1) };
    int rc = path ? cli_client_get_stream(c, path, write_piece, &t, NULL, "diff")
                  : cli_fail(CLI_EXIT_INTERNAL, "out of memory");
    free(path);
    fflush(stdout);
    if (rc < 0 && t.failed == EFBIG)
        rc = cli_fail(CLI_EXIT_INTERNAL, "the daemon's patch of run %s is larger than 64 MiB", id);
    else if (rc < 0)
        rc = cli_fail(CLI_EXIT_INTERNAL, "cannot write the patch: %s", strerror(t.failed));
    return rc;
}

static int print_diff(client *c, const char *id, json_t *run)
{
    json_t *res = json_object_get(run, "result"), *diff = json_object_get(res, "diff");
    if (!json_is_object(res))
        return cli_fail(CLI_EXIT_REFUSED, "run %s has no result yet", id);
    if (json_is_true(json_object_get(res, "diffTruncated")) || !json_is_string(diff))
        return fetch_patch(c, id, 1);
    struct to_fd t = { .fd = 1, .tty = isatty(1) };
    fflush(stdout);
    write_piece(&t, json_string_value(diff), json_string_length(diff));
    fflush(stdout);
    return 0;
}

static void print_conflicts(json_t *reply)
{
    json_t *list = json_object_get(json_object_get(reply, "details"), "conflicts");
    size_t i;
    json_t *e;
    json_array_foreach(list, i, e) {
        fputs("  conflict: ", stderr);
        put_str(stderr, json_is_string(e) ? e : json_object_get(e, "path"), 1000);
        fputc('\n', stderr);
    }
}

/* A run on a host path: the daemon applies it (POST .../apply). */
static int apply_remote(client *c, const char *id, const char *where)
{
    char *path = cli_client_pathf("/v1/runs/%s/apply", id);
    long status = 0;
    json_t *reply = NULL;
    int rc = path ? cli_client_json_status(c, "POST", path, NULL, &status, &reply) : CLI_EXIT_INTERNAL;
    free(path);
    if (rc == 0 && status == 200) {
        fprintf(stderr, "cell: applied the change to %s (%zu files)\n", where,
                json_array_size(json_object_get(reply, "changedFiles")));
        print_files(stderr, json_object_get(reply, "changedFiles"));
    } else if (rc == 0) {
        rc = cli_client_reply_error(c, status, reply, "apply");
        print_conflicts(reply);
    }
    json_decref(reply);
    return rc;
}

/* An uploaded repository: `git apply --binary` here, in DIR, after a
 * --check that writes nothing.  git refuses paths that leave DIR, go
 * through a symlink or into .git. */
static int apply_local(client *c, const char *id, const char *dir)
{
    char tmpl[] = "/tmp/cell-patch-XXXXXX";
    _cleanup_close_ int fd = mkostemp(tmpl, O_CLOEXEC);
    if (fd < 0)
        return cli_fail(CLI_EXIT_INTERNAL, "a temporary file: %s", strerror(errno));
    unlink(tmpl);
    int rc = fetch_patch(c, id, fd);
    if (rc)
        return rc;
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size == 0) {
        fprintf(stderr, "cell: run %s changed nothing; nothing to apply\n", id);
        return 0;
    }
    /* In a subdirectory of a git work tree git apply reads the patch's
     * paths from the top: --directory puts them back under DIR. */
    char *prefix = NULL, *dir_opt = NULL;
    const char *pre_argv[] = { "git", "-C", dir, "rev-parse", "--show-prefix", NULL };
    if (is_git_worktree(dir) && run_capture(pre_argv, -1, &prefix, 4096, 0) == 0 && prefix) {
        prefix[strcspn(prefix, "\n")] = '\0';
        if (*prefix && asprintf(&dir_opt, "--directory=%s", prefix) < 0)
            dir_opt = NULL;
    }
    free(prefix);
    const char *check[] = { "git", "-C", dir, "apply", "--check", "--binary", dir_opt ? dir_opt : "--binary", "-", NULL };
    const char *apply[] = { "git", "-C", dir, "apply", "--binary", dir_opt ? dir_opt : "--binary", "-", NULL };
    char *out = NULL;
    int code = lseek(fd, 0, SEEK_SET) < 0 ? -1 : run_capture(check, fd, &out, 64 << 10, 1);
    if (code != 0) {
        rc = cli_fail(CLI_EXIT_REFUSED, "apply: the change of run %s does not apply to %s; nothing was written:", id, dir);
        put_safe(stderr, out ? out : "", out ? strlen(out) : 0, 1);
    } else if (lseek(fd, 0, SEEK_SET) < 0 || (code = run_capture(apply, fd, NULL, 0, 0)) != 0) {
        rc = cli_fail(CLI_EXIT_INTERNAL, "apply: git apply failed in %s (exit %d)", dir, code);
    } else {
        fprintf(stderr, "cell: applied the change of run %s to %s\n", id, dir);
    }
    free(out);
    free(dir_opt);
    return rc;
}

static int is_path_repo(json_t *run)
{
    return json_is_string(json_object_get(json_object_get(run, "repo"), "path"));
}

/* ---- cell agent run --------------------------------------------------------------------------- */
/* The shell agent streams no messages: its output is the result's. */
static void print_output(json_t *run)
{
    json_t *out = json_object_get(json_object_get(run, "result"), "output");
    const char *s = json_string_value(out);
    size_t n = json_string_length(out);
    if (!n)
        return;
    if (isatty(1))
        put_safe(stdout, s, n, 1);
    else
        fwrite(s, 1, n, stdout);
    if (isatty(1) && s[n - 1] != '\n')
        fputc('\n', stdout);
    fflush(stdout);
}

static int finish_run(client *c, struct run_args *a, const char *id, const char *dir, int text_seen)
{
    json_t *run = NULL;
    int rc = get_run(c, id, &run);
    if (rc)
        return rc;
    if (a->json) {
        json_dumpf(run, stdout, JSON_COMPACT);
        fputc('\n', stdout);
        fflush(stdout);
    } else {
        if (!text_seen)
            print_output(run);
        print_summary(stderr, id, run);
    }
    if (!a->json && a->diff)
        rc = print_diff(c, id, run);
    int code = exit_of(run);
    if (rc == 0 && a->apply) {
        const char *st = str_of(run, "status");
        if (!st || strcmp(st, "succeeded") != 0)
            rc = cli_fail(CLI_EXIT_REFUSED, "not applying: run %s did not succeed", id);
        else if (!dir)
            rc = cli_fail(CLI_EXIT_REFUSED, "not applying: run %s had no repository here", id);
        else
            rc = is_path_repo(run) ? apply_remote(c, id, dir) : apply_local(c, id, dir);
    }
    json_decref(run);
    return rc ? rc : code;
}

static int do_run(client *c, struct run_args *a)
{
    char *dir = NULL;
    json_t *run = NULL;
    int rc = create_run(c, a, &dir, &run);
    if (rc) {
        free(dir);
        return rc;
    }
    const char *id = str_of(run, "id");
    if (a->detach) {
        if (a->json)
            json_dumpf(run, stdout, JSON_COMPACT), fputc('\n', stdout);
        else
            printf("%s\n", id);
        json_decref(run);
        free(dir);
        return 0;
    }
    catch_interrupts();
    struct follow f = { .c = c, .id = id, .prog = stderr, .json = a->json, .last_seq = -1,
                        .ask = !a->json && isatty(0) && isatty(2), .out_tty = isatty(1) };
    rc = follow_events(&f, 1, 1);
    if (rc == 0 || (rc == EXIT_CANCELED && f.finished))
        rc = finish_run(c, a, id, dir, f.text_seen);
    json_decref(run);
    free(dir);
    return rc;
}

static int agent_run(struct cli_global *g, int argc, char **argv)
{
    struct run_args a = { .body = json_object(), .json = g->json };
    int rc = parse_run(&a, argc, argv);
    if (rc == 0) {
        client c;
        rc = cli_client_open(&c, g);
        if (rc == 0) {
            rc = do_run(&c, &a);
            cli_client_close(&c);
        }
    }
    json_decref(a.body);
    return rc < 0 ? 0 : rc;
}

/* ---- cell agent runs ----------------------------------------------------------------------- */
struct runs_args {
    int         json, follow;
    const char *status, *limit, *repo;
};

const struct option cli_agent_runs_options[] = {
    { "json", no_argument, NULL, 'j' }, { "follow", no_argument, NULL, 'f' },
    { "status", required_argument, NULL, 's' }, { "limit", required_argument, NULL, 'l' },
    { "repo", required_argument, NULL, 'r' }, { "help", no_argument, NULL, 'h' }, { 0 },
};

/* A table cell: the daemon's text escaped, padded to `width`, two spaces after. */
static void put_cell(FILE *f, json_t *v, int width)
{
    const char *s = json_string_value(v);
    int n = s ? (int)strlen(s) : 1;
    if (!s)
        fputc('-', f);
    else
        put_str(f, v, (size_t)width * 4);
    fprintf(f, "%*s  ", n < width ? width - n : 0, "");
}

static int runs_ls(client *c, struct runs_args *a)
{
    http1_buf q = { 0 };
    cli_http1_buf_add(&q, "/v1/runs", 8);
    char *part = NULL;
    if (a->status && (part = cli_client_pathf("?status=%s", a->status)))
        cli_http1_buf_add(&q, part, strlen(part));
    free(part);
    if (a->limit && (part = cli_client_pathf(a->status ? "&limit=%s" : "?limit=%s", a->limit)))
        cli_http1_buf_add(&q, part, strlen(part));
    free(part);
    json_t *reply = NULL;
    int rc = q.oom || !q.data ? cli_fail(CLI_EXIT_INTERNAL, "out of memory") : cli_client_json(c, "GET", q.data, NULL, "runs", &reply);
    free(q.data);
    if (rc)
        return rc;
    if (a->json) {
        cli_print_json(reply);
        return 0;
    }
    printf("%-16s  %-10s  %-8s  %4s  %-19s  %s\n", "ID", "STATUS", "AGENT", "EXIT", "CREATED (UTC)", "DURATION");
    size_t i;
    json_t *r;
    json_array_foreach(json_object_get(reply, "runs"), i, r) {
        char when[32], exit_s[16] = "-", dur[32] = "-";
        json_t *res = json_object_get(r, "result"), *code = json_object_get(res, "exitCode");
        cli_client_utc_ms(int_of(r, "createdAtMs", 0), when, sizeof when);
        if (json_is_integer(code))
            snprintf(exit_s, sizeof exit_s, "%lld", (long long)json_integer_value(code));
        if (json_is_integer(json_object_get(res, "durationMs")))
            snprintf(dur, sizeof dur, "%.1fs", (double)int_of(res, "durationMs", 0) / 1000.0);
        put_cell(stdout, json_object_get(r, "id"), 16);
        put_cell(stdout, json_object_get(r, "status"), 10);
        put_cell(stdout, json_object_get(r, "agent"), 8);
        printf("%4s  %-19s  %s\n", exit_s, when, dur);
    }
    json_decref(reply);
    return 0;
}

static int runs_show(client *c, struct runs_args *a, const char *id)
{
    json_t *run = NULL;
    int rc = get_run(c, id, &run);
    if (rc)
        return rc;
    if (a->json) {
        cli_print_json(run);
        return 0;
    }
    char when[32];
    cli_client_utc_ms(int_of(run, "createdAtMs", 0), when, sizeof when);
    fputs("agent: ", stdout);
    put_str(stdout, json_object_get(run, "agent"), 40);
    printf("\ncreated: %s UTC\n", when);
    if (json_is_string(json_object_get(run, "cellId"))) {
        fputs("cell: ", stdout);
        put_str(stdout, json_object_get(run, "cellId"), 40);
        fputc('\n', stdout);
    }
    print_summary(stdout, id, run);
    json_t *out = json_object_get(json_object_get(run, "result"), "output");
    if (json_string_length(out)) {
        fputs("output:\n", stdout);
        put_safe(stdout, json_string_value(out), json_string_length(out), 1);
        fputc('\n', stdout);
    }
    json_decref(run);
    return 0;
}

static int runs_events(client *c, struct runs_args *a, const char *id)
{
    struct follow f = { .c = c, .id = id, .prog = stdout, .json = a->json, .last_seq = -1, .out_tty = isatty(1) };
    if (a->follow)
        catch_interrupts();
    return follow_events(&f, a->follow, 0);
}

static int runs_cancel(client *c, const char *id, int remove)
{
    json_t *run = NULL;
    int rc = get_run(c, id, &run);
    if (rc)
        return rc;
    int done = json_is_object(json_object_get(run, "result")) || json_is_integer(json_object_get(run, "finishedAtMs"));
    json_decref(run);
    /* DELETE removes a finished run: cancel never does that. */
    if (done && !remove)
        return cli_fail(CLI_EXIT_REFUSED, "run %s has finished; `cell agent runs rm %s` deletes it", id, id);
    if (!done && remove)
        return cli_fail(CLI_EXIT_REFUSED, "run %s is still active; cancel it first (cell agent runs cancel %s)", id, id);
    rc = cancel_run(c, id);
    if (rc == 0)
        printf("%s\n", id);
    return rc;
}

static int runs_apply(client *c, struct runs_args *a, const char *id)
{
    json_t *run = NULL;
    int rc = get_run(c, id, &run);
    if (rc)
        return rc;
    const char *dir = str_of(json_object_get(run, "repo"), "path");
    if (dir) {
        char *where = strdup(dir);
        json_decref(run);
        rc = apply_remote(c, id, where ? where : "the repository");
        free(where);
        return rc;
    }
    int done = json_is_object(json_object_get(run, "result"));
    json_decref(run);
    if (!done)
        return cli_fail(CLI_EXIT_REFUSED, "run %s has not finished", id);
    char *real = realpath(a->repo ? a->repo : ".", NULL);
    if (!real)
        return cli_fail(CLI_EXIT_USAGE, "--repo %s: %s", a->repo ? a->repo : ".", strerror(errno));
    rc = apply_local(c, id, real);
    free(real);
    return rc;
}

static int runs_diff(client *c, const char *id)
{
    json_t *run = NULL;
    int rc = get_run(c, id, &run);
    if (rc == 0)
        rc = print_diff(c, id, run);
    json_decref(run);
    return rc;
}

static int agent_runs(struct cli_global *g, int argc, char **argv)
{
    struct runs_args a = { .json = g->json };
    optind = 0;
    opterr = 0;
    int o;
    while ((o = getopt_long(argc, argv, ":hf", cli_agent_runs_options, NULL)) != -1) {
        switch (o) {
        case 'h': fputs(runs_usage, stdout); return 0;
        case 'j': a.json = 1; break;
        case 'f': a.follow = 1; break;
        case 's': a.status = optarg; break;
        case 'l': a.limit = optarg; break;
        case 'r': a.repo = optarg; break;
        default: return cli_getopt_fail("agent runs", o, argc, argv);
        }
    }
    char **rest = argv + optind;
    int n = argc - optind;
    const char *verb = n > 0 ? rest[0] : "ls";
    static const char *const with_id[] = { "show", "events", "cancel", "rm", "apply", "diff" };
    int needs_id = 0;
    for (size_t i = 0; i < sizeof with_id / sizeof *with_id; i++)
        needs_id |= strcmp(verb, with_id[i]) == 0;
    if (!needs_id && strcmp(verb, "ls") != 0)
        return usage_fail("runs", "unknown subcommand '%s': ls, show, events, cancel, rm, apply or diff", verb);
    if (needs_id && n != 2)
        return usage_fail("runs", "%s takes one run ID", verb);
    if (!needs_id && n > 1)
        return usage_fail("runs", "ls takes no argument but options, not '%s'", rest[1]);
    client c;
    int rc = cli_client_open(&c, g);
    if (rc)
        return rc;
    const char *id = needs_id ? rest[1] : NULL;
    if (strcmp(verb, "ls") == 0)
        rc = runs_ls(&c, &a);
    else if (strcmp(verb, "show") == 0)
        rc = runs_show(&c, &a, id);
    else if (strcmp(verb, "events") == 0)
        rc = runs_events(&c, &a, id);
    else if (strcmp(verb, "cancel") == 0 || strcmp(verb, "rm") == 0)
        rc = runs_cancel(&c, id, verb[0] == 'r');
    else if (strcmp(verb, "apply") == 0)
        rc = runs_apply(&c, &a, id);
    else
        rc = runs_diff(&c, id);
    cli_client_close(&c);
    return rc;
}

/* [--help] SUBCOMMAND ...: getopt_long stops at the subcommand ("+"), whose
 * own options are its parser's. */
int cli_agentcmd_main(struct cli_global *g, int argc, char **argv)
{
    static const struct option opts[] = { { "help", no_argument, NULL, 'h' }, { NULL, 0, NULL, 0 } };
    opterr = 0;
    optind = 0;
    int o = getopt_long(argc, argv, "+:h", opts, NULL);
    if (o == 'h' || (o == -1 && optind < argc && strcmp(argv[optind], "help") == 0)) {
        int at = optind + (o == -1);    /* `agent help run`, `agent --help run` */
        fputs(cli_agentcmd_usage(argc - at, argv + at), stdout);
        return 0;
    }
    if (o != -1)
        return cli_getopt_fail("agent", o, argc, argv);
    if (optind >= argc) {
        fputs(agent_usage, stderr);
        return CLI_EXIT_USAGE;
    }
    argc -= optind - 1;
    argv += optind - 1;         /* argv[1]: the subcommand */
    if (strcmp(argv[1], "run") == 0)
        return agent_run(g, argc - 1, argv + 1);
    if (strcmp(argv[1], "runs") == 0)
        return agent_runs(g, argc - 1, argv + 1);
    fputs(agent_usage, stderr);
    return cli_fail(CLI_EXIT_USAGE, "agent: unknown subcommand '%s': run or runs", argv[1]);
}
