/**
 * Progress: a live bar on a terminal (cli-progress) with step, loss, tokens/s and ETA; plain lines
 * every `logEveryNSteps` steps when output is not a terminal (CI logs, files). Only rank 0 shows it.
 * The loss shown is the one the module logs as "loss" with `progBar` when it does (with `syncDist`,
 * the mean over ranks), else the Trainer's own, which is rank 0's.
 */
import cliProgress from "cli-progress";
import type { Callback } from "./callback";
import type { Trainer } from "../trainer";

function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : m > 0 ? `${m}m${String(s % 60).padStart(2, "0")}s` : `${s}s`;
}

function formatRate(x: number): string {
  return x >= 1e6 ? `${(x / 1e6).toFixed(2)}M` : x >= 1e3 ? `${(x / 1e3).toFixed(1)}k` : x.toFixed(0);
}

export class ProgressBar implements Callback {
  readonly name = "ProgressBar";
  private bar: cliProgress.SingleBar | null = null;
  private started = 0;
  private lastLine = 0;

  constructor(private readonly stream: NodeJS.WriteStream = process.stdout) {}

  private get tty(): boolean {
    return Boolean(this.stream.isTTY) && process.env.CI !== "true";
  }

  onFitStart(trainer: Trainer): void {
    if (!trainer.isGlobalZero) return;
    this.started = Date.now();
    if (this.tty) {
      this.bar = new cliProgress.SingleBar(
        {
          stream: this.stream,
          format: "{bar} {value}/{total} | epoch {epoch} | loss {loss} | {tps} tok/s | ETA {eta_h}",
          hideCursor: true,
          clearOnComplete: false,
        },
        cliProgress.Presets.shades_classic,
      );
      this.bar.start(trainer.estimatedStepping(), trainer.globalStep, { epoch: 0, loss: "-", tps: "-", eta_h: "?" });
    }
  }

  private fields(trainer: Trainer, loss: number): Record<string, string | number> {
    const elapsed = (Date.now() - this.started) / 1000;
    const total = trainer.estimatedStepping();
    const done = trainer.globalStep - trainer.startStep;
    const eta = done > 0 ? (elapsed / done) * (total - trainer.globalStep) : NaN;
    const logged = trainer.progressBarMetrics.loss;
    const value = logged !== undefined && Number.isFinite(logged) ? logged : loss;
    const shown: Record<string, string | number> = {
      epoch: trainer.currentEpoch,
      loss: Number.isFinite(value) ? value.toFixed(4) : "-",
      tps: trainer.tokensPerSecond > 0 ? formatRate(trainer.tokensPerSecond) : "-",
      eta_h: formatDuration(eta),
    };
    for (const [k, v] of Object.entries(trainer.progressBarMetrics)) if (k !== "loss") shown[k] = v.toFixed(4);
    return shown;
  }

  onTrainBatchEnd(trainer: Trainer, _module: unknown, loss: number): void {
    if (!trainer.isGlobalZero) return;
    if (this.bar) {
      const f = this.fields(trainer, Number.isFinite(loss) ? loss : trainer.lastLoss);
      this.bar.update(trainer.globalStep, f);
      return;
    }
    if (Number.isFinite(loss) && trainer.globalStep !== this.lastLine) {
      this.lastLine = trainer.globalStep;
      const f = this.fields(trainer, loss);
      const extra = Object.entries(trainer.progressBarMetrics)
        .filter(([k]) => k !== "loss")
        .map(([k, v]) => ` ${k} ${v.toFixed(4)}`)
        .join("");
      this.stream.write(
        `epoch ${f.epoch} step ${trainer.globalStep}/${trainer.estimatedStepping()} loss ${f.loss}${extra} ${f.tps} tok/s ETA ${f.eta_h}\n`,
      );
    }
  }

  onFitEnd(): void {
    this.bar?.stop();
    this.bar = null;
  }
}
