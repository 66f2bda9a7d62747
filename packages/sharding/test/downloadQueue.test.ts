/**
 * The order offloaded gradients go down in (downloadQueue.ts): one unit late, every one by the
 * step, and never more than the limit under way, the oldest waited for first.
 */
import { describe, expect, it } from "vitest";
import { type Downloading, DownloadQueue } from "../src/downloadQueue";

/** A unit whose copies finish only when waited for (backward outrunning the copy engine), or at once. */
class FakeUnit implements Downloading {
  pending = 0;
  constructor(
    readonly name: string,
    private readonly log: string[],
    private readonly instant = false,
  ) {}
  startDownloads(): void {
    this.log.push(`start ${this.name}`);
    this.pending = this.instant ? 0 : 1;
  }
  sweepDownloads(): void {}
  get downloading(): boolean {
    return this.pending > 0;
  }
  waitDownloads(): void {
    if (this.pending) this.log.push(`wait ${this.name}`);
    this.pending = 0;
  }
}

describe("offloaded gradient downloads", () => {
  it("start one unit late, at most two under way, the oldest waited for first, the rest at the step", () => {
    const log: string[] = [];
    const units = [0, 1, 2, 3, 4, 5].map((i) => new FakeUnit(`u${i}`, log));
    const q = new DownloadQueue(() => units, 2);
    for (const u of [...units].reverse()) q.reduced(u); // backward: the last unit first
    expect(log).toEqual(["start u5", "start u4", "start u3", "wait u5", "start u2", "wait u4", "start u1", "wait u3"]);
    log.length = 0;
    q.flush();
    expect(log.filter((l) => l.startsWith("start"))).toEqual(["start u0", "start u1", "start u2", "start u3", "start u4", "start u5"]);
  });

  it("waits for nothing while the copies keep up", () => {
    const log: string[] = [];
    const units = [0, 1, 2, 3].map((i) => new FakeUnit(`u${i}`, log, true));
    const q = new DownloadQueue(() => units, 2);
    for (const u of [...units].reverse()) q.reduced(u);
    expect(log.some((l) => l.startsWith("wait"))).toBe(false);
  });

  it("forgets the last reduced unit at the step, so the next step's first reduction starts nothing of the last", () => {
    const log: string[] = [];
    const units = [0, 1].map((i) => new FakeUnit(`u${i}`, log, true));
    const q = new DownloadQueue(() => units, 2);
    q.reduced(units[1]);
    q.flush();
    log.length = 0;
    q.reduced(units[1]);
    expect(log).toEqual([]);
  });
});
