/* oci_state.c: ROOT/ID/state.json and the container's uid range.  The
 * state file is written under a temporary name and renamed, so a reader
 * sees the old or the new one, never half of one.  The status is not
 * stored: it is read from the init process (alive or not) and exec.fifo
 * (present until `start`), as runc does. */
#include "oci/oci.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/syscall.h>

int oci_id_check(const char *id, cell_error *err)
{
    size_t len = strlen(id);
    if (len == 0 || len > OCI_ID_MAX)
        return util_fail(err, EINVAL, "container id must be 1 to %d characters", OCI_ID_MAX);
    if (strcmp(id, ".") == 0 || strcmp(id, "..") == 0 || id[0] == '.')
        return util_fail(err, EINVAL, "container id '%.64s' may not start with '.'", id);
    for (const char *c = id; *c; c++)
        if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
              strchr("_.+-", *c)))
            return util_fail(err, EINVAL, "container id '%.64s' has a character other than letters, digits and "
                             "_ . + -", id);
    return 0;
}

int oci_state_path(char *buf, size_t size, const char *root, const char *id, const char *file, cell_error *err)
{
    if (oci_id_check(id, err) < 0)
        return -1;
    int n = file ? util_path(buf, size, err, "%s/%s/%s", root, id, file) : util_path(buf, size, err, "%s/%s", root, id);
    return n < 0 ? -1 : 0;
}

int oci_state_write(const char *root, const struct oci_state *st, cell_error *err)
{
    char path[PATH_MAX], tmp[PATH_MAX];
    if (oci_state_path(path, sizeof path, root, st->id, OCI_STATE_FILE, err) < 0 ||
        oci_state_path(tmp, sizeof tmp, root, st->id, ".state.json.tmp", err) < 0)
        return -1;
    json_t *o = json_pack("{s:s, s:s, s:i, s:I, s:s, s:s, s:s, s:i, s:i, s:I, s:I, s:b, s:s, s:O?}", "ociVersion", "1.0.2",
                          "id", st->id, "pid", (int)st->pid, "start_time", (json_int_t)st->start_time, "bundle",
                          st->bundle, "rootfs", st->rootfs, "created", st->created, "owner", (int)st->owner, "slot",
                          st->slot, "uid_base", (json_int_t)st->uid_base, "uid_count", (json_int_t)st->uid_count,
                          "nosuid", st->nosuid, "cgroup", st->cgroup, "annotations", st->annotations);
    char *text = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    if (!text)
        return util_fail(err, ENOMEM, "cannot encode the state of %s", st->id);
    int rc = util_write_file(tmp, text, strlen(text), 0600, 0, err);
    free(text);
    if (rc == 0 && rename(tmp, path) < 0)
        rc = util_fail_errno(err, "cannot rename %s to %s", tmp, path);
    return rc;
}

static int copy_str(char *dst, size_t size, json_t *v, const char *what, cell_error *err)
{
    const char *s = json_string_value(v);
    if (!s)
        return util_fail(err, EINVAL, "state.json: %s is missing", what);
    return util_path(dst, size, err, "%s", s) < 0 ? -1 : 0;
}

int oci_state_read(const char *root, const char *id, struct oci_state *st, cell_error *err)
{
    memset(st, 0, sizeof *st);
    char dir[PATH_MAX], path[PATH_MAX];
    if (oci_state_path(dir, sizeof dir, root, id, NULL, err) < 0 ||
        oci_state_path(path, sizeof path, root, id, OCI_STATE_FILE, err) < 0)
        return -1;
    /* Neither ROOT/ID nor its state.json through a symlink: the state
     * names the pid kill signals and the cgroup kill --all empties, so it
     * is only ever cell-oci's own file (tests/integration/test_oci_escape.py). */
    _cleanup_close_ int dfd = open(dir, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    _cleanup_close_ int fd = dfd < 0 ? -1 : openat(dfd, OCI_STATE_FILE, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return util_fail(err, ENOENT, "container %s does not exist", id);
        return util_fail_errno(err, "cannot open %s (never a symlink)", path);
    }
    _cleanup_free_ char *text = NULL;
    size_t len;
    if (util_read_fd(fd, path, 1 << 20, &text, &len, err) < 0)
        return -1;
    json_error_t jerr;
    json_t *o = json_loadb(text, len, 0, &jerr);
    if (!o)
        return util_fail(err, EINVAL, "%s: %s", path, jerr.text);
    int rc = copy_str(st->id, sizeof st->id, json_object_get(o, "id"), "id", err);
    if (rc == 0)
        rc = copy_str(st->bundle, sizeof st->bundle, json_object_get(o, "bundle"), "bundle", err);
    if (rc == 0)
        rc = copy_str(st->rootfs, sizeof st->rootfs, json_object_get(o, "rootfs"), "rootfs", err);
    if (rc == 0)
        rc = copy_str(st->created, sizeof st->created, json_object_get(o, "created"), "created", err);
    if (rc == 0)
        rc = copy_str(st->cgroup, sizeof st->cgroup, json_object_get(o, "cgroup"), "cgroup", err);
    st->pid = (pid_t)json_integer_value(json_object_get(o, "pid"));
    st->start_time = (uint64_t)json_integer_value(json_object_get(o, "start_time"));
    st->owner = (uid_t)json_integer_value(json_object_get(o, "owner"));
    st->slot = (int)json_integer_value(json_object_get(o, "slot"));
    st->uid_base = (uid_t)json_integer_value(json_object_get(o, "uid_base"));
    st->uid_count = (uint32_t)json_integer_value(json_object_get(o, "uid_count"));
    /* Absent or not false: the stricter reading. */
    st->nosuid = !json_is_false(json_object_get(o, "nosuid"));
    json_t *a = json_object_get(o, "annotations");
    st->annotations = json_is_object(a) ? json_incref(a) : NULL;
    json_decref(o);
    if (rc == 0 && st->pid <= 0)
        rc = util_fail(err, EINVAL, "%s: pid is missing", path);
    if (rc < 0)
        oci_state_free(st);
    return rc;
}

void oci_state_free(struct oci_state *st)
{
    json_decref(st->annotations);
    st->annotations = NULL;
}

uint64_t oci_pid_start_time(pid_t pid)
{
    return util_pid_start_time(pid);
}

int oci_state_pidfd(const struct oci_state *st)
{
    int fd = (int)syscall(SYS_pidfd_open, st->pid, 0);
    if (fd < 0)
        return -1;
    /* Checked after the pidfd is open: from here on the pid cannot be reused
     * under us, so a match means the pidfd is our init's. */
    if (oci_pid_start_time(st->pid) != st->start_time) {
        close(fd);
        return -1;
    }
    return fd;
}

enum oci_status oci_state_status(const char *root, const struct oci_state *st)
{
    _cleanup_close_ int pidfd = oci_state_pidfd(st);
    if (pidfd < 0)
        return OCI_STOPPED;
    /* A pidfd polls readable once the process has exited (a zombie too). */
    struct pollfd p = { .fd = pidfd, .events = POLLIN };
    if (poll(&p, 1, 0) != 0)
        return OCI_STOPPED;
    if (oci_cgroup_frozen(st->cgroup))
        return OCI_PAUSED;
    char fifo[PATH_MAX];
    if (oci_state_path(fifo, sizeof fifo, root, st->id, OCI_FIFO_FILE, NULL) == 0 && access(fifo, F_OK) == 0)
        return OCI_CREATED;
    return OCI_RUNNING;
}

const char *oci_status_name(enum oci_status s)
{
    return s == OCI_CREATED ? "created" : s == OCI_RUNNING ? "running" : s == OCI_PAUSED ? "paused" : "stopped";
}

json_t *oci_state_json(const char *root, const struct oci_state *st)
{
    enum oci_status s = oci_state_status(root, st);
    json_t *ann = st->annotations ? json_incref(st->annotations) : json_object();
    return json_pack("{s:s, s:s, s:i, s:s, s:s, s:s, s:s, s:s, s:o}", "ociVersion", "1.0.2", "id", st->id, "pid",
                     s == OCI_STOPPED ? 0 : (int)st->pid, "status", oci_status_name(s), "bundle", st->bundle,
                     "rootfs", st->rootfs, "created", st->created, "owner", "",
                     "annotations", ann);
}

/* ---- uid ranges --------------------------------------------------------------- */

/* A slot file holds one "PID START" line per holder: the container that
 * took the range, and each container that joined its user namespace by
 * path (oci_userns.c).  The range is held while any holder lives. */
#define SLOT_MAX_HOLDERS 256
#define SLOT_LINE 48

struct slot_holders {
    char   line[SLOT_MAX_HOLDERS][SLOT_LINE];
    size_t n;
};

static int holder_alive(const char *line)
{
    long pid;
    unsigned long long start;
    if (sscanf(line, "%ld %llu", &pid, &start) != 2 || pid <= 0)
        return 0;
    return oci_pid_start_time((pid_t)pid) == start;
}

/* The slot's holders that still live (a missing file: none). */
static void slot_read(int dirfd, const char *name, struct slot_holders *h)
{
    h->n = 0;
    _cleanup_close_ int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    static char buf[SLOT_MAX_HOLDERS * SLOT_LINE];
    ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
    if (n <= 0)
        return;
    buf[n] = 0;
    for (char *p = buf, *l; (l = strsep(&p, "\n")) && h->n < SLOT_MAX_HOLDERS;)
        if (*l && strlen(l) < SLOT_LINE && holder_alive(l))
            snprintf(h->line[h->n++], SLOT_LINE, "%s", l);
}

static int slot_holder_alive(int dirfd, const char *name)
{
    struct slot_holders h;
    slot_read(dirfd, name, &h);
    return h.n > 0;
}

/* Write the holders (none: the file goes, the range is free). */
static int slot_store(int dirfd, int slot, const struct slot_holders *h, cell_error *err)
{
    char name[32], tmp[40];
    snprintf(name, sizeof name, "%d", slot);
    snprintf(tmp, sizeof tmp, ".%d.tmp", slot);
    if (h->n == 0)
        return unlinkat(dirfd, name, 0) < 0 && errno != ENOENT ? util_fail_errno(err, "cannot remove %s/%s",
                                                                                 OCI_SLOT_DIR, name) : 0;
    _cleanup_close_ int fd = openat(dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return util_fail_errno(err, "cannot write %s/%s", OCI_SLOT_DIR, tmp);
    for (size_t i = 0; i < h->n; i++)
        if (util_write_all(fd, h->line[i], strlen(h->line[i])) < 0 || util_write_all(fd, "\n", 1) < 0)
            return util_fail_errno(err, "cannot write %s/%s", OCI_SLOT_DIR, tmp);
    if (renameat(dirfd, tmp, dirfd, name) < 0)
        return util_fail_errno(err, "cannot rename %s/%s", OCI_SLOT_DIR, tmp);
    return 0;
}

static void holder_line(char *out, pid_t pid, uint64_t start)
{
    snprintf(out, SLOT_LINE, "%d %llu", (int)pid, (unsigned long long)start);
}

/* The holders but pid/start (if it is one), plus add_pid/add_start if > 0.
 * via (if not NULL) must be one of the living holders: a joiner proves the
 * range is still the one of the namespace it joins.  "Some holder lives"
 * would not: the range may have been freed and taken by another container
 * meanwhile, whose namespace maps the same ids. */
static int slot_change(int dirfd, int slot, pid_t del_pid, uint64_t del_start, pid_t add_pid, uint64_t add_start,
                       const char *via, cell_error *err)
{
    static struct slot_holders h;
    char name[32], del[SLOT_LINE];
    snprintf(name, sizeof name, "%d", slot);
    holder_line(del, del_pid, del_start);
    slot_read(dirfd, name, &h);
    size_t k = 0;
    int via_found = 0;
    for (size_t i = 0; i < h.n; i++) {
        via_found |= via && strcmp(h.line[i], via) == 0;
        if (strcmp(h.line[i], del) != 0)
            memcpy(h.line[k++], h.line[i], SLOT_LINE);
    }
    h.n = k;
    if (via && !via_found)
        return util_fail(err, ESRCH, "container uid range %d is no longer held by the container whose user "
                         "namespace is joined (it stopped)", slot);
    if (add_pid > 0) {
        if (h.n == SLOT_MAX_HOLDERS)
            return util_fail(err, EAGAIN, "container uid range %d has %d holders already", slot, SLOT_MAX_HOLDERS);
        holder_line(h.line[h.n++], add_pid, add_start);
    }
    return slot_store(dirfd, slot, &h, err);
}

static int slot_dir(cell_error *err)
{
    if (util_mkdir_p(OCI_SLOT_DIR, 0700, err) < 0)
        return -1;
    int fd = open(OCI_SLOT_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
        return util_fail_errno(err, "cannot open %s", OCI_SLOT_DIR);
    /* One taker at a time, host-wide (every --root shares the ranges). */
    if (flock(fd, LOCK_EX) < 0) {
        util_fail_errno(err, "cannot lock %s", OCI_SLOT_DIR);
        close(fd);
        return -1;
    }
    return fd;
}

/* Mark the ranges some host process still runs in.  A container's
 * processes outlive its init when its pid namespace is not its own (a pod
 * member joining the sandbox's by path: an orphan goes to the sandbox's
 * pid 1), so a dead holder does not prove the range unused; a new
 * container given it would share ids with the leftovers (signals, files,
 * tests/integration/test_oci_escape.py).  Every id of /proc/PID/status
 * counts (real, effective, saved, fs: /proc/PID's owner is root for a
 * process that is not dumpable). */
static int slots_used_by_processes(unsigned char used[OCI_MAX_SLOTS], cell_error *err)
{
    memset(used, 0, OCI_MAX_SLOTS);
    /* Fail closed: a /proc we cannot list proves nothing free. */
    DIR *d = opendir("/proc");
    if (!d)
        return util_fail_errno(err, "cannot list /proc (needed to tell which container uid ranges are in use)");
    struct dirent *e;
    errno = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[64], buf[4096];
        snprintf(path, sizeof path, "/proc/%.20s/status", e->d_name);
        _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
        ssize_t n = fd < 0 ? -1 : read(fd, buf, sizeof buf - 1);
        if (n <= 0) {
            errno = 0;
            continue; /* gone meanwhile */
        }
        buf[n] = 0;
        const char *uid = strstr(buf, "\nUid:");
        unsigned long long ids[4];
        if (!uid || sscanf(uid + 5, "%llu %llu %llu %llu", &ids[0], &ids[1], &ids[2], &ids[3]) != 4)
            continue;
        for (int i = 0; i < 4; i++)
            if (ids[i] >= OCI_UID_FIRST && ids[i] < OCI_UID_FIRST + (unsigned long long)OCI_MAX_SLOTS * 65536u)
                used[(ids[i] - OCI_UID_FIRST) / 65536u] = 1;
        errno = 0;
    }
    int rc = errno ? util_fail_errno(err, "cannot list /proc (needed to tell which container uid ranges are in use)")
                   : 0;
    closedir(d);
    return rc;
}

int oci_slot_take(int *slot, cell_error *err)
{
    _cleanup_close_ int dir = slot_dir(err);
    if (dir < 0)
        return -1;
    static unsigned char used[OCI_MAX_SLOTS];
    if (slots_used_by_processes(used, err) < 0)
        return -1;
    for (int i = 0; i < OCI_MAX_SLOTS; i++) {
        char name[32];
        snprintf(name, sizeof name, "%d", i);
        if (used[i] || slot_holder_alive(dir, name))
            continue;
        /* Held by this creator until the init exists (oci_slot_own). */
        pid_t self = getpid();
        if (slot_change(dir, i, 0, 0, self, oci_pid_start_time(self), NULL, err) < 0)
            return -1;
        *slot = i;
        return 0;
    }
    return util_fail(err, EAGAIN, "all %d container uid ranges are in use", OCI_MAX_SLOTS);
}

int oci_slot_own(int slot, pid_t pid, uint64_t start, cell_error *err)
{
    _cleanup_close_ int dir = slot_dir(err);
    if (dir < 0)
        return -1;
    pid_t self = getpid();
    return slot_change(dir, slot, self, oci_pid_start_time(self), pid, start, NULL, err);
}

int oci_slot_join(int slot, pid_t via_pid, uint64_t via_start, pid_t pid, uint64_t start, cell_error *err)
{
    _cleanup_close_ int dir = slot_dir(err);
    if (dir < 0)
        return -1;
    char via[SLOT_LINE];
    holder_line(via, via_pid, via_start);
    return slot_change(dir, slot, 0, 0, pid, start, via, err);
}

void oci_slot_release(int slot, pid_t pid, uint64_t start)
{
    if (slot < 0)
        return;
    _cleanup_close_ int dir = slot_dir(NULL);
    /* Only this holder's line: a slot whose holders all died may already
     * be someone else's, and a range still joined by others stays held. */
    if (dir >= 0)
        (void)slot_change(dir, slot, pid, start, 0, 0, NULL, NULL);
}
