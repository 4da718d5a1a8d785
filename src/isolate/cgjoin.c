/* cgjoin.c: put a process into the cgroups another process is in.  The
 * node daemon (src/server/pods.c) moves a pod's egress helper into the
 * cgroups of the pod sandbox's init, read from /proc/PID/cgroup (what the
 * kernel says, which no caller can lie about), so that what a pod's
 * traffic costs counts against the pod's limits, as a cell's helper
 * counts against the cell's (isolate_cgroup_attach). */
#include "isolate/isolate.h"
#include "isolate/cgroup_internal.h"
#include "util/util.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The hierarchies a cell's or a container's cgroup occupies (cgroup.c,
 * src/oci/oci_cgroup.c): the v1 ones by controller, then v2. */
static const char *const join_names[CG_NCTRL] = { "memory", "pids", "cpu", "freezer" };

/* A whole word of a comma-separated list. */
static int has_word(const char *list, size_t len, const char *word)
{
    size_t wl = strlen(word);
    for (const char *p = list, *end = list + len; p < end;) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        size_t n = comma ? (size_t)(comma - p) : (size_t)(end - p);
        if (n == wl && memcmp(p, word, n) == 0)
            return 1;
        p += n + 1;
    }
    return 0;
}

int isolate_cgroup_proc_path(const char *text, const char *ctrl, char *out, size_t size)
{
    /* Lines "ID:CONTROLLERS:PATH"; v2's is "0::PATH" (ctrl NULL). */
    for (const char *line = text; line && *line;) {
        const char *nl = strchr(line, '\n'), *end = nl ? nl : line + strlen(line);
        const char *c1 = memchr(line, ':', (size_t)(end - line));
        const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(end - c1 - 1)) : NULL;
        if (c2) {
            size_t clen = (size_t)(c2 - c1 - 1), plen = (size_t)(end - c2 - 1);
            int match = ctrl ? has_word(c1 + 1, clen, ctrl) : (clen == 0 && c1 - line == 1 && line[0] == '0');
            if (match) {
                const char *path = c2 + 1;
                /* Outside the reader's cgroup namespace ("/../x") there is
                 * no directory of ours to write: refused, never guessed. */
                if (plen == 0 || path[0] != '/' || plen >= size || memmem(path, plen, "/..", 3))
                    return -1;
                memcpy(out, path, plen);
                out[plen] = '\0';
                return 1;
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return 0;
}

int isolate_cgroup_join(pid_t of, pid_t pid, char *where, size_t where_size, cell_error *err)
{
    if (of <= 0 || pid <= 0)
        return util_fail(err, EINVAL, "cannot move pid %d into the cgroups of pid %d: invalid argument", (int)pid,
                         (int)of);
    _cleanup_free_ struct cg_layout *lay = calloc(1, sizeof *lay);
    if (!lay)
        return util_fail(err, ENOMEM, "out of memory detecting the cgroup layout");
    if (isolate_cgroup_detect(lay, err) < 0)
        return -1;
    char file[64], *text = NULL;
    snprintf(file, sizeof file, "/proc/%d/cgroup", (int)of);
    if (util_read_file(file, 65536, &text, NULL, err) < 0)
        return -1;
    char procs[32];
    snprintf(procs, sizeof procs, "%d", (int)pid);
    if (where && where_size)
        where[0] = '\0';
    int rc = 0, moved = 0;
    /* v1 first, v2 last: a v2 tree that serves no controller here (a hybrid
     * host's "unified") is still where the process is tracked. */
    for (int i = 0; i <= CG_NCTRL && rc == 0; i++) {
        const char *root = i < CG_NCTRL ? lay->v1_root[i] : lay->v2_root;
        const char *ctrl = i < CG_NCTRL ? join_names[i] : NULL;
        char rel[PATH_MAX], dir[PATH_MAX];
        if (!root[0])
            continue;
        int found = isolate_cgroup_proc_path(text, ctrl, rel, sizeof rel);
        if (found < 0) {
            rc = util_fail(err, EXDEV, "%s: the %s cgroup of pid %d is outside this process's cgroup namespace "
                           "(run the node daemon in the host's cgroup namespace)", file, ctrl ? ctrl : "v2",
                           (int)of);
            break;
        }
        if (found == 0)
            continue;
        if (util_path(dir, sizeof dir, err, "%s%s/cgroup.procs", root, strcmp(rel, "/") == 0 ? "" : rel) < 0) {
            rc = -1;
            break;
        }
        _cleanup_close_ int fd = open(dir, O_WRONLY | O_CLOEXEC);
        if (fd < 0 || write(fd, procs, strlen(procs)) != (ssize_t)strlen(procs)) {
            rc = util_fail_errno(err, "cannot move pid %d into %s (the %s cgroup of pid %d)", (int)pid, dir,
                                 ctrl ? ctrl : "v2", (int)of);
            break;
        }
        moved++;
        /* The first one named: what a reader needs (memory on v1, else v2). */
        if (where && where_size && !where[0])
            snprintf(where, where_size, "%s", rel);
    }
    free(text);
    if (rc == 0 && !moved)
        rc = util_fail(err, ENOENT, "%s names none of this host's cgroup hierarchies (memory, pids, cpu, "
                       "freezer, v2)", file);
    return rc;
}
