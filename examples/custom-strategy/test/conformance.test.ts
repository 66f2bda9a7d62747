/**
 * The strategy conformance kit in this package's own CI. ema_single_device trains on one device,
 * so it is held to world 1: its contract and abilities, five steps of the tiny GPT against the
 * kit's single_device (accumulation and clipping included), and a checkpoint round trip through
 * its own moduleStateDict and loadModuleStateDict. A multi-process strategy would also name the
 * module its ranks import: `worker: { module: new URL("../dist/index.js", import.meta.url).href, export: "MyStrategy" }`.
 */
import { expect, it } from "vitest";
import { assertConformance, formatReport, runStrategyConformance } from "@fulgur/strategy-kit/testing";
import { EmaSingleDeviceStrategy } from "../src/index";

it("ema_single_device passes the strategy conformance kit", async () => {
  const report = await runStrategyConformance(() => new EmaSingleDeviceStrategy({ decay: 0.5 }), { worldSizes: [1] });
  console.log(formatReport(report));
  // One error listing every failed check, with what differed and where.
  assertConformance(report);
  expect(report.checks.map((c) => c.id)).toEqual(["contract", "abilities", "train@1", "checkpoint@1"]);
});
