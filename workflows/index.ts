/** The workflow bundle's entry point: every workflow partflow registers. */
export { partitionTable } from './partitionTable';
export { fixConstraints } from './fixConstraints';
export { maintainPartitions } from './maintainPartitions';
export { cleanupTable } from './cleanupTable';
export { createIndexes } from './createIndexes';
export { undoFixConstraints } from './undoFixConstraints';
