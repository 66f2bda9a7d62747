/**
 * FSDP inside pipeline stages (`dataParallel: "fsdp"`): this rank's stages sharded over the
 * replicas of its stage (the "replica" axis of the [stages, replicas] mesh) by the sharding engine
 * FSDP uses (@fulgur/sharding), one unit a block and one unit for the rest the rank owns (the
 * embeddings on the first stage, the final norm and head on the last). Parameters of other stages
 * stay on `meta` and outside the engine.
 *
 * [Note: a sharded stage under a schedule] The engine's hooks run as in FSDP: a block's forward
 * gathers it and frees it after (FULL_SHARD), its backward gathers it again and reduce-scatters its
 * gradients once they have all arrived, one reduction a micro-batch, which the step adds up. The
 * schedule interleaves forwards of later micro-batches with backwards of earlier ones; each call
 * gathers what it needs, so any order is correct. Two things differ from FSDP: the executor calls
 * backward itself (not `strategy.backward`), so the units gathered for the whole step (the root)
 * get their gradient views before the batch (`beforeBatch`); and the engine is never told a
 * backward is running, so a forward after a backward reshards as usual and forward order stays
 * registration order (the blocks', which is their order within a stage).
 *
 * Checkpoints keep the pipeline's sharded format: every rank writes its segments of its stages'
 * parameters and their optimizer state as pieces of the named whole tensors (as FSDP's "sharded"
 * state dict does), and reads back only its own ranges (`heldRange`).
 */
import type { ProcessGroup } from "@fulgur/core";
import type { Module } from "@fulgur/nn";
import { type FlatUnit, ShardingEngine, type UnitPlan } from "@fulgur/sharding";
import { type Tensor, materialize, noGrad, scope } from "@fulgur/tensor";

export interface StageShardingInput {
  readonly module: Module;
  /** Qualified names of the blocks this rank runs, in order: one unit each. */
  readonly blockPaths: readonly string[];
  /** Qualified names of every parameter this rank trains. */
  readonly owned: ReadonlySet<string>;
  /** The replicas of this rank's stage. */
  readonly group: ProcessGroup;
  readonly device: string;
  /** Gathers ahead of the computing block (0: none). */
  readonly prefetch: number;
  /** Makes eagerly built parameters equal over the replicas. */
  readonly sameOnReplicas: (tensors: readonly Tensor[]) => Promise<void>;
}

/** This rank's units, planned from the names it owns: its blocks, then the root unit (the rest it owns). */
function planStageUnits(module: Module, blockPaths: readonly string[], owned: ReadonlySet<string>): UnitPlan[] {
  const byPath = new Map<string, { fqn: string; tensor: Tensor }[]>([...blockPaths, ""].map((p) => [p, []]));
  for (const [fqn, tensor] of module.namedParameters()) {
    if (!owned.has(fqn)) continue;
    byPath.get(blockPaths.find((p) => fqn.startsWith(`${p}.`)) ?? "")!.push({ fqn, tensor });
  }
  return [...blockPaths, ""].map((path) => ({ path, params: byPath.get(path)! })).filter((u) => u.params.length > 0);
}

/**
 * Shards this rank's stages unit by unit: a unit's parameters are materialised (on meta, with the
 * values one device gives) or moved to the device, copied into this rank's slice and freed, so the
 * rank never holds more than its slices and one unit whole. A unit built eagerly (not on meta) is
 * first made the same on every replica by `sameOnReplicas` (a broadcast from the first).
 */
export async function shardStages(input: StageShardingInput): Promise<ShardingEngine> {
  const { module, device } = input;
  const engine = new ShardingEngine(
    module,
    { shard: input.group, replicate: null },
    Object.freeze({ shardingStrategy: "FULL_SHARD", mixedPrecision: Object.freeze({ paramDtype: null, reduceDtype: null }), prefetch: input.prefetch, reshardAfterForward: true, offload: false }),
    device,
  );
  for (const plan of planStageUnits(module, input.blockPaths, input.owned)) {
    // materialize keeps each tensor object, giving it memory; addUnit copies an eager one to the device.
    const onMeta = plan.params.filter((p) => p.tensor.device === "meta").map((p) => p.tensor);
    if (onMeta.length > 0) noGrad(() => scope(() => materialize(onMeta, device)));
    else await input.sameOnReplicas(plan.params.map((p) => p.tensor));
    engine.addUnit(plan);
  }
  engine.ready();
  return engine;
}

/** Before a batch: the units gathered for the whole step (the root unit) get their gradient views (FSDP does it in `backward`). */
export function prepareStepGradients(engine: ShardingEngine): void {
  for (const unit of engine.units) if (unit.name === "" || unit.resident) unit.prepareGradients();
}

/** Where a parameter lives in the engine: its unit and its slot there. */
export interface SlotAt {
  readonly unit: FlatUnit;
  readonly index: number;
}

/** Each sharded parameter's unit and slot, by qualified name. */
export function slotsByName(engine: ShardingEngine): Map<string, SlotAt> {
  return new Map(engine.units.flatMap((unit) => unit.layout.slots.map((slot, index) => [slot.fqn, { unit, index }] as const)));
}

/**
 * The range of the whole tensor `name` this rank holds: its segment of a sharded unit, or all of a
 * resident one's (and of what is not sharded, `whole` elements).
 */
export function heldRange(slots: ReadonlyMap<string, SlotAt> | null, name: string, whole: { shape: readonly number[]; numel: number }): { shape: readonly number[]; start: number; end: number } {
  const at = slots?.get(name);
  if (!at || at.unit.resident) return { shape: whole.shape, start: 0, end: whole.numel };
  const seg = at.unit.segments[at.index];
  return { shape: seg.slot.shape, start: seg.start, end: seg.end };
}
