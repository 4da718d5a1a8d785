/* net.c: the entry of libcell-net.so (src/runtime/plugin.h): the owner's
 * side of the egress engine and the policy checks, for the lean `cell`. */
#include "runtime/plugin.h"

const void *cell_plugin_entry(const void *host);

const void *cell_plugin_entry(const void *host)
{
    (void)host;
    return &runtime_net_builtin;
}
