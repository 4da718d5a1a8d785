/* test_net_pool.c: upstream keep-alive of "http" flows: the pool's scoping,
 * staleness and bounds, and net_http_serve against a scripted fake upstream. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <unistd.h>

#include "net/http.h"
#include "net/upstream.h"

/* ---- the pool alone ------------------------------------------------------- */

static struct sockaddr_in addr4(const char *ip, int port)
{
    struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    inet_pton(AF_INET, ip, &a.sin_addr);
    return a;
}

static net_pool_key key_of(const char *host, const struct sockaddr_in *a, int tls)
{
    return (net_pool_key){ .host = host, .dst = (const struct sockaddr *)a, .dst_len = sizeof *a, .tls = tls };
}

/* A connected pair: [0] goes into the pool, [1] plays the upstream. */
static void pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

/* 1 if fd's peer has been closed (EOF, or a reset when it left bytes unread). */
static int peer_closed(int fd)
{
    struct pollfd pf = { .fd = fd, .events = POLLIN };
    char c;
    return poll(&pf, 1, 1000) == 1 && recv(fd, &c, 1, MSG_DONTWAIT) <= 0;
}

static void pool_scoping(void **state)
{
    (void)state;
    net_http_pool *p = net_http_pool_new();
    assert_non_null(p);
    struct sockaddr_in a = addr4("192.0.2.1", 443), a_port = addr4("192.0.2.1", 8443), b = addr4("192.0.2.2", 443);
    net_pool_key k = key_of("api.test", &a, 1);
    int sv[2], fd;
    SSL *ssl;
    pair(sv);
    net_http_pool_put(p, &k, net_http_pool_gen(p), sv[0], NULL);
    size_t idle;
    net_http_pool_stats(p, &idle, NULL);
    assert_int_equal(idle, 1);
    /* Another host name, address, port, or TLS-ness never gets it. */
    net_pool_key others[] = { key_of("other.test", &a, 1), key_of("api.test", &b, 1), key_of("api.test", &a_port, 1),
                              key_of("api.test", &a, 0), key_of("api.test.evil", &a, 1) };
    for (size_t i = 0; i < sizeof others / sizeof others[0]; i++)
        assert_int_equal(net_http_pool_get(p, &others[i], &fd, &ssl), 0);
    /* Case and a trailing dot do not make another name. */
    net_pool_key same = key_of("API.Test.", &a, 1);
    assert_int_equal(net_http_pool_get(p, &same, &fd, &ssl), 1);
    assert_int_equal(fd, sv[0]);
    assert_null(ssl);
    assert_int_equal(net_http_pool_get(p, &k, &fd, &ssl), 0);   /* taken: gone from the pool */

    /* Another pool (another cell's engine) never sees this one's connections. */
    net_http_pool *q = net_http_pool_new();
    net_http_pool_put(p, &k, net_http_pool_gen(p), sv[0], NULL);
    assert_int_equal(net_http_pool_get(q, &k, &fd, &ssl), 0);
    net_http_pool_free(q);
    net_http_pool_free(p);                  /* closes the idle one */
    assert_true(peer_closed(sv[1]));
    close(sv[1]);
}

static void pool_stale_and_extra(void **state)
{
    (void)state;
    net_http_pool *p = net_http_pool_new();
    struct sockaddr_in a = addr4("192.0.2.1", 80);
    net_pool_key k = key_of("api.test", &a, 0);
    int s1[2], s2[2], s3[2], fd;
    SSL *ssl;
    /* The upstream closed it while idle: never handed out. */
    pair(s1);
    net_http_pool_put(p, &k, net_http_pool_gen(p), s1[0], NULL);
    close(s1[1]);
    assert_int_equal(net_http_pool_get(p, &k, &fd, &ssl), 0);
    /* Bytes nobody asked for arrived while idle: not handed out either. */
    pair(s2);
    net_http_pool_put(p, &k, net_http_pool_gen(p), s2[0], NULL);
    assert_int_equal(write(s2[1], "HTTP/1.1 200 OK\r\n", 17), 17);
    assert_int_equal(net_http_pool_get(p, &k, &fd, &ssl), 0);
    assert_true(peer_closed(s2[1]));
    close(s2[1]);
    /* ... nor taken back when they are there at once. */
    pair(s3);
    assert_int_equal(write(s3[1], "x", 1), 1);
    net_http_pool_put(p, &k, net_http_pool_gen(p), s3[0], NULL);
    size_t idle;
    net_http_pool_stats(p, &idle, NULL);
    assert_int_equal(idle, 0);
    assert_true(peer_closed(s3[1]));
    close(s3[1]);
    net_http_pool_free(p);
}

static void pool_bounds_and_flush(void **state)
{
    (void)state;
    net_http_pool *p = net_http_pool_new();
    struct sockaddr_in a = addr4("192.0.2.1", 80);
    net_pool_key k = key_of("api.test", &a, 0);
    int peers[NET_POOL_PER_KEY + 1];
    for (int i = 0; i <= NET_POOL_PER_KEY; i++) {
        int sv[2];
        pair(sv);
        peers[i] = sv[1];
        net_http_pool_put(p, &k, net_http_pool_gen(p), sv[0], NULL);
    }
    size_t idle;
    net_http_pool_stats(p, &idle, NULL);
    assert_int_equal(idle, NET_POOL_PER_KEY);       /* the one over the bound was closed */
    assert_true(peer_closed(peers[NET_POOL_PER_KEY]));

    /* A connection taken before a flush (a new policy) is not taken back. */
    unsigned gen = net_http_pool_gen(p);
    int fd;
    SSL *ssl;
    assert_int_equal(net_http_pool_get(p, &k, &fd, &ssl), 1);
    net_http_pool_flush(p);
    net_http_pool_stats(p, &idle, NULL);
    assert_int_equal(idle, 0);
    net_http_pool_put(p, &k, gen, fd, NULL);
    net_http_pool_stats(p, &idle, NULL);
    assert_int_equal(idle, 0);
    for (int i = 0; i <= NET_POOL_PER_KEY; i++) {
        assert_true(peer_closed(peers[i]));
        close(peers[i]);
    }

    /* The whole pool is bounded too: the least recently used goes. */
    int many[NET_POOL_MAX + 1];
    char host[32];
    for (int i = 0; i <= NET_POOL_MAX; i++) {
        int sv[2];
        pair(sv);
        many[i] = sv[1];
        snprintf(host, sizeof host, "h%d.test", i);
        net_pool_key hk = key_of(host, &a, 0);
        net_http_pool_put(p, &hk, net_http_pool_gen(p), sv[0], NULL);
    }
    net_http_pool_stats(p, &idle, NULL);
    assert_int_equal(idle, NET_POOL_MAX);
    net_http_pool_free(p);
    for (int i = 0; i <= NET_POOL_MAX; i++) {
        assert_true(peer_closed(many[i]));
        close(many[i]);
    }
}

/* ---- net_http_serve against a fake upstream --------------------------------- */

/* The upstream answers by path:
 *   /ka       200, Content-Length: its connection number "c=N"
 *   /chunked  200, chunked "c=N"
 *   /eof      200 without framing (the body ends at EOF), then closes
 *   /close    200 with Content-Length and "Connection: close"
 *   /extra    200 "c=N", then a second response nobody asked for
 *   /drop     200 "c=N"; the next request on this connection is not answered (closed)
 *   /head     (HEAD) 200 with Content-Length: 100 and no body
 * Every request head is kept (for the secret check). */
typedef struct upstream {
    int             lfd;
    struct sockaddr_in addr;
    pthread_mutex_t lock;
    int             conns, requests;
    char            last_head[4096];
    pthread_t       thread;
} upstream;

typedef struct up_conn {
    upstream *u;
    int       fd, n;
} up_conn;

static void send_all(int fd, const char *s)
{
    size_t n = strlen(s);
    while (n) {
        ssize_t w = send(fd, s, n, MSG_NOSIGNAL);
        if (w <= 0)
            return;
        s += w;
        n -= (size_t)w;
    }
}

static void *up_conn_main(void *arg)
{
    up_conn *c = arg;
    char buf[8192];
    size_t have = 0;
    int drop_next = 0;
    for (;;) {
        char *end;
        while (!(end = memmem(buf, have, "\r\n\r\n", 4))) {
            ssize_t r = recv(c->fd, buf + have, sizeof buf - have - 1, 0);
            if (r <= 0)
                goto out;
            have += (size_t)r;
        }
        size_t hl = (size_t)(end + 4 - buf);
        pthread_mutex_lock(&c->u->lock);
        c->u->requests++;
        snprintf(c->u->last_head, sizeof c->u->last_head, "%.*s", (int)hl, buf);
        pthread_mutex_unlock(&c->u->lock);
        char path[64] = "";
        sscanf(buf, "%*s %63s", path);
        memmove(buf, buf + hl, have - hl);
        have -= hl;
        if (drop_next)
            goto out;
        char resp[512];
        if (strcmp(path, "/chunked") == 0)
            snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nc=%d\r\n0\r\n\r\n", c->n);
        else if (strcmp(path, "/eof") == 0)
            snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\n\r\nc=%d", c->n);
        else if (strcmp(path, "/close") == 0)
            snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nc=%d", c->n);
        else if (strcmp(path, "/extra") == 0)
            snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nc=%d"
                                        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nEVIL!", c->n);
        else if (strcmp(path, "/head") == 0)
            snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n");
        else
            snprintf(resp, sizeof resp, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nc=%d", c->n);
        send_all(c->fd, resp);
        if (strcmp(path, "/eof") == 0 || strcmp(path, "/close") == 0)
            goto out;
        drop_next = strcmp(path, "/drop") == 0;
    }
out:
    close(c->fd);
    free(c);
    return NULL;
}

static void *up_main(void *arg)
{
    upstream *u = arg;
    for (;;) {
        int fd = accept(u->lfd, NULL, NULL);
        if (fd < 0)
            return NULL;    /* the listener was shut down */
        up_conn *c = malloc(sizeof *c);
        assert_non_null(c);
        pthread_mutex_lock(&u->lock);
        *c = (up_conn){ .u = u, .fd = fd, .n = ++u->conns };
        pthread_mutex_unlock(&u->lock);
        pthread_t t;
        assert_int_equal(pthread_create(&t, NULL, up_conn_main, c), 0);
        pthread_detach(t);
    }
}

static void upstream_start(upstream *u)
{
    memset(u, 0, sizeof *u);
    pthread_mutex_init(&u->lock, NULL);
    u->lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(u->lfd >= 0);
    u->addr = addr4("127.0.0.1", 0);
    socklen_t len = sizeof u->addr;
    assert_int_equal(bind(u->lfd, (struct sockaddr *)&u->addr, sizeof u->addr), 0);
    assert_int_equal(listen(u->lfd, 64), 0);
    assert_int_equal(getsockname(u->lfd, (struct sockaddr *)&u->addr, &len), 0);
    assert_int_equal(pthread_create(&u->thread, NULL, up_main, u), 0);
}

static void upstream_stop(upstream *u)
{
    shutdown(u->lfd, SHUT_RDWR);
    pthread_join(u->thread, NULL);
    close(u->lfd);
    pthread_mutex_destroy(&u->lock);
}

static int counts(upstream *u, int *requests)
{
    pthread_mutex_lock(&u->lock);
    int c = u->conns;
    if (requests)
        *requests = u->requests;
    pthread_mutex_unlock(&u->lock);
    return c;
}

#define SECRET "s3cr3t-never-in-the-cell"

static int fake_secret(void *user, const char *name, char **value, size_t *len)
{
    (void)user;
    if (strcmp(name, "TOKEN") != 0)
        return -1;
    *value = strdup(SECRET);
    *len = strlen(SECRET);
    return 0;
}

static char audit_log[65536];

static void fake_audit(void *arg, json_t *rec)
{
    (void)arg;
    char *t = json_dumps(rec, JSON_COMPACT);
    if (t && strlen(audit_log) + strlen(t) + 2 < sizeof audit_log) {
        strcat(audit_log, t);
        strcat(audit_log, "\n");
    }
    free(t);
    json_decref(rec);
}

static void fake_track(void *arg, int fd, int on)
{
    (void)arg, (void)fd, (void)on;
}

static int fake_dial(const struct sockaddr *dst, socklen_t len)
{
    int fd = socket(dst->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd >= 0 && connect(fd, dst, len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

static net_header inject[] = { { "Authorization", "Bearer ${secret:TOKEN}" } };
static net_http_rule rule = { .set = inject, .n_set = 1 };
static net_http_rule *flow_rule = &rule;   /* the rule cell_request's flows are allowed by */

/* One cell connection: `request` goes in, the whole answer comes back
 * (malloc()ed) after net_http_serve returns. */
static char *cell_request(net_http_env *env, upstream *u, const char *host, const char *request)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    send_all(sv[1], request);
    shutdown(sv[1], SHUT_WR);
    char dst_text[64];
    snprintf(dst_text, sizeof dst_text, "127.0.0.1:%u", ntohs(u->addr.sin_port));
    net_http_flow f = { .cfd = sv[0], .dst = (struct sockaddr *)&u->addr, .dst_len = sizeof u->addr,
                        .dst_text = dst_text, .host = host, .rule = flow_rule, .rule_index = 0 };
    uint64_t out = 0, in = 0;
    net_http_serve(env, &f, &out, &in);
    close(sv[0]);
    size_t cap = 65536, have = 0;
    char *r = malloc(cap);
    assert_non_null(r);
    ssize_t n;
    while ((n = read(sv[1], r + have, cap - have - 1)) > 0)
        have += (size_t)n;
    r[have] = '\0';
    close(sv[1]);
    return r;
}

static char *get(net_http_env *env, upstream *u, const char *host, const char *method, const char *path)
{
    char req[512];
    snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer from-the-cell\r\n\r\n", method,
             path, host);
    return cell_request(env, u, host, req);
}

/* The answer's body holds "c=N" from upstream connection N (chunked or not). */
static int conn_of(const char *answer)
{
    const char *b = strstr(answer, "\r\n\r\n");
    int n = -1;
    if (!b || !(b = strstr(b, "c=")) || sscanf(b, "c=%d", &n) != 1)
        print_error("answer: %s\n", answer);
    return n;
}

static net_http_env make_env(net_http_pool *pool)
{
    return (net_http_env){ .secret = fake_secret, .audit = fake_audit, .track = fake_track, .dial = fake_dial,
                           .pool = pool };
}

static void serve_reuses_and_injects(void **state)
{
    (void)state;
    upstream u;
    upstream_start(&u);
    net_http_pool *pool = net_http_pool_new();
    net_http_env env = make_env(pool);
    audit_log[0] = '\0';
    for (int i = 0; i < 3; i++) {
        char *a = get(&env, &u, "api.test", "GET", i == 1 ? "/chunked" : "/ka");
        assert_int_equal(conn_of(a), 1);
        assert_null(strstr(a, SECRET));
        assert_non_null(strstr(a, "Connection: keep-alive\r\n")); /* the cell may send another */
        free(a);
        /* The secret is injected on a reused connection too; the cell's own
         * Authorization is gone; the request is keep-alive. */
        pthread_mutex_lock(&u.lock);
        assert_non_null(strstr(u.last_head, "Authorization: Bearer " SECRET "\r\n"));
        assert_null(strstr(u.last_head, "from-the-cell"));
        assert_null(strstr(u.last_head, "Connection:"));
        pthread_mutex_unlock(&u.lock);
    }
    int requests;
    assert_int_equal(counts(&u, &requests), 1);
    assert_int_equal(requests, 3);
    /* HEAD: a Content-Length and no body; the connection stays usable. */
    char *h = get(&env, &u, "api.test", "HEAD", "/head");
    assert_non_null(strstr(h, "Content-Length: 100\r\n"));
    free(h);
    char *a = get(&env, &u, "api.test", "GET", "/ka");
    assert_int_equal(conn_of(a), 1);
    free(a);
    /* Another host name on the same address and port: its own connection. */
    a = get(&env, &u, "other.test", "GET", "/ka");
    assert_int_equal(conn_of(a), 2);
    free(a);
    /* Another pool (another cell): its own connection too. */
    net_http_pool *pool2 = net_http_pool_new();
    net_http_env env2 = make_env(pool2);
    a = get(&env2, &u, "api.test", "GET", "/ka");
    assert_int_equal(conn_of(a), 3);
    free(a);
    assert_null(strstr(audit_log, SECRET));
    assert_non_null(strstr(audit_log, "\"status\":200"));
    net_http_pool_free(pool2);
    net_http_pool_free(pool);
    upstream_stop(&u);
}

static int count_of(const char *hay, const char *needle)
{
    int n = 0;
    for (const char *p = strstr(hay, needle); p; p = strstr(p + 1, needle))
        n++;
    return n;
}

/* The cell's connection carries several requests, pipelined or not, each
 * checked on its own; a refused one ends the connection, and nothing the
 * cell sent after it is served. */
static void serve_keeps_the_cells_connection(void **state)
{
    (void)state;
    upstream u;
    upstream_start(&u);
    net_http_pool *pool = net_http_pool_new();
    net_http_env env = make_env(pool);
    static char *allowed_paths[] = { "/ka", "/chunked", NULL };
    net_http_rule narrow = { .set = inject, .n_set = 1, .paths = allowed_paths };
    audit_log[0] = '\0';
    const char *three = "GET /ka HTTP/1.1\r\nHost: api.test\r\n\r\n"
                        "GET /chunked HTTP/1.1\r\nHost: api.test\r\n\r\n"
                        "HEAD /head HTTP/1.1\r\nHost: api.test\r\nConnection: close\r\n\r\n"
                        "GET /ka HTTP/1.1\r\nHost: api.test\r\n\r\n";
    char *a = cell_request(&env, &u, "api.test", three);
    /* Three answered in order on one upstream connection; the third asked
     * to close, so the fourth was never read. */
    assert_int_equal(count_of(a, "HTTP/1.1 200"), 3);
    assert_int_equal(count_of(a, "Connection: keep-alive\r\n"), 2);
    assert_int_equal(count_of(a, "Connection: close\r\n"), 1);
    assert_null(strstr(a, SECRET));
    free(a);
    int requests;
    assert_int_equal(counts(&u, &requests), 1);
    assert_int_equal(requests, 3);
    assert_int_equal(count_of(audit_log, "\"event\":\"http\""), 3);

    flow_rule = &narrow;
    a = cell_request(&env, &u, "api.test",
                     "GET /ka HTTP/1.1\r\nHost: api.test\r\n\r\n"
                     "GET /eof HTTP/1.1\r\nHost: api.test\r\n\r\n"
                     "GET /ka HTTP/1.1\r\nHost: api.test\r\n\r\n");
    flow_rule = &rule;
    assert_int_equal(count_of(a, "HTTP/1.1 200"), 1);
    assert_int_equal(count_of(a, " 403 "), 1);
    free(a);
    assert_int_equal(counts(&u, &requests), 1);
    assert_int_equal(requests, 4);      /* the forbidden one and the one after it never went upstream */
    net_http_pool_free(pool);
    upstream_stop(&u);
}

static void serve_not_pooled(void **state)
{
    (void)state;
    upstream u;
    upstream_start(&u);
    net_http_pool *pool = net_http_pool_new();
    net_http_env env = make_env(pool);
    size_t idle;
    /* A body delimited by EOF, or "Connection: close": not pooled. */
    const char *paths[] = { "/eof", "/close" };
    int expect = 0;
    for (size_t i = 0; i < 2; i++) {
        char *a = get(&env, &u, "api.test", "GET", paths[i]);
        assert_int_equal(conn_of(a), ++expect);
        free(a);
        net_http_pool_stats(pool, &idle, NULL);
        assert_int_equal(idle, 0);
    }
    /* Bytes after the response: not relayed, and the connection is dropped,
     * so they never answer the next request. */
    char *a = get(&env, &u, "api.test", "GET", "/extra");
    assert_int_equal(conn_of(a), ++expect);
    assert_null(strstr(a, "EVIL"));
    free(a);
    a = get(&env, &u, "api.test", "GET", "/ka");
    assert_null(strstr(a, "EVIL"));
    assert_int_equal(conn_of(a), ++expect);
    free(a);
    /* Without a pool, every request has its own connection and says close. */
    net_http_env plain = make_env(NULL);
    for (int i = 0; i < 2; i++) {
        a = get(&plain, &u, "api.test", "GET", "/ka");
        assert_int_equal(conn_of(a), ++expect);
        free(a);
        pthread_mutex_lock(&u.lock);
        assert_non_null(strstr(u.last_head, "Connection: close\r\n"));
        pthread_mutex_unlock(&u.lock);
    }
    net_http_pool_free(pool);
    upstream_stop(&u);
}

static void serve_dead_pooled_connection(void **state)
{
    (void)state;
    upstream u;
    upstream_start(&u);
    net_http_pool *pool = net_http_pool_new();
    net_http_env env = make_env(pool);
    /* The upstream closes the next request's connection without answering
     * (as when it closes an idle connection just as it is reused): a GET
     * is sent again on a new connection. */
    char *a = get(&env, &u, "api.test", "GET", "/drop");
    assert_int_equal(conn_of(a), 1);
    free(a);
    a = get(&env, &u, "api.test", "GET", "/ka");
    assert_int_equal(conn_of(a), 2);
    free(a);
    int requests;
    assert_int_equal(counts(&u, &requests), 2);
    assert_int_equal(requests, 3);
    /* A POST with a body is not repeated: the cell gets a 502. */
    a = get(&env, &u, "api.test", "GET", "/drop");
    assert_int_equal(conn_of(a), 2);
    free(a);
    a = cell_request(&env, &u, "api.test", "POST /ka HTTP/1.1\r\nHost: api.test\r\nContent-Length: 4\r\n\r\nbody");
    /* 502, or closed if the body met the closed connection first. */
    assert_true(strstr(a, "HTTP/1.1 502 ") || a[0] == '\0');
    assert_null(strstr(a, "c="));
    free(a);
    assert_int_equal(counts(&u, &requests), 2);
    assert_int_equal(requests, 5);
    net_http_pool_free(pool);
    upstream_stop(&u);
}

static void serve_flush(void **state)
{
    (void)state;
    upstream u;
    upstream_start(&u);
    net_http_pool *pool = net_http_pool_new();
    net_http_env env = make_env(pool);
    char *a = get(&env, &u, "api.test", "GET", "/ka");
    assert_int_equal(conn_of(a), 1);
    free(a);
    net_http_pool_flush(pool);          /* a new policy */
    a = get(&env, &u, "api.test", "GET", "/ka");
    assert_int_equal(conn_of(a), 2);
    free(a);
    net_http_pool_free(pool);
    upstream_stop(&u);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(pool_scoping),           cmocka_unit_test(pool_stale_and_extra),
        cmocka_unit_test(pool_bounds_and_flush),  cmocka_unit_test(serve_reuses_and_injects),
        cmocka_unit_test(serve_not_pooled),       cmocka_unit_test(serve_dead_pooled_connection),
        cmocka_unit_test(serve_flush),            cmocka_unit_test(serve_keeps_the_cells_connection),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
