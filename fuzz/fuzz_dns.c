/* fuzz_dns.c: libFuzzer target for the cell's resolver (src/net/dns.c):
 * the query comes from the input as a cell would send it, and the answer
 * too, served by a fake upstream on 127.0.0.1 (UDP and TCP, for truncated
 * answers) that this target runs on a thread of its own, so the real
 * exchange, matching, rebinding screen and pinning code all see it.
 * Input: byte 0 flags (bit 0: strict policy; bit 1: the answer's header
 * is spliced onto the query's question, so it matches and its records get
 * parsed; else sent as it is, id patched), bytes 1-2 the query's length,
 * the query, then the answer. */
#include <arpa/inet.h>
#include <assert.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/dns.h"
#include "net/policy.h"

#define MAX_MSG 65535

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint8_t answer[MAX_MSG];
static size_t answer_len;
static int splice_question;
static int udp_fd = -1, tcp_fd = -1;
static net_policy *plain, *strict;
static net_pins *pins;

/* The end of the question section of `q` (one question), or 0. */
static size_t question_end(const uint8_t *q, size_t len)
{
    size_t i = 12;
    while (i < len && q[i] != 0) {
        if ((q[i] & 0xc0) == 0xc0)
            return i + 2 + 4 <= len ? i + 2 + 4 : 0;
        i += 1u + q[i];
    }
    return i + 1 + 4 <= len ? i + 1 + 4 : 0;
}

/* The reply to `q`: the input's answer under q's id, maybe spliced. */
static size_t make_reply(const uint8_t *q, size_t qlen, uint8_t *out)
{
    pthread_mutex_lock(&lock);
    size_t n = 0, qe = qlen >= 12 ? question_end(q, qlen) : 0;
    if (splice_question && answer_len >= 12 && qe && answer_len + (qe - 12) <= MAX_MSG) {
        memcpy(out, answer, 12);
        out[2] |= 0x80;                 /* QR */
        out[4] = 0, out[5] = 1;         /* one question */
        memcpy(out + 12, q + 12, qe - 12);
        memcpy(out + qe, answer + 12, answer_len - 12);
        n = qe + answer_len - 12;
    } else {
        memcpy(out, answer, answer_len);
        n = answer_len;
    }
    if (n >= 2 && qlen >= 2)
        out[0] = q[0], out[1] = q[1];
    pthread_mutex_unlock(&lock);
    return n;
}

static int full_io(int fd, uint8_t *p, size_t n, int writing)
{
    while (n > 0) {
        ssize_t r = writing ? send(fd, p, n, MSG_NOSIGNAL) : recv(fd, p, n, 0);
        if (r <= 0)
            return -1;
        p += r;
        n -= (size_t)r;
    }
    return 0;
}

static void serve_tcp(int fd)
{
    static uint8_t q[MAX_MSG], out[2 * MAX_MSG];
    uint8_t hdr[2];
    struct timeval tv = { .tv_sec = 1 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    if (full_io(fd, hdr, 2, 0) == 0) {
        size_t qlen = (size_t)hdr[0] << 8 | hdr[1];
        if (full_io(fd, q, qlen, 0) == 0) {
            size_t n = make_reply(q, qlen, out + 2);
            n = n > MAX_MSG ? MAX_MSG : n;
            out[0] = (uint8_t)(n >> 8), out[1] = (uint8_t)n;
            full_io(fd, out, n + 2, 1);
        }
    }
    close(fd);
}

static void *upstream(void *arg)
{
    (void)arg;
    static uint8_t q[MAX_MSG], out[2 * MAX_MSG];
    struct pollfd pf[2] = { { .fd = udp_fd, .events = POLLIN }, { .fd = tcp_fd, .events = POLLIN } };
    for (;;) {
        if (poll(pf, 2, -1) < 0)
            continue;
        if (pf[0].revents & POLLIN) {
            struct sockaddr_storage from;
            socklen_t fl = sizeof from;
            ssize_t n = recvfrom(udp_fd, q, sizeof q, 0, (struct sockaddr *)&from, &fl);
            if (n > 0) {
                size_t r = make_reply(q, (size_t)n, out);
                sendto(udp_fd, out, r > MAX_MSG ? MAX_MSG : r, 0, (struct sockaddr *)&from, fl);
            }
        }
        if (pf[1].revents & POLLIN) {
            int c = accept(tcp_fd, NULL, NULL);
            if (c >= 0)
                serve_tcp(c);
        }
    }
    return NULL;
}

/* UDP and TCP on one port of 127.0.0.1. */
static int listen_both(void)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
    socklen_t al = sizeof a;
    udp_fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    tcp_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (udp_fd < 0 || tcp_fd < 0 || bind(udp_fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        getsockname(udp_fd, (struct sockaddr *)&a, &al) < 0 || bind(tcp_fd, (struct sockaddr *)&a, sizeof a) < 0 ||
        listen(tcp_fd, 16) < 0)
        return -1;
    return ntohs(a.sin_port);
}

static net_policy *policy(int port, int is_strict)
{
    char doc[512];
    snprintf(doc, sizeof doc,
             "{\"rules\":[{\"dns\":{\"upstreams\":[\"127.0.0.1:%d\"],\"strict\":%s}},"
             "{\"http\":{\"host\":\"allowed.test\"}},{\"host\":{\"name\":\"*.example.com\"}}]}",
             port, is_strict ? "true" : "false");
    net_policy *p = NULL;
    cell_error err = { 0 };
    if (net_policy_parse(doc, strlen(doc), &p, &err) < 0) {
        fprintf(stderr, "fuzz_dns: policy: %s\n", err.message);
        abort();
    }
    return p;
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    int port = -1;
    for (int i = 0; i < 20 && port < 0; i++) {  /* the TCP port may be taken: try another */
        if (udp_fd >= 0)
            close(udp_fd), close(tcp_fd);
        port = listen_both();
    }
    pthread_t t;
    if (port < 0 || pthread_create(&t, NULL, upstream, NULL) != 0)
        abort();
    net_dns_set_timeout_ms(20);   /* an answer that does not match waits this long */
    plain = policy(port, 0);
    strict = policy(port, 1);
    pins = net_pins_new();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3)
        return 0;
    size_t qlen = (size_t)data[1] << 8 | data[2];
    if (qlen > size - 3)
        qlen = size - 3;
    const uint8_t *q = data + 3;
    pthread_mutex_lock(&lock);
    answer_len = size - 3 - qlen;
    memcpy(answer, q + qlen, answer_len);
    splice_question = (data[0] & 2) != 0;
    pthread_mutex_unlock(&lock);

    uint8_t *reply = NULL;
    size_t reply_len = 0;
    net_dns_result res;
    cell_error err = { 0 };
    int rc = net_dns_answer(data[0] & 1 ? strict : plain, pins, q, qlen, &reply, &reply_len, &res, &err);
    if (rc == 0) {
        /* The cell always gets an answer to the query it sent. */
        assert(reply && reply_len >= 12 && reply_len <= 65535);    /* DNS over TCP frames it in 2 bytes */
        assert(reply[0] == q[0] && reply[1] == q[1] && (reply[2] & 0x80));
        assert(res.n_pinned >= 0);
        for (const char *c = res.qname; *c; c++)
            assert(!(*c >= 'A' && *c <= 'Z'));
    } else {
        assert(!reply);
    }
    free(reply);
    return 0;
}
