/**
 * @fulgur/checkpoint-io: checkpoint formats. Full checkpoints are one safetensors file, readable
 * by Python's `safetensors`; the bytes-level reader and writer underneath are exported for tools
 * (`fulgur checkpoint inspect`) and for formats built on them. Files are data, never code.
 */
export { CheckpointFormatError, type CheckpointFormatProblem } from "./errors";
export {
  MAX_HEADER_LENGTH,
  SAFETENSORS_DTYPES,
  isSafetensorsDType,
  safetensorsItemsize,
  type RawTensor,
  type SafetensorsDType,
  type SafetensorsHeader,
  type TensorHeaderEntry,
} from "./safetensors/format";
export {
  SafetensorsFile,
  decodeSafetensors,
  readSafetensors,
  readSafetensorsHeader,
  type ReadSafetensorsOptions,
  type SafetensorsContents,
} from "./safetensors/reader";
export { encodeSafetensors, writeSafetensors, writeSafetensorsInOrder, writeSafetensorsLazy, type LazyTensor } from "./safetensors/writer";
export { parseTemporaryName, temporaryPathFor, writeFileAtomic, type WriteChunk } from "./atomicFile";
export {
  fulgurDTypeOf,
  lazyTensor,
  loadTensors,
  rawToTensor,
  safetensorsDTypeOf,
  tensorToRaw,
  tensorsToSafetensors,
  type LoadTensorsOptions,
} from "./tensorBytes";
export {
  FULL_FORMAT,
  FULL_FORMAT_VERSION,
  FullCheckpointIO,
  type FullLoadOptions,
  decodeFullCheckpointMetadata,
  encodeFullCheckpointMetadata,
  readFullCheckpointMeta,
} from "./fullCheckpointIO";
export { AsyncCheckpointIO } from "./asyncCheckpointIO";
export * from "./sharded/index";
