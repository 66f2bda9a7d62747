/**
 * The conformance kit with launched worlds: the guide's data-parallel strategy (ParallelStrategy plus
 * a gradient average) passes at world 2, failure included; the guide's DataParallelLayout example is
 * sharded by its layout (two ranks, one replica). The ranks run the kit's worker from source (tsx).
 */
import { describe, expect, it } from "vitest";
import { formatReport, runStrategyConformance } from "../src/testing";

const guide = (file: string, name: string) => ({ module: new URL(`./guide/${file}`, import.meta.url).href, export: name });
const status = (report: Awaited<ReturnType<typeof runStrategyConformance>>) =>
  Object.fromEntries(report.checks.map((c) => [c.id, c.status]));

describe("launched worlds", () => {
  it("the averaging strategy matches one device at worlds 1 and 2, round-trips a checkpoint and ends on a failure", async () => {
    const report = await runStrategyConformance(guide("averagingStrategy.ts", "AveragingStrategy"), { worldSizes: [1, 2] });
    expect(status(report), formatReport(report)).toEqual({
      contract: "pass", abilities: "pass", "train@1": "pass", "checkpoint@1": "pass", "train@2": "pass", "checkpoint@2": "pass", "failure@2": "pass",
    });
    const failure = report.checks.find((c) => c.id === "failure@2")!;
    expect(failure.message).toMatch(/^every rank ended \d+ ms after the failing phase began; rank 1 exited with code 1; the other ranks were stopped; /);
    expect(failure.ms).toBeLessThan(30_000);
    console.log(formatReport(report));
  });

  it("ranks that share a data-parallel rank train on the same rows (DataParallelLayout)", async () => {
    const report = await runStrategyConformance(guide("dataParallelLayout.ts", "PairedStrategy"), { worldSizes: [2], checkpoint: false, failure: false });
    expect(status(report), formatReport(report)).toEqual({ contract: "pass", abilities: "pass", "train@2": "pass" });
    expect(report.checks.find((c) => c.id === "abilities")!.message).toContain("DataParallelLayout");
  });
});
