/**
 * What a rank reports, in order: one record per phase. A launched rank prints each as one line,
 * `FULGUR_CONFORMANCE <json>`, which the launcher prefixes with `[rank N]`; a run in this process
 * hands the same records to a callback. The job a rank is given travels the other way, as JSON in
 * its single command-line argument.
 */
import type { StrategyModule } from "./options";

export const RECORD_PREFIX = "FULGUR_CONFORMANCE ";

/** What one world trains: the same for every rank of it and for the single-device reference. */
export interface TrainingPlan {
  readonly seed: number;
  readonly steps: number;
  readonly accumulate: number;
  readonly gradientClipVal: number;
  readonly precision: string;
  readonly seqLen: number;
  /** Rows of the global batch, split over the data-parallel ranks. */
  readonly rows: number;
}

export interface RankJob {
  readonly strategy: StrategyModule;
  readonly plan: TrainingPlan;
  /** Where the checkpoint round trip writes; absent: no round trip. */
  readonly checkpointPath?: string;
  /** The optimizer step the last rank throws at, after the other phases; absent: no failure. */
  readonly failAtStep?: number;
  /** A rank still alive this long after it started exits on its own, in ms. */
  readonly deadlineMs: number;
}

/** Where a rank stands after setup, and which optional abilities its strategy has. */
export interface RankRecord {
  readonly kind: "rank";
  readonly pid: number;
  readonly strategy: string;
  readonly globalRank: number;
  readonly localRank: number;
  readonly worldSize: number;
  readonly isGlobalZero: boolean;
  readonly rootDevice: string;
  readonly dataParallel: { readonly rank: number; readonly size: number };
  readonly exceptionAware: boolean;
  /** What is wrong with the layout the strategy reports (empty when nothing). */
  readonly problems: readonly string[];
}

export interface TrainRecord {
  readonly kind: "train";
  /** Per optimizer step, this rank's loss: the mean over the step's micro-batches. */
  readonly losses: readonly number[];
  /** Per optimizer step, the gradient norm the step reported (null when it reported none). */
  readonly gradNorms: readonly (number | null)[];
  readonly stepped: readonly boolean[];
}

export interface CheckpointRecord {
  readonly kind: "checkpoint";
  /** Parameters and buffers compared after the round trip. */
  readonly tensors: number;
  readonly optimizerTensors: number | null;
  readonly problems: readonly string[];
}

/** The failing phase begins; the parent times every rank's exit from here. */
export interface FailureStartRecord {
  readonly kind: "failure-start";
}

/** A phase threw; the rank rethrows after reporting. */
export interface ErrorRecord {
  readonly kind: "error";
  readonly phase: string;
  readonly message: string;
}

export type ConformanceRecord = RankRecord | TrainRecord | CheckpointRecord | FailureStartRecord | ErrorRecord;

/** The message of the failure injected on `rank` at `step`, which every rank's output should carry. */
export function injectedFailureMessage(rank: number, step: number): string {
  return `conformance: injected failure on rank ${rank} at step ${step}`;
}

const RECORD_LINE = /^\[rank (\d+)\] FULGUR_CONFORMANCE (.*)$/;

/** The rank and record of a launched rank's output line, or undefined for any other line. */
export function parseRecordLine(line: string): { rank: number; record: ConformanceRecord } | undefined {
  const m = RECORD_LINE.exec(line);
  if (!m) return undefined;
  try {
    return { rank: Number(m[1]), record: JSON.parse(m[2]) as ConformanceRecord };
  } catch {
    return undefined;
  }
}
