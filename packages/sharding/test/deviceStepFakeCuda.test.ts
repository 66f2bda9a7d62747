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
    // Event handles are reused once destroyed, so each is looked for where program order puts it:
    // piece k's calls fall between the launches of pieces k - 1 and k + 1.
    const find = (op: string, event: bigint, from: number, to: number): number => {
      for (let i = from + 1; i < to; i++) if (computeLog[i].op === op && computeLog[i].a === event) return i;
      return -1;
    };
    const launchOf = (k: number): number => (k < 0 ? -1 : k >= PIECES ? computeLog.length : launches[k]);
    for (let k = 0; k < PIECES; k++) {
      // The update waits for its four copies (each ready event waited for before the launch).
      for (const u of ups.slice(4 * k, 4 * k + 4)) expect(find("wait", u[2].a, launchOf(k - 1), launchOf(k)), `piece ${k}: compute waits for its upload`).toBeGreaterThanOrEqual(0);
      // Its downloads wait for events compute recorded after the update, before the next piece's.
      for (const d of downs.slice(3 * k, 3 * k + 3)) expect(find("record", d[0].a, launchOf(k), launchOf(k + 1)), `piece ${k}: downloads follow its update`).toBeGreaterThanOrEqual(0);
      // Four in flight: compute waits for piece k's downloads (the free of its tensors) before it
      // records the events piece k + 4's uploads wait for (at their allocation).
      const later = k + STREAMED_PIECES_IN_FLIGHT;
      if (later < PIECES) {
        const allocations = ups.slice(4 * later, 4 * later + 4).map((u) => find("record", u[0].a, launchOf(later - 1), launchOf(later)));
        expect(Math.min(...allocations), `piece ${later}'s uploads wait for events compute recorded`).toBeGreaterThanOrEqual(0);
        for (const d of downs.slice(3 * k, 3 * k + 3)) {
          const freed = find("wait", d[2].a, launchOf(k), Math.min(...allocations));
          expect(freed, `piece ${k}'s downloads waited for by compute before piece ${later}'s memory`).toBeGreaterThanOrEqual(0);
        }
      }
    }
  });
});

function chunks<T>(list: readonly T[], size: number): T[][] {
  return Array.from({ length: Math.ceil(list.length / size) }, (_, i) => list.slice(i * size, i * size + size));
}
