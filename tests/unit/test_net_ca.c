/* test_net_ca.c: the interception CA: its certificate, leaves that chain to
 * it, the leaf cache, PEM files on disk and a real TLS handshake. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <pthread.h>
#include <signal.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "net/ca.h"
#include "util/util.h"

static net_ca *new_ca(void)
{
    net_ca *ca = NULL;
    cell_error err = { 0 };
    assert_int_equal(net_ca_create(&ca, "cell test CA", &err), 0);
    assert_non_null(ca);
    return ca;
}

static X509 *ca_cert_of(const net_ca *ca)
{
    char *pem = NULL;
    size_t len = 0;
    cell_error err = { 0 };
    assert_int_equal(net_ca_cert_pem(ca, &pem, &len, &err), 0);
    assert_int_equal(strlen(pem), len);
    assert_non_null(strstr(pem, "-----BEGIN CERTIFICATE-----"));
    assert_null(strstr(pem, "PRIVATE KEY"));
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *x = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    free(pem);
    assert_non_null(x);
    return x;
}

/* Seconds from now to an ASN1_TIME (negative: in the past). */
static long long secs_from_now(const ASN1_TIME *t)
{
    int days = 0, secs = 0;
    assert_int_equal(ASN1_TIME_diff(&days, &secs, NULL, t), 1);
    return (long long)days * 86400 + secs;
}

static void ca_certificate(void **state)
{
    (void)state;
    net_ca *ca = new_ca();
    X509 *x = ca_cert_of(ca);
    assert_int_equal(X509_check_ca(x), 1);
    assert_int_equal(X509_get_pathlen(x), 0);
    int crit = 0;
    BASIC_CONSTRAINTS *bc = X509_get_ext_d2i(x, NID_basic_constraints, &crit, NULL);
    assert_non_null(bc);
    assert_true(bc->ca);
    assert_int_equal(crit, 1);
    BASIC_CONSTRAINTS_free(bc);
    assert_int_equal(X509_get_key_usage(x), KU_KEY_CERT_SIGN | KU_CRL_SIGN);
    assert_non_null(X509_get0_subject_key_id(x));
    /* Self-signed: verifies with its own key. */
    assert_int_equal(X509_verify(x, X509_get0_pubkey(x)), 1);
    EVP_PKEY *pk = X509_get0_pubkey(x);
    assert_int_equal(EVP_PKEY_get_base_id(pk), EVP_PKEY_EC);
    char group[64];
    size_t glen = 0;
    assert_int_equal(EVP_PKEY_get_group_name(pk, group, sizeof group, &glen), 1);
    assert_string_equal(group, "prime256v1");
    BIGNUM *serial = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    assert_int_equal(BN_num_bits(serial), 127);
    assert_false(BN_is_negative(serial));
    BN_free(serial);
    long long nb = secs_from_now(X509_get0_notBefore(x)), na = secs_from_now(X509_get0_notAfter(x));
    assert_true(nb <= -3590 && nb >= -3610);
    assert_true(na >= 30 * 86400 - 10 && na <= 30 * 86400 + 10);
    /* Two CAs never share a serial or key. */
    net_ca *ca2 = new_ca();
    X509 *y = ca_cert_of(ca2);
    assert_int_not_equal(ASN1_INTEGER_cmp(X509_get0_serialNumber(x), X509_get0_serialNumber(y)), 0);
    assert_int_not_equal(EVP_PKEY_eq(X509_get0_pubkey(x), X509_get0_pubkey(y)), 1);
    X509_free(y);
    net_ca_free(ca2);
    X509_free(x);
    net_ca_free(ca);

    cell_error err = { 0 };
    assert_int_equal(net_ca_create(&ca, "", &err), -1);
    assert_int_equal(err.code, EINVAL);
    net_ca_free(NULL);
}

/* X509_verify_cert with a store that holds only `root`. */
static int verify_with(X509 *root, X509 *leaf, int *error)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *vctx = X509_STORE_CTX_new();
    assert_non_null(st);
    assert_non_null(vctx);
    assert_int_equal(X509_STORE_add_cert(st, root), 1);
    assert_int_equal(X509_STORE_CTX_init(vctx, st, leaf, NULL), 1);
    assert_int_equal(X509_STORE_CTX_set_purpose(vctx, X509_PURPOSE_SSL_SERVER), 1);
    X509_STORE_CTX_set_flags(vctx, X509_V_FLAG_X509_STRICT);
    int ok = X509_verify_cert(vctx);
    if (error)
        *error = X509_STORE_CTX_get_error(vctx);
    X509_STORE_CTX_free(vctx);
    X509_STORE_free(st);
    return ok;
}

static void leaf_chains_to_ca(void **state)
{
    (void)state;
    net_ca *ca = new_ca();
    X509 *root = ca_cert_of(ca);
    SSL_CTX *ctx = NULL;
    cell_error err = { 0 };
    assert_int_equal(net_ca_leaf(ca, "api.example.com", &ctx, &err), 0);
    X509 *leaf = SSL_CTX_get0_certificate(ctx);
    assert_non_null(leaf);
    int verr = 0;
    assert_int_equal(verify_with(root, leaf, &verr), 1);
    assert_int_equal(verr, X509_V_OK);

    assert_int_equal(X509_check_host(leaf, "api.example.com", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(leaf, "API.Example.COM", 0, 0, NULL), 1);
    assert_int_equal(X509_check_host(leaf, "example.com", 0, 0, NULL), 0);
    assert_int_equal(X509_check_host(leaf, "x.api.example.com", 0, 0, NULL), 0);
    assert_int_equal(X509_check_ip_asc(leaf, "127.0.0.1", 0), 0);
    assert_int_equal(X509_check_ca(leaf), 0);
    assert_true(X509_get_extended_key_usage(leaf) & XKU_SSL_SERVER);
    assert_true(X509_get_key_usage(leaf) & KU_DIGITAL_SIGNATURE);
    assert_non_null(X509_get0_authority_key_id(leaf));
    assert_int_equal(ASN1_OCTET_STRING_cmp(X509_get0_authority_key_id(leaf), X509_get0_subject_key_id(root)), 0);
    long long na = secs_from_now(X509_get0_notAfter(leaf));
    assert_true(na >= 7 * 86400 - 10 && na <= 7 * 86400 + 10);
    assert_true(secs_from_now(X509_get0_notBefore(leaf)) <= -3590);
    /* The chain sent in the handshake carries the CA. */
    STACK_OF(X509) *chain = NULL;
    assert_int_equal(SSL_CTX_get0_chain_certs(ctx, &chain), 1);
    assert_int_equal(sk_X509_num(chain), 1);
    assert_int_equal(X509_cmp(sk_X509_value(chain, 0), root), 0);

    /* Another CA's root does not verify it. */
    net_ca *other = new_ca();
    X509 *other_root = ca_cert_of(other);
    assert_int_not_equal(verify_with(other_root, leaf, NULL), 1);
    X509_free(other_root);
    net_ca_free(other);

    SSL_CTX_free(ctx);
    X509_free(root);
    net_ca_free(ca);
}

static void ip_leaves(void **state)
{
    (void)state;
    net_ca *ca = new_ca();
    X509 *root = ca_cert_of(ca);
    cell_error err = { 0 };
    SSL_CTX *v4 = NULL, *v6 = NULL, *v6b = NULL, *v6c = NULL;
    assert_int_equal(net_ca_leaf(ca, "10.1.2.3", &v4, &err), 0);
    X509 *leaf = SSL_CTX_get0_certificate(v4);
    assert_int_equal(verify_with(root, leaf, NULL), 1);
    assert_int_equal(X509_check_ip_asc(leaf, "10.1.2.3", 0), 1);
    assert_int_equal(X509_check_ip_asc(leaf, "10.1.2.4", 0), 0);
    assert_int_equal(X509_check_host(leaf, "10.1.2.3", 0, 0, NULL), 0);

    assert_int_equal(net_ca_leaf(ca, "2001:db8::1", &v6, &err), 0);
    assert_int_equal(X509_check_ip_asc(SSL_CTX_get0_certificate(v6), "2001:db8::1", 0), 1);
    /* Spellings of the same address share one leaf. */
    assert_int_equal(net_ca_leaf(ca, "[2001:db8::1]", &v6b, &err), 0);
    assert_int_equal(net_ca_leaf(ca, "2001:0db8:0:0::0001", &v6c, &err), 0);
    assert_ptr_equal(v6, v6b);
    assert_ptr_equal(v6, v6c);
    SSL_CTX_free(v4);
    SSL_CTX_free(v6);
    SSL_CTX_free(v6b);
    SSL_CTX_free(v6c);
    X509_free(root);
    net_ca_free(ca);
}

static void bad_hosts(void **state)
{
    (void)state;
    net_ca *ca = new_ca();
    char longname[300];
    memset(longname, 'a', sizeof longname - 1);
    longname[sizeof longname - 1] = '\0';
    char longlabel[80];
    memset(longlabel, 'b', 64);
    snprintf(longlabel + 64, sizeof longlabel - 64, ".com");
    const char *bad[] = { "", ".", "a..b", "-a.com", "a-.com", "*.example.com", "a b.com", "[example.com]",
                          "exa/mple.com", "example.com:443", "[]", longname, longlabel, "a.com..", "\xc3\xa9.com" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        SSL_CTX *ctx = (SSL_CTX *)1;
        cell_error err = { 0 };
        assert_int_equal(net_ca_leaf(ca, bad[i], &ctx, &err), -1);
        assert_int_equal(err.code, EINVAL);
        assert_null(ctx);
    }
    SSL_CTX *ctx = NULL;
    cell_error err = { 0 };
    assert_int_equal(net_ca_leaf(ca, "under_score.example", &ctx, &err), 0);
    SSL_CTX_free(ctx);
    assert_int_equal(net_ca_leaf(ca, "localhost", &ctx, &err), 0);
    SSL_CTX_free(ctx);
    net_ca_free(ca);
}

static void cache_hits_and_lru(void **state)
{
    (void)state;
    net_ca *ca = new_ca();
    cell_error err = { 0 };
    SSL_CTX *a = NULL, *b = NULL, *c = NULL;
    assert_int_equal(net_ca_leaf(ca, "cache.example", &a, &err), 0);
    assert_int_equal(net_ca_leaf(ca, "Cache.Example.", &b, &err), 0);
    assert_ptr_equal(a, b);
    assert_ptr_equal(SSL_CTX_get0_certificate(a), SSL_CTX_get0_certificate(b));
    size_t issued = 0, hits = 0;
    net_ca_stats(ca, &issued, &hits);
    assert_int_equal(issued, 1);
    assert_int_equal(hits, 1);

    /* Fill the cache: "cache.example" is the least recently used ... */
    char host[64];
    for (int i = 1; i < NET_CA_CACHE_MAX; i++) {
        snprintf(host, sizeof host, "h%d.example", i);
        assert_int_equal(net_ca_leaf(ca, host, &c, &err), 0);
        SSL_CTX_free(c);
    }
    /* ... until touched; then h1 is, and a new host evicts it. */
    assert_int_equal(net_ca_leaf(ca, "cache.example", &c, &err), 0);
    assert_ptr_equal(c, a);
    SSL_CTX_free(c);
    assert_int_equal(net_ca_leaf(ca, "new.example", &c, &err), 0);
    SSL_CTX_free(c);
    net_ca_stats(ca, &issued, &hits);
    assert_int_equal(issued, NET_CA_CACHE_MAX + 1);
    assert_int_equal(net_ca_leaf(ca, "cache.example", &c, &err), 0);
    assert_ptr_equal(c, a);
    SSL_CTX_free(c);
    assert_int_equal(net_ca_leaf(ca, "h2.example", &c, &err), 0);
    SSL_CTX_free(c);
    net_ca_stats(ca, &issued, &hits);
    assert_int_equal(issued, NET_CA_CACHE_MAX + 1);     /* h2 was still cached */
    assert_int_equal(net_ca_leaf(ca, "h1.example", &c, &err), 0);
    SSL_CTX_free(c);
    net_ca_stats(ca, &issued, &hits);
    assert_int_equal(issued, NET_CA_CACHE_MAX + 2);     /* h1 had been evicted */

    /* A caller's reference outlives the CA and its cache. */
    net_ca_free(ca);
    assert_non_null(SSL_CTX_get0_certificate(a));
    SSL_CTX_free(a);
    SSL_CTX_free(b);
}

typedef struct racer {
    net_ca  *ca;
    SSL_CTX *got[8];
} racer;

static void *race(void *arg)
{
    racer *r = arg;
    for (int i = 0; i < 8; i++) {
        char host[32];
        snprintf(host, sizeof host, "race%d.example", i);
        cell_error err = { 0 };
        if (net_ca_leaf(r->ca, host, &r->got[i], &err) < 0)
            r->got[i] = NULL;
    }
    return NULL;
}

static void concurrent_leaves(void **state)
{
    (void)state;
    net_ca *ca = new_ca();
    enum { N = 6 };
    racer rs[N];
    pthread_t th[N];
    for (int i = 0; i < N; i++) {
        rs[i] = (racer){ .ca = ca };
        assert_int_equal(pthread_create(&th[i], NULL, race, &rs[i]), 0);
    }
    for (int i = 0; i < N; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 8; k++) {
            assert_non_null(rs[i].got[k]);
            assert_ptr_equal(rs[i].got[k], rs[0].got[k]);
        }
    size_t issued = 0;
    net_ca_stats(ca, &issued, NULL);
    assert_int_equal(issued, 8);
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 8; k++)
            SSL_CTX_free(rs[i].got[k]);
    net_ca_free(ca);
}

/* ---- files ----------------------------------------------------------------- */

static int mode_of(const char *dir, const char *name)
{
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    struct stat st;
    assert_int_equal(lstat(path, &st), 0);
    return (int)(st.st_mode & 07777);
}

static void save_load_round_trip(void **state)
{
    (void)state;
    char base[64] = "/tmp/cell-test-ca-XXXXXX", dir[128];
    assert_non_null(mkdtemp(base));
    snprintf(dir, sizeof dir, "%s/lane/ca", base);
    cell_error err = { 0 };
    net_ca *ca = new_ca();
    /* The modes are the files' own, whatever the umask. */
    mode_t old = umask(0077);
    assert_int_equal(net_ca_save(ca, dir, &err), 0);
    umask(old);
    assert_int_equal(mode_of(dir, NET_CA_KEY_FILE), 0600);
    assert_int_equal(mode_of(dir, NET_CA_CERT_FILE), 0644);
    old = umask(0);
    assert_int_equal(net_ca_save(ca, dir, &err), 0);       /* replacing works too */
    umask(old);
    assert_int_equal(mode_of(dir, NET_CA_KEY_FILE), 0600);
    assert_int_equal(mode_of(dir, NET_CA_CERT_FILE), 0644);

    net_ca *back = NULL;
    assert_int_equal(net_ca_load(&back, dir, &err), 0);
    char *pem1 = NULL, *pem2 = NULL;
    size_t l1 = 0, l2 = 0;
    assert_int_equal(net_ca_cert_pem(ca, &pem1, &l1, &err), 0);
    assert_int_equal(net_ca_cert_pem(back, &pem2, &l2, &err), 0);
    assert_int_equal(l1, l2);
    assert_string_equal(pem1, pem2);
    free(pem1);
    free(pem2);
    /* Same key: a leaf of the loaded CA verifies against the original's cert. */
    X509 *root = ca_cert_of(ca);
    SSL_CTX *ctx = NULL;
    assert_int_equal(net_ca_leaf(back, "reload.example", &ctx, &err), 0);
    assert_int_equal(verify_with(root, SSL_CTX_get0_certificate(ctx), NULL), 1);
    SSL_CTX_free(ctx);
    X509_free(root);
    net_ca_free(back);

    /* A readable key is refused, as is a key that belongs to another cert. */
    char path[256];
    snprintf(path, sizeof path, "%s/%s", dir, NET_CA_KEY_FILE);
    assert_int_equal(chmod(path, 0644), 0);
    assert_int_equal(net_ca_load(&back, dir, &err), -1);
    assert_int_equal(err.code, EACCES);
    assert_null(back);
    assert_int_equal(chmod(path, 0600), 0);
    net_ca *other = new_ca();
    char dir2[128];
    snprintf(dir2, sizeof dir2, "%s/other", base);
    assert_int_equal(net_ca_save(other, dir2, &err), 0);
    char src[256], dst[256];
    snprintf(src, sizeof src, "%s/%s", dir2, NET_CA_CERT_FILE);
    snprintf(dst, sizeof dst, "%s/%s", dir, NET_CA_CERT_FILE);
    assert_int_equal(rename(src, dst), 0);
    assert_int_equal(net_ca_load(&back, dir, &err), -1);
    assert_int_equal(err.code, EINVAL);
    net_ca_free(other);

    snprintf(dir2, sizeof dir2, "%s/missing", base);
    assert_int_equal(net_ca_load(&back, dir2, &err), -1);
    assert_int_equal(err.code, ENOENT);

    net_ca_free(ca);
    util_rm_rf(base, &err);
}

/* ---- a TLS handshake ----------------------------------------------------------- */

typedef struct server_side {
    SSL_CTX *ctx;
    int      fd;
    int      accepted;
    char     got[16];
} server_side;

static void *serve_one(void *arg)
{
    server_side *s = arg;
    SSL *ssl = SSL_new(s->ctx);
    SSL_set_fd(ssl, s->fd);
    if (SSL_accept(ssl) == 1) {
        s->accepted = 1;
        int n = SSL_read(ssl, s->got, sizeof s->got - 1);
        if (n > 0) {
            s->got[n] = '\0';
            SSL_write(ssl, "pong", 4);
        }
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    ERR_clear_error();
    return NULL;
}

/* Connect to a net_ca_leaf context for `leaf_host` as a client that trusts
 * only the CA's PEM and expects `verify_host`.  1 if the handshake and an
 * exchange succeeded. */
static int handshake(net_ca *ca, const char *leaf_host, const char *verify_host, int max_version, char *version,
                     size_t vsize)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    cell_error err = { 0 };
    server_side s = { .fd = sv[1] };
    assert_int_equal(net_ca_leaf(ca, leaf_host, &s.ctx, &err), 0);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, serve_one, &s), 0);

    char *pem = NULL;
    size_t len = 0;
    assert_int_equal(net_ca_cert_pem(ca, &pem, &len, &err), 0);
    SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
    assert_non_null(cctx);
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    X509 *root = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    free(pem);
    assert_int_equal(X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), root), 1);
    X509_free(root);
    SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
    if (max_version)
        SSL_CTX_set_max_proto_version(cctx, max_version);
    SSL *ssl = SSL_new(cctx);
    SSL_set_fd(ssl, sv[0]);
    SSL_set_tlsext_host_name(ssl, verify_host);
    if (verify_host[0] >= '0' && verify_host[0] <= '9')
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), verify_host);
    else
        SSL_set1_host(ssl, verify_host);
    int ok = 0;
    if (SSL_connect(ssl) == 1 && SSL_get_verify_result(ssl) == X509_V_OK) {
        snprintf(version, vsize, "%s", SSL_get_version(ssl));
        char buf[8] = "";
        if (SSL_write(ssl, "ping", 4) == 4 && SSL_read(ssl, buf, 4) == 4 && memcmp(buf, "pong", 4) == 0)
            ok = 1;
        SSL_shutdown(ssl);
    }
    SSL_free(ssl);
    close(sv[0]);           /* unblocks a server still waiting */
    pthread_join(th, NULL);
    close(sv[1]);
    if (ok)
        assert_string_equal(s.got, "ping");
    SSL_CTX_free(s.ctx);
    SSL_CTX_free(cctx);
    ERR_clear_error();
    return ok;
}

static void tls_handshake(void **state)
{
    (void)state;
    net_ca *ca = new_ca();
    char version[32] = "";
    assert_int_equal(handshake(ca, "secure.example", "secure.example", 0, version, sizeof version), 1);
    assert_string_equal(version, "TLSv1.3");
    assert_int_equal(handshake(ca, "secure.example", "secure.example", TLS1_2_VERSION, version, sizeof version), 1);
    assert_string_equal(version, "TLSv1.2");
    assert_int_equal(handshake(ca, "192.0.2.7", "192.0.2.7", 0, version, sizeof version), 1);
    /* A leaf for another name does not pass the client's host check. */
    assert_int_equal(handshake(ca, "secure.example", "evil.example", 0, version, sizeof version), 0);
    /* Nor does a leaf of another CA. */
    net_ca *other = new_ca();
    int sv_ok;
    {
        /* The client trusts `ca`, the server presents `other`'s leaf. */
        int sv[2];
        assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
        cell_error err = { 0 };
        server_side s = { .fd = sv[1] };
        assert_int_equal(net_ca_leaf(other, "secure.example", &s.ctx, &err), 0);
        pthread_t th;
        assert_int_equal(pthread_create(&th, NULL, serve_one, &s), 0);
        X509 *root = ca_cert_of(ca);
        SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
        X509_STORE_add_cert(SSL_CTX_get_cert_store(cctx), root);
        X509_free(root);
        SSL_CTX_set_verify(cctx, SSL_VERIFY_PEER, NULL);
        SSL *ssl = SSL_new(cctx);
        SSL_set_fd(ssl, sv[0]);
        SSL_set_tlsext_host_name(ssl, "secure.example");
        SSL_set1_host(ssl, "secure.example");
        sv_ok = SSL_connect(ssl) == 1;
        SSL_free(ssl);
        close(sv[0]);
        pthread_join(th, NULL);
        close(sv[1]);
        SSL_CTX_free(s.ctx);
        SSL_CTX_free(cctx);
        ERR_clear_error();
    }
    assert_int_equal(sv_ok, 0);
    net_ca_free(other);
    net_ca_free(ca);
}

int main(void)
{
    /* A peer that gives up mid-handshake must not kill the test. */
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(ca_certificate),
        cmocka_unit_test(leaf_chains_to_ca),
        cmocka_unit_test(ip_leaves),
        cmocka_unit_test(bad_hosts),
        cmocka_unit_test(cache_hits_and_lru),
        cmocka_unit_test(concurrent_leaves),
        cmocka_unit_test(save_load_round_trip),
        cmocka_unit_test(tls_handshake),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
