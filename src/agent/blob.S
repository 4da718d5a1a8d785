/* cell-mock-agent, embedded so that build/cell is self-contained: the
 * daemon writes it into a cell when the `mock` agent is installed. */
    .section cell_blobs, "a"   /* with the other blobs: see src/init/blob.S */
    .balign 16
    .global cell_mock_agent_start
cell_mock_agent_start:
    .incbin CELL_MOCK_AGENT_PATH
    .global cell_mock_agent_end
cell_mock_agent_end:
    .section .note.GNU-stack,"",@progbits
