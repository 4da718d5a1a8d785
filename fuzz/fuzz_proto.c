/* fuzz_proto.c: libFuzzer target for ctl_decode, the parser of every
 * message a (possibly subverted) cell-init sends to its owner. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "init/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    ctl_msg m;
    memset(&m, 0, sizeof m);
    if (ctl_decode((const char *)data, size, &m) == 0) {
        /* Touch every decoded string: they must be NUL-terminated in bounds. */
        size_t total = 0;
        for (uint32_t i = 0; i < m.nstr; i++)
            total += strlen(m.str[i]);
        (void)total;
        ctl_msg_free(&m);
    }
    return 0;
}
