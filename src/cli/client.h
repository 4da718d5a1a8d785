/* client.h: the CLI's side of the daemon's HTTP API: where the daemon is
 * (unix socket or URL), the bearer token, JSON requests, streams and SSE logs. */
#ifndef CELL_CLI_CLIENT_H
#define CELL_CLI_CLIENT_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>

#include "cli/cli.h"

/* Exit code of a request the daemon refused (any 4xx: invalid, forbidden,
 * not found, conflict); 5xx answers and an unreachable daemon give
 * CLI_EXIT_INTERNAL (125). */
#define CLI_EXIT_REFUSED 1

typedef struct client {
    int   fd;                   /* the connection plain requests reuse, or -1 */
    char *sock;                 /* unix socket path, or NULL for TCP */
    char *host, *port;          /* TCP: where to connect */
    char *authority;            /* the Host header: "localhost" or HOST[:PORT] */
    char *prefix;               /* the URL's path before /v1/..., "" for none */
    char *where;                /* "unix:PATH" or the URL, for messages */
    char *token;                /* the bearer token, or NULL */
    char *token_from;           /* "$CELL_TOKEN" or the token file, for a 401 */
} client;

/* Find the daemon and the token; prints why not and returns an exit code. */
int  cli_client_open(client *c, const struct cli_global *g);
void cli_client_close(client *c);

/* A path with each %s argument URL-escaped (the format holds only %s);
 * malloc()ed, NULL when out of memory. */
char *cli_client_pathf(const char *fmt, ...);

/* Perform a request with an optional JSON body (borrowed).  On a 2xx,
 * *out (if not NULL) gets the parsed body (NULL when empty) and 0 is
 * returned; otherwise "cell: [what: ]<detail>" is printed and an exit code
 * returned.  `what` names the side or object the request is about. */
int cli_client_json(client *c, const char *method, const char *path, json_t *body, const char *what, json_t **out);
/* The same, but any HTTP status is returned in *status for the caller to judge. */
int cli_client_json_status(client *c, const char *method, const char *path, json_t *body, long *status, json_t **out);

/* Print a non-2xx answer from cli_client_json_status as cli_client_json does;
 * returns its exit code. */
int cli_client_reply_error(client *c, long status, json_t *reply, const char *what);
/* A listing's "createdAtMs" as "YYYY-MM-DD HH:MM:SS" UTC, or "-" when
 * absent (0) or not a time. */
void cli_client_utc_ms(long long ms, char *out, size_t size);

/* Send a body read from fd (PUT: `size` bytes of a file; POST: a tar of
 * unknown length, sent chunked when size < 0) and judge the answer as
 * cli_client_json does; *out (if not NULL) as there. */
int cli_client_upload(client *c, const char *method, const char *path, int fd, long long size, const char *what,
                  json_t **out);

/* GET path and hand a 2xx answer's body to on_data piece by piece; other
 * answers are judged as cli_client_json does.  A non-zero on_data ends the
 * request and -1 comes back with nothing printed (the caller says why);
 * *stop set non-zero ends it too, with 0.  Otherwise 0 or an exit code. */
typedef int (*client_data_fn)(void *user, const char *p, size_t n);
int cli_client_get_stream(client *c, const char *path, client_data_fn on_data, void *user, atomic_int *stop,
                      const char *what);
/* The same with one more request header line ("Name: value"), e.g. Last-Event-ID. */
int cli_client_get_stream_hdr(client *c, const char *path, const char *header, client_data_fn on_data, void *user,
                          atomic_int *stop, const char *what);

/* Base64 (RFC 4648, padded), the encoding of process input and logs. */
char *cli_client_b64_encode(const void *data, size_t len);
/* Decode into out (at least len*3/4 bytes); -1 on malformed input. */
int   cli_client_b64_decode(const char *in, size_t len, unsigned char *out, size_t *out_len);

/* Follow a process's log as server-sent events (GET path, which carries
 * ?follow=true) on a connection of its own (another thread may make plain
 * requests meanwhile), calling on_entry for each `log`
 * event until the stream ends.  *stop set non-zero aborts it.  0 or an
 * exit code (already printed). */
typedef void (*client_entry_fn)(void *user, json_t *entry);
int cli_client_follow(client *c, const char *path, client_entry_fn on_entry, void *user, atomic_int *stop);

/* Write a log entry's decoded data to fd; -1 on malformed data or a failed write. */
int cli_client_write_entry(int fd, json_t *entry);

#endif
