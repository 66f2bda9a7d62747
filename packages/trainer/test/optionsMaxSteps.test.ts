/**
 * `maxSteps: 0` would "train" no step and report a loss of NaN: it is refused at construction,
 * naming the field, the value and what is allowed (DESIGN.md decision 10).
 */
import { describe, expect, it } from "vitest";
import { parseTrainerOptions } from "../src/options";

const RULE = "expected -1 (no limit) or a positive integer (the optimizer steps to take); 0 would train no step";

describe("maxSteps", () => {
  it("0 is refused with the field, the value and what is allowed", () => {
    expect(() => parseTrainerOptions({ maxSteps: 0 })).toThrow(`Invalid Trainer options:\n  - option "maxSteps": got 0; ${RULE}`);
  });

  it("other bad values keep their own wording", () => {
    expect(() => parseTrainerOptions({ maxSteps: -2 })).toThrow('option "maxSteps": got -2; expected a value >= -1');
  });

  it("-1 (the default: no limit) and positive counts are accepted", () => {
    expect(parseTrainerOptions({}).maxSteps).toBe(-1);
    expect(parseTrainerOptions({ maxSteps: -1 }).maxSteps).toBe(-1);
    expect(parseTrainerOptions({ maxSteps: 5 }).maxSteps).toBe(5);
  });
});
