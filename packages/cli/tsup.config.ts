import { defineConfig } from "tsup";

// Two builds: the library (with types) and the executable (with the shebang, no types; tsup makes it
// executable). They run at once, so the library's clean spares the executable's files.
export default defineConfig([
  {
    entry: { index: "src/index.ts" },
    format: ["esm"],
    dts: true,
    sourcemap: true,
    clean: ["!bin.js", "!bin.js.map"],
    target: "node20",
  },
  {
    entry: { bin: "src/bin.ts" },
    format: ["esm"],
    dts: false,
    sourcemap: true,
    clean: false,
    target: "node20",
    banner: { js: "#!/usr/bin/env node" },
  },
]);
