/* The cells' seccomp programs (classic BPF, struct sock_filter[]), written
 * at build time by src/seccompgen from src/isolate/seccomp.c's rules. */
    .section cell_blobs, "a"   /* with the other blobs: see src/init/blob.S */
    .balign 8
    .global isolate_seccomp_cell_start
isolate_seccomp_cell_start:
    .incbin SECCOMP_CELL_PATH
    .global isolate_seccomp_cell_end
isolate_seccomp_cell_end:
    .balign 8
    .global isolate_seccomp_nosuid_start
isolate_seccomp_nosuid_start:
    .incbin SECCOMP_NOSUID_PATH
    .global isolate_seccomp_nosuid_end
isolate_seccomp_nosuid_end:
    .section .note.GNU-stack,"",@progbits
