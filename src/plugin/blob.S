/* A libcell plugin (src/runtime/plugin.h) embedded in the lean `cell`:
 * CELL_PLUGIN_NAME is net or archive, CELL_PLUGIN_PATH the .so.  plugin.c
 * copies it into a sealed memfd and dlopen()s it from there. */
#define SYM2(a, b) a##b
#define SYM(a, b) SYM2(a, b)
    .section cell_blobs, "a"   /* with the other blobs: see src/init/blob.S */
    .balign 16
    .global SYM(SYM(cell_, CELL_PLUGIN_NAME), _plugin_blob_start)
SYM(SYM(cell_, CELL_PLUGIN_NAME), _plugin_blob_start):
    .incbin CELL_PLUGIN_PATH
    .global SYM(SYM(cell_, CELL_PLUGIN_NAME), _plugin_blob_end)
SYM(SYM(cell_, CELL_PLUGIN_NAME), _plugin_blob_end):
    .section .note.GNU-stack,"",@progbits
