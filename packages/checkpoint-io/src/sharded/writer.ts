/**
 * Saving a sharded checkpoint from every rank at once (DESIGN.md decisions 9, 12 and 15). Each rank
 * writes the pieces it holds into its own file, in parallel, inside `<path>.tmp-<id>`; the
 * coordinating rank (rank 0) then builds index.json from the files, writes it, and renames the
 * directory into place (directoryCommit.ts). Process groups stay out of this package: the strategy
 * hands in a ShardCoordinator with a barrier and a broadcast.
 *
 * [Note: every rank makes the same collective calls]
 * A rank that fails (a device error copying a tensor, a full disk) does not leave the save: it
 * records its error beside its file and goes on through the same barrier and broadcasts as the
 * others, so no rank waits for one that has left. Rank 0 then finds the file missing, reads why,
 * and broadcasts the failure; every rank throws (the failing one its own error). The sequence is
 * always: [broadcast the id] → broadcast rank 0's preparation → barrier after the writes →
 * broadcast the outcome. Only a collective failing itself (a rank killed) ends it early, and then
 * the strategy's failure handling reaches every rank.
 */
import type { CheckpointMeta } from "@fulgur/core";
import type { DType, Tensor } from "@fulgur/tensor";
import { rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { assertJsonValue } from "../checkpointMeta";
import { assertTensorLike, hostToBytes, safetensorsDTypeOf } from "../tensorBytes";
import { assertReplaceable, commitDirectory, newSaveId, prepareTemporaryDirectory, temporaryDirectoryFor } from "./directoryCommit";
import { numelOf, rankFileName } from "./format";
import { assembleIndex, failureMarkerFor, writeIndex } from "./indexAssembly";
import { writeRankFile, type RankPiece } from "./rankFile";

/** What a strategy provides so that checkpoint IO can coordinate ranks without a process group. */
export interface ShardCoordinator {
  readonly rank: number;
  readonly worldSize: number;
  /** Resolves once every rank has called it. */
  barrier(): Promise<void>;
  /** Every rank gets rank 0's value (JSON-serialisable). */
  broadcast<T>(value: T): Promise<T>;
}

/** One piece this rank holds: elements [start, end) of tensor `name`, flattened. */
export interface ShardPiece {
  /** The tensor's name in the checkpoint (a parameter's fully qualified name, say). */
  readonly name: string;
  /** The whole tensor's shape. */
  readonly globalShape: readonly number[];
  readonly dtype: DType;
  readonly start: number;
  readonly end: number;
  /** end - start elements, in any shape; its row-major values are the piece. */
  readonly tensor: Tensor;
  /** Declares that the tensor's pieces over all ranks need not cover it. */
  readonly partial?: boolean;
}

export interface ShardedWriteOptions {
  /** The id of `<path>.tmp-<id>`, the same on every rank; rank 0 makes one and broadcasts it when absent. */
  readonly id?: string;
}

type Outcome = { readonly ok: true } | { readonly ok: false; readonly message: string };

const messageOf = (e: unknown) => (e instanceof Error ? e.message : String(e));

async function attempt(work: () => Promise<void>): Promise<{ outcome: Outcome; error?: unknown }> {
  try {
    await work();
    return { outcome: { ok: true } };
  } catch (error) {
    return { outcome: { ok: false, message: messageOf(error) }, error };
  }
}

function checkSize(v: unknown): v is number {
  return typeof v === "number" && Number.isSafeInteger(v) && v >= 0;
}

/** Checks a piece and describes it for the rank file; throws naming the piece. */
function describePiece(p: ShardPiece, i: number): RankPiece & { tensor: Tensor } {
  const at = `pieces[${i}]${typeof p?.name === "string" ? ` (${JSON.stringify(p.name)})` : ""}`;
  if (typeof p !== "object" || p === null) throw new TypeError(`${at} must be { name, globalShape, dtype, start, end, tensor }`);
  if (typeof p.name !== "string" || p.name === "") throw new TypeError(`${at}: name must be a non-empty string`);
  if (!Array.isArray(p.globalShape) || !p.globalShape.every(checkSize)) throw new TypeError(`${at}: globalShape must be an array of non-negative integers, is ${JSON.stringify(p.globalShape)}`);
  const dtype = safetensorsDTypeOf(p.dtype);
  assertTensorLike(p.tensor, `${at}.tensor`);
  if (p.tensor.dtype !== p.dtype) throw new TypeError(`${at}: tensor is ${p.tensor.dtype}, the piece says ${p.dtype}`);
  const numel = numelOf(p.globalShape);
  if (!checkSize(p.start) || !checkSize(p.end) || p.start > p.end || p.end > numel) {
    throw new RangeError(`${at}: [${p.start}, ${p.end}) is not a range of the tensor's ${numel} elements`);
  }
  const held = numelOf(p.tensor.shape);
  if (held !== p.end - p.start) throw new RangeError(`${at}: the tensor holds ${held} elements, the range [${p.start}, ${p.end}) ${p.end - p.start}`);
  return { name: p.name, shape: [...p.globalShape], dtype, start: p.start, end: p.end, partial: p.partial === true, tensor: p.tensor };
}

export class ShardedCheckpointWriter {
  constructor(readonly coordinator: ShardCoordinator) {
    const { rank, worldSize } = coordinator ?? {};
    if (!Number.isSafeInteger(worldSize) || worldSize < 1 || !Number.isSafeInteger(rank) || rank < 0 || rank >= worldSize) {
      throw new RangeError(`coordinator: rank ${rank} of world size ${worldSize} is not a rank of a world`);
    }
  }

  /**
   * Saves this rank's pieces as part of the checkpoint at `path` (a directory). Every rank calls it,
   * with the same path and id; `meta` is taken from rank 0. Resolves on every rank once the
   * checkpoint is in place; rejects on every rank if any rank failed, leaving `path` as it was.
   */
  write(path: string, pieces: readonly ShardPiece[], meta: CheckpointMeta, options: ShardedWriteOptions = {}): Promise<void> {
    return this.writeWith(path, () => pieces, meta, options);
  }

  /** As `write`, with the pieces made inside the save, so that a failure making them still takes part in every collective. */
  async writeWith(path: string, makePieces: () => readonly ShardPiece[], meta: CheckpointMeta, options: ShardedWriteOptions = {}): Promise<void> {
    const { rank, worldSize } = this.coordinator;
    const target = resolve(path);
    const id = options.id ?? (await this.coordinator.broadcast(rank === 0 ? newSaveId() : ""));
    const tmp = temporaryDirectoryFor(target, id);
    const fail = (message: string) => new Error(`sharded save to ${target} failed: ${message}`);

    // 1. Rank 0 checks meta and the target and makes the temporary directory; the others wait for it.
    const prepared =
      rank === 0
        ? await attempt(async () => {
            assertJsonValue(meta, "meta");
            if (typeof meta !== "object" || meta === null || Array.isArray(meta)) throw new TypeError("meta must be a JSON object");
            await assertReplaceable(target);
            await prepareTemporaryDirectory(tmp);
          })
        : { outcome: { ok: true } as Outcome };
    const preparation = await this.coordinator.broadcast(prepared.outcome);
    if (!preparation.ok) throw prepared.error ?? fail(`rank 0: ${preparation.message}`);

    let ownError: unknown;
    try {
      // 2. Every rank writes its file.
      const file = rankFileName(rank, worldSize);
      try {
        const described = makePieces().map(describePiece);
        await writeRankFile(join(tmp, file), rank, worldSize, described, async (p, write) => write(hostToBytes(p.tensor.toHost())));
      } catch (e) {
        ownError = e;
        await writeFile(join(tmp, failureMarkerFor(file)), messageOf(e)).catch(() => undefined);
      }
      await this.coordinator.barrier();

      // 3. Rank 0 assembles the index from the files, writes it last, and commits the directory.
      let outcome: Outcome = { ok: true };
      if (rank === 0) {
        outcome = (
          await attempt(async () => {
            await writeIndex(tmp, await assembleIndex(tmp, worldSize, meta));
            await commitDirectory(tmp, target);
          })
        ).outcome;
      }
      outcome = await this.coordinator.broadcast(outcome);
      if (ownError !== undefined) throw ownError;
      if (!outcome.ok) throw fail(outcome.message);
    } finally {
      // After a commit the temporary name is gone and this does nothing; after a failure it clears the rank files.
      if (rank === 0) await rm(tmp, { recursive: true, force: true }).catch(() => undefined);
    }
  }
}
