/* ui.c: the Inspector web UI (docs/ui.md) at /ui/: three files built from
 * ui/ by make (npm ci from ui/package-lock.json, then esbuild) and embedded
 * here at build time, so the daemon reads no file and fetches nothing at run
 * time.  The files are public (they hold no data); the page asks for a
 * token and calls the same API as every client with Authorization: Bearer.
 *
 * Every answer carries a strict Content-Security-Policy: scripts and styles
 * from this origin only (no inline script, no eval), connections to this
 * origin only (the API and the terminal WebSocket), and no framing
 * (clickjacking), with nosniff and no referrer. */
#include "server/server_internal.h"

#include <stdio.h>
#include <string.h>

#ifndef CELL_UI_DIR
#error "CELL_UI_DIR must name the directory of the built UI (the Makefile sets it)"
#endif

extern const char srv_ui_index_start[], srv_ui_index_end[], srv_ui_js_start[], srv_ui_js_end[], srv_ui_css_start[], srv_ui_css_end[];
/* With the other blobs, away from .rodata: see src/init/blob.S. */
__asm__(".section cell_blobs, \"a\"\n"
        ".global srv_ui_index_start\nsrv_ui_index_start:\n.incbin \"" CELL_UI_DIR "/index.html\"\n"
        ".global srv_ui_index_end\nsrv_ui_index_end:\n.byte 0\n"
        ".global srv_ui_js_start\nsrv_ui_js_start:\n.incbin \"" CELL_UI_DIR "/app.js\"\n"
        ".global srv_ui_js_end\nsrv_ui_js_end:\n.byte 0\n"
        ".global srv_ui_css_start\nsrv_ui_css_start:\n.incbin \"" CELL_UI_DIR "/app.css\"\n"
        ".global srv_ui_css_end\nsrv_ui_css_end:\n.byte 0\n"
        ".previous\n");

/* 'unsafe-inline' styles are not allowed either: xterm.js sets style
 * attributes from script (CSSOM, which style-src does not govern) only. */
#define UI_CSP "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; " \
               "font-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'none'; " \
               "frame-ancestors 'none'"

typedef struct {
    const char *name, *type;
    const char *start, *end;
} ui_file;

static const ui_file ui_files[] = {
    { "index.html", "text/html; charset=utf-8",             srv_ui_index_start, srv_ui_index_end },
    { "app.js",     "text/javascript; charset=utf-8",       srv_ui_js_start,    srv_ui_js_end },
    { "app.css",    "text/css; charset=utf-8",              srv_ui_css_start,   srv_ui_css_end },
};

/* One ETag for the three files: FNV-1a over all of them, so a browser
 * revalidates (Cache-Control: no-cache) and gets 304 until the daemon is
 * replaced by one with another UI.  Computed once; the blobs never change. */
static char ui_etag[24];
static pthread_once_t ui_etag_once = PTHREAD_ONCE_INIT;
static void ui_etag_init(void)
{
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < sizeof ui_files / sizeof ui_files[0]; i++)
        for (const char *p = ui_files[i].start; p < ui_files[i].end; p++)
            h = (h ^ (unsigned char)*p) * 1099511628211ULL;
    snprintf(ui_etag, sizeof ui_etag, "\"%016llx\"", (unsigned long long)h);
}

/* On every answer under /ui (request.c adds them, to a 404 and the redirect
 * too: a page there that echoes a name must not run or be framed either);
 * X-Content-Type-Options: nosniff is on every answer of the daemon. */
void srv_ui_security_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, "Content-Security-Policy", UI_CSP);
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
    MHD_add_response_header(resp, "Referrer-Policy", "no-referrer");
    MHD_add_response_header(resp, "Cross-Origin-Opener-Policy", "same-origin");
    MHD_add_response_header(resp, "Cross-Origin-Resource-Policy", "same-origin");
}

static void ui_headers(struct MHD_Response *resp)
{
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
    MHD_add_response_header(resp, MHD_HTTP_HEADER_ETAG, ui_etag);
}

/* GET /ui: the page's relative URLs (app.js) need the trailing slash. */
int srv_h_ui_redirect(sreq *r)
{
    struct MHD_Response *resp = MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_LOCATION, "/ui/");
    return srv_reply_response(r, 308, resp);
}

/* GET /ui/ and GET /ui/{file}: one of the three files, else 404. */
int srv_h_ui(sreq *r)
{
    const char *name = srv_router_param(&r->m, "file");
    if (!name)
        name = "index.html";
    const ui_file *f = NULL;
    for (size_t i = 0; i < sizeof ui_files / sizeof ui_files[0] && !f; i++)
        if (strcmp(ui_files[i].name, name) == 0)
            f = &ui_files[i];
    if (!f)
        return srv_reply_problem(r, 404, "not_found", "the UI has no file %s (it serves /ui/, /ui/app.js and "
                             "/ui/app.css)", name);
    pthread_once(&ui_etag_once, ui_etag_init);
    const char *inm = MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, MHD_HTTP_HEADER_IF_NONE_MATCH);
    int fresh = inm && strcmp(inm, ui_etag) == 0;
    struct MHD_Response *resp = fresh
        ? MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT)
        : MHD_create_response_from_buffer((size_t)(f->end - f->start), (void *)f->start, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    ui_headers(resp);
    if (!fresh)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, f->type);
    return srv_reply_response(r, fresh ? 304 : 200, resp);
}
