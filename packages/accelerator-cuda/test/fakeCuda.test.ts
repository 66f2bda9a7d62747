/**
 * The package's FFI plumbing end to end against fake CUDA/NCCL libraries that run on the CPU
 * (test/fixtures/fakecuda.c, built here with the C compiler nvcc also needs). Kernels cannot run,
 * but everything around them can: library loading through FULGUR_CUDA_LIB_DIR, out-parameters and
 * BigInt pointers, the pool allocator and its OOM retry, pinned staging for fromHost/read, which
 * stream each copy of pinned memory goes to and what it waits for (each stream's log), the device
 * error flag, the environment report, and the NCCL process group: unique id exchange through the
 * store, the by-value ncclUniqueId, collective arguments, Work completion, and the watchdog abort.
 */
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import koffi from "koffi";
import type { Store } from "@fulgur/core";
import type { Tensor, View } from "@fulgur/tensor";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { buildFakeCudaLibraries, hasCc } from "./fixtures/fakeCudaLibraries";


/** An in-process Store with the core contract's waiting semantics. */
class MemoryStore implements Store {
  private readonly data = new Map<string, Uint8Array>();
  private readonly waiters: (() => void)[] = [];
  private notify(): void {
    for (const w of this.waiters.splice(0)) w();
  }
  async set(key: string, value: Uint8Array | string): Promise<void> {
    this.data.set(key, typeof value === "string" ? new TextEncoder().encode(value) : new Uint8Array(value));
    this.notify();
  }
  async get(key: string, timeoutMs = 5000): Promise<Uint8Array> {
    await this.wait([key], timeoutMs);
    return this.data.get(key)!;
  }
  async wait(keys: readonly string[], timeoutMs = 5000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!keys.every((k) => this.data.has(k))) {
      if (Date.now() > deadline) throw new Error(`store: timed out waiting for ${keys.filter((k) => !this.data.has(k)).join(", ")}`);
      await new Promise<void>((r) => {
        this.waiters.push(r);
        setTimeout(r, 20);
      });
    }
  }
  async add(key: string, amount: number): Promise<number> {
    const v = Number(new TextDecoder().decode(this.data.get(key) ?? new Uint8Array())) + amount;
    await this.set(key, String(v));
    return v;
  }
  async compareSet(key: string, expected: Uint8Array | string, desired: Uint8Array | string): Promise<Uint8Array> {
    const cur = new TextDecoder().decode(this.data.get(key) ?? new Uint8Array());
    const exp = typeof expected === "string" ? expected : new TextDecoder().decode(expected);
    if (cur === exp) await this.set(key, desired);
    return this.data.get(key) ?? new Uint8Array();
  }
  async delete(key: string): Promise<boolean> {
    return this.data.delete(key);
  }
  async close(): Promise<void> {}
}

/** One entry of a fake stream's log: what was queued and its arguments (see fakecuda.c's log_op). */
interface Queued {
  readonly op: string;
  /** memcpy: destination; wait, record: the event; launch: the first kernel parameter; nccl: the input buffer; free, malloc: the block. */
  readonly a: bigint;
  /** memcpy: the direction (1 host to device, 2 device to host); nccl: the count; malloc: the bytes. */
  readonly b: bigint;
}
const LOGGED = ["", "memcpy", "wait", "record", "launch", "nccl", "free", "malloc"];

describe.skipIf(!hasCc)("against fake CUDA libraries", () => {
  let dir: string;
  let saved: string | undefined;
  let savedCache: string | undefined;
  let hooks: {
    lastLaunch: () => number[];
    trims: () => number;
    aborts: () => number;
    threshold: () => bigint | number;
    lastNccl: () => number[];
    registered: () => number;
    registerCalls: () => number;
    /** What was queued on a stream from its `from`-th entry on, and the log's length. */
    streamLog: (stream: bigint, from?: number) => { n: number; entries: Queued[] };
  };
  let pkg: typeof import("../src/index");

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "fulgur-fakecuda-"));
    buildFakeCudaLibraries(dir);
    saved = process.env.FULGUR_CUDA_LIB_DIR;
    savedCache = process.env.FULGUR_KERNEL_CACHE;
    process.env.FULGUR_CUDA_LIB_DIR = dir;
    process.env.FULGUR_KERNEL_CACHE = join(dir, "kernel-cache");
    pkg = await import("../src/index");
    const rt = koffi.load(join(dir, "libcudart.so.13"));
    const nc = koffi.load(join(dir, "libnccl.so.2"));
    const trims = rt.func("int fake_trim_count()");
    const registered = rt.func("int fake_registered_count()");
    const registerCalls = rt.func("int fake_register_calls()");
    const threshold = rt.func("uint64_t fake_release_threshold()");
    const aborts = nc.func("int fake_abort_count()");
    const last = nc.func("void fake_last_nccl(_Out_ int64_t *out)");
    const drv = koffi.load(join(dir, "libcuda.so.1"));
    const lastLaunch = drv.func("void fake_last_launch(_Out_ int64_t *out)");
    const streamLog = rt.func("int fake_stream_log(void *s, int from, _Out_ int64_t *out, int max)");
    hooks = {
      lastLaunch: () => {
        const out = new BigInt64Array(6);
        lastLaunch(out);
        return [...out].map(Number);
      },
      streamLog: (stream, from = 0) => {
        const out = new BigInt64Array(3 * 256);
        const n = streamLog(stream, from, out, 256) as number;
        const entries: Queued[] = [];
        for (let i = 0; i < Math.min(256, n - from); i++) entries.push({ op: LOGGED[Number(out[3 * i])], a: out[3 * i + 1], b: out[3 * i + 2] });
        return { n, entries };
      },
      trims: () => trims(),
      registered: () => registered(),
      registerCalls: () => registerCalls(),
      aborts: () => aborts(),
      threshold: () => threshold(),
      lastNccl: () => {
        const out = new BigInt64Array(4);
        last(out);
        return [...out].map(Number);
      },
    };
  });

  afterAll(() => {
    if (saved === undefined) delete process.env.FULGUR_CUDA_LIB_DIR;
    else process.env.FULGUR_CUDA_LIB_DIR = saved;
    if (savedCache === undefined) delete process.env.FULGUR_KERNEL_CACHE;
    else process.env.FULGUR_KERNEL_CACHE = savedCache;
    rmSync(dir, { recursive: true, force: true });
  });

  it("compiles a kernel file through NVRTC on first use, caches the CUBIN, and launches with the right parameters", () => {
    const b = pkg.cudaBackend("cuda:0");
    const x = b.fromHost(new Float32Array(1000), "float32");
    const y = b.alloc("float32", 1000);
    const launches = hooks.lastLaunch()[0];
    b.unary("neg", { storage: x, shape: [1000], strides: [1], offset: 0 }, { storage: y, shape: [1000], strides: [1], offset: 0 });
    const [count, gx, gy, bx, smem, param0] = hooks.lastLaunch();
    expect(count).toBe(launches + 1);
    // The contiguous, aligned fast path (ew_unary_flat): 8 elements per thread, so 125 threads' work.
    expect([gx, gy, bx, smem]).toEqual([1, 1, 256, 0]);
    // The first kernel parameter is the input's device address, read through the parameter block.
    expect(BigInt(param0)).toBe(x.ptr);
    const cached = readdirSync(join(dir, "kernel-cache"));
    expect(cached).toHaveLength(1);
    expect(cached[0]).toMatch(/^elementwise-sm_90-[0-9a-f]{32}\.cubin$/);
    expect(readFileSync(join(dir, "kernel-cache", cached[0]), "utf8")).toBe("CUBIN:--gpu-architecture=sm_90 -std=c++17");
    // An offset view passes its first element's address.
    b.unary("exp", { storage: x, shape: [10], strides: [1], offset: 7 }, { storage: y, shape: [10], strides: [1], offset: 0 });
    expect(BigInt(hooks.lastLaunch()[5])).toBe(x.ptr + 28n);
    b.free(x);
    b.free(y);
  });

  it("reports a kernel that does not compile with NVRTC's log", async () => {
    const { compileWithNvrtc, nvrtcVersion } = await import("../src/nvrtc");
    const { kernelSource } = await import("../src/kernelSource");
    const kdir = join(dir, "kernels");
    mkdirSync(kdir, { recursive: true });
    writeFileSync(join(kdir, "common.cuh"), "// header\n");
    writeFileSync(join(kdir, "bad.cu"), '// bad\n#include "common.cuh"\n#error this kernel is broken\n');
    expect(nvrtcVersion()).toBe("13.0");
    let err: unknown;
    try {
      compileWithNvrtc(kernelSource("bad", kdir), "sm_90");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(pkg.KernelCompileError);
    expect((err as Error).message).toContain("kernels/bad.cu does not compile for sm_90 with options --gpu-architecture=sm_90 -std=c++17");
    expect((err as Error).message).toContain("bad.cu(3): error: #error directive: this kernel is broken");
  });

  it("reports the GPU, versions and where each library came from", () => {
    const r = pkg.cudaEnvironmentReport();
    expect(r.gpus).toEqual([{ index: 0, name: "Fake GPU", computeCapability: "9.0", totalMemory: 80 * 2 ** 30 }]);
    expect([r.driverVersion, r.runtimeVersion, r.ncclVersion]).toEqual(["13.0", "13.0", "2.28.3"]);
    expect(r.libraries["libcudart.so.13"]).toEqual({ path: join(dir, "libcudart.so.13") });
    expect(r.nvrtcVersion).toBe("13.0");
    expect("error" in r.libraries["libcublasLt.so.13"]).toBe(true);
    expect(r.cublasLtVersion).toBeNull();
    expect(pkg.formatEnvironmentReport(r)).toContain("cuda:0  Fake GPU  sm_90  80.00 GiB");
    const acc = new pkg.CudaAccelerator();
    expect(acc.isAvailable()).toBe(true);
    expect(acc.deviceCount()).toBe(1);
  });

  it("adds many float32 pairs with one add_multi launch over their chunks, and refuses what it cannot add", () => {
    const b = pkg.cudaBackend("cuda:0");
    const view = (storage: InstanceType<typeof pkg.CudaStorage>, n: number): View => ({ storage, shape: [n], strides: [1], offset: 0 });
    const [d1, s1, d2, s2] = [10, 10, 70000, 70000].map((n) => b.alloc("float32", n));
    const launches = hooks.lastLaunch()[0];
    b.addMany([view(d1, 10), view(d2, 70000)], [view(s1, 10), view(s2, 70000)]);
    const [count, gx, , bx] = hooks.lastLaunch();
    // One launch; the 70000-float pair is two chunks of at most 65536, so three blocks.
    expect(count).toBe(launches + 1);
    expect([gx, bx]).toEqual([3, 256]);
    expect(() => b.addMany([view(d1, 10), view(d1, 10)], [view(s1, 10), view(s1, 10)])).toThrow("addMany: destination 1 appears twice");
    expect(() => b.addMany([view(d1, 10)], [view(s2, 70000)])).toThrow("addMany: destination 0 has 10 elements but its source has 70000");
    const h = b.alloc("bfloat16", 10);
    expect(() => b.addMany([view(h, 10)], [view(s1, 10)])).toThrow("addMany: destination 0 is bfloat16; only float32 is supported");
    expect(hooks.lastLaunch()[0]).toBe(launches + 1);
    for (const x of [d1, s1, d2, s2, h]) b.free(x);
  });

  it("moves data through pinned staging and the pool, and counts memory", () => {
    const b = pkg.cudaBackend("cuda:0");
    const base = b.memoryStats().allocated;
    const data = Float32Array.from({ length: 10 }, (_, i) => i * 1.5 - 3);
    const s = b.fromHost(data, "float32");
    expect(b.memoryStats().allocated).toBe(base + 40);
    expect(hooks.threshold()).toBe(0xffffffffffffffffn);
    const v: View = { storage: s, shape: [10], strides: [1], offset: 0 };
    expect([...(b.read(v) as Float32Array)]).toEqual([...data]);
    // A strided view is gathered on the device first (a kernel, which the fake skips), so only
    // contiguous reads are checked for values; offsets are honoured.
    expect([...(b.read({ ...v, shape: [3], offset: 2 }) as Float32Array)]).toEqual([...data.subarray(2, 5)]);
    b.fill(v, 0);
    expect([...(b.read(v) as Float32Array)]).toEqual(new Array(10).fill(0));
    const bits = Uint16Array.from([0x3f80, 0xc000, 0x7fc0]);
    const h = b.fromHost(bits, "bfloat16");
    expect([...(b.read({ storage: h, shape: [3], strides: [1], offset: 0 }) as Uint16Array)]).toEqual([...bits]);
    const c = b.alloc("bfloat16", 3);
    b.copy({ storage: h, shape: [3], strides: [1], offset: 0 }, { storage: c, shape: [3], strides: [1], offset: 0 });
    expect([...(b.read({ storage: c, shape: [3], strides: [1], offset: 0 }) as Uint16Array)]).toEqual([...bits]);
    for (const x of [s, h, c]) b.free(x);
    expect(b.memoryStats().allocated).toBe(base);
    expect(b.memoryStats().peak).toBeGreaterThanOrEqual(base + 46);
    expect(() => b.free(s)).toThrow(/already freed/);
  });

  it("page-locks host arrays once per buffer, uploads from and downloads into them directly, and unpins", () => {
    const b = pkg.cudaBackend("cuda:0");
    const staged = Float32Array.from({ length: 5 }, (_, i) => i - 2);
    b.fromHost(staged, "float32"); // not pinned: the staging ring, no registration
    expect(hooks.registered()).toBe(0);
    const slice = new Float32Array(new SharedArrayBuffer(4 * 1000));
    for (let i = 0; i < slice.length; i++) slice[i] = i * 0.5;
    b.pinHost!(slice);
    b.pinHost!(slice.subarray(10, 20)); // the same buffer: counted, not registered again
    expect([hooks.registered(), pkg.pinnedBufferCount(), pkg.isPinned(slice.subarray(500))]).toEqual([1, 1, true]);
    const s = b.fromHost(slice.subarray(100, 200), "float32");
    const v: View = { storage: s, shape: [100], strides: [1], offset: 0 };
    const down = new Float32Array(new SharedArrayBuffer(4 * 100));
    b.pinHost!(down);
    const pending = b.readIntoAsync!(v, down);
    // The source may be freed at once: its memory is reused only after the copy (its pending uses).
    b.free(s);
    pending.wait();
    expect(pending.poll()).toBe(true);
    expect([...down]).toEqual([...slice.subarray(100, 200)]);
    const other = b.alloc("float32", 100);
    expect(() => b.readIntoAsync!({ ...v, storage: other }, new Float32Array(99))).toThrow(/100 elements into a host array of 99/);
    b.free(other);
    b.unpinHost!(slice);
    expect(hooks.registered()).toBe(2);
    b.unpinHost!(slice);
    b.unpinHost!(down);
    expect([hooks.registered(), pkg.pinnedBufferCount(), pkg.isPinned(slice)]).toEqual([0, 0, false]);
    expect(hooks.registerCalls()).toBe(2);
  });

  /** What is queued on `stream` from now on: call the returned function to read it. */
  const mark = (stream: bigint): (() => Queued[]) => {
    const from = hooks.streamLog(stream).n;
    return () => hooks.streamLog(stream, from).entries;
  };

  it("casts beside compute on a stream of its own, after compute, and the first use and the free wait for it once", () => {
    const b = pkg.cudaBackend("cuda:0");
    const ctx = b.ctx;
    const [compute, beside] = [ctx.compute.handle, ctx.beside.handle];
    const flat = (s: InstanceType<typeof pkg.CudaStorage>, n = 100): View => ({ storage: s, shape: [n], strides: [1], offset: 0 });
    const src = b.alloc("float32", 100);
    const dst = b.alloc("bfloat16", 100);
    // The side stream waits for an event recorded on compute, casts (one flat kernel reading src),
    // and records dst's ready event; compute only records.
    const onCompute = mark(compute);
    const onBeside = mark(beside);
    b.copyBeside(flat(src), flat(dst));
    const side = onBeside();
    expect(side.map((e) => e.op)).toEqual(["wait", "launch", "record"]);
    expect(side[1].a).toBe(src.ptr);
    expect(onCompute()).toEqual([{ op: "record", a: side[0].a, b: 0n }]);
    expect(dst.pendingWrite?.ready.handle).toBe(side[2].a);
    // The first kernel reading dst on compute waits for the cast, once.
    const y = b.alloc("bfloat16", 100);
    const beforeKernels = mark(compute);
    b.unary("neg", flat(dst), flat(y));
    b.unary("neg", flat(dst), flat(y));
    const kernels = beforeKernels();
    expect(kernels.map((e) => e.op)).toEqual(["wait", "launch", "launch"]);
    expect(kernels[0].a).toBe(side[2].a);
    expect(dst.pendingWrite).toBeNull();
    // A cast never used before its free: the free waits for it.
    const dst2 = b.alloc("bfloat16", 100);
    b.copyBeside(flat(src), flat(dst2));
    const ready2 = dst2.pendingWrite!.ready.handle;
    const beforeFree = mark(compute);
    b.free(dst2);
    expect(beforeFree().map((e) => [e.op, e.a])).toEqual([
      ["wait", ready2],
      ["free", dst2.ptr],
    ]);
    for (const x of [src, dst, y]) b.free(x);
  });

  it("uploads from pinned memory on a stream of its own, after compute, and the first use on each stream waits for it once", async () => {
    const b = pkg.cudaBackend("cuda:0");
    const ctx = b.ctx;
    const [compute, uploads, copies] = [ctx.compute.handle, ctx.uploads.handle, ctx.hostCopies.handle];
    const waitsOn = (log: Queued[], event: bigint): number => log.filter((e) => e.op === "wait" && e.a === event).length;
    const slice = new Float32Array(new SharedArrayBuffer(4 * 300));
    for (let i = 0; i < slice.length; i++) slice[i] = i * 0.25 - 7;
    b.pinHost!(slice);
    const flat = (s: InstanceType<typeof pkg.CudaStorage>, n = 100): View => ({ storage: s, shape: [n], strides: [1], offset: 0 });

    // A pinned upload: compute allocates and records an event; the upload stream waits for that
    // event, copies, and records the storage's ready event. Compute waits for nothing yet.
    const onCompute = mark(compute);
    const onUploads = mark(uploads);
    const s1 = b.fromHost(slice.subarray(0, 100), "float32");
    const up = onUploads();
    expect(up.map((e) => e.op)).toEqual(["wait", "memcpy", "record"]);
    expect([up[1].a, up[1].b]).toEqual([s1.ptr, 1n]);
    expect(onCompute()).toEqual([{ op: "malloc", a: s1.ptr, b: 400n }, { op: "record", a: up[0].a, b: 0n }]);
    const ready1 = up[2].a;
    expect(s1.pendingWrite?.ready.handle).toBe(ready1);
    // The first kernel reading it makes compute wait for the copy, once; the second waits for nothing.
    const y = b.alloc("float32", 100);
    const beforeKernels = mark(compute);
    b.unary("neg", flat(s1), flat(y));
    b.unary("exp", flat(s1), flat(y));
    const kernels = beforeKernels();
    expect(kernels.map((e) => e.op)).toEqual(["wait", "launch", "launch"]);
    expect([kernels[0].a, kernels[1].a]).toEqual([ready1, s1.ptr]);
    expect(s1.pendingWrite).toBeNull();
    // The values arrived (the fake copies at once).
    expect([...(b.read(flat(s1)) as Float32Array)]).toEqual([...slice.subarray(0, 100)]);

    // Read first by a collective: the NCCL stream waits for the copy, compute does not; a second
    // collective does not wait again; the free (on compute) waits for it once, before the block goes back.
    const store = new MemoryStore();
    const g = await pkg.NcclProcessGroup.create({ store, rank: 0, size: 1, device: "cuda:0", name: "uploads" });
    const nccl = (g as unknown as { stream: { handle: bigint } }).stream.handle;
    const s2 = b.fromHost(slice.subarray(100, 200), "float32");
    const ready2 = s2.pendingWrite!.ready.handle;
    const onNccl = mark(nccl);
    const computeMeanwhile = mark(compute);
    const t2 = { storage: s2, shape: [100], strides: [1], offset: 0 } as unknown as Tensor;
    await g.allReduce(t2).wait();
    await g.allReduce(t2).wait();
    const collectives = onNccl();
    expect(waitsOn(collectives, ready2)).toBe(1);
    expect(collectives.findIndex((e) => e.op === "wait" && e.a === ready2)).toBeLessThan(collectives.findIndex((e) => e.op === "nccl"));
    expect(collectives.filter((e) => e.op === "nccl").map((e) => e.a)).toEqual([s2.ptr, s2.ptr]);
    expect(waitsOn(computeMeanwhile(), ready2)).toBe(0);
    const atFree = mark(compute);
    b.free(s2);
    const freeing = atFree();
    expect(waitsOn(freeing, ready2)).toBe(1);
    expect(freeing.findIndex((e) => e.op === "wait" && e.a === ready2)).toBeLessThan(freeing.findIndex((e) => e.op === "free" && e.a === s2.ptr));
    await g.destroy();

    // Read first by a download into pinned memory: the host copy stream waits for it, after compute's event.
    const s3 = b.fromHost(slice.subarray(200, 300), "float32");
    const ready3 = s3.pendingWrite!.ready.handle;
    const down = new Float32Array(new SharedArrayBuffer(4 * 100));
    b.pinHost!(down);
    const onCopies = mark(copies);
    const computeBeside = mark(compute);
    const pending = b.readIntoAsync!(flat(s3), down);
    const copied = onCopies();
    expect(copied.map((e) => e.op)).toEqual(["wait", "wait", "memcpy", "record"]);
    expect([copied[1].a, copied[2].b]).toEqual([ready3, 2n]);
    expect(computeBeside().map((e) => e.op)).toEqual(["record"]);
    pending.wait();
    expect([...down]).toEqual([...slice.subarray(200, 300)]);
    const atFree3 = mark(compute);
    b.free(s3);
    expect(waitsOn(atFree3(), ready3)).toBe(1);

    // Freed before any use: the free waits for the copy.
    const s4 = b.fromHost(slice.subarray(0, 50), "float32");
    const ready4 = s4.pendingWrite!.ready.handle;
    const atFree4 = mark(compute);
    b.free(s4);
    expect(atFree4().map((e) => [e.op, e.a])).toEqual([["wait", ready4], ["free", s4.ptr]]);

    // An array that is not pinned goes through the staging ring on compute, as before.
    const staged = mark(compute);
    const quiet = mark(uploads);
    const s5 = b.fromHost(Float32Array.from([1, 2, 3]), "float32");
    expect(quiet()).toEqual([]);
    expect(staged().map((e) => e.op)).toEqual(["malloc", "memcpy", "record"]);
    expect(s5.pendingWrite).toBeNull();
    for (const x of [y, s1, s5]) b.free(x);
    b.unpinHost!(slice);
    b.unpinHost!(down);
  });

  it("reports the device's free and total memory (cudaMemGetInfo) and its total without a context", () => {
    const acc = new pkg.CudaAccelerator();
    expect(acc.deviceMemory("cuda:0")).toEqual({ free: 70 * 2 ** 30, total: 80 * 2 ** 30 });
    expect(acc.deviceMemoryBytes("cuda:0")).toBe(80 * 2 ** 30);
  });

  it("retries an allocation after trimming the pool, then fails with a summary and advice", () => {
    const b = pkg.cudaBackend("cuda:0");
    const before = hooks.trims();
    let err: unknown;
    try {
      b.alloc("float32", 2 ** 29);
    } catch (e) {
      err = e;
    }
    expect(hooks.trims()).toBe(before + 1);
    expect(err).toBeInstanceOf(pkg.CudaOutOfMemoryError);
    const e = err as InstanceType<typeof pkg.CudaOutOfMemoryError>;
    expect(e.requested).toBe(2 ** 31);
    expect(e.message).toContain("CUDA out of memory on cuda:0 (Fake GPU): could not allocate 2.00 GiB");
    expect(e.message).toContain("device memory:            70.00 GiB free of 80.00 GiB");
    expect(e.message).toContain("activation checkpointing");
    expect(b.memorySummary()).toContain("CUDA memory on cuda:0 (Fake GPU)");
  });

  it("raises an error a kernel recorded in the device flag at the next synchronisation, once", () => {
    const b = pkg.cudaBackend("cuda:0");
    const flag = new Int32Array(koffi.view(b.ctx.status.ptr, 16));
    flag.set([1, 300, 5, 256]);
    expect(() => b.synchronize()).toThrow("embedding: index 300 at row 5 is out of range for an embedding of 256 rows");
    expect(() => b.synchronize()).not.toThrow();
  });

  describe("NcclProcessGroup", () => {
    const tensorOf = (b: ReturnType<typeof pkg.cudaBackend>, n: number, dtype: "float32" | "bfloat16" = "float32", strides = [1]): Tensor =>
      ({ storage: b.alloc(dtype, n * strides[0]), shape: [n], strides, offset: 0 }) as unknown as Tensor;

    it("exchanges the unique id through the store and runs collectives with the right arguments", async () => {
      const store = new MemoryStore();
      const [g0, g1] = await Promise.all([
        pkg.NcclProcessGroup.create({ store, rank: 0, size: 2, device: "cuda:0", name: "t1" }),
        pkg.NcclProcessGroup.create({ store, rank: 1, size: 2, device: "cuda:0", name: "t1" }),
      ]);
      expect([g0.rank, g1.rank, g0.size, g0.backend]).toEqual([0, 1, 2, "nccl"]);
      expect((await store.get("fulgur/nccl/t1/unique-id")).length).toBe(128);
      const b = pkg.cudaBackend("cuda:0");
      const t = tensorOf(b, 8, "bfloat16");
      const w = g0.allReduce(t, "avg");
      expect((t.storage as InstanceType<typeof pkg.CudaStorage>).pendingUses).toHaveLength(1);
      await w.wait();
      expect(w.isCompleted()).toBe(true);
      expect((t.storage as InstanceType<typeof pkg.CudaStorage>).pendingUses).toHaveLength(0);
      expect(hooks.lastNccl().slice(0, 3)).toEqual([8, 9, 4]);
      const out = tensorOf(b, 16);
      const inp = tensorOf(b, 8);
      await g1.allGather(out, inp).wait();
      expect(hooks.lastNccl().slice(0, 2)).toEqual([8, 7]);
      await g1.reduceScatter(inp, out, "max").wait();
      expect(hooks.lastNccl().slice(0, 3)).toEqual([8, 7, 2]);
      await g0.broadcast(inp, 1).wait();
      expect(hooks.lastNccl()[2]).toBe(1);
      await g0.barrier().wait();
      expect(() => g0.allGather(inp, inp)).toThrow(/allGather: output has 8 elements; expected size \* input = 2 \* 8/);
      expect(() => g0.allReduce(tensorOf(b, 4, "float32", [2]))).toThrow(/must be contiguous/);
      expect(() => g0.send(inp, 2)).toThrow(/send dst: got 2; expected a group rank in \[0, 2\)/);
      const [sub0, sub1] = await Promise.all([g0.newGroup([1]), g1.newGroup([1])]);
      expect(sub0.rank).toBe(-1);
      expect(() => sub0.barrier()).toThrow(/not a member of group "t1\/1"/);
      expect([sub1.rank, sub1.size, sub1.ranks]).toEqual([0, 1, [1]]);
      await Promise.all([sub1.destroy(), g0.destroy(), g1.destroy()]);
      expect(() => g0.barrier()).toThrow(/was destroyed/);
    });

    it("aborts the communicator when a collective outlives the timeout, naming group and operation", async () => {
      const store = new MemoryStore();
      const g = await pkg.NcclProcessGroup.create({ store, rank: 0, size: 1, device: "cuda:0", name: "slow", timeoutMs: 150 });
      const b = pkg.cudaBackend("cuda:0");
      await g.allReduce(tensorOf(b, 4)).wait();
      const aborts = hooks.aborts();
      const w = g.allReduce(tensorOf(b, 13));
      const t0 = Date.now();
      await expect(w.wait()).rejects.toThrow(/NCCL allReduce #2 \(sum 13 float32\) on group "slow" \(rank 0 of 1, global rank 0\) did not finish within 150 ms; the communicator was aborted/);
      expect(Date.now() - t0).toBeLessThan(5000);
      expect(hooks.aborts()).toBe(aborts + 1);
      expect(w.isCompleted()).toBe(false);
      expect(() => g.barrier()).toThrow(/was aborted/);
      await g.destroy();
    });
  });
});

if (!hasCc) {
  describe("against fake CUDA libraries", () => {
    it.skip("skipped: no C compiler (cc) to build the fake libraries", () => {});
  });
}
