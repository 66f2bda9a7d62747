/**
 * One rank of test/gpu/nccl.test.ts: joins the NCCL group through a store on the shared filesystem,
 * runs each collective on tensors whose values say which rank made them, and prints the results as
 * one JSON line. Run as `node --import tsx ncclWorker.ts` with RANK, WORLD_SIZE and STORE_DIR set.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Store } from "@fulgur/core";
import { fromHost, zeros } from "@fulgur/tensor";
import { NcclProcessGroup } from "../../src/index";

/** A Store over a directory: one file per key, written to a temporary name and renamed. */
class DirStore implements Store {
  constructor(private readonly dir: string) {
    mkdirSync(dir, { recursive: true });
  }
  private path(key: string): string {
    return join(this.dir, encodeURIComponent(key));
  }
  async set(key: string, value: Uint8Array | string): Promise<void> {
    const tmp = `${this.path(key)}.${process.pid}.tmp`;
    writeFileSync(tmp, value);
    renameSync(tmp, this.path(key));
  }
  async get(key: string, timeoutMs = 60_000): Promise<Uint8Array> {
    await this.wait([key], timeoutMs);
    return new Uint8Array(readFileSync(this.path(key)));
  }
  async wait(keys: readonly string[], timeoutMs = 60_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!keys.every((k) => existsSync(this.path(k)))) {
      if (Date.now() > deadline) throw new Error(`DirStore: timed out waiting for ${keys.filter((k) => !existsSync(this.path(k))).join(", ")}`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  private async locked<T>(fn: () => T): Promise<T> {
    const lock = join(this.dir, ".lock");
    for (;;) {
      try {
        mkdirSync(lock);
        break;
      } catch {
        await new Promise((r) => setTimeout(r, 2));
      }
    }
    try {
      return fn();
    } finally {
      rmdirSync(lock);
    }
  }
  async add(key: string, amount: number): Promise<number> {
    return this.locked(() => {
      const cur = existsSync(this.path(key)) ? Number(readFileSync(this.path(key), "utf8")) : 0;
      writeFileSync(this.path(key), String(cur + amount));
      return cur + amount;
    });
  }
  async compareSet(key: string, expected: Uint8Array | string, desired: Uint8Array | string): Promise<Uint8Array> {
    return this.locked(() => {
      const cur = existsSync(this.path(key)) ? readFileSync(this.path(key)) : Buffer.alloc(0);
      if (Buffer.compare(cur, Buffer.from(expected)) === 0) writeFileSync(this.path(key), desired);
      return new Uint8Array(readFileSync(this.path(key)));
    });
  }
  async delete(key: string): Promise<boolean> {
    const had = existsSync(this.path(key));
    rmSync(this.path(key), { force: true });
    return had;
  }
  async close(): Promise<void> {}
}

async function main(): Promise<void> {
  const rank = Number(process.env.RANK);
  const size = Number(process.env.WORLD_SIZE);
  const device = `cuda:${rank}`;
  const store = new DirStore(process.env.STORE_DIR!);
  const pg = await NcclProcessGroup.create({ store, rank, size, device, timeoutMs: 60_000 });
  const vals = (n: number, f: (i: number) => number) => Float32Array.from({ length: n }, (_, i) => f(i));

  const ar = fromHost(vals(8, (i) => rank * 10 + i), [8], "float32", { device });
  await pg.allReduce(ar, "sum").wait();
  const avg = fromHost(vals(4, () => rank + 1), [4], "bfloat16", { device });
  await pg.allReduce(avg, "avg").wait();
  const inp = fromHost(vals(3, (i) => rank * 100 + i), [3], "float32", { device });
  const gathered = zeros([3 * size], { device });
  await pg.allGather(gathered, inp).wait();
  const rsIn = fromHost(vals(2 * size, (i) => i + rank), [2 * size], "float32", { device });
  const rsOut = zeros([2], { device });
  await pg.reduceScatter(rsOut, rsIn, "sum").wait();
  const bc = fromHost(vals(5, (i) => (rank === 1 ? 7 * i : -1)), [5], "float32", { device });
  await pg.broadcast(bc, 1).wait();
  // A ring: send to the next rank, receive from the previous one, in an order that cannot deadlock.
  const mine = fromHost(vals(6, (i) => rank * 1000 + i), [6], "float32", { device });
  const theirs = zeros([6], { device });
  const next = (rank + 1) % size;
  const prev = (rank + size - 1) % size;
  if (rank % 2 === 0) {
    await pg.send(mine, next).wait();
    await pg.recv(theirs, prev).wait();
  } else {
    await pg.recv(theirs, prev).wait();
    await pg.send(mine, next).wait();
  }
  await pg.barrier().wait();
  process.stdout.write(
    JSON.stringify({
      rank,
      allReduce: ar.toArray(),
      avg: avg.toArray(),
      allGather: gathered.toArray(),
      reduceScatter: rsOut.toArray(),
      broadcast: bc.toArray(),
      ring: theirs.toArray(),
    }) + "\n",
  );
  await pg.destroy();
}

main().catch((err) => {
  process.stderr.write(`rank ${process.env.RANK}: ${(err as Error).stack}\n`);
  process.exit(1);
});
