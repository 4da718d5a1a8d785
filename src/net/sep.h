/* sep.h: the egress helper's protocol.  Each policed cell's egress engine
 * runs in its own process, cell-egress (src/egress/main.c), started by the
 * cell's owner (src/net/sep.c) with one end of a SOCK_SEQPACKET socketpair
 * as fd NET_SEP_FD.  Messages use the control framing of src/init/proto.h
 * (ctl_send/ctl_recv), with types in its extension range.  The owner treats
 * everything the helper sends as untrusted: the helper parses the cell's
 * DNS, HTTP and TLS, so it may be the cell's. */
#ifndef CELL_NET_SEP_H
#define CELL_NET_SEP_H

#include <stddef.h>

#include "cell.h"
#include "init/proto.h"
#include "net/policy.h"

#define NET_SEP_FD 3

enum net_sep_type {
    /* owner -> helper */
    NET_SEP_START = CTL_EXT_BASE, /* s0 cell id, s1 policy, s2 upstream CA file or "", s3 CA dir or "";
                                     u0 uid, u1 gid to drop to, u2 1 for a pod's netns (net_hooks.pod);
                                     fd: the cell's netns (or its init's pidfd) */
    NET_SEP_POLICY,               /* s0 policy -> NET_SEP_REPLY */
    NET_SEP_STOP,                 /* -> final events, NET_SEP_REPLY, exit */
    NET_SEP_ANSWER,               /* to DECIDE: u0 1 allow / 0 deny; to SECRET: err 0 and s0 the value,
                                     or err ENOENT */
    /* helper -> owner */
    NET_SEP_READY,                /* err 0: s0 the interception CA's certificate (PEM);
                                     else err errno, s0 the message */
    NET_SEP_EVENT,                /* s0 one audit record (a JSON object) */
    NET_SEP_DECIDE,               /* u0 rule index, u1 NET_TCP/NET_UDP, u2 1 if s2 is a host;
                                     s0 src, s1 dst, s2 host or "" -> ANSWER */
    NET_SEP_SECRET,               /* s0 secret name -> ANSWER */
    NET_SEP_REPLY,                /* err 0 or errno, s0 message */
    NET_SEP_TYPE_MAX
};
_Static_assert(NET_SEP_TYPE_MAX <= CTL_EXT_MAX, "egress helper types outside the framing's extension range");

/* The unprivileged ids the helper drops to (nobody/nogroup on Debian). */
#define NET_SEP_UID 65534u
#define NET_SEP_GID 65534u

#define NET_SEP_MAX_EVENT  (64 * 1024)   /* an audit record's JSON */
#define NET_SEP_MAX_ADDR   64            /* "IP:PORT" */
#define NET_SEP_MAX_HOST   255
#define NET_SEP_MAX_PEM    (16 * 1024)   /* the CA certificate */
#define NET_SEP_MAX_ASKS   64            /* decide webhooks in flight per cell; beyond, deny */

/* Owner-side checks of helper messages (unit-tested in test_net_sep.c). */

/* A NET_SEP_EVENT: one JSON object of at most NET_SEP_MAX_EVENT bytes.
 * Returns the record to hand to the owner's event hook (malloc()ed text),
 * with "kind" and "cell" set by the owner (a helper cannot speak for
 * another cell), or NULL (EBADMSG) if it is not one. */
char *net_sep_event(const ctl_msg *m, const char *cell_id);

/* A NET_SEP_DECIDE, checked against the owner's copy of the policy: the
 * rule must be a "decide" rule there, and the webhook, its timeout and cache
 * come from there, never from the helper.  Fills *f (pointing into m) and
 * *rule; -1 (EBADMSG or ENOENT) if the request is malformed or names no
 * decide rule. */
int  net_sep_decide(const ctl_msg *m, const net_policy *p, const char *cell_id, cell_net_flow *f,
                    const net_decide_rule **rule);

/* A NET_SEP_SECRET: the name, if it is well formed and an allowing http
 * rule of the policy names it in ${secret:NAME}; else NULL (EBADMSG or
 * EACCES).  A helper gets no other secret, whatever it asks. */
const char *net_sep_secret_name(const ctl_msg *m, const net_policy *p);

/* A NET_SEP_READY's certificate: PEM of one certificate, bounded. */
int  net_sep_valid_pem(const char *pem);

#endif
