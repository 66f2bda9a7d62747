/**
 * docs/guide/fsdp.md shows its examples verbatim from test/fixtures/guide/, and each of them runs:
 * a guide whose code drifts from what is tested fails here.
 */
import { spawn } from "node:child_process";
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";

const HERE = dirname(fileURLToPath(import.meta.url));
const GUIDE = join(HERE, "..", "..", "..", "docs", "guide", "fsdp.md");
const RANK_VARS = /^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|NODE_RANK|GROUP_RANK|MASTER_ADDR|MASTER_PORT|FULGUR_STORE_TOKEN)$/;

function run(file: string): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !RANK_VARS.test(k)));
  const child = spawn(process.execPath, [file], { env, cwd: dirname(file), stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d) => (stdout += d));
  child.stderr.on("data", (d) => (stderr += d));
  return new Promise((resolve) => child.on("close", (code) => resolve({ code, stdout, stderr })));
}

describe("docs/guide/fsdp.md", () => {
  const guide = readFileSync(GUIDE, "utf8");
  const blocks = [...guide.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1]);

  for (const [name, expected] of [
    ["fsdp-basic.mjs", /\[rank 0\] loss \d+\.\d\d after 6 steps/],
    ["fully-shard.mjs", /\[rank 0\] 3 units \(2 blocks and the root\), model\.blocks\.0 offloaded, after 4 steps/],
    // 53 parameters, each with AdamW's two moments in the full file.
    ["full-save.mjs", /\[rank 0\] full: 159 tensors, weights only: 53\n/],
  ] as const) {
    it(`shows ${name} verbatim, and it runs`, async () => {
      const file = join(HERE, "fixtures", "guide", name);
      expect(blocks).toContain(readFileSync(file, "utf8"));
      const r = await run(file);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toMatch(expected);
    });
  }
});
