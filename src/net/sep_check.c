/* sep_check.c: the owner's checks of what an egress helper sends (sep.h).
 * Apart from sep.c so that fuzz/fuzz_sep.c can drive them without a helper:
 * the helper parses the cell's traffic, so its messages are the cell's. */
#include "net/policy.h"
#include "net/sep.h"

#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>

static int bad_msg(void)
{
    errno = EBADMSG;
    return -1;
}

/* Printable ASCII, 1..max bytes (addresses, host names, secret names). */
static int plain(const char *s, size_t max)
{
    size_t n = strnlen(s, max + 1);
    if (n == 0 || n > max)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (s[i] <= ' ' || s[i] > '~')
            return 0;
    return 1;
}

char *net_sep_event(const ctl_msg *m, const char *cell_id)
{
    if (m->type != NET_SEP_EVENT || m->nstr != 1 || m->nfds != 0 || strlen(m->str[0]) > NET_SEP_MAX_EVENT) {
        errno = EBADMSG;
        return NULL;
    }
    json_t *rec = json_loads(m->str[0], JSON_REJECT_DUPLICATES, NULL);
    char *text = NULL;
    if (rec && json_is_object(rec) && json_object_set_new(rec, "kind", json_string("net")) == 0 &&
        json_object_set_new(rec, "cell", json_string(cell_id)) == 0)
        text = json_dumps(rec, JSON_COMPACT);
    json_decref(rec);
    if (!text)
        errno = EBADMSG;
    return text;
}

int net_sep_decide(const ctl_msg *m, const net_policy *p, const char *cell_id, cell_net_flow *f,
                   const net_decide_rule **rule)
{
    if (m->type != NET_SEP_DECIDE || m->nstr != 3 || m->nfds != 0 || (m->u[1] != NET_TCP && m->u[1] != NET_UDP) ||
        m->u[2] > 1 || !plain(m->str[0], NET_SEP_MAX_ADDR) || !plain(m->str[1], NET_SEP_MAX_ADDR) ||
        (m->u[2] ? !plain(m->str[2], NET_SEP_MAX_HOST) : m->str[2][0] != '\0'))
        return bad_msg();
    *rule = net_policy_decide_rule(p, m->u[0]);
    if (!*rule) {
        errno = ENOENT;
        return -1;
    }
    *f = (cell_net_flow){ .cell = cell_id, .transport = m->u[1] == NET_TCP ? "tcp" : "udp", .src = m->str[0],
                          .dst = m->str[1], .host = m->u[2] ? m->str[2] : NULL, .rule = (int)m->u[0],
                          .cache_s = (*rule)->cache_s };
    return 0;
}

const char *net_sep_secret_name(const ctl_msg *m, const net_policy *p)
{
    if (m->type != NET_SEP_SECRET || m->nstr != 1 || m->nfds != 0 || !plain(m->str[0], 255)) {
        errno = EBADMSG;
        return NULL;
    }
    if (!net_policy_names_secret(p, m->str[0])) {
        errno = EACCES;
        return NULL;
    }
    return m->str[0];
}

int net_sep_valid_pem(const char *pem)
{
    static const char head[] = "-----BEGIN CERTIFICATE-----\n", tail[] = "-----END CERTIFICATE-----\n";
    size_t n = strnlen(pem, NET_SEP_MAX_PEM + 1);
    if (n > NET_SEP_MAX_PEM || n < sizeof head + sizeof tail || strncmp(pem, head, sizeof head - 1) != 0 ||
        strcmp(pem + n - (sizeof tail - 1), tail) != 0 || strstr(pem + 1, "-----BEGIN") != NULL)
        return 0;
    for (size_t i = 0; i < n; i++)
        if ((pem[i] < ' ' || pem[i] > '~') && pem[i] != '\n')
            return 0;
    return 1;
}
