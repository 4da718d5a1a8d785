/* fuzz_http1.c: libFuzzer target for the CLI's HTTP/1.1 client
 * (src/cli/http1.c): the input is what a daemon answers to one request, over
 * a socketpair, ending where the input ends.  The exchange must end with a
 * result (never hang, never read past its buffers), and what it reports must
 * hold together. */
#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cli/http1.h"

static size_t streamed;

static int on_data(void *user, const char *p, size_t n)
{
    (void)p;
    streamed += n;
    /* Byte 0's bit 1 asks the receiver to stop after 64 bytes, as a failed download write does. */
    return *(const int *)user && streamed > 64 ? -1 : 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Byte 0: bit 0 streams 2xx bodies to on_data, bit 1 stops it early,
     * bit 2 sends a small request body; the rest is the answer. */
    if (size < 1)
        return 0;
    int mode = data[0], stop_early = (mode & 2) != 0;
    data++, size--;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    /* The whole answer fits in the socket buffer at -max_len=4096. */
    if (size && write(sv[1], data, size) != (ssize_t)size)
        abort();
    shutdown(sv[1], SHUT_WR);
    http1_req rq = { .method = mode & 4 ? "POST" : "GET", .host = "localhost", .target = "/v1/cells",
                     .token = "tok", .content_type = mode & 4 ? "application/json" : NULL,
                     .body = mode & 4 ? "{}" : NULL, .body_len = mode & 4 ? 2 : 0, .body_fd = -1 };
    http1_resp rs = { .on_data = mode & 1 ? on_data : NULL, .user = &stop_early };
    streamed = 0;
    int err = cli_http1_exchange(sv[0], &rq, &rs);
    assert(err >= HTTP1_OK && err <= HTTP1_STOPPED);
    assert(err != HTTP1_STOPPED && err != HTTP1_BODY_READ);
    if (err == HTTP1_OK) {
        assert(rs.status >= 0 && rs.status <= 999);
        assert(rs.started);
    }
    if (err == HTTP1_ABORTED)
        assert(mode & 1 && stop_early);
    assert(rs.body.len <= HTTP1_MAX_REPLY && rs.body.len + streamed <= size);
    assert(!rs.body.data || rs.body.data[rs.body.len] == '\0');
    char why[256];
    assert(cli_http1_strerror(err, &rs, why, sizeof why) != NULL);
    free(rs.body.data);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
