/* router.c: matches a request path against a table of patterns with
 * {name} captures.  No allocation; paths are attacker-controlled and fuzzed. */
#include "server/server_internal.h"

#include <string.h>

/* Length of the segment starting at p (up to '/' or end). */
static size_t segment_len(const char *p)
{
    const char *slash = strchr(p, '/');
    return slash ? (size_t)(slash - p) : strlen(p);
}

/* Match one pattern; captures are copied into m->buf.  Empty segments
 * ("//") never match a capture, so "/v1/cells//stop" is not a route. */
static int match_pattern(const char *pattern, const char *path, route_match *m)
{
    size_t used = 0;
    m->n_params = 0;
    if (*pattern != '/' || *path != '/')
        return 0;
    for (;;) {
        pattern++, path++;               /* skip '/' */
        size_t plen = segment_len(pattern), len = segment_len(path);
        if (pattern[0] == '*' && pattern[1] == '\0')
            return len > 0;             /* a trailing "*" takes the rest */
        if (pattern[0] == '{') {
            if (len == 0 || m->n_params == ROUTE_MAX_PARAMS || used + len + 1 > sizeof m->buf)
                return 0;
            m->names[m->n_params] = pattern + 1;
            m->values[m->n_params] = m->buf + used;
            memcpy(m->buf + used, path, len);
            m->buf[used + len] = '\0';
            used += len + 1;
            m->n_params++;
        } else if (plen != len || memcmp(pattern, path, len) != 0) {
            return 0;
        }
        pattern += plen, path += len;
        if (*pattern == '\0' || *path == '\0')
            return *pattern == '\0' && *path == '\0';
    }
}

int srv_router_match(const route *table, size_t n, const char *method, const char *path, route_match *m)
{
    int path_seen = 0;
    memset(m, 0, offsetof(route_match, buf));
    if (strlen(path) >= sizeof m->buf)
        return ROUTER_TOO_LONG;
    for (size_t i = 0; i < n; i++) {
        if (!match_pattern(table[i].pattern, path, m))
            continue;
        if (strcmp(table[i].method, method) == 0) {
            m->route = &table[i];
            return ROUTER_FOUND;
        }
        path_seen = 1;
    }
    m->n_params = 0;
    return path_seen ? ROUTER_BAD_METHOD : ROUTER_NO_PATH;
}

const char *srv_router_param(const route_match *m, const char *name)
{
    size_t len = strlen(name);
    for (size_t i = 0; i < m->n_params; i++)
        if (strncmp(m->names[i], name, len) == 0 && m->names[i][len] == '}')
            return m->values[i];
    return NULL;
}

void srv_router_allowed(const route *table, size_t n, const char *path, char *out, size_t size)
{
    route_match m;
    size_t used = 0;
    out[0] = '\0';
    if (strlen(path) >= sizeof m.buf)
        return;
    for (size_t i = 0; i < n; i++) {
        if (!match_pattern(table[i].pattern, path, &m) || strstr(out, table[i].method))
            continue;
        int w = snprintf(out + used, size - used, "%s%s", used ? "," : "", table[i].method);
        if (w < 0 || (size_t)w >= size - used) {
            out[used] = '\0';
            return;
        }
        used += (size_t)w;
    }
}

/* libmicrohttpd decodes the path into a C string, so "%00" ends it early:
 * "/v1/cells/ID%00junk" would reach the router as "/v1/cells/ID" (and
 * other control bytes would reach file paths and logs).  Such a path is
 * refused before routing, from its decoded bytes and their full length. */
long srv_router_path_ctl(const char *path, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)path[i] < 0x20 || (unsigned char)path[i] == 0x7f)
            return (long)i;
    return -1;
}
