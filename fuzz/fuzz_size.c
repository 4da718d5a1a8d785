/* fuzz_size.c: libFuzzer target for cell_parse_size, which parses every
 * size a user or API client types. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cell.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *text = malloc(size + 1);
    if (!text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    uint64_t v;
    cell_error err;
    cell_parse_size(text, &v, &err);
    free(text);
    return 0;
}
