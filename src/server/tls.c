/* tls.c: TLS on the daemon's TCP listener, done by libmicrohttpd over GnuTLS
 * (docs/architecture.md says why not the OpenSSL the egress engine links).
 * The PEM files are read and checked at start: a private key that others
 * can read is refused (as ssh and PostgreSQL refuse theirs), and the pair
 * and the client CA must parse, so a mistake is named before the daemon
 * listens.  With a client CA, each TCP connection's handshake requires a
 * certificate it signed; the unix socket stays plaintext. */
#include "server/server_internal.h"

#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define TLS_MAX_PEM (1u << 20)      /* a chain or a CA bundle: far more than enough */
/* TLS 1.2 and 1.3 only: the older versions' weaknesses are not worth a client. */
#define TLS_PRIORITIES "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2"

struct stls {
    char *cert, *key, *ca;          /* PEM text, NUL-terminated; ca may be NULL */
};

/* The key's owner must be the daemon's user (then mode 0600 or less) or
 * root (then 0640 or less: Debian's ssl-cert group reads keys that way). */
static int read_key(const char *path, char **out, cell_error *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0)
        return util_fail_errno(err, "--tls-key %s", path);
    struct stat st;
    if (fstat(fd, &st) < 0)
        return util_fail_errno(err, "--tls-key %s: stat", path);
    if (!S_ISREG(st.st_mode))
        return util_fail(err, EINVAL, "--tls-key %s is not a regular file", path);
    uid_t me = geteuid();
    if (st.st_uid != me && st.st_uid != 0)
        return util_fail(err, EPERM, "--tls-key %s belongs to uid %u: a private key must belong to the daemon's "
                         "user (uid %u) or root", path, (unsigned)st.st_uid, (unsigned)me);
    mode_t too_open = st.st_uid == me ? 077 : 037;
    if (st.st_mode & too_open)
        return util_fail(err, EPERM, "--tls-key %s has mode %04o: a private key must not be readable by others; "
                         "chmod %s %s", path, (unsigned)(st.st_mode & 07777), st.st_uid == me ? "600" : "640",
                         path);
    _cleanup_free_ char *buf = malloc(TLS_MAX_PEM + 1);
    if (!buf)
        return util_fail(err, ENOMEM, "out of memory");
    ssize_t n = util_read_all(fd, buf, TLS_MAX_PEM + 1);
    if (n < 0)
        return util_fail_errno(err, "--tls-key %s: read", path);
    if ((size_t)n > TLS_MAX_PEM) {
        explicit_bzero(buf, TLS_MAX_PEM + 1);
        return util_fail(err, EFBIG, "--tls-key %s is larger than %u bytes", path, TLS_MAX_PEM);
    }
    buf[n] = '\0';
    *out = buf;
    buf = NULL;
    return 0;
}

/* A certificate file; the message names the flag. */
static int read_pem(const char *flag, const char *path, char **out, cell_error *err)
{
    if (util_read_file(path, TLS_MAX_PEM, out, NULL, err) == 0)
        return 0;
    char why[sizeof err->message];
    snprintf(why, sizeof why, "%s", err->message);
    return util_fail(err, err->code, "%s: %s", flag, why);
}

static gnutls_datum_t datum(char *pem)
{
    return (gnutls_datum_t){ .data = (unsigned char *)pem, .size = (unsigned)strlen(pem) };
}

/* What libmicrohttpd would only call "could not start", said with the file. */
static int check_material(const struct stls *t, const server_options *o, cell_error *err)
{
    gnutls_certificate_credentials_t cred;
    if (gnutls_certificate_allocate_credentials(&cred) < 0)
        return util_fail(err, ENOMEM, "out of memory");
    gnutls_datum_t cert = datum(t->cert), key = datum(t->key);
    int rc = gnutls_certificate_set_x509_key_mem2(cred, &cert, &key, GNUTLS_X509_FMT_PEM, NULL, 0);
    if (rc < 0) {
        gnutls_certificate_free_credentials(cred);
        return util_fail(err, EINVAL, "--tls-cert %s with --tls-key %s: %s (expected a PEM certificate chain, "
                         "server certificate first, and its unencrypted PEM private key)", o->tls_cert_file,
                         o->tls_key_file, gnutls_strerror(rc));
    }
    if (t->ca) {
        gnutls_datum_t ca = datum(t->ca);
        rc = gnutls_certificate_set_x509_trust_mem(cred, &ca, GNUTLS_X509_FMT_PEM);
        if (rc <= 0) {
            gnutls_certificate_free_credentials(cred);
            return util_fail(err, EINVAL, "--tls-client-ca %s: %s", o->tls_client_ca_file,
                             rc < 0 ? gnutls_strerror(rc) : "no PEM certificate in it");
        }
    }
    gnutls_certificate_free_credentials(cred);
    return 0;
}

static void stls_free(struct stls *t)
{
    if (!t)
        return;
    if (t->key)
        explicit_bzero(t->key, strlen(t->key));
    free(t->key);
    free(t->cert);
    free(t->ca);
    free(t);
}

int srv_tls_load(srv *s, const char *listen_spec, cell_error *err)
{
    const server_options *o = &s->opt;
    if (!o->tls_cert_file && !o->tls_key_file && !o->tls_client_ca_file)
        return 0;
    if (!o->tls_cert_file || !o->tls_key_file)
        return util_fail(err, EINVAL, "%s needs %s too: TLS takes a certificate and its private key",
                         o->tls_cert_file ? "--tls-cert" : o->tls_key_file ? "--tls-key" : "--tls-client-ca",
                         o->tls_cert_file ? "--tls-key" : "--tls-cert");
    if (!*listen_spec)
        return util_fail(err, EINVAL, "--tls-cert is for the TCP listener, but --listen \"\" turns it off "
                         "(the unix socket is always plain)");
    struct stls *t = calloc(1, sizeof *t);
    if (!t)
        return util_fail(err, ENOMEM, "out of memory");
    if (read_pem("--tls-cert", o->tls_cert_file, &t->cert, err) < 0 || read_key(o->tls_key_file, &t->key, err) < 0 ||
        (o->tls_client_ca_file && read_pem("--tls-client-ca", o->tls_client_ca_file, &t->ca, err) < 0) ||
        check_material(t, o, err) < 0) {
        stls_free(t);
        return -1;
    }
    s->tls = t;
    return 0;
}

void srv_tls_free(srv *s)
{
    stls_free(s->tls);
    s->tls = NULL;
}

unsigned srv_tls_mhd_options(const srv *s, struct MHD_OptionItem items[TLS_MHD_OPTIONS])
{
    size_t n = 0;
    const struct stls *t = s->tls;
    if (t) {
        items[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_CERT, 0, t->cert };
        items[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_KEY, 0, t->key };
        items[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_PRIORITIES, 0, (void *)TLS_PRIORITIES };
        if (t->ca)
            items[n++] = (struct MHD_OptionItem){ MHD_OPTION_HTTPS_MEM_TRUST, 0, t->ca };
    }
    items[n] = (struct MHD_OptionItem){ MHD_OPTION_END, 0, NULL };
    return t ? MHD_USE_TLS : 0;
}

/* libmicrohttpd only asks for a client certificate (GNUTLS_CERT_REQUEST)
 * and leaves checking it to the application: here, before the handshake
 * (MHD_CONNECTION_NOTIFY_STARTED comes after the session is made and before
 * the connection's thread runs it), the session requires one and GnuTLS
 * verifies it against the CA (and its purpose) during the handshake, so a
 * client without a good certificate gets a TLS alert and never sends a
 * request. */
/* A client certificate must allow TLS client authentication (one with
 * extended key usages that leave it out, such as a server's, is refused). */
static gnutls_typed_vdata_st client_purpose = {
    .type = GNUTLS_DT_KEY_PURPOSE_OID, .data = (unsigned char *)GNUTLS_KP_TLS_WWW_CLIENT,
};

void srv_tls_connection_started(srv *s, struct MHD_Connection *conn)
{
    if (!s->tls || !s->tls->ca)
        return;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return;                     /* the unix socket; srv_tls_request_allowed checks again */
    gnutls_session_t ses = ci->tls_session;
    gnutls_certificate_server_set_request(ses, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert2(ses, &client_purpose, 1, 0);
}

/* Each request on TLS with a client CA checks the peer's certificate again,
 * so nothing depends on the hook above alone. */
int srv_tls_request_allowed(sreq *r)
{
    const struct stls *t = r->s->tls;
    if (!t || !t->ca || !r->conn)
        return 1;
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(r->conn, MHD_CONNECTION_INFO_GNUTLS_SESSION);
    if (!ci || !ci->tls_session)
        return 1;                   /* the unix socket: plaintext, its mode is the guard */
    unsigned status = 0;
    int rc = gnutls_certificate_verify_peers(ci->tls_session, &client_purpose, 1, &status);
    return rc == 0 && status == 0;
}
