/**
 * Failures travel (DESIGN.md decision 12), for a rank of any multi-process strategy. Three paths:
 *
 * - Another rank failed: its report arrives through the store (@fulgur/distributed's failure
 *   channel). Every collective this rank is waiting for is raced against that report, so a rank
 *   blocked in an all-reduce that will never complete fails at once with RankFailureError naming
 *   the failing rank, instead of waiting out the collective timeout.
 * - This rank failed: the Trainer rethrows the error to the user's script; when nothing catches it
 *   the process handler below reports it to the store (and, under ddp_spawn, to the launcher over
 *   IPC) before the process exits with code 1, as Node would have.
 * - A peer vanished (SIGKILL, OOM killer): its connection closes, the collective fails with
 *   PeerLostError, and the failure is reported in the lost rank's name.
 *
 * [Note: exit order] The launcher names the first rank to exit non-zero, so the rank where the
 * failure started exits first: it reports, waits until every other rank has read the report (at
 * most a few seconds; rank 0 also hosts the store they read it from) and exits, while ranks that
 * merely learnt of the failure acknowledge it and linger briefly; the launcher stops them.
 */
import type { Store } from "@fulgur/core";
import { FailureChannel, RankFailureError, reportFailure, type FailureWatch } from "@fulgur/distributed";
import { IPC_FAILURE_TYPE, type IpcFailureMessage } from "./launchers";

const ACK_KEY = "fulgur/strategy/failure-acks";
const REPORT_TIMEOUT_MS = 5_000;
const ACK_WAIT_MS = 5_000;
/** How long a rank that only learnt of another's failure waits before exiting ([Note: exit order]). */
const FOLLOWER_EXIT_DELAY_MS = 2_000;

export interface FailureGuardOptions {
  readonly store: Store;
  readonly rank: number;
  readonly worldSize: number;
  /** Called once when another rank's failure (or the loss of the store) is learnt. */
  readonly onRemoteFailure: (error: RankFailureError) => void;
  /** Install the uncaught-exception handler that reports and exits (default true). */
  readonly handleUncaught?: boolean;
  readonly log?: (message: string) => void;
  /** Names the strategy in messages (default "fulgur"). */
  readonly label?: string;
}

const timeout = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms).unref());

function isPeerLost(err: unknown): err is Error & { peerGlobalRank: number } {
  return err instanceof Error && err.name === "PeerLostError" && typeof (err as { peerGlobalRank?: unknown }).peerGlobalRank === "number";
}

export class FailureGuard {
  private readonly channel: FailureChannel;
  private watch: FailureWatch | undefined;
  private remote: RankFailureError | undefined;
  private rejectFailed!: (err: Error) => void;
  /** Rejects with the remote failure; never resolves. */
  private readonly failed: Promise<never>;
  private closing = false;
  private handling = false;
  private readonly handler = (err: unknown): void => void this.onUncaught(err);

  constructor(private readonly o: FailureGuardOptions) {
    this.channel = new FailureChannel(o.store, o.rank);
    this.failed = new Promise<never>((_, reject) => (this.rejectFailed = reject));
    this.failed.catch(() => {});
  }

  /** The failure of another rank learnt so far, if any. */
  get remoteFailure(): RankFailureError | undefined {
    return this.remote;
  }

  start(): void {
    this.watch = this.channel.watchFailures(
      (report, error) => {
        if (report.rank === this.o.rank) return;
        this.learn(error);
      },
      {
        onStoreLost: () => {
          if (this.closing || this.o.rank === 0) return;
          this.learn(new RankFailureError(0, "the store it hosts went away (rank 0 exited or was killed)", undefined));
        },
      },
    );
    if (this.o.handleUncaught !== false) process.on("uncaughtException", this.handler);
  }

  private learn(error: RankFailureError): void {
    if (this.remote) return;
    this.remote = error;
    this.o.log?.(`${this.o.label ?? "fulgur"}: rank ${this.o.rank} is stopping: ${error.message}`);
    this.rejectFailed(error);
    this.o.onRemoteFailure(error);
  }

  /** Settles like `p`, or rejects with another rank's failure as soon as it is known. */
  race<T>(p: Promise<T>): Promise<T> {
    if (this.remote) {
      p.catch(() => {});
      return Promise.reject(this.remote);
    }
    return Promise.race([p, this.failed]).catch((err: unknown) => {
      // A collective that failed because the group was torn down on a remote failure reports that failure.
      throw this.remote ?? err;
    });
  }

  /** Records that this rank failed (first report of the job wins); bounded in time. */
  async report(error: unknown): Promise<void> {
    if (this.remote) return;
    const rank = isPeerLost(error) ? error.peerGlobalRank : this.o.rank;
    const why = isPeerLost(error) ? new Error(`its process vanished (noticed by rank ${this.o.rank}: ${error.message})`) : error;
    await Promise.race([reportFailure(this.o.store, rank, why).catch(() => undefined), timeout(REPORT_TIMEOUT_MS)]);
  }

  /** What an uncaught error does on a rank: print it, tell the others, exit 1 ([Note: exit order]). */
  private async onUncaught(err: unknown): Promise<void> {
    if (this.handling) return;
    this.handling = true;
    process.exitCode = 1;
    const text = err instanceof Error ? (err.stack ?? `${err.name}: ${err.message}`) : String(err);
    process.stderr.write(`${text}\n`);
    try {
      switch (this.classify(err)) {
        case "remote":
          await Promise.race([this.o.store.add(ACK_KEY, 1).catch(() => 0), timeout(REPORT_TIMEOUT_MS)]);
          await timeout(FOLLOWER_EXIT_DELAY_MS);
          break;
        case "peer-lost":
          // The vanished rank could not speak for itself: report in its name, and let the launcher
          // see its death before this rank's exit.
          await this.report(err);
          await timeout(FOLLOWER_EXIT_DELAY_MS);
          break;
        case "aborted":
          // The rank that aborted the group reports the cause itself.
          await timeout(FOLLOWER_EXIT_DELAY_MS);
          break;
        case "own":
          await this.report(err);
          this.tellLauncher(err);
          // Every rank hears of it before this one exits (the launcher stops the others when it
          // does): rank 0 also keeps the store it hosts up for them. Bounded by ACK_WAIT_MS.
          await this.waitForAcks();
          break;
      }
    } finally {
      process.exit(1);
    }
  }

  /** Whether an error started here or is this rank's view of a failure elsewhere. */
  private classify(err: unknown): "remote" | "peer-lost" | "aborted" | "own" {
    if (this.remote) return "remote";
    if (err instanceof RankFailureError && err.failingRank !== this.o.rank) return "remote";
    if (isPeerLost(err)) return "peer-lost";
    if (err instanceof Error && err.name === "GroupAbortedError") return "aborted";
    return "own";
  }

  /** Under ddp_spawn: the launcher learns which rank the failure started on, whatever order the ranks exit in. */
  private tellLauncher(err: unknown): void {
    if (typeof process.send !== "function" || !process.connected) return;
    const message: IpcFailureMessage = { type: IPC_FAILURE_TYPE, rank: this.o.rank, message: err instanceof Error ? err.message : String(err) };
    process.send(message);
  }

  /** Waits (bounded) until every other rank has read the report: they name the failure, and rank 0's store stays up for them. */
  private async waitForAcks(): Promise<void> {
    const deadline = Date.now() + ACK_WAIT_MS;
    while (Date.now() < deadline) {
      const acks = await Promise.race([this.o.store.add(ACK_KEY, 0).catch(() => -1), timeout(1_000).then(() => 0)]);
      if (acks < 0 || acks >= this.o.worldSize - 1) return;
      await timeout(50);
    }
  }

  /** True once the uncaught-error handler has taken over (the process is about to exit). */
  get isHandlingFailure(): boolean {
    return this.handling;
  }

  /** Before a clean shutdown: losing the store from now on is expected. */
  beginClosing(): void {
    this.closing = true;
  }

  stop(): void {
    this.closing = true;
    this.watch?.stop();
    this.channel.stop();
    process.off("uncaughtException", this.handler);
  }
}
