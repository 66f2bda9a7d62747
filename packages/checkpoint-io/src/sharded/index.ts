/**
 * The sharded checkpoint format's public surface (see README.md beside this file); src/index.ts
 * re-exports it.
 */
export { BufferTracker } from "./bufferTracker";
export { DEFAULT_CHUNK_BYTES, type ConversionSummary, type CopyOptions, type TensorByteSource } from "./byteSource";
export { convertFullToSharded, convertShardedToFull } from "./convert";
export {
  INDEX_FILE as SHARDED_INDEX_FILE,
  RANK_FILE_NAME,
  SHARDED_FORMAT,
  SHARDED_FORMAT_VERSION,
  SHARD_LAYOUTS,
  rankFileName,
  type PieceEntry,
  type ShardLayoutName,
  type ShardedIndex,
  type ShardedTensorEntry,
} from "./format";
export { parseShardedIndex, validateIndex as validateShardedIndex } from "./indexValidation";
export {
  ShardedCheckpointReader,
  openShardedCheckpoint,
  type OpenShardedOptions,
  type ShardedReadOptions,
  type ShardedTensorInfo,
} from "./reader";
export { planLayout, reshardCheckpoint, type ReshardOptions } from "./reshard";
export {
  SHARDED_PIECES_KEY,
  ShardedCheckpointIO,
  loadShardedCheckpoint,
  type PieceDescription,
  type ShardedLoadOptions,
  type TensorPart,
} from "./shardedCheckpointIO";
export { ShardedCheckpointWriter, type ShardCoordinator, type ShardPiece, type ShardedWriteOptions } from "./writer";
