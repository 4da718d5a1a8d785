/* fuzz_sep.c: libFuzzer target for the owner's side of the egress helper's
 * protocol: every datagram a (possibly exploited) helper could send, decoded
 * by ctl_decode and then checked as the owner's reader checks it (sep.h),
 * against a policy with http, decide and plain rules. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "init/proto.h"
#include "net/policy.h"
#include "net/sep.h"

static const char policy_json[] =
    "{\"rules\": [{\"dns\": {\"upstreams\": [\"192.0.2.53\"]}},"
    " {\"http\": {\"host\": \"api.test\", \"set_headers\": {\"A\": \"x ${secret:API_KEY} ${secret:B}\"}}},"
    " {\"decide\": {\"url\": \"http://127.0.0.1:9/h\", \"to\": \"192.0.2.0/24\"}},"
    " {\"tcp\": {\"to\": \"198.51.100.0/24\"}}]}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static net_policy *p;
    if (!p && net_policy_parse(policy_json, strlen(policy_json), &p, NULL) < 0)
        abort();
    ctl_msg m;
    memset(&m, 0, sizeof m);
    if (ctl_decode((const char *)data, size, &m) < 0)
        return 0;
    free(net_sep_event(&m, "cell"));
    cell_net_flow f;
    const net_decide_rule *rule;
    if (net_sep_decide(&m, p, "cell", &f, &rule) == 0 && (!rule->url || strlen(f.src) + strlen(f.dst) == 0))
        abort();
    const char *name = net_sep_secret_name(&m, p);
    if (name && !net_policy_names_secret(p, name))
        abort();
    if (m.nstr == 1)
        (void)net_sep_valid_pem(m.str[0]);
    ctl_msg_free(&m);
    return 0;
}
