/* net_bench.c: the TCP server and clients of bench/egress.sh.
 *
 *   net_bench serve ADDR PORTFILE          sequential server on ADDR, port
 *                                          chosen by the kernel, written to
 *                                          PORTFILE once it listens
 *   net_bench down ADDR PORT BYTES         receive BYTES from the server
 *   net_bench up   ADDR PORT BYTES         send BYTES to the server
 *   net_bench lat  ADDR PORT N WARMUP      N timed connect + 1-byte echo
 *
 * Protocol (the client's first byte): 'D' + 8-byte length: the server sends
 * that many bytes and closes.  'U' + 8-byte length: the client sends that
 * many bytes, the server answers with the 8-byte count it received.  'E':
 * the server echoes the byte, then waits for the client's close.
 *
 * down/up print one line "bytes=B secs=S mbs=M" (MB = 10^6 bytes), timed
 * from before connect() to the last byte (down: EOF; up: the server's
 * count).  lat prints one sample per line in nanoseconds: from before
 * socket()+connect() to the echoed byte's arrival (close is not timed).
 * Built statically by bench/egress.sh so it runs inside a cell, a pasta or
 * a slirp4netns namespace alike.  Exit status 0 only if every transfer was
 * complete. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#define BUF (256 * 1024)

static char buf[BUF];

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int write_all(int fd, const void *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        p = (const char *)p + w;
        n -= (size_t)w;
    }
    return 0;
}

static int read_all(int fd, void *p, size_t n)
{
    while (n > 0) {
        ssize_t r = read(fd, p, n);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        p = (char *)p + r;
        n -= (size_t)r;
    }
    return 0;
}

static int dial(const char *addr, int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1) {
        fprintf(stderr, "net_bench: bad address %s\n", addr);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* ---- server ----------------------------------------------------------------- */
static void serve_one(int fd)
{
    struct timeval tv = { .tv_sec = 30 };   /* a stuck client cannot stall the server */
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    char op;
    uint64_t len = 0;
    if (read_all(fd, &op, 1) < 0)
        return;
    if (op == 'E') {
        if (write_all(fd, &op, 1) < 0)
            return;
        while (read(fd, buf, sizeof buf) > 0) { /* until the client closes */ }
        return;
    }
    if (read_all(fd, &len, sizeof len) < 0)
        return;
    if (op == 'D') {
        while (len > 0) {
            size_t n = len < BUF ? (size_t)len : BUF;
            if (write_all(fd, buf, n) < 0)
                return;
            len -= n;
        }
    } else if (op == 'U') {
        uint64_t got = 0;
        for (;;) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r < 0 && errno == EINTR)
                continue;
            if (r <= 0)
                break;
            got += (uint64_t)r;
            if (got >= len)
                break;
        }
        write_all(fd, &got, sizeof got);
    }
}

static int serve(const char *addr, const char *portfile)
{
    struct sockaddr_in sa = { .sin_family = AF_INET };
    if (inet_pton(AF_INET, addr, &sa.sin_addr) != 1)
        return fprintf(stderr, "net_bench: bad address %s\n", addr), 2;
    int one = 1, lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    socklen_t sl = sizeof sa;
    if (lfd < 0 || bind(lfd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(lfd, 1024) < 0 ||
        getsockname(lfd, (struct sockaddr *)&sa, &sl) < 0)
        return perror("net_bench: listen"), 1;
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", portfile);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d\n", ntohs(sa.sin_port)) < 0 || fclose(f) != 0 || rename(tmp, portfile) < 0)
        return perror("net_bench: port file"), 1;
    memset(buf, 'x', sizeof buf);
    for (;;) {
        int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return perror("net_bench: accept"), 1;
        }
        serve_one(fd);
        close(fd);
    }
}

/* ---- clients ------------------------------------------------------------------- */
static int transfer(const char *addr, int port, uint64_t len, char op)
{
    double t0 = now_s();
    int fd = dial(addr, port);
    if (fd < 0)
        return perror("net_bench: connect"), 1;
    char hdr[9];
    hdr[0] = op;
    memcpy(hdr + 1, &len, 8);
    if (write_all(fd, hdr, sizeof hdr) < 0)
        return perror("net_bench: request"), 1;
    uint64_t got = 0;
    if (op == 'D') {
        for (;;) {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r < 0 && errno == EINTR)
                continue;
            if (r < 0)
                return perror("net_bench: read"), 1;
            if (r == 0)
                break;
            got += (uint64_t)r;
        }
    } else {
        uint64_t left = len;
        while (left > 0) {
            size_t n = left < BUF ? (size_t)left : BUF;
            if (write_all(fd, buf, n) < 0)
                return perror("net_bench: write"), 1;
            left -= n;
        }
        if (read_all(fd, &got, sizeof got) < 0)
            return perror("net_bench: reading the count"), 1;
    }
    double t = now_s() - t0;
    close(fd);
    printf("bytes=%llu secs=%.6f mbs=%.1f\n", (unsigned long long)got, t, (double)got / t / 1e6);
    if (got != len)
        return fprintf(stderr, "net_bench: %llu of %llu bytes\n", (unsigned long long)got, (unsigned long long)len), 1;
    return 0;
}

static int latency(const char *addr, int port, int n, int warmup)
{
    int64_t *s = calloc((size_t)n, sizeof *s);
    int fails = 0;
    if (!s)
        return 1;
    for (int i = 0; i < warmup + n; i++) {
        int64_t t0 = now_ns();
        int fd = dial(addr, port);
        char c = 'E', r = 0;
        if (fd < 0 || write_all(fd, &c, 1) < 0 || read_all(fd, &r, 1) < 0 || r != 'E') {
            if (fd >= 0)
                close(fd);
            if (++fails > 10)
                return fprintf(stderr, "net_bench: %d failed connections\n", fails), 1;
            i--;
            continue;
        }
        int64_t t = now_ns() - t0;
        close(fd);
        if (i >= warmup)
            s[i - warmup] = t;
    }
    for (int i = 0; i < n; i++)
        printf("%lld\n", (long long)s[i]);
    if (fails)
        fprintf(stderr, "net_bench: %d connections failed and were retried\n", fails);
    free(s);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "serve"))
        return serve(argv[2], argv[3]);
    if (argc == 5 && (!strcmp(argv[1], "down") || !strcmp(argv[1], "up"))) {
        memset(buf, 'y', sizeof buf);
        return transfer(argv[2], atoi(argv[3]), strtoull(argv[4], NULL, 10), argv[1][0] == 'd' ? 'D' : 'U');
    }
    if (argc == 6 && !strcmp(argv[1], "lat"))
        return latency(argv[2], atoi(argv[3]), atoi(argv[4]), atoi(argv[5]));
    fprintf(stderr, "usage: net_bench serve ADDR PORTFILE | down|up ADDR PORT BYTES | lat ADDR PORT N WARMUP\n");
    return 2;
}
