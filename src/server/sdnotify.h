/* sdnotify.h: systemd's service notification protocol (sd_notify(3)),
 * written here rather than linking libsystemd: a datagram of KEY=VALUE
 * lines to the AF_UNIX socket named by $NOTIFY_SOCKET. */
#ifndef CELL_SERVER_SDNOTIFY_H
#define CELL_SERVER_SDNOTIFY_H

/* Reads $NOTIFY_SOCKET (an absolute path, or "@name" for the abstract
 * namespace) and removes it from the environment, so that no child of the
 * daemon (cells, helpers, npm) inherits the service manager's socket.  Call
 * once, before the daemon starts threads.  Without the variable every
 * srv_sdnotify_send() is a no-op; a malformed one is reported on stderr and
 * ignored.  Returns 1 when notifications will be sent, 0 otherwise. */
int srv_sdnotify_init(void);

/* Sends one datagram, e.g. "READY=1\nSTATUS=serving".  A failure (the
 * manager has gone, the socket is refused) is reported on stderr once and
 * otherwise ignored: notification is advice to a supervisor, never a
 * reason for the daemon to stop.  Returns 0 when sent or not configured. */
int srv_sdnotify_send(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
