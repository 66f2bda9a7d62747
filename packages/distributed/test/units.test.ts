/**
 * Unit tests of the pieces below the sockets: store framing, reductions, chunking, the Work handle,
 * errors crossing from the transport thread.
 */
import { describe, expect, it } from "vitest";
import { bf16BitsToF32, f32ToBf16Bits, f32ToF16Bits } from "@fulgur/tensor";
import { decode, encode, FrameDecoder, Op, ProtocolError, type Message } from "../src/store/protocol";
import { accumulate, chunkBounds, finish, fromBytes, reduceInOrder, toAccumulator } from "../src/processGroup/reduce";
import { PromiseWork } from "../src/processGroup/work";
import { fromRecord, toRecord } from "../src/processGroup/worker/errorCodec";
import {
  CollectiveTimeoutError,
  GroupAbortedError,
  GroupFailedError,
  PeerLostError,
  RankFailureError,
  StoreBindError,
} from "../src/errors";
import { armTimer, checkTimeout } from "../src/util/timers";

describe("store protocol", () => {
  it("round-trips every message kind", () => {
    const messages = [
      { op: Op.Hello, id: 1, token: "tök" },
      { op: Op.Set, id: 2, key: "k", value: Uint8Array.of(1, 2, 3) },
      { op: Op.Get, id: 3, key: "k", timeoutMs: Infinity },
      { op: Op.Wait, id: 4, keys: ["a", "b"], timeoutMs: 10 },
      { op: Op.Add, id: 5, key: "c", amount: -3 },
      { op: Op.CompareSet, id: 6, key: "c", expected: new Uint8Array(0), desired: Uint8Array.of(9) },
      { op: Op.Delete, id: 7, key: "c" },
      { op: Op.Ok, id: 8 },
      { op: Op.Value, id: 9, value: Uint8Array.of(7) },
      { op: Op.Number, id: 10, value: 2 ** 53 - 1 },
      { op: Op.Bool, id: 11, value: true },
      { op: Op.Error, id: 12, code: "timeout", message: "m", keys: ["x"] },
    ] satisfies Message[];
    const frames = new FrameDecoder();
    const wire = Buffer.concat(messages.map((m) => encode(m)));
    // Fed one byte at a time: frames must reassemble across arbitrary TCP reads.
    const bodies: Buffer[] = [];
    for (let i = 0; i < wire.length; i++) bodies.push(...frames.push(wire.subarray(i, i + 1)));
    expect(bodies.map((b) => decode(b))).toEqual(messages);
  });

  it("refuses oversized, truncated and unknown frames", () => {
    expect(() => new FrameDecoder(100).push(Buffer.from("GET / HTTP/1.1"))).toThrow(/exceeds the limit of 100/);
    const body = encode({ op: Op.Set, id: 1, key: "k", value: Uint8Array.of(1) }).subarray(4);
    expect(() => decode(body.subarray(0, body.length - 1))).toThrow(ProtocolError);
    expect(() => decode(Buffer.from([99, 0, 0, 0, 1]))).toThrow(/unknown store opcode 99/);
  });
});

describe("reductions", () => {
  it("int32 sums wrap and avg truncates toward zero", () => {
    const acc = toAccumulator("int32", Int32Array.of(2 ** 31 - 1, -7));
    accumulate("sum", acc, Int32Array.of(1, 0));
    expect(Array.from(acc)).toEqual([-(2 ** 31), -7]);
    expect(Array.from(finish("int32", "avg", Int32Array.of(-7, 7), 2))).toEqual([-3, 3]);
  });

  it("max and min propagate NaN", () => {
    const r = reduceInOrder("float32", "max", [Float32Array.of(NaN, 1), Float32Array.of(0, 2)]);
    expect(Number.isNaN(r[0])).toBe(true);
    expect(r[1]).toBe(2);
  });

  it("16-bit floats round to nearest even once, at the end", () => {
    // 1 + 2^-8 is a tie between bfloat16 neighbours 1 and 1 + 2^-7: even wins (1).
    const bf = reduceInOrder("bfloat16", "sum", [Uint16Array.of(f32ToBf16Bits(1)), Uint16Array.of(f32ToBf16Bits(2 ** -8))]);
    expect(bf16BitsToF32(bf[0])).toBe(1);
    const h = reduceInOrder("float16", "avg", [Uint16Array.of(f32ToF16Bits(1)), Uint16Array.of(f32ToF16Bits(2))]);
    expect(h[0]).toBe(f32ToF16Bits(1.5));
  });

  it("chunk bounds split odd sizes with the remainder first, empty chunks allowed", () => {
    expect(chunkBounds(10, 4)).toEqual([0, 3, 6, 8, 10]);
    expect(chunkBounds(1, 3)).toEqual([0, 1, 1, 1]);
    expect(chunkBounds(0, 2)).toEqual([0, 0, 0]);
  });

  it("fromBytes copies unaligned bytes into an aligned array", () => {
    const src = Float64Array.of(1.5, -2);
    const bytes = new Uint8Array(17);
    bytes.set(new Uint8Array(src.buffer), 1);
    expect(Array.from(fromBytes("float64", bytes.subarray(1)))).toEqual([1.5, -2]);
    expect(() => fromBytes("float32", new Uint8Array(3))).toThrow(/not a whole number of float32/);
  });
});

describe("Work and timers", () => {
  it("PromiseWork completes on success and on failure", async () => {
    const ok = new PromiseWork(Promise.resolve(5));
    expect(ok.isCompleted()).toBe(false);
    await ok.wait();
    expect(ok.isCompleted()).toBe(true);
    const bad = new PromiseWork(Promise.reject(new Error("x")));
    await expect(bad.wait()).rejects.toThrow("x");
    expect(bad.isCompleted()).toBe(true);
  });

  it("PromiseWork.synchronize() reports a finished work and refuses to guess about a pending one", async () => {
    let finish!: () => void;
    const pending = new PromiseWork(new Promise<void>((r) => (finish = r)));
    expect(() => pending.synchronize()).toThrow(/completes on the event loop and has not finished yet; await wait\(\) instead/);
    finish();
    await pending.wait();
    expect(() => pending.synchronize()).not.toThrow();
    const bad = new PromiseWork(Promise.reject(new RangeError("y")));
    await bad.wait().catch(() => {});
    expect(() => bad.synchronize()).toThrow(RangeError);
  });

  it("timeouts: validated, and never armed for delays Node cannot hold", () => {
    expect(() => checkTimeout(-5, "timeoutMs")).toThrow(/timeoutMs: got -5/);
    expect(() => checkTimeout("1s", "timeoutMs")).toThrow(/timeoutMs: got "1s"/);
    expect(checkTimeout(Infinity, "t")).toBe(Infinity);
    expect(armTimer(Infinity, () => {})).toBeUndefined();
    expect(armTimer(2 ** 32, () => {})).toBeUndefined();
    const t = armTimer(10, () => {});
    expect(t).toBeDefined();
    clearTimeout(t);
  });
});

describe("errors from the transport thread", () => {
  const roundTrip = <E extends Error>(e: E): E => fromRecord(structuredClone(toRecord(e))) as E;

  it("come back as the same class with the same message and fields", () => {
    const ctx = { op: "allReduce", group: "default", rank: 1, globalRank: 3, seq: 7 };
    const timeout = roundTrip(new CollectiveTimeoutError(ctx, 250, "data from group rank 0"));
    expect(timeout).toBeInstanceOf(CollectiveTimeoutError);
    expect(timeout.message).toBe(new CollectiveTimeoutError(ctx, 250, "data from group rank 0").message);
    expect([timeout.name, timeout.context, timeout.timeoutMs, timeout.waitingFor]).toEqual(["CollectiveTimeoutError", ctx, 250, "data from group rank 0"]);

    const lost = roundTrip(new PeerLostError(2, "the connection from global rank 2 closed unexpectedly"));
    expect(lost).toBeInstanceOf(PeerLostError);
    expect([lost.peerGlobalRank, lost.message]).toEqual([2, "the connection from global rank 2 closed unexpectedly"]);
    expect(roundTrip(new GroupAbortedError("g", 1, "why"))).toMatchObject({ group: "g", fromGlobalRank: 1, reason: "why" });
    expect(roundTrip(new RankFailureError(4, "oom", "stack"))).toMatchObject({ failingRank: 4, remoteStack: "stack" });
    expect(roundTrip(new StoreBindError("h", 29500, "EADDRINUSE", "taken"))).toMatchObject({ port: 29500, code: "EADDRINUSE" });

    const failed = roundTrip(new GroupFailedError("barrier #2 was not run", { cause: lost }));
    expect(failed).toBeInstanceOf(GroupFailedError);
    expect(failed.cause).toBeInstanceOf(PeerLostError);
    expect(roundTrip(new TypeError("t"))).toBeInstanceOf(TypeError);
  });

  it("an unknown class comes back as an Error with its name; the stack shows both threads", () => {
    class OddError extends Error {
      override readonly name = "OddError";
    }
    const odd = roundTrip(new OddError("odd"));
    expect(Object.getPrototypeOf(odd)).toBe(Error.prototype);
    expect([odd.name, odd.message, String(odd)]).toEqual(["OddError", "odd", "OddError: odd"]);
    expect(odd.stack).toMatch(/^OddError: odd\n/);
    expect(odd.stack).toContain("--- in the process group's worker thread ---");
    expect(fromRecord(toRecord("plain string"))).toMatchObject({ name: "Error", message: "plain string" });
  });
});
