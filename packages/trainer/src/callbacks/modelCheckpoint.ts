/**
 * Saves checkpoints every N optimizer steps and/or at the end of every N epochs, keeps the best
 * `saveTopK` by a monitored metric (or the newest ones without one), and optionally a
 * `last.safetensors`. Writes go through the strategy (rank 0 for replicated strategies), which
 * writes to a temporary name and renames, so a crash never leaves a torn checkpoint.
 *
 * [Note: what the callback may touch] A checkpoint is data (DESIGN.md decision 9), and a resumed
 * checkpoint may come from a copied run or from a stranger. So the callback's state names files by
 * plain name, never by path; names restored from a checkpoint count only if they have the shape of
 * this callback's names, and are removed only when listing the callback's own directory finds them
 * there as Trainer checkpoints. A file whose name the state does not hold is never removed, and
 * none outside the directory can be. Restored scores count in the top-k decisions on every rank
 * alike (they come from the checkpoint, the same everywhere), while what is on disk only decides
 * removals (rank 0's) and `bestModelPath`: ranks of nodes without a shared filesystem see other
 * files, and a save decided differently on two ranks would stall the job.
 */
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Callback } from "./callback";
import {
  LAST_NAME,
  checkpointStep,
  isPlainName,
  listCheckpointFiles,
  removeStaleTemporaries,
  templatePattern,
} from "./checkpointFiles";
import type { Trainer } from "../trainer";

export interface ModelCheckpointOptions {
  /** Directory (default: `<logDir>/checkpoints` or `<defaultRootDir>/checkpoints`). */
  dirpath?: string;
  /** Template: `{epoch}`, `{step}` and any logged metric `{val_loss}` / `{val_loss:.3f}`. */
  filename?: string;
  monitor?: string;
  mode?: "min" | "max";
  /** How many to keep: -1 all, 0 none (only `last`), k the best k, or the newest k without a monitor (default 1). */
  saveTopK?: number;
  saveLast?: boolean;
  everyNTrainSteps?: number;
  /** Save at the end of every N epochs (default 1 unless everyNTrainSteps is set). */
  everyNEpochs?: number;
  /**
   * Replace a checkpoint file that holds a later step than the run's (a warning instead of an
   * error). Off by default: a fresh or shorter run started in a longer run's directory would
   * otherwise replace that run's `last.safetensors` with an earlier state.
   */
  overwriteLaterStep?: boolean;
  /**
   * Save the module's weights without the optimizer's state and the scheduler (Lightning's
   * `save_weights_only`): smaller files, which cannot resume the run (default false).
   */
  saveWeightsOnly?: boolean;
}

interface Saved {
  /** A plain file name in the callback's directory. */
  readonly name: string;
  readonly score: number;
  readonly step: number;
  /** False for a restored entry that listing the directory did not find: it is never removed or reported. */
  onDisk: boolean;
}

type ResolvedOptions = Required<Omit<ModelCheckpointOptions, "dirpath" | "monitor">> & { dirpath?: string; monitor?: string };

export class ModelCheckpoint implements Callback {
  readonly name = "ModelCheckpoint";
  readonly stateKey: string;
  private saved: Saved[] = [];
  private readonly opts: ResolvedOptions;
  private readonly ownNames: RegExp;
  /** The directory whose temporaries were cleaned and restored entries checked (once per directory). */
  private preparedDir: string | null = null;
  /** Paths already warned about under overwriteLaterStep. */
  private readonly warned = new Set<string>();
  /** The step `last.safetensors` was last written at: an epoch end on a step already saved writes nothing again. */
  private lastStep = -1;
  lastPath: string | null = null;

  constructor(options: ModelCheckpointOptions = {}) {
    const mode = options.mode ?? "min";
    if (mode !== "min" && mode !== "max") throw new TypeError(`ModelCheckpoint mode: got ${JSON.stringify(mode)}; expected "min" or "max"`);
    const topK = options.saveTopK ?? 1;
    if (!Number.isInteger(topK) || topK < -1) throw new RangeError(`ModelCheckpoint saveTopK: got ${topK}; expected -1, 0 or a positive integer`);
    for (const f of ["everyNTrainSteps", "everyNEpochs"] as const) {
      const v = options[f];
      if (v !== undefined && (!Number.isInteger(v) || v < 0)) throw new RangeError(`ModelCheckpoint ${f}: got ${v}; expected a non-negative integer`);
    }
    if (options.saveWeightsOnly !== undefined && typeof options.saveWeightsOnly !== "boolean") {
      throw new TypeError(`ModelCheckpoint saveWeightsOnly: got ${JSON.stringify(options.saveWeightsOnly)}; expected true or false`);
    }
    const filename = options.filename ?? "epoch={epoch}-step={step}";
    // A template with a separator would write outside the directory the callback lists and cleans.
    if (!isPlainName(`${filename}.safetensors`)) {
      throw new TypeError(`ModelCheckpoint filename: got ${JSON.stringify(filename)}; expected a file name without "/" or "\\" (use dirpath for the directory)`);
    }
    this.opts = {
      dirpath: options.dirpath,
      filename,
      monitor: options.monitor,
      mode,
      saveTopK: topK,
      saveLast: options.saveLast ?? false,
      everyNTrainSteps: options.everyNTrainSteps ?? 0,
      everyNEpochs: options.everyNEpochs ?? (options.everyNTrainSteps ? 0 : 1),
      overwriteLaterStep: options.overwriteLaterStep ?? false,
      saveWeightsOnly: options.saveWeightsOnly ?? false,
    };
    this.ownNames = templatePattern(filename);
    this.stateKey = `ModelCheckpoint{monitor=${this.opts.monitor ?? ""},mode=${mode}}`;
  }

  /** The kept checkpoint with the best monitored score (or the newest), among those on disk. */
  get bestModelPath(): string | null {
    const best = this.onDisk().sort((a, b) => this.better(a.score, b.score))[0];
    return best && this.preparedDir ? join(this.preparedDir, best.name) : null;
  }

  /** The kept checkpoints known to be on disk, oldest first. */
  get savedPaths(): string[] {
    const dir = this.preparedDir;
    return dir ? this.onDisk().map((s) => join(dir, s.name)) : [];
  }

  dir(trainer: Trainer): string {
    return this.opts.dirpath ?? join(trainer.logDir, "checkpoints");
  }

  private onDisk(): Saved[] {
    return this.saved.filter((s) => s.onDisk).sort((a, b) => a.step - b.step);
  }

  /** Negative when score `a` is better than `b`; without a monitor the score is the step, and newer is better. */
  private better(a: number, b: number): number {
    if (!this.opts.monitor) return b - a;
    return this.opts.mode === "min" ? a - b : b - a;
  }

  formatName(epoch: number, step: number, metrics: Record<string, number>): string {
    const name = this.opts.filename.replace(/\{([A-Za-z0-9_/.-]+?)(?::\.(\d+)f)?\}/g, (_, key: string, digits?: string) => {
      const v = key === "epoch" ? epoch : key === "step" ? step : metrics[key];
      if (v === undefined) return `${key}=nan`;
      return digits ? v.toFixed(Number(digits)) : String(v);
    });
    const file = `${name}.safetensors`;
    // A metric's value cannot carry a separator, but the guard costs nothing ([Note: what the callback may touch]).
    if (!isPlainName(file)) throw new Error(`ModelCheckpoint: the file name ${JSON.stringify(file)} made from the template is not a plain name`);
    return file;
  }

  /** The callback's own files: its template's names and `last.safetensors`. */
  private isOwnName(name: string): boolean {
    return name === LAST_NAME || this.ownNames.test(name);
  }

  async onFitStart(trainer: Trainer): Promise<void> {
    await this.prepare(trainer);
  }

  async onTrainBatchEnd(trainer: Trainer): Promise<void> {
    const n = this.opts.everyNTrainSteps;
    if (n > 0 && trainer.globalStep % n === 0) await this.save(trainer);
  }

  async onTrainEpochEnd(trainer: Trainer): Promise<void> {
    const n = this.opts.everyNEpochs;
    if (n > 0 && (trainer.currentEpoch + 1) % n === 0) await this.save(trainer);
  }

  /**
   * Once per directory, before the first save: removes temporaries a killed save left behind,
   * checks restored entries against the directory's listing, and refuses (or warns) if
   * `last.safetensors` holds a later step than the run starts from.
   */
  private async prepare(trainer: Trainer): Promise<string> {
    const dir = this.dir(trainer);
    if (this.preparedDir === dir) return dir;
    if (trainer.isGlobalZero) {
      if (!existsSync(dir)) mkdirSync(dir, { recursive: true });
      removeStaleTemporaries(dir, (target) => this.isOwnName(target));
    }
    const listed = listCheckpointFiles(dir);
    for (const s of this.saved) {
      if (!s.onDisk) s.onDisk = listed.has(s.name) && (await checkpointStep(join(dir, s.name))) !== undefined;
    }
    if (this.opts.saveLast) await this.guardLaterStep(trainer, join(dir, LAST_NAME));
    this.preparedDir = dir;
    return dir;
  }

  /** Refuses (or, with overwriteLaterStep, warns once) before replacing a file of a later step. */
  private async guardLaterStep(trainer: Trainer, path: string): Promise<void> {
    const step = trainer.globalStep;
    const existing = await checkpointStep(path);
    if (existing === undefined || existing <= step) return;
    const what = `ModelCheckpoint: ${path} holds step ${existing}, later than this run's step ${step}; saving would replace it with an earlier state`;
    if (!this.opts.overwriteLaterStep) {
      throw new Error(`${what}. Resume from it (fit's ckptPath), save elsewhere (dirpath), or pass overwriteLaterStep: true to replace it`);
    }
    if (trainer.isGlobalZero && !this.warned.has(path)) {
      this.warned.add(path);
      process.emitWarning(`${what} (overwriteLaterStep: true)`, { code: "FULGUR_CHECKPOINT_OVERWRITE" });
    }
  }

  async save(trainer: Trainer): Promise<void> {
    const dir = await this.prepare(trainer);
    const metrics = trainer.callbackMetrics;
    const step = trainer.globalStep;
    if (this.saved.some((s) => s.step === step)) return;
    let score = step;
    if (this.opts.monitor) {
      const v = metrics[this.opts.monitor];
      if (v === undefined) {
        throw new Error(
          `ModelCheckpoint: monitor "${this.opts.monitor}" was not logged; logged metrics: ${Object.keys(metrics).join(", ") || "(none)"}`,
        );
      }
      score = v;
    }
    const topK = this.opts.saveTopK;
    const keepsIt = topK === -1 || (topK > 0 && (this.saved.length < topK || this.better(score, this.worst().score) < 0));
    if (keepsIt) {
      const name = this.formatName(trainer.currentEpoch, step, metrics);
      const path = join(dir, name);
      await this.guardLaterStep(trainer, path);
      // The list after this save goes into the checkpoint itself, so a resume from it knows the file.
      const before = this.saved;
      // A template without {step} writes the same name again: the file is replaced, not added.
      let after: Saved[] = [...before.filter((s) => s.name !== name), { name, score, step, onDisk: true }];
      let dropped: Saved | undefined;
      if (topK > 0 && after.length > topK) {
        dropped = this.worstOf(after);
        after = after.filter((s) => s !== dropped);
      }
      this.saved = after;
      try {
        await trainer.saveCheckpoint(path, { weightsOnly: this.opts.saveWeightsOnly });
      } catch (e) {
        this.saved = before;
        throw e;
      }
      if (dropped) await this.removeOwn(trainer, dir, dropped);
    }
    if (this.opts.saveLast && this.lastStep !== step) {
      const path = join(dir, LAST_NAME);
      await this.guardLaterStep(trainer, path);
      await trainer.saveCheckpoint(path, { weightsOnly: this.opts.saveWeightsOnly });
      this.lastPath = path;
      this.lastStep = step;
    }
  }

  /** Removes a dropped entry's file: rank 0 only, and only what listing the directory finds ([Note: what the callback may touch]). */
  private async removeOwn(trainer: Trainer, dir: string, entry: Saved): Promise<void> {
    if (!trainer.isGlobalZero || !entry.onDisk || !listCheckpointFiles(dir).has(entry.name)) return;
    await trainer.removeCheckpoint(join(dir, entry.name));
  }

  private worst(): Saved {
    return this.worstOf(this.saved);
  }

  private worstOf(list: readonly Saved[]): Saved {
    return [...list].sort((a, b) => this.better(b.score, a.score) || a.step - b.step)[0];
  }

  stateDict(): Record<string, unknown> {
    return { saved: this.saved.map(({ name, score, step }) => ({ name, score, step })) };
  }

  /**
   * Restores the kept entries by name. Entries that are not plain names of this callback's own
   * shape are dropped (a former layout's paths count by their last component, resolved in this
   * callback's directory like any name); whether each is on disk is checked when the directory is
   * known, before the first save.
   */
  loadStateDict(state: Record<string, unknown>): void {
    if (!Array.isArray(state.saved)) return;
    const restored: Saved[] = [];
    for (const raw of state.saved as unknown[]) {
      const e = (raw ?? {}) as { name?: unknown; path?: unknown; score?: unknown; step?: unknown };
      const name = e.name ?? (typeof e.path === "string" ? e.path.split(/[/\\]/).pop() : undefined);
      if (!isPlainName(name) || name === LAST_NAME || !this.ownNames.test(name)) continue;
      if (typeof e.score !== "number" || !Number.isFinite(e.score) || !Number.isInteger(e.step)) continue;
      if (restored.some((s) => s.name === name)) continue;
      restored.push({ name, score: e.score, step: e.step as number, onDisk: false });
    }
    this.saved = restored;
    this.preparedDir = null;
  }
}
