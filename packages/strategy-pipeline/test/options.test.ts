/** Options are validated at construction, naming the field, the value and what is allowed; names come from one table. */
import { describe, expect, it } from "vitest";
import { PIPELINE_STRATEGIES, PipelineOptionError, PipelineStrategy, balancedBounds, boundsFromSplitPoints, parsePipelineOptions, registerStrategies } from "../src/index";

describe("options", () => {
  it("defaults", () => {
    const o = parsePipelineOptions({});
    expect(o.schedule).toBe("1f1b");
    expect(o.microBatches).toBe(4);
    expect(o.dataParallel).toBe("none");
    expect(Object.isFrozen(o)).toBe(true);
  });
  it.each([
    [{ schedule: "zb" }, "schedule", /pipeline option schedule: got "zb"; expected "gpipe", "1f1b", "interleaved", "zb-h1"/],
    [{ microBatches: 0 }, "microBatches", /microBatches: got 0; expected a positive integer/],
    [{ dataParallel: "zero" }, "dataParallel", /got "zero"; expected "none", "ddp" or "fsdp"/],
    [{ dataParallel: "fsdp", schedule: "zb-h1" }, "dataParallel", /dataParallel: got "fsdp"; expected "none" or "ddp" with schedule "zb-h1"/],
    [{ splitPoints: [3, 2] }, "splitPoints", /splitPoints: got \[3,2\]; expected an array of strictly increasing/],
    [{ virtualStages: 2 }, "virtualStages", /only "interleaved" runs several stages per rank/],
    [{ stages: 2, microBatches: 3, schedule: "interleaved" }, "microBatches", /a multiple of stages \(2\)/],
    [{ stage: 2 }, "stage", /unknown option\(s\) "stage"; allowed options are .*stages/],
  ])("%j is refused naming %s", (input, field, message) => {
    let err: unknown;
    try {
      new PipelineStrategy(input as never);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(PipelineOptionError);
    expect((err as PipelineOptionError).option).toBe(field);
    expect((err as Error).message).toMatch(message);
  });
});

describe("registration", () => {
  it("registers pipeline, pipeline_1f1b and pipeline_gpipe from one table", () => {
    const names = new Map<string, { create: (o: object) => { name: string } }>();
    const registry = { has: (n: string) => names.has(n), register: (n: string, create: never) => void names.set(n, { create }) };
    expect(registerStrategies(registry)).toEqual(["pipeline", "pipeline_1f1b", "pipeline_gpipe"]);
    expect(PIPELINE_STRATEGIES.map((e) => e.defaults.schedule)).toEqual(["1f1b", "1f1b", "gpipe"]);
    expect(names.get("pipeline_gpipe")!.create({ schedule: "gpipe" }).name).toBe("pipeline_gpipe");
    expect(registerStrategies(registry)).toEqual([]);
  });
});

describe("cutting the blocks", () => {
  it("split points", () => {
    expect(boundsFromSplitPoints([1, 3], 4, 3)).toEqual([0, 1, 3, 4]);
    expect(() => boundsFromSplitPoints([1], 4, 3)).toThrow(/1 split points for 3 stages; expected 2/);
    expect(() => boundsFromSplitPoints([4], 4, 2)).toThrow(/every stage needs at least one block/);
  });
  it("balanced by weight: the heaviest stage is as light as it can be", () => {
    expect(balancedBounds([1, 1, 1, 1], 2)).toEqual([0, 2, 4]);
    expect(balancedBounds([5, 1, 1, 1, 1, 1], 2)).toEqual([0, 1, 6]);
    expect(balancedBounds([1, 1, 1, 1, 1, 1, 1, 1], 3)).toEqual([0, 3, 6, 8]);
    expect(() => balancedBounds([1, 1], 3)).toThrow(/3 stages but only 2 blocks/);
  });
});
