/**
 * DDPStrategy against the conformance kit every third-party strategy runs in its CI
 * (`@fulgur/strategy-kit/testing`): the contract and its abilities, the tiny GPT at worlds 1, 2 and
 * 3 against one device (accumulation, clipping), a checkpoint round trip in each world, and a
 * failure on rank 1 of world 2. World 1 runs here; the kit launches worlds 2 and 3 itself, so
 * ddp's own launching is not involved, and their ranks import the BUILT package (dist), as the
 * multi-process tests do. One test per check; the worlds are trained once for all of them.
 */
import { describe, it } from "vitest";
import { describeConformance } from "@fulgur/strategy-kit/testing";
import { DDPStrategy } from "../src/index";

describeConformance(
  { describe, it: (name, fn) => it(name, fn, 180_000) },
  "DDPStrategy conformance",
  () => new DDPStrategy({ verbose: false }),
  { worker: { module: new URL("../dist/index.js", import.meta.url).href, export: "DDPStrategy", options: { verbose: false } } },
);
