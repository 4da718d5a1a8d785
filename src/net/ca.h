/* ca.h: a per-cell certificate authority for HTTPS interception: an EC P-256
 * CA whose cert goes into the cell's trust store, and cached leaf certificates. */
#ifndef CELL_NET_CA_H
#define CELL_NET_CA_H

#include <stddef.h>
#include <openssl/ssl.h>

#include "cell.h"

#define NET_CA_VALID_DAYS    30     /* the CA certificate */
#define NET_CA_LEAF_DAYS     7      /* leaves, capped at the CA's notAfter */
#define NET_CA_BACKDATE_S    3600   /* notBefore = now - 1 h: cells' clocks may lag */
#define NET_CA_CACHE_MAX     1024   /* leaf SSL_CTXs kept, least recently used evicted */
#define NET_CA_KEY_FILE      "ca.key"
#define NET_CA_CERT_FILE     "ca.crt"

typedef struct net_ca net_ca;

/* A new CA: EC P-256 key, self-signed cert with subject CN=common_name
 * (1..64 bytes), valid NET_CA_VALID_DAYS, basicConstraints critical
 * CA:TRUE pathlen:0, keyUsage critical keyCertSign cRLSign, a subject key
 * identifier and a random positive 128-bit serial. */
int  net_ca_create(net_ca **out, const char *common_name, cell_error *err);

/* DIR/ca.key (PEM, 0600) and DIR/ca.crt (PEM, 0644), each replaced
 * atomically (temporary file, fsync, rename).  DIR is created 0700 if missing. */
int  net_ca_save(const net_ca *ca, const char *dir, cell_error *err);
/* Load what net_ca_save wrote.  Refused: a key file group/other can access
 * or that is a symlink (EACCES / ELOOP), a key that does not match the cert
 * or a cert that is no CA (EINVAL), and a CA with less than
 * NET_CA_LEAF_DAYS left (EKEYEXPIRED: create a new one). */
int  net_ca_load(net_ca **out, const char *dir, cell_error *err);

/* The CA certificate as PEM (malloc()ed, NUL-terminated, *len excludes the
 * NUL; len may be NULL), for the cell's trust store.  Nothing exports the
 * private key except net_ca_save. */
int  net_ca_cert_pem(const net_ca *ca, char **pem, size_t *len, cell_error *err);

/* A TLS server context for `host`, ready for SSL_new/SSL_set_fd/SSL_accept:
 * a leaf (own P-256 key; SAN dNSName host, or iPAddress for an IPv4/IPv6
 * literal; EKU serverAuth; valid NET_CA_LEAF_DAYS) signed by the CA, the CA
 * cert as its chain, TLS 1.2 minimum.  Host names are matched without case
 * and a trailing dot; IP literals in canonical form.  The context is cached
 * per host (the same one is returned until evicted).  *ctx_out holds a
 * reference: SSL_CTX_free() it.  Thread-safe; issuance is serialized. */
int  net_ca_leaf(net_ca *ca, const char *host, SSL_CTX **ctx_out, cell_error *err);

/* Leaves issued and cache hits since creation (for tests and stats). */
void net_ca_stats(net_ca *ca, size_t *issued, size_t *hits);

void net_ca_free(net_ca *ca); /* NULL-safe; drops the cache's references */

#endif
