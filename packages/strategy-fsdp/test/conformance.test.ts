/**
 * FSDPStrategy against the conformance kit (`@fulgur/strategy-kit/testing`): the contract and its
 * abilities (it builds the module on meta, owns optimizer state), the tiny GPT at worlds 1, 2 and 3
 * against one device, a checkpoint round trip in each world, and a failure on one rank. World 1
 * runs here; the kit launches the others with the BUILT package (dist).
 */
import { describe, it } from "vitest";
import { describeConformance } from "@fulgur/strategy-kit/testing";
import { FSDPStrategy } from "../src/index";

describeConformance(
  { describe, it: (name, fn) => it(name, fn, 180_000) },
  "FSDPStrategy conformance",
  () => new FSDPStrategy(),
  { worker: { module: new URL("../dist/index.js", import.meta.url).href, export: "FSDPStrategy", options: {} } },
);
