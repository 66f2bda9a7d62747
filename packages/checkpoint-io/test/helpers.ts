/** Shared test helpers: temporary directories and hand-built safetensors buffers. */
import { mkdtemp, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

export async function makeTempDir(): Promise<string> {
  return mkdtemp(join(tmpdir(), "fulgur-ckpt-"));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

/** Files in `dir` whose name marks them as an unfinished atomic write. */
export async function temporaryFiles(dir: string): Promise<string[]> {
  return (await readdir(dir)).filter((f) => f.includes(".tmp-"));
}

/**
 * A safetensors file assembled by hand from a literal header (padded with spaces to 8 bytes,
 * unless `pad` is false) and data bytes: the reference the writer must match byte for byte and
 * the raw material of the corruption tests.
 */
export function handBuilt(header: string, data: ArrayLike<number>, options: { pad?: boolean; length?: bigint } = {}): Uint8Array {
  const json = new TextEncoder().encode(header);
  const n = options.pad === false ? json.length : Math.ceil(json.length / 8) * 8;
  const out = new Uint8Array(8 + n + data.length);
  new DataView(out.buffer).setBigUint64(0, options.length ?? BigInt(n), true);
  out.fill(0x20, 8, 8 + n);
  out.set(json, 8);
  out.set(data, 8 + n);
  return out;
}

/** Little-endian bytes of typed-array values. */
export function le(values: ArrayBufferView): number[] {
  return Array.from(new Uint8Array(values.buffer, values.byteOffset, values.byteLength));
}
