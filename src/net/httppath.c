/* httppath.c: request paths in their normal form, for http rules. */
#include "net/httppath.h"

#include <string.h>

static int unreserved(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
           c == '_' || c == '~';
}

/* RFC 3986 pchar and '/', as they may appear unescaped. */
static int path_char(unsigned char c)
{
    return unreserved(c) || (c && strchr("!$&'()*+,;=:@/", c));
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Escapes decoded where that cannot change the meaning; *olen set. */
static const char *decode(const char *in, size_t len, char *out, size_t *olen)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)in[i];
        if (c != '%') {
            if (!path_char(c))
                return "the path has a character a path cannot have (space, backslash, control, non-ASCII "
                       "or one of \"<>^`{|})";
            out[o++] = (char)c;
            continue;
        }
        int hi = i + 2 < len ? hex_value(in[i + 1]) : -1, lo = i + 2 < len ? hex_value(in[i + 2]) : -1;
        if (hi < 0 || lo < 0)
            return "the path has a '%' not followed by two hex digits";
        unsigned char d = (unsigned char)(hi * 16 + lo);
        /* An upstream may decode these once more and see a separator, a
         * dot segment or another escape where the rule saw data. */
        if (d == '/' || d == '\\')
            return "the path has an escaped slash or backslash (%2F, %5C)";
        if (d == '%')
            return "the path has an escaped '%' (%25: double encoding)";
        if (d == 0)
            return "the path has an escaped NUL (%00)";
        if (unreserved(d)) {
            out[o++] = (char)d;
        } else {
            out[o++] = '%';
            out[o++] = hex[hi];
            out[o++] = hex[lo];
        }
        i += 2;
    }
    *olen = o;
    return NULL;
}

/* Servers that strip ";parameters" from segments (Tomcat, Jetty) read
 * "..;x" as "..": after the rule saw a plain segment. */
static const char *dot_parameters(const char *p, size_t len)
{
    for (size_t i = 0; i < len;) {
        size_t s = ++i, e = s;    /* past '/' */
        while (e < len && p[e] != '/')
            e++;
        const char *semi = memchr(p + s, ';', e - s);
        size_t base = semi ? (size_t)(semi - (p + s)) : 0;
        if (semi && ((base == 1 && p[s] == '.') || (base == 2 && p[s] == '.' && p[s + 1] == '.')))
            return "the path has a dot segment with parameters (\"..;\")";
        i = e;
    }
    return NULL;
}

static int at(const char *p, size_t rem, const char *s)
{
    size_t n = strlen(s);
    return rem >= n && memcmp(p, s, n) == 0;
}

/* The last segment of the output goes ("/a/b" -> "/a"). */
static size_t pop_segment(const char *b, size_t w)
{
    while (w > 0 && b[w - 1] != '/')
        w--;
    return w > 0 ? w - 1 : 0;
}

/* RFC 3986, 5.2.4, in place: the output never outgrows what was read. */
static size_t remove_dots(char *b, size_t n)
{
    size_t r = 0, w = 0;
    while (r < n) {
        const char *p = b + r;
        size_t rem = n - r;
        if (at(p, rem, "../")) {
            r += 3;
        } else if (at(p, rem, "./") || at(p, rem, "/./")) {
            r += 2;
        } else if (rem == 2 && at(p, rem, "/.")) {
            r += 1;
            b[r] = '/';
        } else if (at(p, rem, "/../")) {
            r += 3;
            w = pop_segment(b, w);
        } else if (rem == 3 && at(p, rem, "/..")) {
            r += 2;
            b[r] = '/';
            w = pop_segment(b, w);
        } else if ((rem == 1 && p[0] == '.') || (rem == 2 && at(p, rem, ".."))) {
            r = n;
        } else {
            size_t e = r + 1;
            while (e < n && b[e] != '/')
                e++;
            memmove(b + w, b + r, e - r);
            w += e - r;
            r = e;
        }
    }
    return w;
}

const char *net_http_path_normalize(const char *path, size_t len, char *out)
{
    out[0] = '\0';
    if (len == 0 || path[0] != '/')
        return "the path does not start with '/'";
    if (len > NET_HTTP_PATH_MAX)
        return "the path is longer than 8192 bytes";
    size_t n = 0;
    const char *why = decode(path, len, out, &n);
    if (!why)
        why = dot_parameters(out, n);
    if (why) {
        out[0] = '\0';
        return why;
    }
    n = remove_dots(out, n);
    if (n == 0)
        out[n++] = '/';
    out[n] = '\0';
    return NULL;
}

/* RFC 9110 token (what a header field name may be): one or more of
 * letters, digits and !#$%&'*+-.^_`|~. */
int net_http_is_token(const char *s)
{
    if (!*s)
        return 0;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              (c && strchr("!#$%&'*+-.^_`|~", c))))
            return 0;
    }
    return 1;
}
