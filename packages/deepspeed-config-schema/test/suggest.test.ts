import { describe, expect, it } from "vitest";
import { closest, editDistance } from "../src/index.js";

describe("editDistance", () => {
  it("counts insertions, deletions and substitutions", () => {
    expect(editDistance("kitten", "sitting")).toBe(3);
    expect(editDistance("", "abc")).toBe(3);
    expect(editDistance("abc", "")).toBe(3);
    expect(editDistance("same", "same")).toBe(0);
  });

  it("counts a swap of neighbouring letters once", () => {
    expect(editDistance("stgae", "stage")).toBe(1);
  });

  it("ignores letter case", () => {
    expect(editDistance("SGD", "sgd")).toBe(0);
  });
});

describe("closest", () => {
  const keys = ["stage3_param_persistence_threshold", "stage3_prefetch_bucket_size", "overlap_comm", "stage"];

  it("finds a misspelled key", () => {
    expect(closest("stage3_param_persitance_threshold", keys)).toBe("stage3_param_persistence_threshold");
    expect(closest("overlap_com", keys)).toBe("overlap_comm");
    expect(closest("stgae", keys)).toBe("stage");
  });

  it("suggests nothing for a name far from every candidate", () => {
    expect(closest("learning_rate", keys)).toBeUndefined();
    expect(closest("abc", ["xyz"])).toBeUndefined();
  });
});
