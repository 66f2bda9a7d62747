/**
 * Test helpers: a store server on an ephemeral loopback port, and N host process groups running
 * as async tasks in this process over real sockets (fast: no process start-up per test), or N
 * tensor-level CPU process groups, each with its transport thread.
 */
import type { ReduceOp } from "@fulgur/core";
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, type DType, type HostArray } from "@fulgur/tensor";
import { PassThrough } from "node:stream";
import { launch, type LaunchResult } from "../src/launcher/launcher";
import { StoreServer } from "../src/store/server";
import { TcpStore } from "../src/store/client";
import { createHostProcessGroup, type HostGroupOptions, type HostProcessGroup } from "../src/processGroup/hostGroup";
import { createCpuProcessGroup, type CpuProcessGroup } from "../src/processGroup/cpuProcessGroup";

export const TOKEN = "test-token";

export async function startStore(token = TOKEN): Promise<StoreServer> {
  return StoreServer.start({ host: "127.0.0.1", port: 0, token });
}

export function connect(server: StoreServer, options: { token?: string; timeoutMs?: number } = {}): Promise<TcpStore> {
  return TcpStore.connect({ host: "127.0.0.1", port: server.port, token: options.token ?? TOKEN, timeoutMs: options.timeoutMs });
}

export interface World {
  readonly groups: HostProcessGroup[];
  readonly stores: TcpStore[];
  readonly server: StoreServer;
  close(): Promise<void>;
}

let worldCounter = 0;

/** N ranks in this process, each with its own store connection and transport. */
export async function makeWorld(size: number, options: HostGroupOptions = {}): Promise<World> {
  const server = await startStore();
  const stores = await Promise.all(Array.from({ length: size }, () => connect(server)));
  const name = `w${worldCounter++}`;
  const groups = await Promise.all(
    stores.map((store, rank) => createHostProcessGroup({ store, rank, size, name, token: TOKEN, ...options })),
  );
  return {
    groups,
    stores,
    server,
    async close() {
      await Promise.all(groups.map((g) => g.destroy()));
      await Promise.all(stores.map((s) => s.close()));
      await server.close();
    },
  };
}

export interface CpuWorld {
  readonly groups: CpuProcessGroup[];
  close(): Promise<void>;
}

/**
 * N tensor-level ranks in this process. The store server runs on this thread, so these groups may
 * use wait() and isCompleted(), but not synchronize() (which would block the thread serving the
 * store); the multi-process tests cover synchronize().
 */
export async function makeCpuWorld(size: number, options: HostGroupOptions = {}): Promise<CpuWorld> {
  const server = await startStore();
  const stores = await Promise.all(Array.from({ length: size }, () => connect(server)));
  const name = `cw${worldCounter++}`;
  const groups = await Promise.all(
    stores.map((store, rank) => createCpuProcessGroup({ store, rank, size, name, token: TOKEN, failureKey: null, ...options })),
  );
  return {
    groups,
    async close() {
      await Promise.all(groups.map((g) => g.destroy()));
      await Promise.all(stores.map((s) => s.close()));
      await server.close();
    },
  };
}

/** Runs `script` as a job of `nproc` local ranks through the launcher; returns what it printed. */
export async function launchJob(
  nproc: number,
  script: string,
  args: readonly string[],
  killGraceMs = 2_000,
): Promise<{ result: LaunchResult; out: string; err: string; ms: number }> {
  const stdout = new PassThrough();
  const stderr = new PassThrough();
  let out = "";
  let err = "";
  stdout.on("data", (d) => (out += d));
  stderr.on("data", (d) => (err += d));
  const started = Date.now();
  const result = await launch({ nprocPerNode: nproc, script, args: [...args], stdout, stderr, forwardSignals: false, killGraceMs });
  return { result, out, err, ms: Date.now() - started };
}

/** A deterministic generator of small integers, so every dtype holds the values exactly. */
export function ints(seed: number, n: number, lo = -50, hi = 50): number[] {
  let x = (seed * 2654435761) >>> 0 || 1;
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out.push(lo + (x % (hi - lo + 1)));
  }
  return out;
}

export function encode(dtype: DType, values: readonly number[]): HostArray {
  switch (dtype) {
    case "float32":
      return Float32Array.from(values);
    case "float64":
      return Float64Array.from(values);
    case "int32":
      return Int32Array.from(values);
    case "bfloat16":
      return Uint16Array.from(values, f32ToBf16Bits);
    case "float16":
      return Uint16Array.from(values, f32ToF16Bits);
  }
}

export function decode(dtype: DType, a: HostArray): number[] {
  if (dtype === "bfloat16") return Array.from(a, bf16BitsToF32);
  if (dtype === "float16") return Array.from(a, f16BitsToF32);
  return Array.from(a);
}

/**
 * The documented result of reducing integer-valued inputs: sums are exact in every accumulator,
 * avg divides in the accumulator's precision (float32 for 16-bit floats) and rounds once.
 */
export function reference(dtype: DType, op: ReduceOp, perRank: readonly (readonly number[])[]): number[] {
  const n = perRank[0].length;
  const k = perRank.length;
  const out = new Array<number>(n);
  for (let i = 0; i < n; i++) {
    let v = perRank[0][i];
    for (let r = 1; r < k; r++) {
      const x = perRank[r][i];
      v = op === "max" ? Math.max(v, x) : op === "min" ? Math.min(v, x) : v + x;
    }
    if (op === "avg") v = dtype === "int32" ? Math.trunc(v / k) : dtype === "float64" ? v / k : Math.fround(v / k);
    out[i] = v;
  }
  return decode(dtype, encode(dtype, out));
}

export const DTYPES: readonly DType[] = ["float32", "float64", "bfloat16", "float16", "int32"];
export const OPS: readonly ReduceOp[] = ["sum", "avg", "max", "min"];
