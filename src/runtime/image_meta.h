/* image_meta.h: the image store's shared format (docs/architecture.md,
 * "The image store"), the contract between image import and lane commit:
 *   images/blobs/sha256/<hex>  content-addressed blobs (layer tars, configs,
 *                              manifests), written once (temp + rename),
 *                              never rewritten; identical blobs stored once
 *   images/NAME/rootfs         the flattened tree, in-cell ownership
 *   images/NAME/image.json     what image_meta describes, written atomically
 * An image is read-only once written. */
#ifndef CELL_RUNTIME_IMAGE_META_H
#define CELL_RUNTIME_IMAGE_META_H

#include "cell.h"

#include <stddef.h>
#include <stdint.h>

#define IMAGE_META_DIGEST_LEN 71                /* "sha256:" + 64 hex */
#define IMAGE_META_MAX_JSON   (1u << 20)        /* image.json is at most this */

/* The config fields a cell takes as its defaults (OCI image config). */
struct image_meta_config {
    char  **env;         /* "K=V" strings; n_env of them */
    size_t  n_env;
    char   *working_dir; /* NULL = unset */
    char   *user;        /* NULL = unset; "name", "uid" or "uid:gid" */
    char  **entrypoint;
    size_t  n_entrypoint;
    char  **cmd;
    size_t  n_cmd;
};

struct image_meta {
    char     name[64];
    char     digest[IMAGE_META_DIGEST_LEN + 1];  /* "sha256:<hex>" */
    int64_t  created;                            /* ms since the epoch */
    uint64_t size;                               /* bytes of rootfs */
    char     source[16];                         /* "builtin", "import" or "commit" */
    char   **layers;                             /* "sha256:<hex>" each */
    size_t   n_layers;
    char   **blobs;                              /* other blobs it keeps (manifest, config) */
    size_t   n_blobs;
    char     tenant[64];                         /* made through the API for this tenant, or "" */
    struct image_meta_config config;
};

/* 1 if s is "sha256:" and 64 lowercase hex digits. */
int  runtime_image_meta_valid_digest(const char *s);
/* A name import or commit may create: 1..63 of [a-z0-9._-], not starting
 * with '.' or '-', not a builtin image (host, debian-bookworm, desktop) and not
 * "blobs" (the blob store's directory); else EINVAL naming the rule. */
int  runtime_image_meta_check_name(const char *name, cell_error *err);

/* images/NAME/image.json into *m (free with runtime_image_meta_free): ENOENT when the
 * image has none, EBADMSG naming the file when it is malformed. */
int  runtime_image_meta_read(cell_ctx *ctx, const char *name, struct image_meta *m, cell_error *err);
/* The same from an image directory (a staging dir before its rename). */
int  runtime_image_meta_read_dir(const char *dir, struct image_meta *m, cell_error *err);
/* Write m as DIR/image.json atomically (temp file, fsync, rename). */
int  runtime_image_meta_write_dir(const char *dir, const struct image_meta *m, cell_error *err);
void runtime_image_meta_free(struct image_meta *m);
/* The config alone: parse an OCI/docker config's "config" object (NULL or
 * absent fields are unset; wrong types are EBADMSG), and free it. */
struct json_t;
int  runtime_image_meta_config_from_json(const struct json_t *obj, struct image_meta_config *c, cell_error *err);
struct json_t *runtime_image_meta_config_to_json(const struct image_meta_config *c);
void runtime_image_meta_config_free(struct image_meta_config *c);

/* images/blobs/sha256/<hex> of a valid digest in out. */
int  runtime_image_meta_blob_path(cell_ctx *ctx, const char *digest, char *out, size_t size, cell_error *err);
/* images/blobs/sha256 (created 0700 if missing) in out: where blob temp
 * files go, so that storing one is a rename on the same filesystem. */
int  runtime_image_meta_blob_dir(cell_ctx *ctx, char *out, size_t size, cell_error *err);
/* Move the verified file `tmp` (in the blob dir or on its filesystem) into
 * the store as `digest`: a rename, or when that blob is already stored, the
 * temp file is removed (blobs are never rewritten).  The caller has checked
 * that tmp's contents hash to digest. */
int  runtime_image_meta_blob_store(cell_ctx *ctx, const char *tmp, const char *digest, cell_error *err);

/* Staging and removal directories in images/ ("." NAME IMAGE_META_STAGING
 * suffix, "." NAME ".rm-" suffix) are flock()ed while in use, so that one a
 * crashed import or removal left behind can be told from one in progress. */
#define IMAGE_META_STAGING ".import-"
/* Make the directory `path` and return an fd holding its flock: it is made
 * under another name and renamed once locked, so a sweep never sees it
 * unlocked (image_store.c). */
int  runtime_image_meta_stage(const char *path, cell_error *err);
/* Remove the staging and removal directories nobody holds (best effort). */
void runtime_image_meta_sweep(cell_ctx *ctx);

/* Blob garbage collection (image_store.c).  Whoever stores blobs or is
 * about to reference them (an import, from before its first blob until its
 * image.json is in place) holds images/.blobs.lock shared; the collector
 * takes it exclusively and never waits: when it cannot, it leaves
 * images/.gc-pending and the last holder to let go collects.  A collection
 * deletes every blob no image.json under images/ names (digest, layers,
 * blobs), a crashed import's included. */
int  runtime_image_meta_blobs_hold(cell_ctx *ctx, cell_error *err);   /* the shared lock's fd */
void runtime_image_meta_blobs_release(cell_ctx *ctx, int fd);          /* closes fd, collects if pending */
/* Collect now if nobody holds the lock, else mark it pending; returns the
 * number of blobs deleted, or -1 (pending or failed). */
int  runtime_image_meta_gc(cell_ctx *ctx);

/* The daemon's list of tenants an image is shared with (images.c):
 * images/.shares/NAME.  Removing an image removes it too, so that a later
 * image of the name does not inherit it. */
#define IMAGE_META_SHARES ".shares"

/* Import and commit recording the tenant they were made for (image.json's
 * "tenant"; NULL for none): the daemon's, which charges the image to that
 * tenant's disk quota and shows a commit to its tenant. */
int  runtime_image_import_owned(cell_ctx *ctx, const char *name, int fd, uint64_t max_size, const char *tenant,
                                cell_progress_fn progress, void *user, cell_error *err);
int  runtime_image_commit_owned(cell_ctx *ctx, const char *lane, const char *name, const char *tenant,
                                cell_error *err);

/* SHA-256 (image_sha256.c, nettle's): init, update, final writes 64 hex
 * digits + NUL. */
#include <nettle/sha2.h>
struct image_sha256 {
    struct sha256_ctx ctx;
};
void runtime_image_sha256_init(struct image_sha256 *s);
void runtime_image_sha256_update(struct image_sha256 *s, const void *data, size_t len);
void runtime_image_sha256_final(struct image_sha256 *s, char hex[65]);

/* Mark the cell of run_dir (run/cells/ID) as a user of stored image
 * `image`, before its rootfs is looked up: `cell image rm` refuses while a
 * live cell (its run dir flock()ed) has the mark (image_store.c). */
int  runtime_image_mark_user(const char *run_dir, const char *image, cell_error *err);

#endif
