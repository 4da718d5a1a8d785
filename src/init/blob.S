/* The cell-init binary, embedded so that build/cell is self-contained.
 * libcell copies it into a sealed memfd and execs that inside each cell. */
    .section .rodata
    .balign 16
    .global cell_init_blob_start
cell_init_blob_start:
    .incbin CELL_INIT_PATH
    .global cell_init_blob_end
cell_init_blob_end:
    .section .note.GNU-stack,"",@progbits
