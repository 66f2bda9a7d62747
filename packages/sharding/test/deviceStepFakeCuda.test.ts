/**
 * [Note: the step streamed through the device] (deviceStep.ts) on the CUDA backend's streams,
 * against the fake CUDA libraries (fixtures/fakeCudaStreams.ts): what each stream queues, in what
 * order, when six pieces of one parameter go through the device with four in flight. Values are
 * not checked here (the fake runs no kernel): deviceStep.test.ts checks them on the CPU backend.
 * - each piece's four tensors go up on the upload stream, and its update (a launch on compute)
 *   waits for all four copies;
 * - its master and moments come down on the host copy stream, after an event compute recorded
 *   after that launch;
 * - memory stays at four pieces by stream order alone: before piece k + 4's uploads may start
 *   (they wait for an event compute records at their allocation), compute has waited for piece
 *   k's downloads (the free of its tensors).
 */
import { type Tensor, fromHost, sharedHostMemory } from "@fulgur/tensor";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { DeviceStreamedStep, STREAMED_PIECES_IN_FLIGHT } from "../src/deviceStep";
import { hasCc, useFakeCuda } from "./fixtures/fakeCudaStreams";

const PIECE = 4096;
const PIECES = 6;
const SIZES = { FULGUR_STREAMED_STEP_MIN_ELEMENTS: "1000", FULGUR_STREAMED_STEP_PIECE_ELEMENTS: String(PIECE) };

describe.skipIf(!hasCc)("the step streamed through the device, on the CUDA backend's streams (fake CUDA)", () => {
  const fake = useFakeCuda();
  beforeEach(() => void Object.assign(process.env, SIZES));
  afterEach(() => {
    for (const k of Object.keys(SIZES)) delete process.env[k];
  });

  it(`${PIECES} pieces, ${STREAMED_PIECES_IN_FLIGHT} in flight: uploads, update and downloads in stream order, and the oldest piece's downloads before the next piece's memory`, () => {
    const ctx = fake.cuda.cudaBackend("cuda:0").ctx;
    const [compute, uploads, downloads] = [ctx.compute.handle, ctx.uploads.handle, ctx.hostCopies.handle];
    const n = PIECES * PIECE;
    const host = (v: number): Tensor => sharedHostMemory(() => fromHost(new Float32Array(n).fill(v), [n], "float32"));
    const [p, g, m, v] = [host(1), host(0.5), host(0), host(0)];
    const from = { compute: fake.streamLog(compute).n, uploads: fake.streamLog(uploads).n, downloads: fake.streamLog(downloads).n };
    const step = new DeviceStreamedStep("cuda:0", 1, () => true);
    const hyper = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, step: 1 };
    expect(step.route({ params: [p], grads: [g], expAvg: [m], expAvgSq: [v], hyper }, () => undefined)).toBe(true);
    step.unpinAll();
    expect(step.streamedElements).toBe(n);

    const computeLog = fake.streamLog(compute, from.compute).entries;
    const upLog = fake.streamLog(uploads, from.uploads).entries;
    const downLog = fake.streamLog(downloads, from.downloads).entries;
    // Uploads: per tensor, a wait (for compute at its allocation), the copy, and its ready event.
    const ups = chunks(upLog, 3);
    expect(ups.map((u) => u.map((e) => e.op).join(" "))).toEqual(Array(4 * PIECES).fill("wait memcpy record"));
    // Downloads: per tensor (master, two moments), a wait for compute, the copy, its done event.
    const downs = chunks(downLog, 3);
    expect(downs.map((d) => d.map((e) => e.op).join(" "))).toEqual(Array(3 * PIECES).fill("wait memcpy record"));
    // The updates: compute's launches are the pieces' fused AdamW, one each.
    const launches = computeLog.flatMap((e, i) => (e.op === "launch" ? [i] : []));
    expect(launches).toHaveLength(PIECES);
    const at = (op: string, event: bigint): number => computeLog.findIndex((e) => e.op === op && e.a === event);
    for (let k = 0; k < PIECES; k++) {
      const mine = ups.slice(4 * k, 4 * k + 4);
      // The update waits for its four copies, and for no later piece's.
      for (const u of mine) expect(at("wait", u[2].a), `piece ${k}: compute waits for its upload`).toBeLessThan(launches[k]);
      if (k + 1 < PIECES) for (const u of ups.slice(4 * (k + 1), 4 * (k + 2))) expect(at("wait", u[2].a)).toBeGreaterThan(launches[k]);
      // Its downloads wait for events compute recorded after the update.
      for (const d of downs.slice(3 * k, 3 * k + 3)) {
        const recorded = at("record", d[0].a);
        expect(recorded, `piece ${k}: downloads follow its update`).toBeGreaterThan(launches[k]);
        if (k + 1 < PIECES) expect(recorded).toBeLessThan(launches[k + 1]);
      }
      // Four in flight: compute waits for piece k's downloads (the free of its tensors) before it
      // records the events piece k + 4's uploads wait for.
      if (k + STREAMED_PIECES_IN_FLIGHT < PIECES) {
        const nextUploadsStart = Math.min(...ups.slice(4 * (k + STREAMED_PIECES_IN_FLIGHT), 4 * (k + STREAMED_PIECES_IN_FLIGHT + 1)).map((u) => at("record", u[0].a)));
        for (const d of downs.slice(3 * k, 3 * k + 3)) {
          const freed = at("wait", d[2].a);
          expect(freed, `piece ${k}: compute waits for its download`).toBeGreaterThan(launches[k]);
          expect(freed, `piece ${k}'s download before piece ${k + STREAMED_PIECES_IN_FLIGHT}'s memory`).toBeLessThan(nextUploadsStart);
        }
      }
    }
  });
});

function chunks<T>(list: readonly T[], size: number): T[][] {
  return Array.from({ length: Math.ceil(list.length / size) }, (_, i) => list.slice(i * size, i * size + size));
}
