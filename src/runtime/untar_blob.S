/* The tar parser (cell-untar), embedded so that libcell's users are
 * self-contained; untar.c copies it into a sealed memfd and execs it from
 * there for each upload. */
    .section cell_blobs, "a"   /* with the other blobs: see src/init/blob.S */
    .balign 16
    .global cell_untar_blob_start
cell_untar_blob_start:
    .incbin CELL_UNTAR_PATH
    .global cell_untar_blob_end
cell_untar_blob_end:
    .section .note.GNU-stack,"",@progbits
