/* oci_egress.h: a pod's egress policy (issue 15; docs/kubernetes.md "Egress:
 * the node daemon").  cell-oci registers a pod sandbox that carries the
 * annotation cell.dev/egress-policy with the node's daemon (cell serve
 * --pods), which then polices the pod's netns, and unregisters it at
 * delete. */
#ifndef CELL_OCI_EGRESS_H
#define CELL_OCI_EGRESS_H

#include <sys/types.h>

#include "oci/oci.h"

#define OCI_EGRESS_ANNOTATION "cell.dev/egress-policy"
#define OCI_EGRESS_CONFIG     "/etc/cell/oci.conf"      /* or $CELL_OCI_CONFIG */
#define OCI_EGRESS_POLICY_MAX (64 * 1024)
#define OCI_EGRESS_FILE       "egress.json"             /* in the container's state directory */

/* At create, with the init `pid` parked: register the pod with the node
 * daemon if the container is a pod sandbox (or a container with a netns of
 * its own) and it asks for a policy (or oci.conf says "pods": "all").
 * Fails closed: a container that asks for a policy is refused when there
 * is no daemon, or it refuses.  0 when there is nothing to register. */
int  oci_egress_register(const char *root, const char *id, const struct oci_spec *spec, pid_t pid, cell_error *err);

/* At delete: unregister what create registered (the state directory's
 * OCI_EGRESS_FILE).  Failures are logged: the daemon also lets go of a pod
 * whose sandbox init exited. */
void oci_egress_unregister(const char *root, const char *id);

/* The annotation's checks, without a daemon (unit-tested): NULL text
 * (no annotation) is fine; else a JSON object of at most
 * OCI_EGRESS_POLICY_MAX bytes, errors naming the annotation. */
int  oci_egress_check_policy(json_t *annotation, cell_error *err);

#endif
