/* limits.c: change the limits of a running cell where that is only a
 * cgroup write: its pids and CPU.  The memory limit also sized the cell's
 * throwaway layer at boot (a tmpfs capped at 3/4 of it), so it stays. */
#include "runtime/cell_internal.h"
#include "util/util.h"

int cell_set_pids_cpu(cell *c, uint32_t pids, uint32_t cpu_millis, cell_error *err)
{
    if (c->dead)
        return util_fail(err, ECONNRESET, "cell %s has stopped", c->id);
    if (!c->cg)
        return util_fail(err, EOPNOTSUPP, "cell %s has no cgroup to limit", c->id);
    return isolate_cgroup_set_pids_cpu(c->cg, pids, cpu_millis, err);
}
