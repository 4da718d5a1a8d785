/* init_exe.c: what every cell execs as its PID 1.
 *
 * The runtime embeds cell-init, and a cell must never be able to write the
 * binary it runs (the runc /proc/self/exe overwrite, CVE-2019-5736).  The
 * embedded copy is therefore exec'd from a sealed memfd, but filling one
 * costs every process that starts cells a 1 MiB copy (and freeing it at
 * exit): about a sixth of the CPU time of a `cell run`.  When the build's
 * own cell-init file sits beside the running executable (as cell-daemon
 * does), it is exec'd instead through a detached, read-only bind mount of
 * it: the cell's only path to that file (/proc/1/exe, which cell-init's
 * non-dumpable flag already closes) is then a read-only mount it cannot
 * remount, so writes fail with EROFS, as they fail on the sealed memfd with
 * EPERM.  The file is used only if it is the embedded build (same size and
 * GNU build-id), owned by root and writable by nobody else. */
#include "runtime/runtime.h"
#include "util/util.h"

#include <elf.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

extern const char cell_init_blob_start[];
extern const char cell_init_blob_end[];

/* The GNU build-id note of the embedded ELF image: its descriptor's offset
 * and size in the image, 0 if there is none. */
static int blob_build_id(size_t *off, size_t *len)
{
    const char *img = cell_init_blob_start;
    size_t size = (size_t)(cell_init_blob_end - cell_init_blob_start);
    Elf64_Ehdr eh;
    if (size < sizeof eh)
        return 0;
    memcpy(&eh, img, sizeof eh);
    if (memcmp(eh.e_ident, ELFMAG, SELFMAG) != 0 || eh.e_phentsize != sizeof(Elf64_Phdr) ||
        eh.e_phoff > size || (size - eh.e_phoff) / sizeof(Elf64_Phdr) < eh.e_phnum)
        return 0;
    for (unsigned i = 0; i < eh.e_phnum; i++) {
        Elf64_Phdr ph;
        memcpy(&ph, img + eh.e_phoff + i * sizeof ph, sizeof ph);
        if (ph.p_type != PT_NOTE || ph.p_offset > size || ph.p_filesz > size - ph.p_offset)
            continue;
        for (size_t p = ph.p_offset; p + sizeof(Elf64_Nhdr) <= ph.p_offset + ph.p_filesz;) {
            Elf64_Nhdr nh;
            memcpy(&nh, img + p, sizeof nh);
            size_t name = p + sizeof nh, desc = name + ((nh.n_namesz + 3u) & ~3u);
            size_t next = desc + ((nh.n_descsz + 3u) & ~3u);
            if (next > ph.p_offset + ph.p_filesz)
                break;
            if (nh.n_type == NT_GNU_BUILD_ID && nh.n_namesz == 4 && memcmp(img + name, "GNU", 4) == 0 &&
                nh.n_descsz > 0) {
                *off = desc;
                *len = nh.n_descsz;
                return 1;
            }
            p = next;
        }
    }
    return 0;
}

/* fd is the embedded build of cell-init: size and build-id. */
static int same_build(int fd)
{
    struct stat st;
    size_t off, len;
    char id[64];
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_uid != 0 || (st.st_mode & 022) ||
        (size_t)st.st_size != (size_t)(cell_init_blob_end - cell_init_blob_start) || !blob_build_id(&off, &len) ||
        len > sizeof id)
        return 0;
    return pread(fd, id, len, (off_t)off) == (ssize_t)len && memcmp(id, cell_init_blob_start + off, len) == 0;
}

/* A read-only detached bind mount of cell-init beside the executable, or -1
 * (without an error: the caller falls back to the memfd). */
static int open_beside(void)
{
    char path[PATH_MAX];
    if (util_exe_sibling(path, sizeof path, "cell-init", NULL) < 0)
        return -1;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0 || !same_build(fd))
        return -1;
    _cleanup_close_ int tree = open_tree(fd, "", OPEN_TREE_CLONE | OPEN_TREE_CLOEXEC | AT_EMPTY_PATH);
    struct mount_attr attr = { .attr_set = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV };
    if (tree < 0 || mount_setattr(tree, "", AT_EMPTY_PATH, &attr, sizeof attr) < 0)
        return -1;
    return util_steal_fd(&tree);
}

int runtime_init_exe(cell_error *err)
{
    int fd = open_beside();
    if (fd >= 0)
        return fd;
    size_t len = (size_t)(cell_init_blob_end - cell_init_blob_start);
    return util_sealed_memfd("cell-init", cell_init_blob_start, len, err);
}
