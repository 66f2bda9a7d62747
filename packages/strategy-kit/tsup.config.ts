import { defineConfig } from "tsup";

export default defineConfig({
  entry: {
    index: "src/index.ts",
    // The conformance kit, `@fulgur/strategy-kit/testing`, and the script of each rank it launches.
    "testing/index": "src/testing/index.ts",
    "testing/worker": "src/testing/worker.ts",
  },
  format: ["esm"],
  dts: true,
  sourcemap: true,
  clean: true,
  target: "node20",
  // No shared chunks: the kit finds its worker script beside testing/index.js (new URL("./worker.js",
  // import.meta.url)), which holds only while the code that resolves it is in that file.
  splitting: false,
  // Keep "node:" specifiers: a bare "stream" is resolved as a package by some test runners.
  removeNodeProtocol: false,
});
