/* openapi.c: serves docs/openapi.json, embedded at build time, so the
 * description a client reads is the one shipped with this binary. */
#include "server/server_internal.h"

extern const char openapi_json_start[], openapi_json_end[];
/* With the other blobs, away from .rodata: see src/init/blob.S. */
__asm__(".section cell_blobs, \"a\"\n"
        ".global openapi_json_start\n"
        "openapi_json_start:\n"
        ".incbin \"docs/openapi.json\"\n"
        ".global openapi_json_end\n"
        "openapi_json_end:\n"
        ".byte 0\n"
        ".previous\n");

int openapi_serve(sreq *r)
{
    size_t len = (size_t)(openapi_json_end - openapi_json_start);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)openapi_json_start, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return reply_response(r, 200, resp);
}
