/**
 * The demo's default corpus leaves out what builds and runs generate (`npm run docs` writes
 * docs/api), so it is the same on every checkout; its fingerprint tells a changed corpus apart.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { defaultCorpus, describeDataChange, fingerprint } from "../src/corpus";

const root = mkdtempSync(join(tmpdir(), "fulgur-corpus-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

function put(rel: string, text = "some text\n"): string {
  const path = join(root, rel);
  mkdirSync(join(path, ".."), { recursive: true });
  writeFileSync(path, text);
  return path;
}

describe("the default corpus", () => {
  it("holds the sources and guides, not docs/api, dist, node_modules, runs or coverage", () => {
    const keep = [put("README.md"), put("docs/guide/a.md"), put("packages/p/src/a.ts"), put("examples/e/src/b.ts")];
    put("docs/api/assets/search.js");
    put("docs/api/index.json");
    put("packages/p/dist/index.js");
    put("packages/p/node_modules/x/index.js");
    put("runs/gpt/fulgur_logs/version_0/hparams.json");
    put("packages/p/coverage/lcov.json");
    put("examples/e/runs/metrics.json");
    const roots = ["README.md", "docs", "packages", "examples"].map((r) => join(root, r));
    expect(defaultCorpus(root, roots).sort()).toEqual(keep.sort());
  });
});

describe("the data fingerprint", () => {
  it("is equal for the same bytes and names what changed otherwise", () => {
    const a = put("fp/a.md", "alpha ".repeat(10));
    const b = put("fp/b.md", "beta ".repeat(10));
    const bytes = (s: string) => new Uint8Array(Buffer.from(s));
    const then = fingerprint([a], bytes("alpha ".repeat(10)), root);
    expect(then.files).toEqual([["fp/a.md", 60]]);
    expect(describeDataChange(JSON.parse(JSON.stringify(then)), fingerprint([a], bytes("alpha ".repeat(10)), root))).toBeUndefined();
    const now = fingerprint([a, b], bytes("alpha ".repeat(10) + "beta ".repeat(10)), root);
    expect(describeDataChange(then, now)).toBe("1 file(s) added (fp/b.md); 60 bytes then, 110 now");
    expect(describeDataChange(undefined, now)).toBeUndefined();
  });
});
