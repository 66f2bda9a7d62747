import { defineConfig } from "tsup";

export default defineConfig({
  // The process group's worker thread runs its own file, found beside the bundle at run time
  // (see [Note: worker script] in src/processGroup/worker/thread.ts).
  entry: { index: "src/index.ts", processGroupWorker: "src/processGroup/worker/entry.ts" },
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
});
