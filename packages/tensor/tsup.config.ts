import { defineConfig } from "tsup";

export default defineConfig({
  // The CPU optimizer's worker thread runs its own file, found beside the bundle (cpu/optimizerThreads.ts).
  entry: { index: "src/index.ts", "testing/index": "src/testing/index.ts", cpuOptimizerWorker: "src/cpu/optimizerWorker.ts" },
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
});
