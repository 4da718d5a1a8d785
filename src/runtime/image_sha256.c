/* image_sha256.c: SHA-256 for the image store's digests, by nettle (the
 * daemon's token hashes use it too).  Not the kernel's (AF_ALG is missing
 * on some kernels and sandboxes) nor libcrypto, which the lean CLI does
 * not load: it links nettle's few SHA-256 objects statically (Makefile,
 * CLI_LIBS).  Digests of imported blobs are computed here, in the owner,
 * over bytes the parser sent. */
#include "runtime/image_meta.h"

#include <stdio.h>

void runtime_image_sha256_init(struct image_sha256 *s)
{
    sha256_init(&s->ctx);
}

void runtime_image_sha256_update(struct image_sha256 *s, const void *data, size_t len)
{
    sha256_update(&s->ctx, len, data);
}

void runtime_image_sha256_final(struct image_sha256 *s, char hex[65])
{
    uint8_t d[SHA256_DIGEST_SIZE];
    sha256_digest(&s->ctx, sizeof d, d);
    for (size_t i = 0; i < sizeof d; i++)
        snprintf(hex + 2 * i, 3, "%02x", d[i]);
}
