import { defineConfig } from "tsup";

export default defineConfig({
  // The disk offload's I/O worker thread runs its own file, found beside the bundle (nvme/ioThreads.ts).
  entry: { index: "src/index.ts", nvmeIoWorker: "src/nvme/ioWorker.ts" },
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
});
