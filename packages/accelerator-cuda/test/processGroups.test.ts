/**
 * Process groups of CUDA tensors against the fake CUDA/NCCL libraries (test/fixtures/fakecuda.c):
 * `NcclWork.synchronize()` orders the compute stream without blocking the host (DESIGN.md decision
 * 14), and the host-staged group (decision 16) is chosen for ranks that share a GPU and moves CUDA
 * tensors through the CPU process group of @fulgur/distributed. Two ranks run in this process.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it, vi } from "vitest";
import type { ProcessGroup } from "@fulgur/core";
import { fromHost, type DType, type HostArray, type Tensor } from "@fulgur/tensor";
import { findFreePort, initProcessGroup, StoreServer, TcpStore, type Initialized } from "@fulgur/distributed";

const hasCc = spawnSync("cc", ["--version"]).status === 0;

describe.skipIf(!hasCc)("process groups of CUDA tensors, against fake CUDA libraries", () => {
  let dir: string;
  let saved: string | undefined;
  let pkg: typeof import("../src/index");
  let choice: typeof import("../src/cudaProcessGroup");
  let streams: typeof import("../src/stream");
  let server: StoreServer;
  let store: TcpStore;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "fulgur-fakecuda-pg-"));
    const lib = join(dir, "libfake.so");
    const r = spawnSync("cc", ["-shared", "-fPIC", "-O1", "-o", lib, resolve(__dirname, "fixtures", "fakecuda.c")], { encoding: "utf8" });
    if (r.status !== 0) throw new Error(`building the fake CUDA library failed:\n${r.stderr}`);
    for (const so of ["libcudart.so.13", "libcuda.so.1", "libnccl.so.2", "libnvrtc.so.13"]) copyFileSync(lib, join(dir, so));
    saved = process.env.FULGUR_CUDA_LIB_DIR;
    process.env.FULGUR_CUDA_LIB_DIR = dir;
    pkg = await import("../src/index");
    choice = await import("../src/cudaProcessGroup");
    streams = await import("../src/stream");
    server = await StoreServer.start({ host: "127.0.0.1", port: 0, token: "" });
    store = await TcpStore.connect({ host: "127.0.0.1", port: server.port, token: "" });
  });

  afterAll(async () => {
    await store?.close();
    await server?.close();
    if (saved === undefined) delete process.env.FULGUR_CUDA_LIB_DIR;
    else process.env.FULGUR_CUDA_LIB_DIR = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  const onGpu = (dtype: DType, values: HostArray): Tensor => fromHost(values, [values.length], dtype, { device: "cuda:0" });
  const pendingUses = (t: Tensor) => (t.storage as InstanceType<typeof pkg.CudaStorage>).pendingUses.length;

  describe("NcclWork.synchronize()", () => {
    it("makes the compute stream wait on the collective's event, once, and returns without waiting", async () => {
      const groups = await Promise.all([0, 1].map((rank) => pkg.NcclProcessGroup.create({ store, rank, size: 2, device: "cuda:0", name: "sync" })));
      const compute = pkg.cudaBackend("cuda:0").ctx.compute;
      const waits = vi.spyOn(streams.Stream.prototype, "waitEvent");
      try {
        const t = onGpu("float32", Float32Array.of(1, 2, 3));
        const w = groups[0].allReduce(t);
        waits.mockClear();
        w.synchronize();
        w.synchronize();
        expect(waits.mock.contexts).toEqual([compute]);
        // Nobody waits on w: the next collective finishes it, releasing the tensor's storage.
        expect(pendingUses(t)).toBe(1);
        await groups[0].barrier().wait();
        expect(w.isCompleted()).toBe(true);
        expect(pendingUses(t)).toBe(0);
        w.synchronize();
      } finally {
        waits.mockRestore();
        await Promise.all(groups.map((g) => g.destroy()));
      }
    });

    it("does not block on a hung collective, and throws the watchdog's error once it is known", async () => {
      const g = await pkg.NcclProcessGroup.create({ store, rank: 0, size: 1, device: "cuda:0", name: "hung", timeoutMs: 150 });
      const w = g.allReduce(onGpu("float32", new Float32Array(13))); // 13 elements: the fake never completes it
      const started = Date.now();
      w.synchronize();
      expect(Date.now() - started).toBeLessThan(100);
      expect(w.isCompleted()).toBe(false);
      await new Promise((r) => setTimeout(r, 400));
      expect(() => w.synchronize()).toThrow(/NCCL allReduce #1 \(sum 13 float32\) on group "hung" .* did not finish within 150 ms/);
      await expect(w.wait()).rejects.toThrow(pkg.NcclTimeoutError);
      await g.destroy();
    });
  });

  describe("choosing the group", () => {
    const opts = (rank: number, size: number, env: Record<string, string>, name: string) =>
      ({ store, rank, size, device: "cuda:0", timeoutMs: 5_000, env, name }) as const;

    it("FULGUR_PROCESS_GROUP decides when set, and is checked", async () => {
      expect(await choice.chooseProcessGroup(opts(0, 2, { FULGUR_PROCESS_GROUP: "host" }, "e1"))).toBe("host");
      expect(await choice.chooseProcessGroup(opts(0, 2, { FULGUR_PROCESS_GROUP: "nccl" }, "e2"))).toBe("nccl");
      await expect(choice.chooseProcessGroup(opts(0, 2, { FULGUR_PROCESS_GROUP: "gloo" }, "e3"))).rejects.toThrow(
        /FULGUR_PROCESS_GROUP: got "gloo"; expected "host", "nccl" or "auto"/,
      );
      expect(await choice.chooseProcessGroup(opts(0, 1, {}, "e4"))).toBe("nccl");
    });

    it("two ranks on one GPU (same host and PCI address) choose the host-staged group, on both", async () => {
      const kinds = await Promise.all([0, 1].map((r) => choice.chooseProcessGroup(opts(r, 2, {}, "shared"))));
      expect(kinds).toEqual(["host", "host"]);
    });
  });

  describe("the host-staged group", () => {
    let jobs: Initialized[] = [];
    let groups: ProcessGroup[] = [];

    beforeAll(async () => {
      // As a strategy does: the job's store (served from rank 0's transport thread) carries the group.
      const port = await findFreePort();
      const env = (rank: number) => ({ WORLD_SIZE: "2", RANK: String(rank), LOCAL_RANK: "0", LOCAL_WORLD_SIZE: "2", MASTER_ADDR: "127.0.0.1", MASTER_PORT: String(port) });
      jobs = await Promise.all([0, 1].map((rank) => initProcessGroup({ env: env(rank), token: "", timeoutMs: 10_000 })));
      groups = await Promise.all(
        jobs.map((job, rank) => choice.createCudaProcessGroup({ store: job.store, rank, size: 2, device: "cuda:0", timeoutMs: 10_000, env: {} })),
      );
    });

    afterAll(async () => {
      await Promise.all(groups.map((g) => g.destroy()));
      await Promise.all(jobs.map((j) => j.shutdown()));
    });

    it("is what createCudaProcessGroup returns for two ranks on one GPU", () => {
      expect(groups.map((g) => [g.backend, g.rank, g.size])).toEqual([
        ["tcp", 0, 2],
        ["tcp", 1, 2],
      ]);
    });

    it("reduces, gathers, scatters and broadcasts CUDA tensors, through synchronize() and wait()", async () => {
      const a = [onGpu("float32", Float32Array.of(1, 2, 3)), onGpu("float32", Float32Array.of(10, 20, 30))];
      const works = groups.map((g, r) => g.allReduce(a[r]));
      // Both ranks have issued; rank 0's transport thread answers rank 1 while this thread blocks.
      for (const w of works) w.synchronize();
      for (const t of a) expect(t.toArray()).toEqual([11, 22, 33]);

      const bits = (xs: number[]) => Uint16Array.from(xs, (x) => new Uint16Array(Float32Array.of(x).buffer)[1]);
      const outs = [0, 1].map(() => onGpu("bfloat16", new Uint16Array(4)));
      await Promise.all(groups.map((g, r) => g.allGather(outs[r], onGpu("bfloat16", bits([r, r + 0.5]))).wait()));
      for (const o of outs) expect(o.toArray()).toEqual([0, 0.5, 1, 1.5]);

      const rs = [0, 1].map(() => onGpu("int32", new Int32Array(2)));
      await Promise.all(groups.map((g, r) => g.reduceScatter(rs[r], onGpu("int32", Int32Array.of(1, 2, 3, 4).map((x) => x * (r + 1)))).wait()));
      expect(rs.map((t) => t.toArray())).toEqual([[3, 6], [9, 12]]);

      const b = [onGpu("float32", new Float32Array(2)), onGpu("float32", Float32Array.of(7, 8))];
      const bw = groups.map((g, r) => g.broadcast(b[r], 1));
      for (const w of bw) w.synchronize();
      expect(b[0].toArray()).toEqual([7, 8]);
    });
  });
});

if (!hasCc) {
  describe("process groups of CUDA tensors, against fake CUDA libraries", () => {
    it.skip("skipped: no C compiler (cc) to build the fake libraries", () => {});
  });
}
