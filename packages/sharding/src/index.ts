/**
 * @fulgur/sharding: the engine FSDP and ZeRO share (DESIGN.md decision 15): flat units gathered
 * and scattered with prefetch, each rank holding a contiguous slice; the optimizer steps over
 * per-parameter segments of the slice.
 */
export { FULL_PRECISION, keepThatActs, type EngineOptions, type MixedPrecisionPolicy, type NvmeOffload, type OffloadKeep, type ShardingStrategy, type UnitOptions } from "./api";
export { NvmeTier, type NvmeSettings } from "./nvme/nvmeTier";
export { ShardingEngine, planUnits, type UnitPlacement, type UnitPlan } from "./engine";
export { FlatUnit, type UnitGroups, type UnitState } from "./flatUnit";
export { layoutUnit, segmentsOf, type ParamSlot, type Segment, type UnitLayout } from "./layout";
export { canReleaseMemory } from "./storageMemory";
export { DeviceStreamedStep, STREAMED_MIN_ELEMENTS, STREAMED_PIECE_ELEMENTS, STREAMED_PIECES_IN_FLIGHT, streamedStepBytes, streamedStepSizes } from "./deviceStep";
export { type StreamingCheckpointIO, saveFullStreamed, streamsTensors } from "./streamedSave";
export { type BesideSettings, stepBesideBackwardRefusal } from "./stepBesideBackward";
export { checkpointSegments, estimateShardedMemory, type ShardedMemoryLayout } from "./memory";
export type { NvmeLayout } from "./offloadHostMemory";
