/** The committed WebAssembly modules (src/cpu/wasm/*.wasm.ts) are what their .wat sources assemble to. */
import { execFileSync } from "node:child_process";
import { fileURLToPath } from "node:url";
import { expect, it } from "vitest";

it("every committed module matches its .wat source", () => {
  const script = fileURLToPath(new URL("../../../scripts/build-wasm.mjs", import.meta.url));
  expect(() => execFileSync(process.execPath, [script, "--check"], { stdio: "pipe" })).not.toThrow();
});
