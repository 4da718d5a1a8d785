/* The egress helper (cell-egress), embedded so that libcell's users (the
 * CLI, the daemon) are self-contained; sep.c copies it into a sealed memfd
 * and execs it from there for each policed cell. */
    .section cell_blobs, "a"   /* with the other blobs: see src/init/blob.S */
    .balign 16
    .global cell_egress_blob_start
cell_egress_blob_start:
    .incbin CELL_EGRESS_PATH
    .global cell_egress_blob_end
cell_egress_blob_end:
    .section .note.GNU-stack,"",@progbits
