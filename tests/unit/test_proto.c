/* test_proto.c: the control protocol.  The owner decodes whatever a cell's
 * init sends, so the decoder is tested with malformed input, not just round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "init/proto.h"

struct wire {
    uint32_t type, seq;
    int32_t  err;
    uint32_t u[CTL_NU];
    uint32_t nstr;
};

static void round_trip_with_fds(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    const char *strs[] = { "sh", "-c", "", "PATH=/bin", "/" };
    uint32_t u[CTL_NU] = { 3, 1, 0, 1000, 1000, 24, 80, 7 };
    int fds[2] = { p[0], p[1] };
    assert_int_equal(ctl_send(sv[0], CTL_SPAWN, 42, 0, u, strs, 5, fds, 2), 0);
    ctl_msg m;
    assert_int_equal(ctl_recv(sv[1], &m), 0);
    assert_int_equal(m.type, CTL_SPAWN);
    assert_int_equal(m.seq, 42);
    assert_int_equal(m.nstr, 5);
    assert_memory_equal(m.u, u, sizeof u);
    for (int i = 0; i < 5; i++)
        assert_string_equal(m.str[i], strs[i]);
    assert_int_equal(m.nfds, 2);
    /* Received descriptors are close-on-exec, so nothing leaks into spawned programs. */
    assert_true(fcntl(m.fds[0], F_GETFD) & FD_CLOEXEC);
    int kept = ctl_take_fd(&m, 1);
    assert_true(kept >= 0);
    assert_int_equal(ctl_take_fd(&m, 1), -1);
    ctl_msg_free(&m);
    assert_int_equal(write(kept, "x", 1), 1); /* still open after free */
    close(kept);
    close(p[0]);
    close(p[1]);
    close(sv[0]);
    close(sv[1]);
}

static void peer_gone_is_econnreset(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    close(sv[0]);
    ctl_msg m;
    assert_int_equal(ctl_recv(sv[1], &m), -1);
    assert_int_equal(errno, ECONNRESET);
    close(sv[1]);
}

static int decode(const void *buf, size_t len)
{
    ctl_msg m;
    memset(&m, 0, sizeof m);
    int r = ctl_decode(buf, len, &m);
    if (r == 0) {
        m.nfds = 0;
        ctl_msg_free(&m);
    }
    return r;
}

static void rejects_malformed(void **state)
{
    (void)state;
    char buf[256];
    struct wire w = { .type = CTL_REPLY, .nstr = 2 };
    memcpy(buf, &w, sizeof w);
    memcpy(buf + sizeof w, "ab\0cd\0", 6);
    assert_int_equal(decode(buf, sizeof w + 6), 0);
    /* short header */
    assert_int_equal(decode(buf, sizeof w - 1), -1);
    /* fewer strings than announced */
    assert_int_equal(decode(buf, sizeof w + 3), -1);
    /* missing final NUL */
    assert_int_equal(decode(buf, sizeof w + 5), -1);
    /* trailing bytes after the last string */
    memcpy(buf + sizeof w + 6, "zz", 2);
    assert_int_equal(decode(buf, sizeof w + 8), -1);
    /* unknown types */
    w.type = 0;
    memcpy(buf, &w, sizeof w);
    assert_int_equal(decode(buf, sizeof w + 6), -1);
    w.type = CTL_TYPE_MAX;
    memcpy(buf, &w, sizeof w);
    assert_int_equal(decode(buf, sizeof w + 6), -1);
    /* absurd string count */
    w.type = CTL_REPLY;
    w.nstr = 0xffffffffu;
    memcpy(buf, &w, sizeof w);
    assert_int_equal(decode(buf, sizeof w + 6), -1);
    /* zero strings, empty body: fine */
    w.nstr = 0;
    memcpy(buf, &w, sizeof w);
    assert_int_equal(decode(buf, sizeof w), 0);
}

static void send_refuses_oversize(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    static char big[CTL_MAX_MSG];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    const char *strs[] = { big };
    assert_int_equal(ctl_send(sv[0], CTL_READ, 1, 0, NULL, strs, 1, NULL, 0), -1);
    assert_int_equal(errno, E2BIG);
    int fds[CTL_MAX_FDS + 1] = { 0 };
    assert_int_equal(ctl_send(sv[0], CTL_READ, 1, 0, NULL, NULL, 0, fds, CTL_MAX_FDS + 1), -1);
    close(sv[0]);
    close(sv[1]);
}

/* A peer that attaches more descriptors than the protocol allows must not
 * make the receiver leak them. */
static void excess_fds_are_closed(void **state)
{
    (void)state;
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    int before = 0;
    for (int fd = 0; fd < 1024; fd++)
        before += fcntl(fd, F_GETFD) >= 0;
    enum { N = 8 };
    int fds[N];
    for (int i = 0; i < N; i++)
        fds[i] = 0;
    struct wire w = { .type = CTL_REPLY };
    struct iovec iov = { &w, sizeof w };
    union {
        char raw[CMSG_SPACE(sizeof fds)];
        struct cmsghdr align;
    } control;
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.raw,
                         .msg_controllen = sizeof control.raw };
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof fds);
    memcpy(CMSG_DATA(c), fds, sizeof fds);
    assert_true(sendmsg(sv[0], &mh, 0) > 0);
    ctl_msg m;
    int r = ctl_recv(sv[1], &m);
    if (r == 0)
        ctl_msg_free(&m);
    int after = 0;
    for (int fd = 0; fd < 1024; fd++)
        after += fcntl(fd, F_GETFD) >= 0;
    assert_int_equal(before, after);
    close(sv[0]);
    close(sv[1]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip_with_fds),
        cmocka_unit_test(peer_gone_is_econnreset),
        cmocka_unit_test(rejects_malformed),
        cmocka_unit_test(send_refuses_oversize),
        cmocka_unit_test(excess_fds_are_closed),
    };
    return cmocka_run_group_tests_name("control protocol", tests, NULL, NULL);
}
