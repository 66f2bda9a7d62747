/**
 * A third-party CheckpointIO for Fulgur: full checkpoints with a SHA-256 sidecar, verified on load.
 * Give it to a Trainer (`plugins: [new HashedCheckpointIO()]`) or register it with a strategy name
 * (`example/ddpHashed.ts`, as Lightning's `StrategyRegistry.register(..., checkpoint_io=...)`).
 */
export {
  CheckpointIntegrityError,
  HashedCheckpointIO,
  SIDECAR_FORMAT,
  SIDECAR_VERSION,
  hashFile,
  readSidecar,
  sidecarPath,
  type Sidecar,
} from "./hashedCheckpointIO";
