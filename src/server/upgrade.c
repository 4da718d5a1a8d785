/* upgrade.c: TLS WebSocket sessions on threads of their own (see upgrade.h
 * for why).  The threads are detached but counted: srv_upgrade_stop_sessions
 * shuts their sockets down and waits until the last one has closed its
 * upgrade handle, so none outlives libmicrohttpd's daemon (a detached
 * thread calling MHD_upgrade_action on a freed handle). */
#include "server/upgrade.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

struct upgrade_session {
    void                             *session;
    int                               fd;
    srv_upgrade_run_fn                run;
    srv_upgrade_free_fn               free_fn;
    struct MHD_UpgradeResponseHandle *urh;
    struct upgrade_session           *next;   /* upgrade_lock: the live list */
    size_t                            extra_len;
    char                              extra[];
};

static pthread_mutex_t upgrade_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t upgrade_cond = PTHREAD_COND_INITIALIZER;
static struct upgrade_session *upgrade_live;    /* running their session */
static unsigned upgrade_threads;                /* threads not yet past their close */
static int upgrade_closed;                      /* the daemon is stopping: no new thread */

static void *upgrade_main(void *arg)
{
    struct upgrade_session *us = arg;
    us->run(us->session, us->fd, us->extra, us->extra_len);
    pthread_mutex_lock(&upgrade_lock);
    for (struct upgrade_session **pp = &upgrade_live; *pp; pp = &(*pp)->next)
        if (*pp == us) {
            *pp = us->next;
            break;
        }
    pthread_mutex_unlock(&upgrade_lock);
    MHD_upgrade_action(us->urh, MHD_UPGRADE_ACTION_CLOSE);
    us->free_fn(us->session);
    free(us);
    pthread_mutex_lock(&upgrade_lock);
    upgrade_threads--;
    pthread_cond_broadcast(&upgrade_cond);
    pthread_mutex_unlock(&upgrade_lock);
    return NULL;
}

int srv_upgrade_start_thread(void *session, int fd, srv_upgrade_run_fn run, srv_upgrade_free_fn free_fn,
                             const char *extra, size_t extra_len, struct MHD_UpgradeResponseHandle *urh)
{
    /* The bytes after the request head live in libmicrohttpd's buffer,
     * valid only during the callback: the thread gets a copy. */
    struct upgrade_session *us = malloc(sizeof *us + extra_len);
    if (!us)
        return 0;
    *us = (struct upgrade_session){ .session = session, .fd = fd, .run = run, .free_fn = free_fn, .urh = urh,
                                    .extra_len = extra_len };
    if (extra_len)
        memcpy(us->extra, extra, extra_len);
    pthread_attr_t attr;
    pthread_t tid;
    int started = 0;
    pthread_mutex_lock(&upgrade_lock);
    if (!upgrade_closed && pthread_attr_init(&attr) == 0) {
        if (pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED) == 0 &&
            pthread_create(&tid, &attr, upgrade_main, us) == 0) {
            started = 1;
            us->next = upgrade_live;
            upgrade_live = us;
            upgrade_threads++;
        }
        pthread_attr_destroy(&attr);
    }
    pthread_mutex_unlock(&upgrade_lock);
    if (!started)
        free(us);
    return started;
}

void srv_upgrade_stop_sessions(void)
{
    pthread_mutex_lock(&upgrade_lock);
    upgrade_closed = 1;
    /* Each session sees srv.stopping within its poll period; a send stuck
     * on a client that stopped reading fails once its socket is shut down
     * (the socketpair end stays open until the session's own close). */
    for (struct upgrade_session *us = upgrade_live; us; us = us->next)
        if (shutdown(us->fd, SHUT_RDWR) < 0) { /* already shut: it is ending */ }
    while (upgrade_threads)
        pthread_cond_wait(&upgrade_cond, &upgrade_lock);
    pthread_mutex_unlock(&upgrade_lock);
}

int srv_upgrade_is_tls(struct MHD_Connection *conn)
{
    return MHD_get_connection_info(conn, MHD_CONNECTION_INFO_GNUTLS_SESSION) != NULL;
}
