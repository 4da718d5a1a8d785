/* digest.h: tree digests (digest.c), and an image's digest and
 * config as lanes and commits need them (digest.c, image_digest.c). */
#ifndef CELL_RUNTIME_DIGEST_H
#define CELL_RUNTIME_DIGEST_H

#include "cell.h"

/* lanes/NAME/image-digest: the digest of the image the lane was made on. */
#define RUNTIME_LANE_DIGEST "image-digest"

/* "sha256:<hex>" of the tree below dirfd (sorted names; type, mode, owner,
 * device, size, mtime, link target, content, overlay opaque mark of each
 * entry), after `prefix` (NULL: none) and its NUL. */
int runtime_tree_digest(int dirfd, const char *prefix, char out[72], cell_error *err);

/* The digest of image `name`: image.json's "digest" (image_meta.h), or for
 * a builtin image the tree digest of its rootfs, computed once per build and
 * kept in images/NAME/digest (a rebuild replaces the tree as a whole, and
 * the file with it). */
int runtime_image_digest(cell_ctx *ctx, const char *name, char out[72], cell_error *err);

#endif
