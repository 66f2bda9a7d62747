// The disk tier of the offload: tensors go to a swap file and come back bit for bit, through I/O
// threads in requests of buffer_size bytes at block-aligned offsets; the rank's directory is made
// fresh and removed at dispose, and nothing else under the path is touched.
import { existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Generator, type Tensor, randn, sharedHostMemory, zeros } from "@fulgur/tensor";
import { afterAll, describe, expect, it } from "vitest";
import { NvmeTier } from "../src/nvme/nvmeTier";

const root = mkdtempSync(join(tmpdir(), "fulgur-nvme-tier-"));
afterAll(() => rmSync(root, { recursive: true, force: true }));

const settings = (path: string) => ({ path, threads: 2, bufferCount: 3, bufferSize: 4096, blockSize: 4096 });
const shared = (n: number, seed: number): Tensor => sharedHostMemory(() => randn([n], { generator: new Generator(seed) }).untrack());

describe("the NVMe tier", () => {
  it("writes tensors out, releases their memory, and reads them back bit for bit (several requests each, in flight together)", () => {
    const keep = join(root, "someone-elses-file");
    writeFileSync(keep, "x");
    const tier = new NvmeTier(settings(root), 3);
    const tensors = [shared(5_000, 1), shared(3, 2), sharedHostMemory(() => zeros([2_500], { dtype: "bfloat16" }).untrack())];
    const before = tensors.map((t) => t.toFloat64Array());
    tier.evict(tensors, true);
    for (const t of tensors) expect(tier.onDisk(t)).toBe(true);
    expect(() => tensors[0].toFloat64Array()).toThrow(/memory was released/);
    // Regions start at multiples of the block size: 20000 bytes take 5 blocks, 12 bytes one, 5000 bytes two.
    expect(tier.fileBytes).toBe(8 * 4096);
    expect(statSync(tier.file).size).toBeGreaterThanOrEqual(4096 * 6);
    expect(tier.directory.startsWith(join(root, "fulgur-rank3-"))).toBe(true);
    const reading = tier.startFetch(tensors);
    tier.finish(reading);
    tensors.forEach((t, i) => expect(Array.from(t.toFloat64Array())).toEqual(Array.from(before[i])));
    // Read only: back to disk without a write; changed: written again.
    tier.evict(tensors, false);
    tier.fetch([tensors[1]]);
    expect(Array.from(tensors[1].toFloat64Array())).toEqual(Array.from(before[1]));
    tier.dispose();
    expect(existsSync(tier.directory)).toBe(false);
    expect(readdirSync(root)).toEqual(["someone-elses-file"]);
    for (const t of tensors) t.dispose();
  });

  it("a failed read names the operation and the offset; a tensor not in shared memory is refused", () => {
    const tier = new NvmeTier(settings(root), 0);
    const t = shared(2_000, 3);
    tier.evict([t], true);
    // The file cut short under the tier: the read finds its end.
    writeFileSync(tier.file, "");
    expect(() => tier.fetch([t])).toThrow(/NVMe offload: a read of 4096 bytes at offset 0 failed: the file ended 0 bytes into a read/);
    const plain = randn([4]).untrack();
    expect(() => tier.evict([plain], true)).toThrow("NVMe offload: the I/O threads need tensors in shared memory (sharedHostMemory)");
    tier.dispose();
    t.dispose();
    plain.dispose();
  });
});
