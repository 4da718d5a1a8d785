/* http_bench.c: a minimal HTTP/1.1 keep-alive client for bench/daemon.sh
 * and bench/faststart.sh.
 *
 *   http_bench lat  PORT PATH BODY N WARMUP   latency of POST PATH with a JSON BODY
 *   http_bench put  PORT PATH SIZE            PUT SIZE bytes (a fixed pattern) to PATH
 *   http_bench get  PORT PATH SIZE            GET PATH, check it is that pattern
 *   http_bench pattern SIZE                   write the pattern to stdout
 *   http_bench create PORT N WARMUP BODY [ARGV...]  a new cell and `true` in it
 *                                             (bench/faststart.sh), against ARGV
 *
 * The server is 127.0.0.1:PORT.  If $HTTP_BENCH_TOKEN is set, every request
 * carries "Authorization: Bearer $HTTP_BENCH_TOKEN".
 *
 * lat: N timed requests after WARMUP untimed ones, all on ONE keep-alive
 *   connection (TCP_NODELAY).  Each is timed from just before the request is
 *   written to the last byte of the response body.  Prints one line:
 *     n=N p50_us=.. p90_us=.. mean_us=.. min_us=.. max_us=..
 *   Any status other than 200, or a closed connection, is an error (exit 1).
 *   With $HTTP_BENCH_RAW set, appends every sample (µs) to that file.
 *
 * put/get: one request on a fresh connection.  The body is a xorshift pattern
 *   generated in memory before timing.  PUT is timed from the first byte of the
 *   request to the end of the response; GET from the request to the last byte
 *   of the body, which is read into a buffer touched beforehand and compared
 *   with the pattern after the clock stops.  Prints put_mbs=.. or get_mbs=..
 *   (MB = 10^6 bytes).  `pattern` lets a script place the same file on the
 *   host for a server that cannot receive it (the reference's body limit).
 *
 * create: N rounds (after WARMUP untimed ones) of a new cell through the
 *   daemon, each timed from connect() on a fresh connection to the end of
 *   the second response: POST /v1/cells BODY, then POST
 *   /cells/ID/v1/processes/run {"command":"true"}, which must answer 200 with
 *   exitCode 0.  DELETE /v1/cells/ID follows on the same connection, untimed,
 *   and then $HTTP_BENCH_PAUSE_MS (default 0) of sleep.  Given ARGV..., each
 *   round also runs that command (bwrap) as a process, timed from
 *   posix_spawn() to waitpid(); the two alternate which goes first.  Prints
 *     n=N total_p50_us=.. total_p90_us=.. post_p50_us=.. post_p90_us=..
 *     [anchor_p50_us=.. anchor_p90_us=..]
 *   (post: POST /v1/cells alone).  bench/create_loop.sh times creates in a row.
 *
 * Plain sockets: responses with Content-Length or chunked transfer encoding
 * are understood, which is what both servers send; jansson reads the JSON of
 * create.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <spawn.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("http_bench: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(1);
}

static double now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec / 1e3;
}

/* ---- connection with a read buffer ------------------------------------------------ */

typedef struct {
    int    fd;
    char   buf[65536];
    size_t off, len;     /* unread bytes are buf[off .. off+len) */
} conn;

static void conn_open(conn *c, int port)
{
    struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd < 0) die("socket: %s", strerror(errno));
    int one = 1;
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) < 0) die("connect to port %d: %s", port, strerror(errno));
    c->off = c->len = 0;
}

static void send_all(conn *c, const void *p, size_t n)
{
    const char *s = p;
    while (n > 0) {
        ssize_t w = send(c->fd, s, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("send: %s", w < 0 ? strerror(errno) : "short write");
        s += w;
        n -= (size_t)w;
    }
}

static int fill(conn *c)
{
    if (c->off > 0 && c->len > 0) memmove(c->buf, c->buf + c->off, c->len);
    c->off = 0;
    if (c->len == sizeof c->buf) die("response header too large");
    for (;;) {
        ssize_t r = recv(c->fd, c->buf + c->len, sizeof c->buf - c->len, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) die("recv: %s", strerror(errno));
        if (r == 0) return 0;
        c->len += (size_t)r;
        return 1;
    }
}

/* Read one CRLF-terminated line (without the CRLF) into out. */
static void read_line(conn *c, char *out, size_t cap)
{
    for (;;) {
        char *nl = memmem(c->buf + c->off, c->len, "\r\n", 2);
        if (nl) {
            size_t n = (size_t)(nl - (c->buf + c->off));
            if (n >= cap) die("line too long");
            memcpy(out, c->buf + c->off, n);
            out[n] = 0;
            c->off += n + 2;
            c->len -= n + 2;
            return;
        }
        if (!fill(c)) die("connection closed by the server mid-response");
    }
}

/* Read exactly n body bytes; into dst if not NULL, else discarded. */
static void read_body(conn *c, char *dst, size_t n)
{
    while (n > 0) {
        if (c->len > 0) {
            size_t k = c->len < n ? c->len : n;
            if (dst) { memcpy(dst, c->buf + c->off, k); dst += k; }
            c->off += k;
            c->len -= k;
            n -= k;
            continue;
        }
        /* Buffer empty: large reads go straight to the destination. */
        ssize_t r;
        if (dst && n >= sizeof c->buf) {
            r = recv(c->fd, dst, n, 0);
            if (r > 0) { dst += r; n -= (size_t)r; continue; }
        } else {
            r = recv(c->fd, c->buf, sizeof c->buf, 0);
            if (r > 0) { c->off = 0; c->len = (size_t)r; continue; }
        }
        if (r < 0 && errno == EINTR) continue;
        die("body: %s", r < 0 ? strerror(errno) : "connection closed early");
    }
}

/* Read a whole response.  Returns the status; *body_len gets the body size.
 * dst/cap: where the body goes (NULL: discarded). */
static int read_response(conn *c, char *dst, size_t cap, size_t *body_len, int *closing)
{
    char line[8192];
    read_line(c, line, sizeof line);
    int status = 0;
    if (sscanf(line, "HTTP/1.%*d %d", &status) != 1) die("bad status line: %s", line);
    long long clen = -1;
    int chunked = 0;
    *closing = 0;
    for (;;) {
        read_line(c, line, sizeof line);
        if (!line[0]) break;
        if (!strncasecmp(line, "content-length:", 15)) clen = atoll(line + 15);
        else if (!strncasecmp(line, "transfer-encoding:", 18) && strcasestr(line, "chunked")) chunked = 1;
        else if (!strncasecmp(line, "connection:", 11) && strcasestr(line, "close")) *closing = 1;
    }
    size_t total = 0;
    if (status == 204 || status == 304) {
        /* no body, whatever the headers say */
    } else if (chunked) {
        for (;;) {
            read_line(c, line, sizeof line);
            size_t n = strtoull(line, NULL, 16);
            if (n == 0) {                 /* trailers, then an empty line */
                do read_line(c, line, sizeof line); while (line[0]);
                break;
            }
            if (dst && total + n > cap) die("body larger than expected");
            read_body(c, dst ? dst + total : NULL, n);
            total += n;
            read_line(c, line, sizeof line);
        }
    } else if (clen >= 0) {
        if (dst && (size_t)clen > cap) die("body larger than expected (%lld bytes)", clen);
        read_body(c, dst, (size_t)clen);
        total = (size_t)clen;
    } else {
        die("response without Content-Length or chunked encoding");
    }
    *body_len = total;
    return status;
}

static const char *auth_header(void)
{
    static char h[512];
    const char *t = getenv("HTTP_BENCH_TOKEN");
    if (!t || !*t) return "";
    snprintf(h, sizeof h, "Authorization: Bearer %s\r\n", t);
    return h;
}

/* ---- lat ------------------------------------------------------------------------------ */

static int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double pct(const double *s, int n, double p)   /* linear interpolation */
{
    double k = (n - 1) * p;
    int i = (int)k;
    if (i + 1 >= n) return s[n - 1];
    return s[i] + (s[i + 1] - s[i]) * (k - i);
}

static int cmd_lat(int port, const char *path, const char *body, int n, int warmup)
{
    char req[4096];
    int len = snprintf(req, sizeof req,
                       "POST %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%sContent-Type: application/json\r\n"
                       "Content-Length: %zu\r\n\r\n%s",
                       path, port, auth_header(), strlen(body), body);
    if (len <= 0 || (size_t)len >= sizeof req) die("request too long");
    conn *c = malloc(sizeof *c);
    double *s = malloc(sizeof(double) * (size_t)n);
    if (!c || !s) die("out of memory");
    conn_open(c, port);
    char resp[65536];
    for (int i = -warmup; i < n; i++) {
        double t0 = now_us();
        send_all(c, req, (size_t)len);
        size_t blen;
        int closing;
        int st = read_response(c, resp, sizeof resp - 1, &blen, &closing);
        double t1 = now_us();
        if (st != 200) {
            resp[blen] = 0;
            die("request %d: status %d: %s", i, st, resp);
        }
        if (closing) die("request %d: the server closed the keep-alive connection", i);
        if (i >= 0) s[i] = t1 - t0;
    }
    close(c->fd);
    const char *raw = getenv("HTTP_BENCH_RAW");
    if (raw && *raw) {
        FILE *f = fopen(raw, "a");
        if (f) {
            for (int i = 0; i < n; i++) fprintf(f, "%.1f\n", s[i]);
            fclose(f);
        }
    }
    double sum = 0;
    for (int i = 0; i < n; i++) sum += s[i];
    qsort(s, (size_t)n, sizeof *s, cmp_d);
    printf("n=%d p50_us=%.1f p90_us=%.1f mean_us=%.1f min_us=%.1f max_us=%.1f\n", n, pct(s, n, 0.5),
           pct(s, n, 0.9), sum / n, s[0], s[n - 1]);
    return 0;
}

/* ---- put / get / pattern --------------------------------------------------------------- */

static char *pattern(size_t size)
{
    char *data = malloc(size + 8);
    if (!data) die("out of memory");
    uint64_t x = 0x9e3779b97f4a7c15ull;          /* xorshift: incompressible, reproducible */
    for (size_t i = 0; i < size; i += 8) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        memcpy(data + i, &x, 8);
    }
    return data;
}

static int cmd_put(int port, const char *path, size_t size)
{
    char *data = pattern(size);
    conn *c = malloc(sizeof *c);
    if (!c) die("out of memory");
    char hdr[2048], resp[65536];
    size_t blen;
    int closing;
    conn_open(c, port);
    int hl = snprintf(hdr, sizeof hdr,
                      "PUT %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%sContent-Type: application/octet-stream\r\n"
                      "Content-Length: %zu\r\n\r\n",
                      path, port, auth_header(), size);
    double t0 = now_us();
    send_all(c, hdr, (size_t)hl);
    send_all(c, data, size);
    int st = read_response(c, resp, sizeof resp - 1, &blen, &closing);
    double t1 = now_us();
    if (st != 200) { resp[blen] = 0; die("PUT: status %d: %s", st, resp); }
    close(c->fd);
    printf("put_mbs=%.1f\n", size / (t1 - t0));   /* bytes/µs = MB/s */
    return 0;
}

static int cmd_get(int port, const char *path, size_t size)
{
    char *data = pattern(size), *back = malloc(size + 1);
    if (!back) die("out of memory");
    memset(back, 0, size + 1);                   /* fault the pages in before timing */
    conn *c = malloc(sizeof *c);
    if (!c) die("out of memory");
    char hdr[2048];
    size_t blen;
    int closing;
    conn_open(c, port);
    int hl = snprintf(hdr, sizeof hdr, "GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n", path, port, auth_header());
    double t0 = now_us();
    send_all(c, hdr, (size_t)hl);
    int st = read_response(c, back, size + 1, &blen, &closing);
    double t1 = now_us();
    if (st != 200) die("GET: status %d", st);
    if (blen != size) die("GET: %zu bytes, expected %zu", blen, size);
    if (memcmp(back, data, size) != 0) die("GET: the content differs from what was written");
    close(c->fd);
    printf("get_mbs=%.1f\n", size / (t1 - t0));
    return 0;
}

static int cmd_pattern(size_t size)
{
    char *data = pattern(size);
    for (size_t off = 0; off < size;) {
        ssize_t w = write(1, data + off, size - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) die("write: %s", strerror(errno));
        off += (size_t)w;
    }
    return 0;
}

/* ---- create -------------------------------------------------------------------- */

extern char **environ;

typedef struct {
    double *v;
    int     n;
} samples;

static samples samples_new(int n)
{
    samples s = { .v = malloc(sizeof(double) * (size_t)(n > 0 ? n : 1)), .n = 0 };
    if (!s.v) die("out of memory");
    return s;
}

/* The p quantile of samples [from, to) (sorted in a copy: s keeps its order). */
static double samples_pct(const samples *s, int from, int to, double p)
{
    int n = to - from;
    if (n <= 0) return 0;
    double *c = malloc(sizeof(double) * (size_t)n);
    if (!c) die("out of memory");
    memcpy(c, s->v + from, sizeof(double) * (size_t)n);
    qsort(c, (size_t)n, sizeof *c, cmp_d);
    double r = pct(c, n, p);
    free(c);
    return r;
}

static void samples_raw(const char *who, const samples *s)
{
    const char *raw = getenv("HTTP_BENCH_RAW");
    if (!raw || !*raw) return;
    FILE *f = fopen(raw, "a");
    if (!f) die("%s: %s", raw, strerror(errno));
    for (int i = 0; i < s->n; i++) fprintf(f, "%s %.1f\n", who, s->v[i]);
    if (fclose(f) != 0) die("%s: %s", raw, strerror(errno));
}

/* One request on c; the status back, the body (NUL-terminated) in resp. */
static int request(conn *c, int port, const char *method, const char *path, const char *body, char *resp,
                   size_t cap)
{
    char req[4096];
    int len = body ? snprintf(req, sizeof req,
                              "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%sContent-Type: application/json\r\n"
                              "Content-Length: %zu\r\n\r\n%s",
                              method, path, port, auth_header(), strlen(body), body)
                   : snprintf(req, sizeof req, "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n%s\r\n", method, path,
                              port, auth_header());
    if (len <= 0 || (size_t)len >= sizeof req) die("request too long");
    send_all(c, req, (size_t)len);
    size_t blen;
    int closing;
    int st = read_response(c, resp, cap - 1, &blen, &closing);
    resp[blen] = 0;
    if (closing) die("%s %s: the server closed the connection", method, path);
    return st;
}

/* POST /v1/cells body: the new cell's id into id. */
static void create_cell(conn *c, int port, const char *body, char *id, size_t cap)
{
    char resp[65536];
    int st = request(c, port, "POST", "/v1/cells", body, resp, sizeof resp);
    if (st != 201 && st != 200) die("POST /v1/cells: status %d: %s", st, resp);
    json_error_t jerr;
    json_t *o = json_loads(resp, 0, &jerr);
    const char *v = o ? json_string_value(json_object_get(o, "id")) : NULL;
    if (!v || !*v || strlen(v) >= cap || strpbrk(v, "/?# ")) die("POST /v1/cells: no usable id in %s", resp);
    strcpy(id, v);
    json_decref(o);
}

static void delete_cell(conn *c, int port, const char *id)
{
    char path[512], resp[65536];
    snprintf(path, sizeof path, "/v1/cells/%s", id);
    int st = request(c, port, "DELETE", path, NULL, resp, sizeof resp);
    if (st < 200 || st > 299) die("DELETE %s: status %d: %s", path, st, resp);
}

static void run_true(conn *c, int port, const char *id)
{
    char path[512], resp[65536];
    snprintf(path, sizeof path, "/cells/%s/v1/processes/run", id);
    int st = request(c, port, "POST", path, "{\"command\":\"true\"}", resp, sizeof resp);
    json_t *o = st == 200 ? json_loads(resp, 0, NULL) : NULL;
    json_t *code = o ? json_object_get(o, "exitCode") : NULL;
    if (!json_is_integer(code) || json_integer_value(code) != 0) die("POST %s: status %d: %s", path, st, resp);
    json_decref(o);
}

/* ARGV as a process (stdin/stdout on /dev/null); its time in µs. */
static double spawn_timed(char **argv)
{
    posix_spawn_file_actions_t fa;
    if (posix_spawn_file_actions_init(&fa) != 0 ||
        posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0) != 0 ||
        posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0) != 0)
        die("posix_spawn_file_actions: out of memory");
    pid_t pid;
    int status;
    double t0 = now_us();
    int rc = posix_spawn(&pid, argv[0], &fa, NULL, argv, environ);
    if (rc != 0) die("cannot start %s: %s", argv[0], strerror(rc));
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) die("waitpid: %s", strerror(errno));
    double t1 = now_us();
    posix_spawn_file_actions_destroy(&fa);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("%s failed (wait status %d)", argv[0], status);
    return t1 - t0;
}

static void pause_between(void)
{
    const char *p = getenv("HTTP_BENCH_PAUSE_MS");
    long ms = p && *p ? strtol(p, NULL, 10) : 0;
    if (ms > 0) {
        struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };
        while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
    }
}

/* One daemon round of `create`: its total time in µs, the POST's in *post. */
static double create_round(int port, const char *body, double *post)
{
    conn *c = malloc(sizeof *c);
    if (!c) die("out of memory");
    char id[256];
    double t0 = now_us();
    conn_open(c, port);
    create_cell(c, port, body, id, sizeof id);
    double t1 = now_us();
    run_true(c, port, id);
    double t2 = now_us();
    delete_cell(c, port, id);
    close(c->fd);
    free(c);
    *post = t1 - t0;
    return t2 - t0;
}

static void print_pcts(const char *name, const samples *s)
{
    printf(" %s_p50_us=%.1f %s_p90_us=%.1f", name, samples_pct(s, 0, s->n, 0.5), name,
           samples_pct(s, 0, s->n, 0.9));
}

static int cmd_create(int port, int n, int warmup, const char *body, char **anchor)
{
    samples total = samples_new(n), post = samples_new(n), anc = samples_new(n);
    for (int i = -warmup; i < n; i++) {
        double t = 0, p = 0, a = 0;
        if (anchor && (i & 1)) a = spawn_timed(anchor);
        t = create_round(port, body, &p);
        if (anchor && !(i & 1)) a = spawn_timed(anchor);
        if (i >= 0) {
            total.v[total.n++] = t;
            post.v[post.n++] = p;
            anc.v[anc.n++] = a;
        }
        pause_between();
    }
    samples_raw("total", &total);
    samples_raw("post", &post);
    printf("n=%d", n);
    print_pcts("total", &total);
    print_pcts("post", &post);
    if (anchor) {
        samples_raw("anchor", &anc);
        print_pcts("anchor", &anc);
    }
    printf("\n");
    free(total.v);
    free(post.v);
    free(anc.v);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc >= 6 && !strcmp(argv[1], "create") && atoi(argv[3]) > 0)
        return cmd_create(atoi(argv[2]), atoi(argv[3]), atoi(argv[4]), argv[5], argc > 6 ? argv + 6 : NULL);
    if (argc == 7 && !strcmp(argv[1], "lat"))
        return cmd_lat(atoi(argv[2]), argv[3], argv[4], atoi(argv[5]), atoi(argv[6]));
    if (argc == 5 && !strcmp(argv[1], "put"))
        return cmd_put(atoi(argv[2]), argv[3], strtoull(argv[4], NULL, 10));
    if (argc == 5 && !strcmp(argv[1], "get"))
        return cmd_get(atoi(argv[2]), argv[3], strtoull(argv[4], NULL, 10));
    if (argc == 3 && !strcmp(argv[1], "pattern"))
        return cmd_pattern(strtoull(argv[2], NULL, 10));
    fprintf(stderr, "usage: http_bench lat PORT PATH BODY N WARMUP\n"
                    "       http_bench put PORT PATH SIZE\n"
                    "       http_bench get PORT PATH SIZE\n"
                    "       http_bench pattern SIZE > FILE\n"
                    "       http_bench create PORT N WARMUP BODY [ANCHOR_ARGV...]\n");
    return 2;
}
