/* openapi.c: serves docs/openapi.json, embedded at build time, so the
 * description a client reads is the one shipped with this binary. */
#include "server/server_internal.h"

extern const char srv_openapi_json_start[], srv_openapi_json_end[];
/* With the other blobs, away from .rodata: see src/init/blob.S. */
__asm__(".section cell_blobs, \"a\"\n"
        ".global srv_openapi_json_start\n"
        "srv_openapi_json_start:\n"
        ".incbin \"docs/openapi.json\"\n"
        ".global srv_openapi_json_end\n"
        "srv_openapi_json_end:\n"
        ".byte 0\n"
        ".previous\n");

int srv_openapi_serve(sreq *r)
{
    size_t len = (size_t)(srv_openapi_json_end - srv_openapi_json_start);
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(len, (void *)srv_openapi_json_start, MHD_RESPMEM_PERSISTENT);
    if (!resp)
        return MHD_NO;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
    return srv_reply_response(r, 200, resp);
}
