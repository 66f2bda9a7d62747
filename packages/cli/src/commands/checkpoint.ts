/**
 * `fulgur checkpoint inspect | convert | reshard`. Inspect reads only the safetensors header (no
 * tensor data, so it is instant on a 10 GB file). Convert streams one tensor at a time from the
 * input to an atomically written output, keeping the model weights only if asked, renaming them
 * for Python's `load_state_dict`, and casting floating tensors. Reshard waits for sharded
 * checkpoints, which only the FSDP/ZeRO strategies will write; it says so instead of pretending.
 */
import { existsSync, statSync } from "node:fs";
import { join, resolve } from "node:path";
import { Command, Option } from "commander";
import {
  CheckpointFormatError,
  SHARDED_INDEX_FILE,
  convertFullToSharded,
  convertShardedToFull,
  reshardCheckpoint,
  type LazyTensor,
  type SafetensorsDType,
  SafetensorsFile,
  type TensorHeaderEntry,
  decodeFullCheckpointMetadata,
  rawToTensor,
  readSafetensorsHeader,
  safetensorsItemsize,
  tensorToRaw,
  writeSafetensorsLazy,
} from "@fulgur/checkpoint-io";
import { MODEL_PREFIX, OPTIMIZER_PREFIX } from "@fulgur/trainer";
import type { DType } from "@fulgur/tensor";
import { UsageError, invalidOption } from "../errors";
import type { CliContext } from "../context";
import { formatBytes, formatCount, table } from "../format";
import { oneOf, positiveInt } from "../parsers";

const FLOATING: ReadonlySet<SafetensorsDType> = new Set(["F32", "F64", "BF16", "F16"]);
export const CONVERT_DTYPES = ["float32", "float64", "bfloat16", "float16"] as const;
type ConvertDType = (typeof CONVERT_DTYPES)[number];
const SAFETENSORS_OF: Record<ConvertDType, SafetensorsDType> = { float32: "F32", float64: "F64", bfloat16: "BF16", float16: "F16" };

function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function groupOf(name: string): string {
  if (name.startsWith(MODEL_PREFIX)) return "model weights (state_dict.*)";
  if (name.startsWith(OPTIMIZER_PREFIX)) return "optimizer state (optimizer.*)";
  return "other";
}

export interface InspectReport {
  readonly file: string;
  readonly fileSize: number;
  readonly format: string | null;
  readonly formatVersion: string | null;
  readonly step: number | null;
  readonly epoch: number | null;
  readonly strategy: string | null;
  readonly worldSize: number | null;
  /** Why the Fulgur metadata could not be read, when it could not. */
  readonly metaProblem: string | null;
  /** `__metadata__` entries other than Fulgur's own. */
  readonly otherMetadata: Record<string, string>;
  readonly tensors: { name: string; dtype: string; shape: number[]; numel: number; bytes: number }[];
  readonly totals: { tensors: number; numel: number; bytes: number; groups: Record<string, { tensors: number; numel: number; bytes: number }> };
}

function numberOrNull(v: unknown): number | null {
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

/** Everything `inspect` shows, from the header alone. */
export async function inspectCheckpoint(path: string): Promise<InspectReport> {
  const header = await readSafetensorsHeader(path);
  const md = header.metadata;
  let meta: Record<string, unknown> = {};
  let metaProblem: string | null = null;
  try {
    meta = decodeFullCheckpointMetadata(md, path) as Record<string, unknown>;
  } catch (err) {
    metaProblem = (err as Error).message;
  }
  const loop = (meta.loop ?? {}) as Record<string, unknown>;
  const fulgur = (meta.fulgur ?? {}) as Record<string, unknown>;
  const tensors = [...header.tensors]
    .sort((a, b) => a.name.localeCompare(b.name, "en", { numeric: true }))
    .map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape], numel: numel(t.shape), bytes: t.byteLength }));
  const groups: InspectReport["totals"]["groups"] = {};
  for (const t of tensors) {
    const g = (groups[groupOf(t.name)] ??= { tensors: 0, numel: 0, bytes: 0 });
    g.tensors++;
    g.numel += t.numel;
    g.bytes += t.bytes;
  }
  const otherMetadata = Object.fromEntries(Object.entries(md).filter(([k]) => !["format", "format_version", "fulgur"].includes(k)));
  return {
    file: path,
    fileSize: header.fileSize,
    format: md.format ?? null,
    formatVersion: md.format_version ?? null,
    step: numberOrNull(loop.globalStep ?? meta.step),
    epoch: numberOrNull(loop.epoch ?? meta.epoch),
    strategy: typeof (fulgur.strategy ?? meta.strategy) === "string" ? String(fulgur.strategy ?? meta.strategy) : null,
    worldSize: numberOrNull(fulgur.worldSize ?? meta.worldSize),
    metaProblem,
    otherMetadata,
    tensors,
    totals: {
      tensors: tensors.length,
      numel: tensors.reduce((a, t) => a + t.numel, 0),
      bytes: tensors.reduce((a, t) => a + t.bytes, 0),
      groups,
    },
  };
}

function renderInspect(r: InspectReport): string {
  const dash = (v: unknown) => (v === null || v === undefined ? "-" : String(v));
  const format = r.format === null ? "safetensors without a format marker" : `${r.format}${r.formatVersion ? ` version ${r.formatVersion}` : ""}`;
  let out = table([
    ["file", `${r.file} (${formatBytes(r.fileSize)})`],
    ["format", format],
    ["step", dash(r.step)],
    ["epoch", dash(r.epoch)],
    ["strategy", r.strategy === null ? "-" : `${r.strategy}${r.worldSize !== null ? ` (world size ${r.worldSize})` : ""}`],
    ...Object.entries(r.otherMetadata).map(([k, v]) => [`metadata ${k}`, v.length > 100 ? `${v.slice(0, 97)}...` : v]),
  ], "");
  if (r.metaProblem) out += `warning: ${r.metaProblem}\n`;
  out += `\ntensors (${r.totals.tensors}):\n`;
  out += table([
    ["NAME", "DTYPE", "SHAPE", "BYTES"],
    ...r.tensors.map((t) => [t.name, t.dtype, `[${t.shape.join(", ")}]`, formatBytes(t.bytes)]),
  ]);
  out += `\ntotals:\n`;
  out += table([
    ...Object.entries(r.totals.groups).map(([g, v]) => [g, `${v.tensors} tensors`, `${formatCount(v.numel)} elements`, formatBytes(v.bytes)]),
    ["all", `${r.totals.tensors} tensors`, `${formatCount(r.totals.numel)} elements`, formatBytes(r.totals.bytes)],
  ]);
  return out;
}

export interface ConvertOptions {
  readonly weightsOnly?: boolean;
  /** Removed from the start of names; default "state_dict." with weightsOnly, none otherwise. */
  readonly stripPrefix?: string;
  readonly dtype?: ConvertDType;
  readonly force?: boolean;
}

export interface ConvertSummary {
  readonly written: number;
  readonly dropped: number;
  readonly cast: number;
  readonly bytes: number;
  readonly names: string[];
}

/** Writes `output` from `input` one tensor at a time; the output appears only when complete. */
export async function convertCheckpoint(input: string, output: string, options: ConvertOptions = {}): Promise<ConvertSummary> {
  if (resolve(input) === resolve(output)) throw invalidOption("<out>", output, "expected a path other than the input's (the output is written beside it, then renamed)");
  if (existsSync(output) && !options.force) {
    throw new UsageError(`${output} already exists; pass --force to replace it`);
  }
  const file = await SafetensorsFile.open(input);
  try {
    let entries: TensorHeaderEntry[] = [...file.header.tensors];
    if (options.weightsOnly) {
      // As the Trainer reads a module's state: the state_dict.* tensors, or every tensor of a plain weights file.
      const prefixed = entries.filter((e) => e.name.startsWith(MODEL_PREFIX));
      if (prefixed.length > 0) entries = prefixed;
      else entries = entries.filter((e) => !e.name.startsWith(OPTIMIZER_PREFIX));
    }
    const dropped = file.header.tensors.length - entries.length;
    const strip = options.stripPrefix ?? (options.weightsOnly ? MODEL_PREFIX : "");
    const target = options.dtype ? SAFETENSORS_OF[options.dtype] : undefined;
    const seen = new Map<string, string>();
    let cast = 0;
    const lazy: LazyTensor[] = entries.map((entry) => {
      const name = strip && entry.name.startsWith(strip) ? entry.name.slice(strip.length) : entry.name;
      if (name === "") throw new UsageError(`--strip-prefix ${JSON.stringify(strip)} would leave tensor ${JSON.stringify(entry.name)} without a name`);
      const clash = seen.get(name);
      if (clash !== undefined) {
        throw new UsageError(`--strip-prefix ${JSON.stringify(strip)} maps both ${JSON.stringify(clash)} and ${JSON.stringify(entry.name)} to ${JSON.stringify(name)}`);
      }
      seen.set(name, entry.name);
      const castIt = target !== undefined && FLOATING.has(entry.dtype) && entry.dtype !== target;
      if (castIt) cast++;
      return {
        name,
        dtype: castIt ? target : entry.dtype,
        shape: entry.shape,
        bytes: async () => {
          const raw = await file.read(entry);
          if (!castIt) return raw.data;
          const t = rawToTensor(raw, entry.name, { path: input });
          const c = t.cast(options.dtype as DType);
          try {
            return tensorToRaw(c).data;
          } finally {
            c.dispose();
            t.dispose();
          }
        },
      };
    });
    // Plain weights carry PyTorch's marker, so `safetensors.torch.load_file` and HF loaders take them as is;
    // a whole checkpoint keeps its Fulgur metadata and stays resumable.
    const metadata = options.weightsOnly ? { format: "pt" } : { ...file.header.metadata };
    await writeSafetensorsLazy(output, lazy, metadata);
    const bytes = lazy.reduce((a, t) => a + numel(t.shape) * safetensorsItemsize(t.dtype), 0);
    return { written: lazy.length, dropped, cast, bytes, names: lazy.map((t) => t.name) };
  } finally {
    await file.close();
  }
}

/** A sharded checkpoint is a directory holding an index. */
function isShardedDirectory(path: string): boolean {
  return existsSync(join(path, SHARDED_INDEX_FILE)) && statSync(path).isDirectory();
}

function wrapFormatError<T>(path: string, run: () => Promise<T>): Promise<T> {
  return run().catch((err: unknown) => {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") throw new UsageError(`${path}: no such file`);
    if (code === "EISDIR") throw new UsageError(`${path}: is a directory; expected a .safetensors file`);
    if (err instanceof CheckpointFormatError) throw new Error(`${path} is not a readable safetensors checkpoint: ${err.message}`);
    throw err;
  });
}

export function checkpointCommand(ctx: CliContext): Command {
  const cmd = new Command("checkpoint").description("inspect and convert checkpoints");

  cmd
    .command("inspect")
    .description("list a checkpoint's format, step, epoch, strategy and every tensor (reads the header only)")
    .argument("<file>", "a .safetensors checkpoint")
    .option("--json", "machine-readable output")
    .addHelpText("after", "\nExamples:\n  $ fulgur checkpoint inspect fulgur_logs/version_0/checkpoints/last.safetensors\n  $ fulgur checkpoint inspect last.safetensors --json")
    .action(async (file: string, opts: { json?: boolean }) => {
      const report = await wrapFormatError(file, () => inspectCheckpoint(file));
      ctx.io.out(opts.json ? JSON.stringify(report) + "\n" : renderInspect(report));
    });

  cmd
    .command("convert")
    .description("write a new safetensors file: weights only, renamed, cast; or a sharded checkpoint as one file (atomic write)")
    .argument("<in>", "checkpoint to read (a .safetensors file, or a sharded checkpoint directory)")
    .argument("<out>", "safetensors file to write")
    .option("--weights-only", `keep only the model weights (the ${MODEL_PREFIX}* tensors), with PyTorch's metadata`)
    .option("--strip-prefix <prefix>", `remove this prefix from tensor names (default with --weights-only: "${MODEL_PREFIX}")`)
    .addOption(new Option("--dtype <dtype>", "cast floating tensors to this dtype").argParser(oneOf(CONVERT_DTYPES)))
    .option("-f, --force", "replace <out> if it exists")
    .addHelpText(
      "after",
      `
Examples:
  # weights for Python: names without "${MODEL_PREFIX}", loadable by GPT.load_state_dict(safetensors.torch.load_file(...))
  $ fulgur checkpoint convert last.safetensors gpt.safetensors --weights-only
  # the same in bfloat16
  $ fulgur checkpoint convert last.safetensors gpt-bf16.safetensors --weights-only --dtype bfloat16
  # keep the names as they are
  $ fulgur checkpoint convert last.safetensors weights.safetensors --weights-only --strip-prefix ""`,
    )
    .action(async (input: string, output: string, opts: ConvertOptions) => {
      if (isShardedDirectory(input)) {
        if (opts.weightsOnly || opts.stripPrefix !== undefined || opts.dtype) {
          throw new UsageError(`${input} is a sharded checkpoint: convert it to one file first (no options), then rename or cast that file`);
        }
        if (existsSync(output) && !opts.force) throw new UsageError(`${output} exists; pass --force to replace it`);
        const summary = await convertShardedToFull(input, output);
        ctx.io.out(`wrote ${output}: ${summary.tensors} tensors, ${formatBytes(summary.bytes)} (from a sharded checkpoint, one tensor at a time)\n`);
        return;
      }
      const s = await wrapFormatError(input, () => convertCheckpoint(input, output, opts));
      ctx.io.out(
        `wrote ${output}: ${s.written} tensors, ${formatBytes(s.bytes)}` +
          (s.dropped ? `; dropped ${s.dropped} non-weight tensors` : "") +
          (opts.dtype ? `; cast ${s.cast} to ${opts.dtype}` : "") +
          "\n",
      );
    });

  cmd
    .command("reshard")
    .description("rewrite a checkpoint as a sharded one for another world size, one tensor at a time (no GPU, bounded memory)")
    .argument("<in>", "a sharded checkpoint directory, or a full .safetensors file")
    .argument("<out>", "the sharded checkpoint directory to write (replaced atomically)")
    .addOption(new Option("--world-size <n>", "ranks of the new checkpoint").argParser(positiveInt("ranks")).makeOptionMandatory())
    .addOption(new Option("--layout <layout>", 'how tensors are split: "even" (each tensor\'s flattened range in equal contiguous parts, as FSDP) or "whole" (whole tensors, balanced by bytes)').argParser(oneOf(["even", "whole"])))
    .addHelpText(
      "after",
      `
Examples:
  $ fulgur checkpoint reshard runs/fsdp/checkpoints/step-1000 step-1000-x8 --world-size 8
  $ fulgur checkpoint reshard last.safetensors last-sharded --world-size 4 --layout whole`,
    )
    .action(async (input: string, output: string, opts: { worldSize: number; layout?: "even" | "whole" }) => {
      const layout = opts.layout ?? "even";
      const summary = isShardedDirectory(input)
        ? await reshardCheckpoint(input, output, opts.worldSize, layout)
        : await wrapFormatError(input, () => convertFullToSharded(input, output, opts.worldSize, layout));
      ctx.io.out(`wrote ${output}: ${summary.tensors} tensors over ${opts.worldSize} rank file(s), ${formatBytes(summary.bytes)}\n`);
    });

  return cmd;
}
