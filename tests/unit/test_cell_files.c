/* test_cell_files.c: libcell's file operations against a real cell (root
 * only): correctness, and attempts to reach host files through "..",
 * symlinks, magic links, FIFOs and tar slip. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <archive.h>
#include <archive_entry.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cell.h"

static char state_dir[] = "/tmp/cell-unit-files.XXXXXX";
static char host_secret[] = "/tmp/cell-unit-secret.XXXXXX";
static cell_ctx *ctx;
static cell *c;

static const char seed_text[] = "seeded into memory";
static const cell_seed_file seeds[] = { { "sub/hello.txt", seed_text, sizeof seed_text - 1, 0600 } };
static const cell_mount mounts[] = { { .kind = CELL_MOUNT_MEMORY, .target = "/mem", .size = 1 << 20,
                                       .seed = seeds, .n_seed = 1 } };

static int setup(void **state)
{
    (void)state;
    if (geteuid() != 0)
        return 0;
    if (!mkdtemp(state_dir))
        return -1;
    int fd = mkstemp(host_secret);
    if (fd < 0 || write(fd, "HOSTSECRET", 10) != 10)
        return -1;
    close(fd);
    cell_error err = { 0 };
    if (cell_ctx_open(&ctx, state_dir, &err) < 0) {
        fprintf(stderr, "%s\n", err.message);
        return -1;
    }
    cell_config cfg = { .mounts = mounts, .n_mounts = 1 };
    if (cell_create(ctx, &cfg, &c, &err) < 0) {
        fprintf(stderr, "%s\n", err.message);
        return -1;
    }
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    cell_destroy(c);
    cell_ctx_close(ctx);
    if (geteuid() == 0) {
        unlink(host_secret);
        char cmd[256];
        snprintf(cmd, sizeof cmd, "rm -rf %s", state_dir);
        if (system(cmd) != 0)
            return -1;
    }
    return 0;
}

#define NEED_ROOT() do { if (geteuid() != 0) skip(); } while (0)

/* Run a shell command in the cell and return its exit status. */
static int sh(const char *script)
{
    const char *argv[] = { "sh", "-c", script, NULL };
    cell_proc_spec spec = { .argv = argv, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = 2 };
    pid_t pid;
    cell_error err = { 0 };
    assert_int_equal(cell_spawn(c, &spec, &pid, NULL, &err), 0);
    cell_exit ex;
    assert_int_equal(cell_wait_exit(c, 10000, &ex, &err), 1);
    assert_int_equal(ex.pid, pid);
    return ex.status;
}

static void write_file(const char *path, const char *text)
{
    cell_xfer x;
    cell_error err = { 0 };
    assert_int_equal(cell_file_write(c, path, O_WRONLY | O_CREAT | O_TRUNC, 0644, &x, &err), 0);
    assert_int_equal(cell_xfer_write(&x, text, strlen(text), &err), 0);
    assert_int_equal(cell_xfer_end(&x, &err), 0);
}

/* The whole file (up to 64 KiB), or NULL with *err. */
static char *read_file(const char *path, cell_error *err)
{
    cell_xfer x;
    if (cell_file_read(c, path, &x, err) < 0)
        return NULL;
    static char buf[65536];
    size_t len = 0;
    ssize_t n;
    while (len < sizeof buf - 1 && (n = cell_xfer_read(&x, buf + len, sizeof buf - 1 - len, err)) > 0)
        len += (size_t)n;
    buf[len] = '\0';
    return cell_xfer_end(&x, err) < 0 ? NULL : buf;
}

/* A file written through the transfer process can be executed as soon as
 * cell_xfer_end() returns: the process closed it before reporting, so an
 * exec never finds it still open for writing (ETXTBSY, exit 126: the ACP
 * proxy writes an agent's launcher, then executes it at once). */
static void written_file_executes_at_once(void **state)
{
    (void)state;
    NEED_ROOT();
    static const char script[] = "#!/bin/sh\nexit 7\n";
    const char *argv[] = { "/work/run.sh", NULL };
    for (int i = 0; i < 200; i++) {
        cell_xfer x;
        cell_error err = { 0 };
        assert_int_equal(cell_file_write(c, "/work/run.sh", O_WRONLY | O_CREAT | O_TRUNC, 0755, &x, &err), 0);
        assert_int_equal(cell_xfer_write(&x, script, sizeof script - 1, &err), 0);
        assert_int_equal(cell_xfer_end(&x, &err), 0);
        cell_proc_spec spec = { .argv = argv, .stdin_fd = -1, .stdout_fd = -1, .stderr_fd = 2 };
        pid_t pid;
        assert_int_equal(cell_spawn(c, &spec, &pid, NULL, &err), 0);
        cell_exit ex;
        assert_int_equal(cell_wait_exit(c, 10000, &ex, &err), 1);
        assert_true(WIFEXITED(ex.status));
        assert_int_equal(WEXITSTATUS(ex.status), 7);
    }
}

static void write_read_stat_list(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    assert_int_equal(cell_file_mkdir(c, "/work/a/b", 0755, 1, &err), 0);
    write_file("/work/a/b/z.txt", "zzz");
    write_file("/work/a/b/y.txt", "hello");
    assert_string_equal(read_file("/work/a/b/y.txt", &err), "hello");
    /* A process in the cell sees the same file, owned by its root. */
    assert_int_equal(sh("test \"$(cat /work/a/b/y.txt)\" = hello && test \"$(stat -c %u /work/a/b/y.txt)\" = 0"), 0);
    cell_stat st;
    assert_int_equal(cell_file_stat(c, "/work/a/b/y.txt", &st, &err), 0);
    assert_true(S_ISREG(st.mode));
    assert_int_equal(st.size, 5);
    assert_int_equal(st.uid, 0);
    cell_dirent *list;
    size_t n;
    assert_int_equal(cell_file_list(c, "/work/a/b", &list, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_string_equal(list[0].name, "y.txt");
    assert_string_equal(list[1].name, "z.txt");
    free(list);
}

static void move_and_delete(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    assert_int_equal(cell_file_mkdir(c, "/mv/d", 0755, 1, &err), 0);
    write_file("/mv/d/f", "1");
    write_file("/mv/g", "2");
    assert_int_equal(cell_file_move(c, "/mv/g", "/mv/d/f", 0, &err), -1);
    assert_int_equal(err.code, EEXIST);
    assert_int_equal(cell_file_move(c, "/mv/g", "/mv/d/f", 1, &err), 0);
    assert_string_equal(read_file("/mv/d/f", &err), "2");
    assert_int_equal(cell_file_delete(c, "/mv/d", 0, &err), -1);
    assert_int_equal(err.code, ENOTEMPTY);
    assert_int_equal(cell_file_delete(c, "/mv/d", 1, &err), 0);
    assert_int_equal(cell_file_stat(c, "/mv/d", &(cell_stat){ 0 }, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_int_equal(cell_file_delete(c, "/", 1, &err), -1);
    assert_int_equal(cell_file_delete(c, "/nonexistent", 1, &err), -1);
    assert_int_equal(err.code, ENOENT);
    assert_non_null(strstr(err.message, "/nonexistent"));
}

static void bad_paths_rejected(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    cell_xfer x;
    assert_int_equal(cell_file_read(c, "relative/path", &x, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_int_equal(cell_file_read(c, "/../../etc/passwd", &x, &err), -1);
    assert_int_equal(err.code, EINVAL);
    assert_non_null(strstr(err.message, ".."));
    assert_int_equal(cell_file_read(c, "", &x, &err), -1);
    assert_int_equal(cell_file_write(c, "/tmp/x", O_RDWR | O_CREAT, 0644, &x, &err), -1);
    assert_int_equal(err.code, EINVAL);
}

/* The host file exists, but no path from inside the cell may reach it. */
static void symlinks_stay_inside(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    char script[512];
    snprintf(script, sizeof script,
             "ln -s %s /root/abs && ln -s ../../../../../../..%s /root/rel && ln -s /proc/1/root /root/magic", host_secret,
             host_secret);
    assert_int_equal(sh(script), 0);
    assert_null(read_file("/root/abs", &err));
    assert_int_equal(err.code, ENOENT);
    assert_null(read_file("/root/rel", &err));
    assert_int_equal(err.code, ENOENT);
    /* Magic links (/proc/PID/root, /proc/PID/fd) are refused outright. */
    char path[256];
    snprintf(path, sizeof path, "/root/magic%s", host_secret);
    assert_null(read_file(path, &err));
    snprintf(path, sizeof path, "/proc/self/root%s", host_secret);
    assert_null(read_file(path, &err));
    assert_null(read_file("/proc/1/fd/3", &err));
    /* Writing through a dangling absolute symlink creates the file inside. */
    assert_int_equal(sh("ln -s /etc/cell-target /root/dangling"), 0);
    write_file("/root/dangling", "inside");
    assert_int_equal(sh("test \"$(cat /etc/cell-target)\" = inside"), 0);
    assert_int_equal(access("/etc/cell-target", F_OK), -1);
}

static void fifo_and_devices_refused(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    assert_int_equal(sh("mkfifo /tmp/fifo"), 0);
    /* Opening a FIFO for reading would block forever without O_NONBLOCK. */
    assert_null(read_file("/tmp/fifo", &err));
    assert_int_equal(err.code, EINVAL);
    assert_null(read_file("/dev/zero", &err));
    assert_int_equal(err.code, EINVAL);
    cell_stat st;
    assert_int_equal(cell_file_stat(c, "/tmp/fifo", &st, &err), 0);
    assert_true(S_ISFIFO(st.mode));
}

static void memory_mount_seeded(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    assert_string_equal(read_file("/mem/sub/hello.txt", &err), seed_text);
    cell_stat st;
    assert_int_equal(cell_file_stat(c, "/mem/sub/hello.txt", &st, &err), 0);
    assert_int_equal(st.mode & 0777, 0600);
    assert_int_equal(sh("df -k /mem | tail -1 | awk '{ exit !($2 <= 1024) }'"), 0);
}

/* Build a tar in a memfd from (type, name, data-or-target) triples. */
struct tar_entry {
    char type; /* f file, d dir, l symlink, h hardlink, S setuid file, G setgid dir */
    const char *name;
    const char *arg;
};

static int make_tar(const struct tar_entry *entries, size_t n)
{
    int fd = memfd_create("tar", MFD_CLOEXEC);
    assert_true(fd >= 0);
    struct archive *a = archive_write_new();
    archive_write_set_format_pax_restricted(a);
    assert_int_equal(archive_write_open_fd(a, fd), ARCHIVE_OK);
    for (size_t i = 0; i < n; i++) {
        struct archive_entry *e = archive_entry_new();
        archive_entry_set_pathname(e, entries[i].name);
        archive_entry_set_perm(e, 0644);
        switch (entries[i].type) {
        case 'd': archive_entry_set_filetype(e, AE_IFDIR); archive_entry_set_perm(e, 0755); break;
        case 'G': archive_entry_set_filetype(e, AE_IFDIR); archive_entry_set_perm(e, 02755); break;
        case 'l': archive_entry_set_filetype(e, AE_IFLNK); archive_entry_set_symlink(e, entries[i].arg); break;
        case 'h': archive_entry_set_filetype(e, AE_IFREG); archive_entry_set_hardlink(e, entries[i].arg); break;
        default:
            archive_entry_set_filetype(e, AE_IFREG);
            archive_entry_set_size(e, (la_int64_t)strlen(entries[i].arg));
            if (entries[i].type == 'S')
                archive_entry_set_perm(e, 04755);
        }
        assert_int_equal(archive_write_header(a, e), ARCHIVE_OK);
        if (entries[i].type == 'f' || entries[i].type == 'S')
            archive_write_data(a, entries[i].arg, strlen(entries[i].arg));
        archive_entry_free(e);
    }
    archive_write_close(a);
    archive_write_free(a);
    lseek(fd, 0, SEEK_SET);
    return fd;
}

static void tar_upload(void **state)
{
    (void)state;
    NEED_ROOT();
    const struct tar_entry good[] = {
        { 'd', "proj", NULL }, { 'f', "proj/main.c", "int main(void){return 0;}" },
        { 'f', "./proj/sub/deep.txt", "deep" }, { 'l', "proj/link", "main.c" }, { 'h', "proj/hard", "proj/main.c" },
    };
    int fd = make_tar(good, 5);
    cell_error err = { 0 };
    if (cell_file_upload_tar(c, "/up", fd, &err) != 0)
        fail_msg("upload failed: %s", err.message);
    close(fd);
    assert_string_equal(read_file("/up/proj/sub/deep.txt", &err), "deep");
    assert_string_equal(read_file("/up/proj/link", &err), "int main(void){return 0;}");
    assert_int_equal(sh("test $(stat -c %h /up/proj/main.c) = 2"), 0);
}

static void tar_slip_refused(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    assert_int_equal(sh("cp /etc/passwd /tmp/passwd.orig"), 0);
    const struct tar_entry dotdot[] = { { 'f', "../../etc/passwd", "pwned" } };
    const struct tar_entry through_symlink[] = { { 'l', "a", "/etc" }, { 'f', "a/passwd", "pwned" } };
    const struct tar_entry relative_climb[] = { { 'l', "b", "../../../etc" }, { 'f', "b/passwd", "pwned" } };
    const struct tar_entry dir_climb[] = { { 'l', "c", "/" }, { 'd', "c/etc/newdir", NULL } };
    const struct tar_entry hard_out[] = { { 'h', "h", "../../etc/passwd" } };
    const struct { const struct tar_entry *e; size_t n; } attacks[] = {
        { dotdot, 1 }, { through_symlink, 2 }, { relative_climb, 2 }, { dir_climb, 2 }, { hard_out, 1 },
    };
    for (size_t i = 0; i < sizeof attacks / sizeof *attacks; i++) {
        int fd = make_tar(attacks[i].e, attacks[i].n);
        memset(&err, 0, sizeof err);
        assert_int_equal(cell_file_upload_tar(c, "/slip", fd, &err), -1);
        assert_true(strlen(err.message) > 0);
        close(fd);
    }
    assert_int_equal(sh("cmp /etc/passwd /tmp/passwd.orig && test ! -e /etc/newdir"), 0);
    int fd = memfd_create("junk", MFD_CLOEXEC);
    assert_int_equal(write(fd, "this is not a tar file at all, not even close", 45), 45);
    lseek(fd, 0, SEEK_SET);
    assert_int_equal(cell_file_upload_tar(c, "/junk", fd, &err), -1);
    close(fd);
}

/* A cell with a read-write host mount runs its processes under a filter
 * that refuses S_ISUID and S_ISGID modes; files and directories the owner
 * creates for it (uploads, writes, mkdir) must not carry them either. */
static void nosuid_cell_uploads_drop_setid_bits(void **state)
{
    (void)state;
    NEED_ROOT();
    char host_dir[] = "/tmp/cell-unit-nosuid.XXXXXX";
    assert_non_null(mkdtemp(host_dir));
    assert_int_equal(chmod(host_dir, 0777), 0);
    const cell_mount rw[] = { { .kind = CELL_MOUNT_BIND, .source = host_dir, .target = "/ws" } };
    cell_config cfg = { .mounts = rw, .n_mounts = 1 };
    cell *nc = NULL;
    cell_error err = { 0 };
    assert_int_equal(cell_create(ctx, &cfg, &nc, &err), 0);
    const struct tar_entry setid[] = { { 'S', "suid", "#!/bin/sh\n" }, { 'G', "sgid", NULL } };
    int fd = make_tar(setid, 2);
    if (cell_file_upload_tar(nc, "/ws", fd, &err) != 0)
        fail_msg("upload failed: %s", err.message);
    close(fd);
    cell_xfer x;
    assert_int_equal(cell_file_write(nc, "/ws/written", O_WRONLY | O_CREAT | O_EXCL, 06755, &x, &err), 0);
    assert_int_equal(cell_xfer_end(&x, &err), 0);
    assert_int_equal(cell_file_mkdir(nc, "/ws/made", 06755, 0, &err), 0);
    cell_destroy(nc);
    const char *names[] = { "suid", "sgid", "written", "made" };
    for (size_t i = 0; i < 4; i++) {
        char p[256];
        struct stat st;
        snprintf(p, sizeof p, "%s/%s", host_dir, names[i]);
        assert_int_equal(stat(p, &st), 0);
        if (st.st_mode & (S_ISUID | S_ISGID))
            fail_msg("%s has mode %o on the host", p, (unsigned)st.st_mode);
    }
    char cmd[256];
    snprintf(cmd, sizeof cmd, "rm -rf %s", host_dir);
    assert_int_equal(system(cmd), 0);
}

/* A process of the cell can stop the transfer process (SIGSTOP): the owner
 * gives up after the stall time, on either side, instead of waiting (and
 * holding a daemon thread) for ever. */
static void stopped_transfer_times_out(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    cell_xfer x;
    assert_int_equal(cell_file_write(c, "/tmp/stalled", O_WRONLY | O_CREAT | O_TRUNC, 0644, &x, &err), 0);
    x.stall_ms = 300;
    assert_int_equal(sh("pkill -STOP -x cell-fs"), 0);
    static char chunk[1 << 20];
    int rc = 0;
    for (int i = 0; i < 64 && rc == 0; i++) /* the pipe holds 1 MiB */
        rc = cell_xfer_write(&x, chunk, sizeof chunk, &err);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, ETIMEDOUT);
    assert_int_equal(cell_xfer_end(&x, &err), 0); /* abandoned: does not wait again */
    assert_int_equal(sh("pkill -CONT -x cell-fs; head -c 8388608 /dev/zero > /tmp/eight"), 0);
    assert_int_equal(cell_file_read(c, "/tmp/eight", &x, &err), 0);
    x.stall_ms = 300;
    assert_int_equal(sh("pkill -STOP -x cell-fs"), 0);
    ssize_t n;
    while ((n = cell_xfer_read(&x, chunk, sizeof chunk, &err)) > 0)
        ;
    assert_int_equal(n, -1);
    assert_int_equal(err.code, ETIMEDOUT);
    assert_int_equal(cell_xfer_end(&x, &err), 0);
    /* Resumed, both find their pipes closed and exit. */
    assert_int_equal(sh("pkill -CONT -x cell-fs; for i in $(seq 100); do pgrep -x cell-fs >/dev/null || exit 0; "
                        "sleep 0.1; done; exit 1"), 0);
}

static void lane_cannot_attach_twice(void **state)
{
    (void)state;
    NEED_ROOT();
    cell_error err = { 0 };
    assert_int_equal(cell_lane_create(ctx, "twice", "host", &err), 0);
    cell_config cfg = { .lane = "twice" };
    cell *first = NULL, *second = NULL;
    assert_int_equal(cell_create(ctx, &cfg, &first, &err), 0);
    assert_int_equal(cell_create(ctx, &cfg, &second, &err), -1);
    assert_int_equal(err.code, EBUSY);
    assert_non_null(strstr(err.message, "twice"));
    assert_int_equal(cell_lane_delete(ctx, "twice", &err), -1);
    assert_int_equal(err.code, EBUSY);
    cell_destroy(first);
    assert_int_equal(cell_lane_delete(ctx, "twice", &err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(write_read_stat_list),
        cmocka_unit_test(written_file_executes_at_once),
        cmocka_unit_test(move_and_delete),
        cmocka_unit_test(bad_paths_rejected),
        cmocka_unit_test(symlinks_stay_inside),
        cmocka_unit_test(fifo_and_devices_refused),
        cmocka_unit_test(memory_mount_seeded),
        cmocka_unit_test(tar_upload),
        cmocka_unit_test(tar_slip_refused),
        cmocka_unit_test(nosuid_cell_uploads_drop_setid_bits),
        cmocka_unit_test(stopped_transfer_times_out),
        cmocka_unit_test(lane_cannot_attach_twice),
    };
    return cmocka_run_group_tests_name("cell file operations", tests, setup, teardown);
}
