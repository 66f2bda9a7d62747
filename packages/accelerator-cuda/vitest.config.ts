import { defineConfig } from "vitest/config";

// CPU-side tests only; the GPU tests (test/gpu) run with `npm run test:gpu` (vitest.gpu.config.ts).
export default defineConfig({
  test: { include: ["test/*.test.ts"], exclude: ["test/gpu/**"], testTimeout: 60_000, hookTimeout: 60_000 },
});
