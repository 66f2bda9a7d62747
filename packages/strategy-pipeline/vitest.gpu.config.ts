import { defineConfig } from "vitest/config";

// GPU tests skip themselves with a message where no CUDA device is visible.
export default defineConfig({ test: { include: ["test/gpu/**/*.test.ts"], testTimeout: 300_000, fileParallelism: false } });
