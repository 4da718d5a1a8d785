/* size.c: cell_parse_size, the one parser for every size a user types
 * (--memory, --disk, lane sizes).  Binary units; strict about junk. */
#include "util/util.h"

#include <ctype.h>
#include <string.h>

int cell_parse_size(const char *text, uint64_t *out, cell_error *err)
{
    if (!text || !*text)
        return util_fail(err, EINVAL, "empty size: expected a number with an optional unit K, M, G or T (e.g. 256M)");
    const char *p = text;
    if (!isdigit((unsigned char)*p))
        return util_fail(err, EINVAL, "invalid size '%s': expected a number with an optional unit K, M, G or T (e.g. 256M)", text);
    uint64_t value = 0;
    for (; isdigit((unsigned char)*p); p++) {
        uint64_t digit = (uint64_t)(*p - '0');
        if (value > (UINT64_MAX - digit) / 10)
            return util_fail(err, ERANGE, "size '%s' is too large", text);
        value = value * 10 + digit;
    }
    unsigned shift = 0;
    switch (toupper((unsigned char)*p)) {
    case '\0': break;
    case 'K': shift = 10; p++; break;
    case 'M': shift = 20; p++; break;
    case 'G': shift = 30; p++; break;
    case 'T': shift = 40; p++; break;
    case 'B': break;
    default:
        return util_fail(err, EINVAL, "invalid size '%s': unknown unit '%c' (use K, M, G or T, e.g. 256M)", text, *p);
    }
    /* Accept the common spellings "256M", "256MB", "256MiB", "512B". */
    if (shift && (strcmp(p, "iB") == 0 || strcmp(p, "ib") == 0 || strcmp(p, "B") == 0 || strcmp(p, "b") == 0))
        p += strlen(p);
    else if (!shift && (strcmp(p, "B") == 0 || strcmp(p, "b") == 0))
        p++;
    if (*p)
        return util_fail(err, EINVAL, "invalid size '%s': unexpected '%s' after the unit (e.g. 256M)", text, p);
    if (shift && value > (UINT64_MAX >> shift))
        return util_fail(err, ERANGE, "size '%s' is too large", text);
    *out = value << shift;
    return 0;
}
