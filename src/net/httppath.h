/* httppath.h: the one normal form of a request path that http rules are
 * matched on and that is forwarded upstream (docs/egress.md, "Paths"). */
#ifndef CELL_NET_HTTPPATH_H
#define CELL_NET_HTTPPATH_H

#include <stddef.h>

#define NET_HTTP_PATH_MAX 8192

/* Normalise `path` (len bytes, starting with '/'; no query): escapes of
 * unreserved characters decoded, other escapes' hex digits upper-cased,
 * dot segments removed (RFC 3986, 5.2.4).  `out` must hold len + 1 bytes
 * (the normal form is never longer).  NULL, or why the path is refused
 * because an upstream could read it otherwise than the rule did: an
 * escaped '/', '\', '%' (double encoding) or NUL, a bad escape, a
 * character a path cannot have (backslash, space, control, non-ASCII,
 * "<>^`{|}), a dot segment with parameters ("..;x"), or a path that is
 * too long. */
const char *net_http_path_normalize(const char *path, size_t len, char *out);

/* 1 if `s` is an RFC 9110 token (a header field name): the one check the
 * request parser and the policy's header names share. */
int net_http_is_token(const char *s);

#endif
