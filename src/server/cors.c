/* cors.c: OPTIONS requests and CORS for browser clients (cell serve
 * --cors-origin, off by default).  Only exact origins are allowed, never a
 * wildcard: an allowed origin's pages get Access-Control-Allow-Origin with
 * their own origin (and credentials, which here means a TLS client
 * certificate: the daemon has no cookies), every other origin gets no CORS
 * header and its request is handled as any other, but for a WebSocket
 * handshake, which CORS does not guard and is refused instead
 * (srv_cors_ws_origin_refused).  CORS never replaces the bearer token: only
 * the preflight (which carries none) goes without. */
#include "server/server_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Request headers a page may send (the preflight's answer), and how long
 * the browser may keep that answer. */
#define CORS_ALLOW_HEADERS "Authorization, Content-Type, Accept, Last-Event-ID"
#define CORS_MAX_AGE       "600"

/* An origin as browsers send it: scheme://host[:port], lower case, no path.
 * "*" and "null" (sandboxed frames, file: pages) are refused by name. */
int srv_cors_origin_check(const char *origin, cell_error *err)
{
    if (strcmp(origin, "*") == 0 || strcmp(origin, "null") == 0)
        return util_fail(err, EINVAL, "--cors-origin %s: only exact origins like https://app.example.com are "
                         "allowed (\"%s\" would let any page, or any sandboxed one, call the API)", origin, origin);
    const char *host = strncmp(origin, "https://", 8) == 0 ? origin + 8
                     : strncmp(origin, "http://", 7) == 0  ? origin + 7 : NULL;
    size_t len = host ? strlen(host) : 0;
    int ok = host && len > 0 && len < 256;
    int bracket = ok && host[0] == '[';
    const char *port = NULL;
    for (size_t i = bracket; ok && i < len; i++) {
        unsigned char c = (unsigned char)host[i];
        if (bracket && c == ']' && !port)
            bracket = 0;
        else if (c == ':' && !bracket && !port)
            port = host + i + 1;
        else if (port ? !isdigit(c) : !(islower(c) || isdigit(c) || c == '.' || c == '-' || (bracket && c == ':')))
            ok = 0;
    }
    if (ok && (bracket || host[0] == ':' || (port && (!*port || strlen(port) > 5 || atoi(port) < 1 ||
                                                     atoi(port) > 65535))))
        ok = 0;
    if (!ok)
        return util_fail(err, EINVAL, "--cors-origin %s: expected an origin as a browser sends it: http:// or "
                         "https://, a lower-case host and an optional port, no path (https://app.example.com:8443)",
                         origin);
    return 0;
}

/* The request's Origin if it is one of --cors-origin's, else NULL. */
static const char *allowed_origin(sreq *r)
{
    const char *const *list = r->s->opt.cors_origins;
    if (!list || !r->conn)
        return NULL;
    const char *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (!origin)
        return NULL;
    for (; *list; list++)
        if (strcmp(*list, origin) == 0)
            return origin;
    return NULL;
}

/* No preflight stands between a page and a WebSocket: a browser opens one
 * to any origin, with what it adds by itself (a TLS client certificate) and
 * whatever token the page holds, and lets the page read every frame, where
 * the same page's fetch() would get no answer without CORS.  A browser names
 * the page's origin on every handshake, so the daemon's WebSocket routes (a
 * process's terminal, the desktop's live view) refuse a handshake whose
 * Origin is neither the daemon's own (the Inspector at /ui/, whose Origin
 * names the Host it was loaded from) nor one of --cors-origin.  Clients that
 * are not browsers send no Origin and are not affected.  The refused Origin
 * is in *origin. */
int srv_cors_ws_origin_refused(sreq *r, const char **origin)
{
    const char *up = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_UPGRADE);
    *origin = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, "Origin");
    if (!up || !strcasestr(up, "websocket") || !*origin || allowed_origin(r))
        return 0;
    /* Same origin: scheme://Host, the port included exactly as the browser
     * put it in both (it leaves out a default port in both). */
    const char *host = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
    const char *rest = strncmp(*origin, "https://", 8) == 0 ? *origin + 8
                     : strncmp(*origin, "http://", 7) == 0  ? *origin + 7 : NULL;
    return !(rest && host && *host && strcasecmp(rest, host) == 0);
}

void srv_cors_add_headers(sreq *r, struct MHD_Response *resp)
{
    if (!r->s->opt.cors_origins)
        return;
    /* The answer depends on Origin: a cache must not give one origin's to another. */
    MHD_add_response_header(resp, "Vary", "Origin");
    const char *origin = allowed_origin(r);
    if (!origin)
        return;
    MHD_add_response_header(resp, "Access-Control-Allow-Origin", origin);
    MHD_add_response_header(resp, "Access-Control-Allow-Credentials", "true");
    if (r->cors_preflight) {
        MHD_add_response_header(resp, "Access-Control-Allow-Methods", r->allow);
        MHD_add_response_header(resp, "Access-Control-Allow-Headers", CORS_ALLOW_HEADERS);
        MHD_add_response_header(resp, "Access-Control-Max-Age", CORS_MAX_AGE);
    }
}

/* OPTIONS on a path the table has: 204 with Allow (and, for an allowed
 * origin's preflight, the CORS answer), with or without CORS configured,
 * without a token: it tells no more than a 405's Allow does. */
int srv_cors_options(sreq *r, const route *table, size_t n, const char *path)
{
    srv_router_allowed(table, n, path, r->allow, sizeof r->allow);
    size_t used = strlen(r->allow);
    snprintf(r->allow + used, sizeof r->allow - used, "%sOPTIONS", used ? "," : "");
    r->cors_preflight = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND,
                                                    "Access-Control-Request-Method") != NULL;
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    return srv_reply_response(r, 204, resp);
}
