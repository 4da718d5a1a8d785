/* ca.c: the per-cell interception CA (OpenSSL 3): key and self-signed cert,
 * PEM files on disk, and leaf certificates issued per host behind an LRU cache. */
#include "net/ca.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "util/util.h"

#define PEM_MAX   (64u << 10)
#define HOST_MAX  253

typedef struct leaf_entry {
    char     host[HOST_MAX + 1];
    SSL_CTX *ctx;
    uint64_t used;            /* tick of the last lookup; 0 = free slot */
} leaf_entry;

struct net_ca {
    EVP_PKEY       *key;
    X509           *cert;
    pthread_mutex_t lock;     /* the cache and the counters */
    leaf_entry     *cache;    /* NET_CA_CACHE_MAX slots, allocated on first use */
    uint64_t        tick;
    size_t          issued, hits;
};

/* OpenSSL's queue of errors, newest first, into the message after `what`. */
static int ssl_fail(cell_error *err, int code, const char *what)
{
    unsigned long e = ERR_peek_last_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return util_fail(err, code, "%s%s%s", what, buf[0] ? ": " : "", buf);
}

static EVP_PKEY *new_p256_key(void)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
}

/* A random positive serial of 128 bits (RFC 5280 allows up to 20 octets). */
static int set_random_serial(X509 *x)
{
    unsigned char raw[16];
    if (RAND_bytes(raw, sizeof raw) != 1)
        return -1;
    raw[0] &= 0x7f;
    raw[0] |= 0x40;           /* never zero, always 16 octets in DER */
    BIGNUM *bn = BN_bin2bn(raw, sizeof raw, NULL);
    int ok = bn && BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(x)) != NULL;
    BN_free(bn);
    return ok ? 0 : -1;
}

/* Add an extension from its config-file form, e.g. "critical,CA:TRUE". */
static int add_ext(X509 *x, X509V3_CTX *v3, int nid, const char *value)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, v3, nid, value);
    if (!ext)
        return -1;
    int ok = X509_add_ext(x, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

/* notBefore = now - backdate, notAfter = min(now + days, cap). */
static int set_validity(X509 *x, int days, const ASN1_TIME *cap)
{
    time_t now = time(NULL);
    if (!X509_time_adj_ex(X509_getm_notBefore(x), 0, -NET_CA_BACKDATE_S, &now) ||
        !X509_time_adj_ex(X509_getm_notAfter(x), days, 0, &now))
        return -1;
    if (cap && ASN1_TIME_compare(X509_get0_notAfter(x), cap) > 0 && !X509_set1_notAfter(x, cap))
        return -1;
    return 0;
}

static int set_cn(X509_NAME *name, const char *cn)
{
    return X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0) ? 0 : -1;
}

static net_ca *ca_alloc(void)
{
    net_ca *ca = calloc(1, sizeof *ca);
    if (ca && pthread_mutex_init(&ca->lock, NULL) != 0) {
        free(ca);
        return NULL;
    }
    return ca;
}

int net_ca_create(net_ca **out, const char *common_name, cell_error *err)
{
    if (!out || !common_name || !*common_name || strlen(common_name) > 64)
        return util_fail(err, EINVAL, "net_ca_create: the common name must be 1-64 bytes");
    *out = NULL;
    net_ca *ca = ca_alloc();
    if (!ca)
        return util_fail(err, ENOMEM, "net_ca_create: out of memory");
    X509V3_CTX v3;
    if (!(ca->key = new_p256_key()))
        goto ssl;
    if (!(ca->cert = X509_new()) || !X509_set_version(ca->cert, X509_VERSION_3) || set_random_serial(ca->cert) < 0 ||
        set_cn(X509_get_subject_name(ca->cert), common_name) < 0 ||
        !X509_set_issuer_name(ca->cert, X509_get_subject_name(ca->cert)) ||
        set_validity(ca->cert, NET_CA_VALID_DAYS, NULL) < 0 || !X509_set_pubkey(ca->cert, ca->key))
        goto ssl;
    X509V3_set_ctx(&v3, ca->cert, ca->cert, NULL, NULL, 0);
    /* pathlen:0: the CA signs leaves only, never another CA. */
    if (add_ext(ca->cert, &v3, NID_basic_constraints, "critical,CA:TRUE,pathlen:0") < 0 ||
        add_ext(ca->cert, &v3, NID_key_usage, "critical,keyCertSign,cRLSign") < 0 ||
        add_ext(ca->cert, &v3, NID_subject_key_identifier, "hash") < 0)
        goto ssl;
    if (!X509_sign(ca->cert, ca->key, EVP_sha256()))
        goto ssl;
    *out = ca;
    return 0;
ssl:
    net_ca_free(ca);
    return ssl_fail(err, EIO, "cannot create the CA");
}

void net_ca_free(net_ca *ca)
{
    if (!ca)
        return;
    for (size_t i = 0; ca->cache && i < NET_CA_CACHE_MAX; i++)
        SSL_CTX_free(ca->cache[i].ctx);
    free(ca->cache);
    EVP_PKEY_free(ca->key);
    X509_free(ca->cert);
    pthread_mutex_destroy(&ca->lock);
    free(ca);
}

void net_ca_stats(net_ca *ca, size_t *issued, size_t *hits)
{
    pthread_mutex_lock(&ca->lock);
    if (issued)
        *issued = ca->issued;
    if (hits)
        *hits = ca->hits;
    pthread_mutex_unlock(&ca->lock);
}

/* ---- PEM and files -------------------------------------------------------- */

/* The contents of a memory BIO as a malloc()ed NUL-terminated string. */
static char *bio_string(BIO *b, size_t *len)
{
    char *data;
    long n = BIO_get_mem_data(b, &data);
    if (n < 0)
        return NULL;
    char *s = malloc((size_t)n + 1);
    if (!s)
        return NULL;
    memcpy(s, data, (size_t)n);
    s[n] = '\0';
    if (len)
        *len = (size_t)n;
    return s;
}

int net_ca_cert_pem(const net_ca *ca, char **pem, size_t *len, cell_error *err)
{
    if (!ca || !pem)
        return util_fail(err, EINVAL, "net_ca_cert_pem: missing argument");
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || !PEM_write_bio_X509(b, ca->cert)) {
        BIO_free(b);
        return ssl_fail(err, EIO, "cannot encode the CA certificate");
    }
    *pem = bio_string(b, len);
    BIO_free(b);
    return *pem ? 0 : util_fail(err, ENOMEM, "net_ca_cert_pem: out of memory");
}

/* Replace dir/name with data: a fresh temporary file of exactly `mode`
 * (whatever the umask), fsynced, renamed over, then the directory fsynced. */
static int write_atomic(const char *dir, const char *name, const void *data, size_t len, mode_t mode,
                        cell_error *err)
{
    char path[4096], tmp[4096];
    if (util_path(path, sizeof path, err, "%s/%s", dir, name) < 0 ||
        util_path(tmp, sizeof tmp, err, "%s/.%s.tmp", dir, name) < 0)
        return -1;
    unlink(tmp); /* a leftover of a crash */
    _cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, mode & 0600);
    if (fd < 0)
        return util_fail_errno(err, "cannot create %s", tmp);
    if (fchmod(fd, mode) < 0 || util_write_all(fd, data, len) != (ssize_t)len || fsync(fd) < 0) {
        util_fail_errno(err, "cannot write %s", tmp);
        unlink(tmp);
        return -1;
    }
    if (rename(tmp, path) < 0) {
        util_fail_errno(err, "cannot rename %s to %s", tmp, path);
        unlink(tmp);
        return -1;
    }
    _cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0)
        fsync(dfd);
    return 0;
}

int net_ca_save(const net_ca *ca, const char *dir, cell_error *err)
{
    if (!ca || !dir || !*dir)
        return util_fail(err, EINVAL, "net_ca_save: missing argument");
    if (util_mkdir_p(dir, 0700, err) < 0)
        return -1;
    BIO *b = BIO_new(BIO_s_mem());
    if (!b || !PEM_write_bio_PrivateKey(b, ca->key, NULL, NULL, 0, NULL, NULL)) {
        BIO_free(b);
        return ssl_fail(err, EIO, "cannot encode the CA key");
    }
    char *data;
    long n = BIO_get_mem_data(b, &data);
    /* The key first: a cert without its key is useless, the reverse is repaired by the next save. */
    int rc = n > 0 ? write_atomic(dir, NET_CA_KEY_FILE, data, (size_t)n, 0600, err)
                   : util_fail(err, EIO, "cannot encode the CA key");
    OPENSSL_cleanse(data, n > 0 ? (size_t)n : 0);
    BIO_free(b);
    if (rc < 0)
        return -1;
    char *pem = NULL;
    size_t len = 0;
    if (net_ca_cert_pem(ca, &pem, &len, err) < 0)
        return -1;
    rc = write_atomic(dir, NET_CA_CERT_FILE, pem, len, 0644, err);
    free(pem);
    return rc;
}

/* Read a small regular file, no symlinks; `private` refuses group/other access. */
static int read_pem(const char *dir, const char *name, int private, char **out, size_t *len, cell_error *err)
{
    char path[4096];
    if (util_path(path, sizeof path, err, "%s/%s", dir, name) < 0)
        return -1;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return util_fail_errno(err, "cannot stat %s", path);
    if (!S_ISREG(st.st_mode))
        return util_fail(err, EINVAL, "%s is not a regular file", path);
    if (private && ((st.st_mode & 077) || st.st_uid != geteuid()))
        return util_fail(err, EACCES, "%s: a private key must be mode 0600 and owned by uid %u (it is %04o, uid %u)",
                         path, (unsigned)geteuid(), (unsigned)(st.st_mode & 07777), (unsigned)st.st_uid);
    if (st.st_size <= 0 || (uint64_t)st.st_size > PEM_MAX)
        return util_fail(err, EINVAL, "%s: unexpected size %lld", path, (long long)st.st_size);
    char *buf = malloc((size_t)st.st_size + 1);
    if (!buf)
        return util_fail(err, ENOMEM, "out of memory reading %s", path);
    ssize_t n = util_read_all(fd, buf, (size_t)st.st_size);
    if (n != (ssize_t)st.st_size) {
        OPENSSL_clear_free(buf, (size_t)st.st_size + 1);
        return n < 0 ? util_fail_errno(err, "cannot read %s", path) : util_fail(err, EIO, "%s: short read", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = (size_t)n;
    return 0;
}

int net_ca_load(net_ca **out, const char *dir, cell_error *err)
{
    if (!out || !dir || !*dir)
        return util_fail(err, EINVAL, "net_ca_load: missing argument");
    *out = NULL;
    char *key_pem = NULL, *cert_pem = NULL;
    size_t key_len = 0, cert_len = 0;
    if (read_pem(dir, NET_CA_KEY_FILE, 1, &key_pem, &key_len, err) < 0)
        return -1;
    if (read_pem(dir, NET_CA_CERT_FILE, 0, &cert_pem, &cert_len, err) < 0) {
        OPENSSL_clear_free(key_pem, key_len + 1);
        return -1;
    }
    net_ca *ca = ca_alloc();
    int rc = -1;
    if (!ca) {
        util_fail(err, ENOMEM, "net_ca_load: out of memory");
        goto out;
    }
    BIO *kb = BIO_new_mem_buf(key_pem, (int)key_len), *cb = BIO_new_mem_buf(cert_pem, (int)cert_len);
    if (kb && cb) {
        ca->key = PEM_read_bio_PrivateKey(kb, NULL, NULL, NULL);
        ca->cert = PEM_read_bio_X509(cb, NULL, NULL, NULL);
    }
    BIO_free(kb);
    BIO_free(cb);
    if (!ca->key || !ca->cert) {
        ssl_fail(err, EINVAL, !ca->key ? "cannot parse the CA key" : "cannot parse the CA certificate");
        goto out;
    }
    if (EVP_PKEY_get_base_id(ca->key) != EVP_PKEY_EC || !X509_check_private_key(ca->cert, ca->key)) {
        ssl_fail(err, EINVAL, "the CA key is not the EC key of the CA certificate");
        goto out;
    }
    if (X509_check_ca(ca->cert) != 1) {
        util_fail(err, EINVAL, "%s/%s is not a CA certificate", dir, NET_CA_CERT_FILE);
        goto out;
    }
    /* A leaf must not outlive its CA by much; below one leaf lifetime, start over. */
    time_t horizon = time(NULL) + (time_t)NET_CA_LEAF_DAYS * 86400;
    if (X509_cmp_time(X509_get0_notAfter(ca->cert), &horizon) <= 0) {
        util_fail(err, EKEYEXPIRED, "the CA in %s expires within %d days; create a new one", dir, NET_CA_LEAF_DAYS);
        goto out;
    }
    *out = ca;
    ca = NULL;
    rc = 0;
out:
    net_ca_free(ca);
    OPENSSL_clear_free(key_pem, key_len + 1);
    free(cert_pem);
    return rc;
}

/* ---- leaves ----------------------------------------------------------------- */

/* The cache key: an IP literal in canonical form (*is_ip set), or a DNS name
 * lowercased without a trailing dot; -1 if neither. */
static int normalize_host(const char *host, char *out, size_t size, int *is_ip, unsigned char ip[16], int *ip_len)
{
    size_t n = strnlen(host, HOST_MAX + 2);
    if (n == 0 || n > HOST_MAX + 1)
        return -1;
    *is_ip = 0;
    /* "[::1]" as it appears in URLs and Host headers. */
    char bare[HOST_MAX + 2];
    int bracketed = host[0] == '[' && host[n - 1] == ']' && n > 2;
    if (bracketed)
        snprintf(bare, sizeof bare, "%.*s", (int)(n - 2), host + 1);
    else
        snprintf(bare, sizeof bare, "%s", host);
    if (inet_pton(AF_INET, bare, ip) == 1) {
        *is_ip = 1;
        *ip_len = 4;
        return inet_ntop(AF_INET, ip, out, (socklen_t)size) ? 0 : -1;
    }
    if (inet_pton(AF_INET6, bare, ip) == 1) {
        *is_ip = 1;
        *ip_len = 16;
        return inet_ntop(AF_INET6, ip, out, (socklen_t)size) ? 0 : -1;
    }
    if (bracketed)
        return -1;          /* brackets around a non-IP */
    if (n > 1 && host[n - 1] == '.')
        n--;
    if (n > HOST_MAX || n >= size)
        return -1;
    /* LDH labels (and '_', which real names use), 1..63 each; no wildcards:
     * a leaf names exactly the host the cell asked for. */
    size_t label = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)host[i];
        if (c == '.') {
            if (label == 0 || host[i - 1] == '-')
                return -1;
            label = 0;
        } else if (isalnum(c) || c == '_' || (c == '-' && label > 0)) {
            if (++label > 63)
                return -1;
        } else {
            return -1;
        }
        out[i] = (char)tolower(c);
    }
    if (label == 0 || host[n - 1] == '-')
        return -1;
    out[n] = '\0';
    return 0;
}

static int add_san(X509 *x, const char *host, int is_ip, const unsigned char *ip, int ip_len)
{
    GENERAL_NAMES *names = sk_GENERAL_NAME_new_null();
    GENERAL_NAME *gn = GENERAL_NAME_new();
    ASN1_OCTET_STRING *ipos = NULL;
    ASN1_IA5STRING *dns = NULL;
    int ok = 0;
    if (!names || !gn)
        goto out;
    if (is_ip) {
        if (!(ipos = ASN1_OCTET_STRING_new()) || !ASN1_OCTET_STRING_set(ipos, ip, ip_len))
            goto out;
        GENERAL_NAME_set0_value(gn, GEN_IPADD, ipos);
        ipos = NULL;
    } else {
        if (!(dns = ASN1_IA5STRING_new()) || !ASN1_STRING_set(dns, host, -1))
            goto out;
        GENERAL_NAME_set0_value(gn, GEN_DNS, dns);
        dns = NULL;
    }
    if (!sk_GENERAL_NAME_push(names, gn))
        goto out;
    gn = NULL;
    ok = X509_add1_ext_i2d(x, NID_subject_alt_name, names, 0, 0) == 1;
out:
    ASN1_OCTET_STRING_free(ipos);
    ASN1_IA5STRING_free(dns);
    GENERAL_NAME_free(gn);
    GENERAL_NAMES_free(names);
    return ok ? 0 : -1;
}

/* Issue a leaf for the normalized host and wrap it in a server context.
 * Caller holds ca->lock (issuance is rare: once per host per CA). */
static SSL_CTX *issue(net_ca *ca, const char *host, int is_ip, const unsigned char *ip, int ip_len)
{
    EVP_PKEY *key = new_p256_key();
    X509 *x = X509_new();
    SSL_CTX *ctx = NULL;
    X509V3_CTX v3;
    if (!key || !x || !X509_set_version(x, X509_VERSION_3) || set_random_serial(x) < 0 ||
        !X509_set_issuer_name(x, X509_get_subject_name(ca->cert)) ||
        set_validity(x, NET_CA_LEAF_DAYS, X509_get0_notAfter(ca->cert)) < 0 || !X509_set_pubkey(x, key))
        goto out;
    /* The CN is legacy (clients match the SAN) and limited to 64 bytes.  An
     * IP leaf gets none: OpenSSL's host check would fall back to a CN that
     * holds an address, since the leaf has no dNSName. */
    X509_NAME *subject = X509_get_subject_name(x);
    if (is_ip ? !X509_NAME_add_entry_by_txt(subject, "O", MBSTRING_UTF8, (const unsigned char *)"cell", -1, -1, 0)
              : strlen(host) <= 64 && set_cn(subject, host) < 0)
        goto out;
    X509V3_set_ctx(&v3, ca->cert, x, NULL, NULL, 0);
    if (add_ext(x, &v3, NID_basic_constraints, "critical,CA:FALSE") < 0 ||
        add_ext(x, &v3, NID_key_usage, "critical,digitalSignature") < 0 ||
        add_ext(x, &v3, NID_ext_key_usage, "serverAuth") < 0 ||
        add_ext(x, &v3, NID_subject_key_identifier, "hash") < 0 ||
        add_ext(x, &v3, NID_authority_key_identifier, "keyid:always") < 0 || add_san(x, host, is_ip, ip, ip_len) < 0 ||
        !X509_sign(x, ca->key, EVP_sha256()))
        goto out;
    ctx = SSL_CTX_new(TLS_server_method());
    if (!ctx || !SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) || SSL_CTX_use_certificate(ctx, x) != 1 ||
        SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1 ||
        SSL_CTX_add1_chain_cert(ctx, ca->cert) != 1) {
        SSL_CTX_free(ctx);
        ctx = NULL;
        goto out;
    }
    /* Renegotiation only complicates a proxy; TLS 1.3 has none anyway. */
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION);
out:
    X509_free(x);       /* the context holds its own references */
    EVP_PKEY_free(key);
    return ctx;
}

int net_ca_leaf(net_ca *ca, const char *host, SSL_CTX **ctx_out, cell_error *err)
{
    if (!ca || !host || !ctx_out)
        return util_fail(err, EINVAL, "net_ca_leaf: missing argument");
    *ctx_out = NULL;
    char key[HOST_MAX + 1];
    unsigned char ip[16];
    int is_ip = 0, ip_len = 0;
    if (normalize_host(host, key, sizeof key, &is_ip, ip, &ip_len) < 0)
        return util_fail(err, EINVAL, "'%.80s' is neither a DNS name nor an IP address", host);

    pthread_mutex_lock(&ca->lock);
    if (!ca->cache && !(ca->cache = calloc(NET_CA_CACHE_MAX, sizeof *ca->cache))) {
        pthread_mutex_unlock(&ca->lock);
        return util_fail(err, ENOMEM, "net_ca_leaf: out of memory");
    }
    /* A linear scan: 1024 short strcmp()s cost less than one handshake. */
    leaf_entry *slot = NULL, *victim = &ca->cache[0];
    for (size_t i = 0; i < NET_CA_CACHE_MAX; i++) {
        leaf_entry *e = &ca->cache[i];
        if (e->used && strcmp(e->host, key) == 0) {
            slot = e;
            break;
        }
        if (e->used < victim->used)
            victim = e;         /* a free slot (used 0) wins, else the least recent */
    }
    if (slot) {
        ca->hits++;
    } else {
        SSL_CTX *ctx = issue(ca, key, is_ip, ip, ip_len);
        if (!ctx) {
            pthread_mutex_unlock(&ca->lock);
            return ssl_fail(err, EIO, "cannot issue a certificate");
        }
        /* Evicting drops only the cache's reference: callers keep theirs. */
        SSL_CTX_free(victim->ctx);
        slot = victim;
        slot->ctx = ctx;
        snprintf(slot->host, sizeof slot->host, "%s", key);
        ca->issued++;
    }
    slot->used = ++ca->tick;
    SSL_CTX_up_ref(slot->ctx);
    *ctx_out = slot->ctx;
    pthread_mutex_unlock(&ca->lock);
    return 0;
}
