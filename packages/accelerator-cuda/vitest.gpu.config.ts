import { defineConfig } from "vitest/config";

// GPU tests: each file skips itself with "skipped: no GPU found" where no CUDA device is visible.
// One file at a time: they share the device and its memory pool.
export default defineConfig({
  test: { include: ["test/gpu/**/*.test.ts"], testTimeout: 300_000, hookTimeout: 300_000, fileParallelism: false },
});
