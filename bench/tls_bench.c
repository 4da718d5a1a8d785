/* tls_bench.c: HTTPS server and clients for bench/egress.sh (the "https"
 * benchmarks: interception by an `http` rule against direct TLS).
 *
 *   tls_bench serve ADDR PORT CERT KEY READYFILE [close]
 *       HTTPS/1.1 on ADDR:PORT (TLS 1.2+; 16 threads, each accepting and
 *       serving one connection at a time, so no thread is started per
 *       connection).
 *       GET /small answers 64 bytes, GET /bytes/N answers N bytes, with
 *       Content-Length.  Connections are kept alive, as most servers do,
 *       unless the request says "Connection: close" (or the server was
 *       started with "close": then every response says it and ends its
 *       connection).  Writes READYFILE when listening.
 *   tls_bench rps ADDR|- PORT NAME CAFILE N WARMUP
 *       WARMUP untimed, then N timed GET /small, each on a new TCP connection
 *       with a full TLS handshake (no session resumption), SNI and
 *       certificate name NAME, trusting CAFILE.  ADDR "-" resolves NAME
 *       (getaddrinfo, i.e. the cell's DNS).  Prints "# n=N wall_ns=W rps=R",
 *       then one line per request: ns from before socket() to the last body
 *       byte (the TLS close is not timed).
 *   tls_bench get ADDR|- PORT NAME CAFILE BYTES
 *       One GET /bytes/BYTES; prints "bytes=B secs=S mbs=M" (MB = 10^6 bytes),
 *       timed from before socket() to the last body byte.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CHUNK (256 * 1024)

static void die(const char *what)
{
    fprintf(stderr, "tls_bench: %s: %s\n", what, errno ? strerror(errno) : "failed");
    ERR_print_errors_fp(stderr);
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* ---- server --------------------------------------------------------------- */

static int always_close;
static char body[CHUNK];        /* 'x's, filled before the first connection */

/* One connection: requests (GETs, no bodies) until the client closes or
 * asks to. */
static int serve_one(SSL_CTX *ctx, int fd, char *buf)
{
    SSL *ssl = SSL_new(ctx);
    int ok = -1;
    if (!ssl)
        goto out;
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1)
        goto out;
    size_t have = 0;
    for (;;) {
        char *end = have ? strstr(buf, "\r\n\r\n") : NULL;
        while (!end) {
            if (have >= 8191)
                goto out;
            int r = SSL_read(ssl, buf + have, (int)(8191 - have));
            if (r <= 0) {
                ok = have ? -1 : 0;     /* the client closed between requests */
                goto out;
            }
            have += (size_t)r;
            buf[have] = '\0';
            end = strstr(buf, "\r\n\r\n");
        }
        *end = '\0';
        int close_after = always_close || strcasestr(buf, "\r\nconnection: close") != NULL;
        const char *conn = close_after ? "Connection: close\r\n" : "";
        unsigned long long n = 0;
        int found = 1;
        if (strncmp(buf, "GET /small ", 11) == 0)
            n = 64;
        else if (strncmp(buf, "GET /bytes/", 11) == 0)
            n = strtoull(buf + 11, NULL, 10);
        else
            found = 0, close_after = 1, conn = "Connection: close\r\n";
        size_t used = (size_t)(end + 4 - buf);
        memmove(buf, buf + used, have - used + 1);
        have -= used;
        char head[256];
        int hl = snprintf(head, sizeof head,
                          "HTTP/1.1 %s\r\nContent-Type: application/octet-stream\r\nContent-Length: %llu\r\n%s\r\n",
                          found ? "200 OK" : "404 Not Found", n, conn);
        if (SSL_write(ssl, head, hl) != hl)
            goto out;
        if (n) {
            /* The body comes from a buffer of its own: buf may hold the
             * start of the next request. */
            while (n) {
                int w = (int)(n < CHUNK ? n : CHUNK);
                if (SSL_write(ssl, body, w) != w)
                    goto out;
                n -= (unsigned long long)w;
            }
        }
        if (close_after)
            break;
    }
    SSL_shutdown(ssl);
    ok = 0;
out:
    SSL_free(ssl);
    close(fd);
    return ok;
}

#define SERVE_THREADS 16

static SSL_CTX *serve_ctx;
static int      serve_fd;

static _Noreturn void *accept_main(void *arg)
{
    (void)arg;
    int one = 1;
    char *buf = malloc(8192);
    if (!buf)
        die("malloc");
    for (;;) {
        int c = accept4(serve_fd, NULL, NULL, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            die("accept");
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        if (serve_one(serve_ctx, c, buf) < 0)
            ERR_clear_error();
    }
}

static _Noreturn void cmd_serve(char **av)
{
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) ||
        SSL_CTX_use_certificate_chain_file(ctx, av[2]) != 1 ||
        SSL_CTX_use_PrivateKey_file(ctx, av[3], SSL_FILETYPE_PEM) != 1)
        die("server TLS setup");
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)atoi(av[1])) };
    if (fd < 0 || inet_pton(AF_INET, av[0], &sa.sin_addr) != 1)
        die("socket");
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || listen(fd, 128) < 0)
        die("bind/listen");
    FILE *f = fopen(av[4], "w");
    if (!f || fprintf(f, "ready\n") < 0 || fclose(f) != 0)
        die(av[4]);
    memset(body, 'x', sizeof body);
    serve_ctx = ctx;
    serve_fd = fd;
    pthread_t t;
    for (int i = 1; i < SERVE_THREADS; i++)
        if (pthread_create(&t, NULL, accept_main, NULL) != 0)
            die("pthread_create");
    accept_main(NULL);
}

/* ---- clients -------------------------------------------------------------- */

struct target {
    struct sockaddr_in sa;
    const char *name;
    SSL_CTX *ctx;
};

static void target_init(struct target *t, char **av)
{
    memset(t, 0, sizeof *t);
    t->sa.sin_family = AF_INET;
    t->sa.sin_port = htons((uint16_t)atoi(av[1]));
    t->name = av[2];
    if (strcmp(av[0], "-") == 0) {
        struct addrinfo hints = { .ai_family = AF_INET, .ai_socktype = SOCK_STREAM }, *res;
        int e = getaddrinfo(t->name, NULL, &hints, &res);
        if (e) {
            fprintf(stderr, "tls_bench: resolving %s: %s\n", t->name, gai_strerror(e));
            exit(1);
        }
        t->sa.sin_addr = ((struct sockaddr_in *)res->ai_addr)->sin_addr;
        freeaddrinfo(res);
    } else if (inet_pton(AF_INET, av[0], &t->sa.sin_addr) != 1) {
        errno = EINVAL;
        die(av[0]);
    }
    t->ctx = SSL_CTX_new(TLS_client_method());
    if (!t->ctx || !SSL_CTX_set_min_proto_version(t->ctx, TLS1_2_VERSION) ||
        SSL_CTX_load_verify_locations(t->ctx, av[3], NULL) != 1)
        die("client TLS setup");
    SSL_CTX_set_verify(t->ctx, SSL_VERIFY_PEER, NULL);
    SSL_CTX_set_session_cache_mode(t->ctx, SSL_SESS_CACHE_OFF);
}

/* One GET on a fresh connection; returns the body length, or -1.  *t_end is
 * set when the last body byte has arrived. */
static long long fetch(struct target *t, const char *path, char *buf, uint64_t *t_end)
{
    long long got = -1;
    int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    SSL *ssl = NULL;
    if (fd < 0)
        return -1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(fd, (struct sockaddr *)&t->sa, sizeof t->sa) < 0)
        goto out;
    if (!(ssl = SSL_new(t->ctx)))
        goto out;
    SSL_set_fd(ssl, fd);
    SSL_set_tlsext_host_name(ssl, t->name);
    SSL_set1_host(ssl, t->name);
    if (SSL_connect(ssl) != 1)
        goto out;
    char req[512];
    int rl = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: tls_bench\r\nConnection: close\r\n\r\n",
                      path, t->name);
    if (SSL_write(ssl, req, rl) != rl)
        goto out;
    /* Head, then Content-Length bytes of body. */
    size_t have = 0;
    char *end = NULL;
    while (!end) {
        if (have >= 16383)
            goto out;
        int r = SSL_read(ssl, buf + have, (int)(16383 - have));
        if (r <= 0)
            goto out;
        have += (size_t)r;
        buf[have] = '\0';
        end = strstr(buf, "\r\n\r\n");
    }
    if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
        *end = '\0';
        fprintf(stderr, "tls_bench: response: %s\n", buf);
        goto out;
    }
    char *cl = strcasestr(buf, "\r\ncontent-length:");
    if (!cl || cl > end)
        goto out;
    long long want = strtoll(cl + 17, NULL, 10), seen = (long long)(buf + have - (end + 4));
    while (seen < want) {
        int r = SSL_read(ssl, buf, CHUNK);
        if (r <= 0)
            goto out;
        seen += r;
    }
    *t_end = now_ns();
    got = seen;
    SSL_shutdown(ssl);
out:
    if (got < 0)
        ERR_print_errors_fp(stderr);
    SSL_free(ssl);
    close(fd);
    return got;
}

static int cmd_rps(char **av)
{
    struct target t;
    target_init(&t, av);
    long n = atol(av[4]), warm = atol(av[5]);
    char *buf = malloc(CHUNK);
    uint64_t *s = calloc((size_t)n + 1, sizeof *s), te;
    if (!buf || !s)
        die("malloc");
    for (long i = 0; i < warm; i++)
        if (fetch(&t, "/small", buf, &te) != 64)
            die("warm-up request");
    uint64_t w0 = now_ns();
    for (long i = 0; i < n; i++) {
        uint64_t t0 = now_ns();
        if (fetch(&t, "/small", buf, &te) != 64) {
            fprintf(stderr, "tls_bench: request %ld of %ld failed\n", i + 1, n);
            exit(1);
        }
        s[i] = te - t0;
    }
    uint64_t wall = now_ns() - w0;
    printf("# n=%ld wall_ns=%llu rps=%.1f\n", n, (unsigned long long)wall, n / (wall / 1e9));
    for (long i = 0; i < n; i++)
        printf("%llu\n", (unsigned long long)s[i]);
    return 0;
}

static int cmd_get(char **av)
{
    struct target t;
    target_init(&t, av);
    long long want = atoll(av[4]);
    char path[64], *buf = malloc(CHUNK);
    if (!buf)
        die("malloc");
    snprintf(path, sizeof path, "/bytes/%lld", want);
    uint64_t t0 = now_ns(), te;
    long long got = fetch(&t, path, buf, &te);
    if (got != want) {
        fprintf(stderr, "tls_bench: got %lld of %lld bytes\n", got, want);
        return 1;
    }
    double secs = (te - t0) / 1e9;
    printf("bytes=%lld secs=%.3f mbs=%.1f\n", got, secs, got / secs / 1e6);
    return 0;
}

int main(int argc, char **argv)
{
    signal(SIGPIPE, SIG_IGN);
    if ((argc == 7 || (argc == 8 && strcmp(argv[7], "close") == 0)) && strcmp(argv[1], "serve") == 0) {
        always_close = argc == 8;
        cmd_serve(argv + 2);
    }
    if (argc == 8 && strcmp(argv[1], "rps") == 0)
        return cmd_rps(argv + 2);
    if (argc == 7 && strcmp(argv[1], "get") == 0)
        return cmd_get(argv + 2);
    fprintf(stderr, "usage: tls_bench serve ADDR PORT CERT KEY READYFILE [close]\n"
                    "       tls_bench rps ADDR|- PORT NAME CAFILE N WARMUP\n"
                    "       tls_bench get ADDR|- PORT NAME CAFILE BYTES\n");
    return 2;
}
