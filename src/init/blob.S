/* The cell-init binary, embedded so that build/cell is self-contained.
 * libcell copies it into a sealed memfd and execs that inside each cell. */
/* Every embedded blob goes to one read-only section of its own, cell_blobs,
 * which the linker places after .rodata: among .rodata, a page of string
 * constants that a process touches pulled the blob bytes around it in
 * with it (whole large folios are mapped at once), 320 KiB of the idle
 * daemon's private memory. */
    .section cell_blobs, "a"
    .balign 16
    .global cell_init_blob_start
cell_init_blob_start:
    .incbin CELL_INIT_PATH
    .global cell_init_blob_end
cell_init_blob_end:
    .section .note.GNU-stack,"",@progbits
