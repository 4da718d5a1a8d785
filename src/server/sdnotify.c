/* sdnotify.c: readiness and status for a service manager (cell.service is
 * Type=notify).  The protocol is one datagram per message on the AF_UNIX
 * socket $NOTIFY_SOCKET names; systemd learns the sender's pid from the
 * socket's credentials, so the daemon sends from its own process (cell
 * serve execs cell-daemon: same pid as the unit's main process). */
#include "server/sdnotify.h"
#include "server/slog.h"
#include "util/util.h"

#include <errno.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

static struct sockaddr_un notify_addr;
static socklen_t notify_len;      /* 0: no manager to tell */
static int notify_warned;

int srv_sdnotify_init(void)
{
    const char *env = getenv("NOTIFY_SOCKET");
    notify_len = 0;
    if (!env)
        return 0;
    if (!*env) {                    /* empty is unset, as for sd_notify(3) */
        unsetenv("NOTIFY_SOCKET");
        return 0;
    }
    size_t len = strlen(env);
    memset(&notify_addr, 0, sizeof notify_addr);
    notify_addr.sun_family = AF_UNIX;
    /* A path needs its NUL in sun_path; an abstract name's '@' becomes one. */
    size_t room = env[0] == '@' ? sizeof notify_addr.sun_path : sizeof notify_addr.sun_path - 1;
    if ((env[0] != '/' && env[0] != '@') || len < 2 || len > room) {
        srv_slog(SLOG_WARN, NULL, "NOTIFY_SOCKET=%s ignored: expected an absolute socket path or @name of at most "
             "%zu bytes", env, room);
    } else if (env[0] == '@') {
        /* Abstract: a leading NUL, and the length says where it ends. */
        memcpy(notify_addr.sun_path + 1, env + 1, len - 1);
        notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
    } else {
        memcpy(notify_addr.sun_path, env, len + 1);
        notify_len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + 1);
    }
    /* Cells, helpers and installs must not talk to the manager as us. */
    if (unsetenv("NOTIFY_SOCKET") < 0)
        srv_slog(SLOG_WARN, NULL, "unsetenv(NOTIFY_SOCKET): %s", strerror(errno));
    return notify_len != 0;
}

int srv_sdnotify_send(const char *fmt, ...)
{
    if (!notify_len)
        return 0;
    char msg[2048];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (n < 0)
        return -1;
    size_t len = (size_t)n < sizeof msg ? (size_t)n : sizeof msg - 1;
    _cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || sendto(fd, msg, len, MSG_NOSIGNAL, (struct sockaddr *)&notify_addr, notify_len) < 0) {
        if (!notify_warned) {
            notify_warned = 1;
            srv_slog(SLOG_WARN, NULL, "cannot notify the service manager on NOTIFY_SOCKET: %s", strerror(errno));
        }
        return -1;
    }
    return 0;
}
