/* upgrade.h: running an upgraded connection's session (a WebSocket) over
 * TLS, on a thread of its own (upgrade.c).
 *
 * Why: over plain HTTP libmicrohttpd hands an upgrade callback the TCP
 * socket, and the session can run right there, on the connection's own
 * thread, which MHD_stop_daemon joins.  Over TLS (cell serve --tls-cert)
 * the callback gets one end of a socketpair, and libmicrohttpd relays
 * between it and the TLS session on that very thread, but only once the
 * callback returns: a session run in the callback would wait for bytes
 * that are never relayed.  Every WebSocket route (the terminal, the
 * desktop's live view) therefore hands a TLS session to
 * srv_upgrade_start_thread; srv_upgrade_stop_sessions ends them all before
 * the daemon stops libmicrohttpd. */
#ifndef CELL_SERVER_UPGRADE_H
#define CELL_SERVER_UPGRADE_H

#include <microhttpd.h>
#include <stddef.h>

/* A session's body: runs until the session ends (it reads `fd`, the
 * socketpair end, and notices srv.stopping within its own poll period). */
typedef void (*srv_upgrade_run_fn)(void *session, int fd, const char *extra, size_t extra_len);
/* Frees the session after its run and MHD_upgrade_action(CLOSE). */
typedef void (*srv_upgrade_free_fn)(void *session);

/* Start a thread that calls run(session, fd, extra), closes the upgrade
 * (urh) and then calls free(session).  1: started, the thread owns the
 * session from now on (the caller must let go of it, e.g. the request's
 * stream pointer); 0: the daemon is stopping or no thread could start, the
 * caller still owns the session and must close urh itself. */
int  srv_upgrade_start_thread(void *session, int fd, srv_upgrade_run_fn run, srv_upgrade_free_fn free_fn,
                              const char *extra, size_t extra_len, struct MHD_UpgradeResponseHandle *urh);

/* Shut down every running session's socket (a send stuck on a client that
 * stopped reading fails at once; a poll wakes) and wait for the threads to
 * end; refuse new ones from now on.  Called before MHD_stop_daemon. */
void srv_upgrade_stop_sessions(void);

/* 1 when the connection is a TLS one (its upgrade needs a thread). */
int  srv_upgrade_is_tls(struct MHD_Connection *conn);

#endif
