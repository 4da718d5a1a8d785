/* limits.c: the operator's ceilings on every number a tenant can set through
 * the API, and the host budget (pids, memory) that all cells' reservations
 * come out of, whatever the tenants' own quotas say. */
#include "server/agents.h"
#include "server/handlers.h"

#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/statvfs.h>

/* ---- the keys of `cell serve --limit KEY=VALUE` ----------------------------- */
typedef struct limit_key {
    const char *name;
    size_t      off;
    int         size;   /* a size like 512M; else a plain count */
} limit_key;

#define KEY(n, f, sz) { n, offsetof(server_limits, f), sz }
static const limit_key keys[] = {
    KEY("cell.memory", cell_memory, 1),       KEY("cell.pids", cell_pids, 0),
    KEY("cell.cpus", cell_cpu_millis, 0),     KEY("cell.disk", cell_disk, 1),
    KEY("cell.ttl", cell_ttl_s, 0),           KEY("lane.size", lane_size, 1),
    KEY("procs", procs, 0),                   KEY("run.timeoutMs", run_timeout_ms, 0),
    KEY("run.outputBytes", output_bytes, 1),  KEY("log.bytesPerProcess", log_bytes, 1),
    KEY("input.bytes", input_bytes, 1),       KEY("log.memory", log_memory, 1),
    KEY("procs.kept", procs_kept, 0),         KEY("secrets", secrets, 0),
    KEY("host.memory", host_memory, 1),       KEY("host.pids", host_pids, 0),
    KEY("reserve.memory", reserve_memory, 1), KEY("reserve.pids", reserve_pids, 0),
    KEY("agents.installDisk", agents_install_disk, 1),
};
#undef KEY

const char srv_limit_keys[] =
    "cell.memory cell.pids cell.cpus cell.disk cell.ttl lane.size procs run.timeoutMs run.outputBytes "
    "log.bytesPerProcess input.bytes log.memory procs.kept secrets host.memory host.pids reserve.memory reserve.pids "
    "agents.installDisk";

int srv_limit_set(server_limits *l, const char *assignment, cell_error *err)
{
    const char *eq = strchr(assignment, '=');
    if (!eq)
        return util_fail(err, EINVAL, "--limit %s: expected KEY=VALUE", assignment);
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++) {
        if (strlen(keys[i].name) != (size_t)(eq - assignment) || strncmp(keys[i].name, assignment, eq - assignment))
            continue;
        uint64_t v = 0;
        char *end = NULL;
        errno = 0;
        if (keys[i].size) {
            if (cell_parse_size(eq + 1, &v, err) < 0)
                return util_fail(err, EINVAL, "--limit %s: %s", keys[i].name, err ? err->message : "bad size");
        } else {
            v = strtoull(eq + 1, &end, 10);
            if (errno || end == eq + 1 || *end || eq[1] == '-')
                return util_fail(err, EINVAL, "--limit %s: expected a non-negative integer", keys[i].name);
        }
        /* Stored as int64 in JSON and SQLite: keep every ceiling below 2^62. */
        if (v == 0 || v > (1ull << 62))
            return util_fail(err, EINVAL, "--limit %s: must be between 1 and 2^62", keys[i].name);
        if (strcmp(keys[i].name, "cell.cpus") == 0)
            v = v > (1ull << 40) ? 1ull << 50 : v * 1000;     /* given in CPUs, kept in millis */
        *(uint64_t *)((char *)l + keys[i].off) = v;
        return 0;
    }
    return util_fail(err, EINVAL, "--limit: unknown key in '%s' (keys: %s)", assignment, srv_limit_keys);
}

/* ---- deriving the defaults from the host --------------------------------------- */
static uint64_t read_u64_file(const char *path)
{
    _cleanup_free_ char *buf = NULL;
    cell_error e = { 0 };
    size_t n = 0;
    if (util_read_file(path, 64, &buf, &n, &e) < 0)
        return 0;
    return strtoull(buf, NULL, 10);
}

static uint64_t mem_total(void)
{
    FILE *fp = fopen("/proc/meminfo", "re");
    if (!fp)
        return 0;
    char line[256];
    unsigned long long kb = 0;
    while (fgets(line, sizeof line, fp))
        if (sscanf(line, "MemTotal: %llu kB", &kb) == 1)
            break;
    fclose(fp);
    return (uint64_t)kb << 10;
}

static uint64_t min_u64(uint64_t a, uint64_t b)
{
    return a < b ? a : b;
}
static uint64_t max_u64(uint64_t a, uint64_t b)
{
    return a > b ? a : b;
}
static void set_default(uint64_t *v, uint64_t def)
{
    if (*v == 0)
        *v = def;
}

/* Fill every 0 in *l from the host.  The reserves keep an eighth of the
 * memory (at least 1 GiB) and a quarter of the pids (at least 2048) for the
 * host and the daemon, but never more than half. */
static int derive(srv *s, server_limits *l, cell_error *err)
{
    uint64_t pid_max = read_u64_file("/proc/sys/kernel/pid_max");
    uint64_t threads_max = read_u64_file("/proc/sys/kernel/threads-max");
    uint64_t host_pids = pid_max && threads_max ? min_u64(pid_max, threads_max) : max_u64(pid_max, threads_max);
    set_default(&l->host_memory, mem_total());
    set_default(&l->host_pids, host_pids);
    if (!l->host_memory || !l->host_pids)
        return util_fail(err, EIO, "cannot read the host's MemTotal, pid_max or threads-max from /proc; "
                         "set --limit host.memory= and host.pids=");
    set_default(&l->reserve_memory, min_u64(max_u64(l->host_memory / 8, 1ull << 30), l->host_memory / 2));
    set_default(&l->reserve_pids, min_u64(max_u64(l->host_pids / 4, 2048), l->host_pids / 2));
    if (l->reserve_memory >= l->host_memory || l->reserve_pids >= l->host_pids)
        return util_fail(err, EINVAL, "the reserves (memory %llu, pids %llu) leave nothing of the host budget "
                         "(memory %llu, pids %llu)", (unsigned long long)l->reserve_memory,
                         (unsigned long long)l->reserve_pids, (unsigned long long)l->host_memory,
                         (unsigned long long)l->host_pids);
    uint64_t mem = l->host_memory - l->reserve_memory, pids = l->host_pids - l->reserve_pids;
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    struct statvfs vfs;
    uint64_t disk = statvfs(s->state_dir, &vfs) == 0 ? (uint64_t)vfs.f_blocks * vfs.f_frsize : 0;
    set_default(&l->cell_memory, mem);
    set_default(&l->cell_pids, pids);
    set_default(&l->cell_cpu_millis, (uint64_t)(cpus > 0 ? cpus : 1) * 1000);
    set_default(&l->cell_disk, disk ? disk : 1ull << 40);
    set_default(&l->cell_ttl_s, 365ull * 24 * 3600);
    set_default(&l->lane_size, disk ? disk : 1ull << 40);
    set_default(&l->procs, 256);
    set_default(&l->run_timeout_ms, 24ull * 3600 * 1000);
    set_default(&l->output_bytes, 64ull << 20);
    set_default(&l->log_bytes, 64ull << 20);
    set_default(&l->input_bytes, 16ull << 20);
    set_default(&l->procs_kept, 1024);
    set_default(&l->secrets, 256);
    /* Logs live in the daemon: a sixteenth of the memory, 64 MiB..2 GiB. */
    set_default(&l->log_memory, min_u64(max_u64(l->host_memory / 16, 64ull << 20), 2ull << 30));
    /* What one npm install may write: the biggest pinned agent (opencode,
     * 354 MB) and npm's cache of its tarballs, with room to spare. */
    set_default(&l->agents_install_disk, 2ull << 30);
    if (l->agents_install_disk < CELL_LANE_MIN_SIZE)
        return util_fail(err, EINVAL, "--limit agents.installDisk=%llu: an install's disk needs at least 16M",
                         (unsigned long long)l->agents_install_disk);
    return 0;
}

int srv_limits_start(srv *s, cell_error *err)
{
    server_limits *l = &s->opt.limits;
    if (derive(s, l, err) < 0)
        return -1;
    /* New tenants' quotas fit in the budget (existing rows keep theirs; the
     * daemon-wide reservation bounds the sum either way), unless the
     * operator named them (--tenant-max-*, checked in range there). */
    const server_tenant_quota *q = &s->opt.tenant_quota;
#define QUOTA(bit, field, dflt) ((q->set & (1u << (bit))) ? q->field : (dflt))
    store_tenant d = { .max_cells = (uint32_t)QUOTA(0, cells, STORE_DEFAULT_MAX_CELLS),
                       .max_memory = QUOTA(1, memory, min_u64(STORE_DEFAULT_MAX_MEMORY, srv_limits_budget_memory(s))),
                       .max_lanes = (uint32_t)QUOTA(2, lanes, STORE_DEFAULT_MAX_LANES),
                       .max_disk = QUOTA(3, disk, STORE_DEFAULT_MAX_DISK),
                       .max_pids = (uint32_t)QUOTA(4, pids, min_u64(srv_limits_budget_pids(s), UINT32_MAX)) };
#undef QUOTA
    store_tenant_defaults(s->st, &d);
    return 0;
}

uint64_t srv_limits_budget_memory(srv *s)
{
    return s->opt.limits.host_memory - s->opt.limits.reserve_memory;
}

uint64_t srv_limits_budget_pids(srv *s)
{
    return s->opt.limits.host_pids - s->opt.limits.reserve_pids;
}

/* ---- checking requests --------------------------------------------------------- */
int srv_limits_check(sreq *r, const char *field, uint64_t value, uint64_t ceiling, const char *key)
{
    if (value <= ceiling)
        return 0;
    json_t *d = json_pack("{s:s, s:I, s:s}", "field", field, "ceiling", (json_int_t)ceiling, "limit", key);
    srv_reply_problem_details(r, 400, "invalid_request", d,
                          "field \"%s\" is %llu, above the operator's ceiling of %llu (cell serve --limit %s=)",
                          field, (unsigned long long)value, (unsigned long long)ceiling, key);
    return -1;
}

static uint64_t spec_res(const scell *sc, const char *key)
{
    json_t *v = json_object_get(json_object_get(sc->spec, "resources"), key);
    return json_is_integer(v) && json_integer_value(v) > 0 ? (uint64_t)json_integer_value(v) : 0;
}

/* What is reserved by no cell: agent installs while their install cell
 * runs (srv_limits_reserve).  Written under the cells' quota lock and s->lock. */
static uint64_t held_memory, held_pids;

void srv_limits_usage(srv *s, const char *tenant, uint64_t *memory, uint64_t *pids)
{
    *memory = *pids = 0;
    pthread_mutex_lock(&s->lock);
    if (!tenant)
        *memory = held_memory, *pids = held_pids;
    /* Every record counts, stopped and deleting ones too: a stopped cell
     * can be started without asking again, a deleting one still runs. */
    for (scell *sc = s->cells; sc; sc = sc->next) {
        if (tenant && strcmp(sc->tenant, tenant) != 0)
            continue;
        *memory += spec_res(sc, "memory");
        *pids += spec_res(sc, "pids");
    }
    pthread_mutex_unlock(&s->lock);
}

/* NULL if memory and pids fit the budget beside what is reserved; else the
 * 409's details, and its sentence in *err (EDQUOT). */
static json_t *over_budget(srv *s, uint64_t memory, uint64_t pids, const char *asker, cell_error *err)
{
    const server_limits *l = &s->opt.limits;
    uint64_t used_mem, used_pids;
    srv_limits_usage(s, NULL, &used_mem, &used_pids);
    const char *budget = "memory";
    uint64_t total = srv_limits_budget_memory(s), host = l->host_memory, reserve = l->reserve_memory, used = used_mem,
             asked = memory;
    if (used_mem + memory <= total) {
        if (used_pids + pids <= srv_limits_budget_pids(s))
            return NULL;
        budget = "pids", total = srv_limits_budget_pids(s), host = l->host_pids, reserve = l->reserve_pids;
        used = used_pids, asked = pids;
    }
    util_fail(err, EDQUOT, "the daemon-wide %s budget is %llu (host %llu minus reserve %llu): all tenants' cells "
              "reserve %llu and %s asks %llu", budget, (unsigned long long)total, (unsigned long long)host,
              (unsigned long long)reserve, (unsigned long long)used, asker, (unsigned long long)asked);
    json_t *d = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I}", "budget", budget, "total", (json_int_t)total,
                          "host", (json_int_t)host, "reserve", (json_int_t)reserve, "reserved", (json_int_t)used,
                          "asked", (json_int_t)asked);
    return d ? d : json_object();
}

int srv_limits_check_budget(sreq *r, uint64_t memory, uint64_t pids)
{
    cell_error e = { 0 };
    json_t *d = over_budget(r->s, memory, pids, "this cell", &e);
    if (!d)
        return 0;
    srv_reply_problem_details(r, 409, "budget_exceeded", d, "%s", e.message);
    return -1;
}

int srv_limits_reserve(srv *s, uint64_t memory, uint64_t pids, const char *asker, json_t **details, cell_error *err)
{
    /* Under the lock cell creation checks and inserts under, so that a
     * cell and an install cannot both fit the same remainder. */
    srv_cells_quota_lock();
    *details = over_budget(s, memory, pids, asker, err);
    if (!*details) {
        pthread_mutex_lock(&s->lock);
        held_memory += memory, held_pids += pids;
        pthread_mutex_unlock(&s->lock);
    }
    srv_cells_quota_unlock();
    return *details ? -1 : 0;
}

void srv_limits_release(srv *s, uint64_t memory, uint64_t pids)
{
    srv_cells_quota_lock();
    pthread_mutex_lock(&s->lock);
    held_memory -= memory, held_pids -= pids;
    pthread_mutex_unlock(&s->lock);
    srv_cells_quota_unlock();
}

/* ---- GET /v1/limits (admin) ----------------------------------------------------- */
static json_t *budget_json(uint64_t host, uint64_t reserve, uint64_t reserved)
{
    return json_pack("{s:I, s:I, s:I, s:I}", "host", (json_int_t)host, "reserve", (json_int_t)reserve, "total",
                     (json_int_t)(host - reserve), "reserved", (json_int_t)reserved);
}

int srv_h_limits(sreq *r)
{
    const server_limits *l = &r->s->opt.limits;
    json_t *ceilings = json_object();
    for (size_t i = 0; i < sizeof keys / sizeof *keys; i++)
        if (strncmp(keys[i].name, "host.", 5) != 0 && strncmp(keys[i].name, "reserve.", 8) != 0 &&
            strncmp(keys[i].name, "agents.", 7) != 0)
            json_object_set_new(ceilings, keys[i].name,
                                json_integer((json_int_t) * (const uint64_t *)((const char *)l + keys[i].off)));
    uint64_t mem, pids, cache_bytes, held_mem, held_p;
    size_t cache_dirs;
    srv_limits_usage(r->s, NULL, &mem, &pids);
    pthread_mutex_lock(&r->s->lock);
    held_mem = held_memory, held_p = held_pids;
    pthread_mutex_unlock(&r->s->lock);
    srv_agents_cache_usage(&cache_bytes, &cache_dirs);
    return srv_reply_json(r, 200, json_pack("{s:o, s:{s:o, s:o}, s:{s:I, s:I}, s:{s:I, s:I, s:I, s:{s:I, s:I}}, s:o*}",
                                        "ceilings", ceilings, "budget",
                                        "memory", budget_json(l->host_memory, l->reserve_memory, mem),
                                        "pids", budget_json(l->host_pids, l->reserve_pids, pids),
                                        "logMemory", "limit", (json_int_t)l->log_memory,
                                        "used", (json_int_t)srv_procs_log_memory(),
                                        "agents", "installDisk", (json_int_t)l->agents_install_disk,
                                        "cacheBytes", (json_int_t)cache_bytes, "cacheDirs", (json_int_t)cache_dirs,
                                        "installing", "memory", (json_int_t)held_mem, "pids", (json_int_t)held_p,
                                        "pool", srv_pool_json()));
}
