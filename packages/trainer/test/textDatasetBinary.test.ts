/**
 * A binary file given as text data is refused, naming the file, instead of being trained on:
 * NUL bytes or mostly invalid UTF-8 in the first KiB. Text in any language, a multi-byte character
 * cut at the KiB boundary and a few stray Latin-1 bytes are text.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { TextDataset } from "../src/data/textDataset";

const dir = mkdtempSync(join(tmpdir(), "fulgur-textdata-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function file(name: string, bytes: Uint8Array | string): string {
  const path = join(dir, name);
  writeFileSync(path, bytes);
  return path;
}

/** Deterministic bytes spread over 0..255, as compressed or encrypted data looks. */
function noise(n: number, avoidNul: boolean): Uint8Array {
  const out = new Uint8Array(n);
  let x = 12345;
  for (let i = 0; i < n; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out[i] = avoidNul ? 1 + ((x >>> 16) % 255) : (x >>> 16) & 0xff;
  }
  return out;
}

describe("TextDataset refuses binary files", () => {
  it("a file with NUL bytes", () => {
    const png = file("image.png", new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 0, 0, 13, ...noise(4000, false)]));
    expect(() => new TextDataset(png, { seqLen: 8 })).toThrow(
      `TextDataset: ${png} is not text (NUL bytes in its first KiB); give text files (UTF-8), or tokens through your own Dataset`,
    );
  });

  it("a file of mostly invalid UTF-8, found in a directory under a text extension", () => {
    const sub = join(dir, "tree");
    mkdirSync(sub);
    writeFileSync(join(sub, "a.txt"), "plain text ".repeat(50));
    const bad = join(sub, "b.json");
    writeFileSync(bad, noise(5000, true));
    expect(() => new TextDataset(sub, { seqLen: 8 })).toThrow(
      new RegExp(`^TextDataset: ${bad.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")} is not text \\(its first KiB is \\d+% invalid UTF-8\\); give text files`),
    );
  });

  it("accepts text in any script, a character cut at the KiB boundary, and a few Latin-1 bytes", () => {
    const cut = file("cut.txt", "a".repeat(1023) + "é".repeat(100));
    const cjk = file("cjk.md", "日本語のテキストと English の混在。".repeat(80));
    const latin1 = file("latin1.txt", Buffer.from("Le caf\xe9 est pr\xeat, la for\xeat est verte. ".repeat(40), "latin1"));
    const ds = new TextDataset([cut, cjk, latin1], { seqLen: 8 });
    expect(ds.files).toEqual([cut, cjk, latin1]);
  });
});
