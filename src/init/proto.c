/* proto.c: encoding and strict decoding of control messages (proto.h).
 * Used by libcell and by cell-init, so it depends on libc alone. */
#include "init/proto.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

struct ctl_wire {
    uint32_t type, seq;
    int32_t  err;
    uint32_t u[CTL_NU];
    uint32_t nstr;
};

int ctl_send(int sock, uint32_t type, uint32_t seq, int32_t err, const uint32_t *u,
             const char *const *str, uint32_t nstr, const int *fds, int nfds)
{
    if (nstr > CTL_MAX_STRS || nfds < 0 || nfds > CTL_MAX_FDS) {
        errno = E2BIG;
        return -1;
    }
    struct ctl_wire head = { .type = type, .seq = seq, .err = err, .nstr = nstr };
    if (u)
        memcpy(head.u, u, sizeof head.u);
    size_t total = sizeof head;
    for (uint32_t i = 0; i < nstr; i++) {
        total += strlen(str[i] ? str[i] : "") + 1;
        if (total > CTL_MAX_MSG) {
            errno = E2BIG;
            return -1;
        }
    }
    /* Small messages (all the boot child sends) use the stack: the child of
     * clone3() in a threaded owner must not call malloc. */
    char stack_buf[4096];
    char *buf = total <= sizeof stack_buf ? stack_buf : malloc(total);
    if (!buf)
        return -1;
    memcpy(buf, &head, sizeof head);
    size_t off = sizeof head;
    for (uint32_t i = 0; i < nstr; i++) {
        size_t n = strlen(str[i] ? str[i] : "") + 1;
        memcpy(buf + off, str[i] ? str[i] : "", n);
        off += n;
    }
    struct iovec iov = { .iov_base = buf, .iov_len = total };
    union {
        char raw[CMSG_SPACE(sizeof(int) * CTL_MAX_FDS)];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof control);
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    if (nfds > 0) {
        mh.msg_control = control.raw;
        mh.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)nfds);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)nfds);
        memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)nfds);
    }
    ssize_t n;
    do
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    int saved = errno;
    explicit_bzero(buf, total);   /* it may have held a secret (the egress helper's answers) */
    if (buf != stack_buf)
        free(buf);
    errno = saved;
    if (n < 0)
        return -1;
    return 0;
}

int ctl_decode(const char *data, size_t len, ctl_msg *m)
{
    struct ctl_wire head;
    if (len < sizeof head) {
        errno = EBADMSG;
        return -1;
    }
    memcpy(&head, data, sizeof head);
    int known = (head.type > 0 && head.type < CTL_TYPE_MAX) || (head.type >= CTL_EXT_BASE && head.type < CTL_EXT_MAX);
    if (!known || head.nstr > CTL_MAX_STRS) {
        errno = EBADMSG;
        return -1;
    }
    m->type = head.type;
    m->seq = head.seq;
    m->err = head.err;
    memcpy(m->u, head.u, sizeof m->u);
    m->nstr = head.nstr;
    m->buf = malloc(len - sizeof head + 1);
    m->str = calloc(head.nstr + 1, sizeof *m->str);
    if (!m->buf || !m->str) {
        free(m->buf);
        free(m->str);
        m->buf = NULL;
        m->str = NULL;
        errno = ENOMEM;
        return -1;
    }
    size_t body = len - sizeof head;
    memcpy(m->buf, data + sizeof head, body);
    m->buf[body] = '\0';
    /* Exactly nstr NUL-terminated strings, and nothing after the last. */
    size_t off = 0;
    for (uint32_t i = 0; i < head.nstr; i++) {
        const char *end = memchr(m->buf + off, '\0', body - off);
        if (off >= body || !end) {
            errno = EBADMSG;
            goto bad;
        }
        m->str[i] = m->buf + off;
        off = (size_t)(end - m->buf) + 1;
    }
    if (off != body) {
        errno = EBADMSG;
        goto bad;
    }
    return 0;
bad:
    free(m->buf);
    free(m->str);
    m->buf = NULL;
    m->str = NULL;
    return -1;
}

int ctl_recv(int sock, ctl_msg *m)
{
    memset(m, 0, sizeof *m);
    for (int i = 0; i < CTL_MAX_FDS; i++)
        m->fds[i] = -1;
    char *buf = malloc(CTL_MAX_MSG);
    if (!buf)
        return -1;
    struct iovec iov = { .iov_base = buf, .iov_len = CTL_MAX_MSG };
    union {
        char raw[CMSG_SPACE(sizeof(int) * CTL_MAX_FDS)];
        struct cmsghdr align;
    } control;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.raw,
                         .msg_controllen = sizeof control.raw };
    ssize_t n;
    do
        n = recvmsg(sock, &mh, MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n <= 0) {
        free(buf);
        if (n == 0 || errno == ECONNRESET || errno == EPIPE)
            errno = ECONNRESET;
        return -1;
    }
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < count; i++) {
            int fd;
            memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
            if (m->nfds < CTL_MAX_FDS)
                m->fds[m->nfds++] = fd;
            else
                close(fd);   /* more than the protocol allows: never leak */
        }
    }
    int bad = (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0;
    int rc = bad ? -1 : ctl_decode(buf, (size_t)n, m);
    /* The raw datagram may hold a secret (the egress helper's answers). */
    explicit_bzero(buf, (size_t)n);
    if (rc < 0) {
        free(buf);
        ctl_msg_free(m);
        errno = EBADMSG;
        return -1;
    }
    free(buf);
    return 0;
}

int ctl_take_fd(ctl_msg *m, int i)
{
    if (i < 0 || i >= m->nfds)
        return -1;
    int fd = m->fds[i];
    m->fds[i] = -1;
    return fd;
}

void ctl_msg_free(ctl_msg *m)
{
    for (int i = 0; i < m->nfds; i++)
        if (m->fds[i] >= 0)
            close(m->fds[i]);
    m->nfds = 0;
    free(m->buf);
    free(m->str);
    m->buf = NULL;
    m->str = NULL;
}
