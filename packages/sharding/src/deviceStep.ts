/**
 * [Note: the step streamed through the device] An offloaded optimizer step runs on the CPU's
 * threads, and is bound by the host's memory bandwidth: AdamW reads and writes 28 bytes a
 * parameter, about 74 GB/s on a 16-core H200 host, 2.5 s a step at 6.71B parameters. The copy
 * engines reach host memory beside the cores (measured on that host: threads 62.5 GB/s and copies
 * 2 × 38.2 GB/s at once, 139 GB/s in all, against 97 GB/s for the threads alone;
 * scripts/gpu/dma-beside-cpu.mjs). So a share of the offloaded parameters is updated on the GPU:
 * its master slice, gradient slice and moments go up in pieces, the backend's fused AdamW updates
 * them there, and the slice and moments come back down into the same host memory, while the
 * threads update the rest. The state still lives on the host between steps; the device holds only
 * STREAMED_PIECES_IN_FLIGHT pieces at a time. A low-precision copy the step writes beside (an
 * offloaded unit's slice in its compute dtype, [Note: uploads in the compute dtype] in flatUnit.ts)
 * is written on the device with the update and comes down too.
 *
 * The CPU's share is handed to the worker threads first, then the device's is queued (copies and
 * kernels run on their own), so the two run together. Memory stays bounded by stream order alone:
 * the oldest piece in flight is freed before the next is allocated, and on CUDA the free waits, on
 * the device, for that piece's downloads. Each element's update depends on that
 * element alone, so which side updates it changes nothing but rounding (the CPU backend gives the
 * same bits, which the tests check through a copy to a second tensor).
 */
import { type AdamWRoute, type FusedAdamWCall, type HostArray, type PendingRead, type Tensor, annotateOutOfMemory, empty, fusedAdamWBeside, getBackend, noGrad, settleWork } from "@fulgur/tensor";

/** Elements of one piece (each of the four tensors): 64 MiB a tensor in fp32, long enough for full-speed copies. */
export const STREAMED_PIECE_ELEMENTS = 1 << 24;
/** Pieces on the device at once: enough for uploads, the update and downloads of different pieces to overlap. */
export const STREAMED_PIECES_IN_FLIGHT = 4;
/** Parameters smaller than this stay with the CPU's share (a launch and seven copies cost more than they save). */
export const STREAMED_MIN_ELEMENTS = 1 << 20;

function fromEnv(name: string, fallback: number, what: string): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new RangeError(`${name}: got ${JSON.stringify(raw)}; expected a positive integer (${what})`);
  return n;
}

/**
 * The piece size and the smallest parameter streamed: the constants above, or
 * FULGUR_STREAMED_STEP_PIECE_ELEMENTS and FULGUR_STREAMED_STEP_MIN_ELEMENTS (the tests' small
 * models stream through them).
 */
export function streamedStepSizes(): { readonly pieceElements: number; readonly minElements: number } {
  return {
    pieceElements: fromEnv("FULGUR_STREAMED_STEP_PIECE_ELEMENTS", STREAMED_PIECE_ELEMENTS, "elements of each piece the optimizer step streams through the device"),
    minElements: fromEnv("FULGUR_STREAMED_STEP_MIN_ELEMENTS", STREAMED_MIN_ELEMENTS, "the smallest parameter the optimizer step streams through the device"),
  };
}

/**
 * Device bytes the streamed step holds at most: fp32 master, gradient and two moments per piece in
 * flight, and `copyBytes` a parameter for a low-precision copy written beside.
 */
export function streamedStepBytes(largestParameter: number, copyBytes = 0): number {
  const { pieceElements, minElements } = streamedStepSizes();
  if (largestParameter < minElements) return 0;
  return STREAMED_PIECES_IN_FLIGHT * Math.min(pieceElements, largestParameter) * (4 * 4 + copyBytes);
}

interface Piece {
  /** What went up for this piece (freed when it leaves the flight), not a gradient read in place. */
  readonly owned: Tensor[];
  readonly reads: PendingRead[];
}

const flatRange = (t: Tensor, start: number, length: number): Tensor => t.reshape([t.numel]).narrow(0, start, length);

/**
 * [Note: gradients beside the streamed step] The units whose step the engine streams through the
 * device keep their gradient slices there from backward to the step (FlatUnit.gradsOnDevice):
 * a gradient that comes down after backward only to go up again in the step costs 4 bytes a
 * parameter each way over the bus, and the host's memory traffic is what bounds an offloaded step.
 * Their optimizer parameters' gradients are device tensors; the step reads them in place. The
 * price is their gradient slices' memory on the device, which the estimate counts.
 */

/** A range of one entry of the call, as flat views of its four tensors. */
function range(call: FusedAdamWCall, i: number, start: number, length: number): [Tensor, Tensor, Tensor, Tensor] {
  return [flatRange(call.params[i], start, length), flatRange(call.grads[i], start, length), flatRange(call.expAvg[i], start, length), flatRange(call.expAvgSq[i], start, length)];
}

/** The entry's low-precision copy over the same range, or null. */
function copyRange(call: FusedAdamWCall, i: number, start: number, length: number): Tensor | null {
  const lp = call.lowPrecision?.[i] ?? null;
  return lp && (start > 0 || length < lp.numel) ? flatRange(lp, start, length) : lp;
}

export class DeviceStreamedStep {
  /** Host buffers this step page-locked (one array per buffer), unpinned by `unpinAll`. */
  private readonly pinned = new Map<ArrayBufferLike, HostArray>();
  /** Elements updated on the device so far (what tests and the step trace read). */
  streamedElements = 0;
  /**
   * Host time of the routed calls since the step trace last took it (FULGUR_TRACE_STEP): queueing
   * the device's pieces (the CPU's share running beside), the wait for the CPU's share after it, and
   * the wait for the last downloads after that.
   */
  private timings = { queueMs: 0, cpuMs: 0, waitMs: 0 };
  private readonly sizes = streamedStepSizes();

  /**
   * `share`: the fraction of the streamable elements of each call updated on the device (0 to 1).
   * `streamable`: whether a parameter's state lives in host memory between steps (an offloaded unit
   * not on disk).
   */
  constructor(
    readonly device: string,
    readonly share: number,
    private readonly streamable: (p: Tensor) => boolean,
  ) {
    if (!(share >= 0 && share <= 1)) throw new RangeError(`streamed optimizer step: share got ${share}; expected a number from 0 to 1`);
  }

  readonly route: AdamWRoute = (call, onBackend) => {
    // A gradient already on the device (kept there for this step) can only be used there.
    const gradHere = (i: number): boolean => this.alreadyThere(call.grads[i]);
    const eligible = (i: number): boolean => {
      const ts = [call.params[i], call.expAvg[i], call.expAvgSq[i]];
      const g = call.grads[i];
      const lp = call.lowPrecision?.[i] ?? null;
      return (
        (gradHere(i) || call.params[i].numel >= this.sizes.minElements) &&
        ts.every((t) => t.device === "cpu" && t.dtype === "float32" && t.isContiguous()) &&
        (g.device === "cpu" || gradHere(i)) &&
        g.dtype === "float32" &&
        g.isContiguous() &&
        (lp === null || (lp.device === "cpu" && lp.isContiguous())) &&
        (gradHere(i) || this.streamable(call.params[i]))
      );
    };
    const candidates = call.params.map((_, i) => i).filter(eligible);
    const stranded = call.params.findIndex((_, i) => gradHere(i) && !candidates.includes(i));
    if (stranded >= 0) throw new Error(`streamed optimizer step: parameter ${stranded} of the call has its gradient on ${this.device} but cannot be updated there (its master, moments or copy are not contiguous fp32 host tensors)`);
    const forced = candidates.filter(gradHere);
    const others = candidates.filter((i) => !gradHere(i));
    // Parameters whose gradients stayed on the device go there whole; the share applies to the rest.
    let quota = forced.reduce((n, i) => n + call.params[i].numel, 0) + Math.round(this.share * others.reduce((n, i) => n + call.params[i].numel, 0));
    if (quota === 0) return false;
    // The device takes those whole, then the first of the rest in the call's order; the CPU the remainder.
    const toDevice: { i: number; length: number }[] = [];
    const rest: { i: number; start: number; length: number }[] = [];
    const isCandidate = new Set(candidates);
    for (const i of [...forced, ...call.params.map((_, k) => k).filter((k) => !gradHere(k))]) {
      const p = call.params[i];
      const take = isCandidate.has(i) ? Math.min(quota, p.numel) : 0;
      quota -= take;
      if (take > 0) toDevice.push({ i, length: take });
      if (take < p.numel) rest.push({ i, start: take, length: p.numel - take });
    }
    noGrad(() => {
      const pieces: Piece[] = [];
      let mark = performance.now();
      const lap = (key: keyof DeviceStreamedStep["timings"]): void => {
        const now = performance.now();
        this.timings[key] += now - mark;
        mark = now;
      };
      // The CPU's share goes to the worker threads first, to run while the device's pieces are
      // queued: queueing waits whenever a piece's memory is reused, so the share started after it
      // ran after the device's, not beside it (measured at 6.71B: 1.0 s queueing, then 1.5 s).
      const cpu = rest.map(({ i, start, length }) => (start === 0 ? [call.params[i], call.grads[i], call.expAvg[i], call.expAvgSq[i]] : range(call, i, start, length)));
      const cpuCall: FusedAdamWCall = {
        params: cpu.map((r) => r[0]),
        grads: cpu.map((r) => r[1]),
        expAvg: cpu.map((r) => r[2]),
        expAvgSq: cpu.map((r) => r[3]),
        hyper: call.hyper,
        lowPrecision: call.lowPrecision && rest.map(({ i, start, length }) => copyRange(call, i, start, length)),
      };
      const cpuWork = fusedAdamWBeside(cpuCall, onBackend);
      let cpuWaited = false;
      try {
        for (const { i, length } of toDevice) {
          this.pin(call, i);
          for (let start = 0; start < length; start += this.sizes.pieceElements) {
            // The oldest piece goes first: its memory is what the next one is given.
            if (pieces.length >= STREAMED_PIECES_IN_FLIGHT) this.free(pieces[pieces.length - STREAMED_PIECES_IN_FLIGHT]);
            try {
              pieces.push(this.streamPiece(call, i, start, Math.min(this.sizes.pieceElements, length - start)));
            } catch (err) {
              annotateOutOfMemory(err, { phase: "optimizer", where: "a piece of the offloaded optimizer step on its way through the device (offloadStepShare; a smaller FULGUR_STREAMED_STEP_PIECE_ELEMENTS needs less)" });
              throw err;
            }
          }
        }
        lap("queueMs");
        cpuWaited = true;
        cpuWork.wait();
        lap("cpuMs");
      } finally {
        // The threads' share uses the host tensors until it ends, also when queueing failed.
        if (!cpuWaited) settleWork(cpuWork);
        // The host's values are complete only once every download is in.
        for (const piece of pieces) {
          for (const read of piece.reads) read.wait();
          this.free(piece);
        }
        lap("waitMs");
      }
    });
    return true;
  };

  /**
   * Sends one range up, updates it there and starts its way back down into the same host memory,
   * with the low-precision copy written beside the update (made on the device, brought down).
   */
  private streamPiece(call: FusedAdamWCall, i: number, start: number, length: number): Piece {
    const host = range(call, i, start, length);
    const lp = copyRange(call, i, start, length);
    // On the CPU backend (the tests' device) `to` would return the tensor itself: copy, so the
    // update runs on memory of its own and must come back as a GPU's does.
    const onDevice: Tensor[] = [];
    // Ours to free: what went up (a gradient kept on the device is its unit's, read in place).
    const owned: Tensor[] = [];
    let lpOnDevice: Tensor | null = null;
    try {
      for (const [k, t] of host.entries()) {
        if (k === 1 && this.alreadyThere(t)) {
          onDevice.push(t);
          continue;
        }
        const up = (t.device === this.device ? t.clone() : t.to(this.device)).untrack();
        onDevice.push(up);
        owned.push(up);
      }
      lpOnDevice = lp && empty([length], { dtype: lp.dtype, device: this.device }).untrack();
    } catch (err) {
      // What went up before the failure is freed here: the piece never joins those in flight.
      for (const t of owned) t.dispose();
      throw err;
    }
    const backend = getBackend(this.device);
    backend.adamw([onDevice[0]], [onDevice[1]], [onDevice[2]], [onDevice[3]], call.hyper, lpOnDevice ? [lpOnDevice] : undefined);
    this.streamedElements += length;
    const reads: PendingRead[] = [];
    const back: [Tensor, Tensor][] = [0, 2, 3].map((k) => [onDevice[k], host[k]]);
    if (lp && lpOnDevice) {
      owned.push(lpOnDevice);
      back.push([lpOnDevice, lp]);
    }
    for (const [from, out] of back) {
      if (backend.readIntoAsync && out.backend.readShared) reads.push(backend.readIntoAsync(from, out.backend.readShared(out)));
      else out.copy_(from);
    }
    return { owned, reads };
  }

  /** Whether `t` is on the device already (a gradient kept there), so nothing goes up for it. */
  private alreadyThere(t: Tensor): boolean {
    return this.device !== "cpu" && t.device === this.device;
  }

  /** Frees a piece's device tensors (idempotent); on CUDA the free waits, on the device, for its downloads. */
  private free(piece: Piece): void {
    for (const t of piece.owned.splice(0)) t.dispose();
  }

  /** Page-locks the host memory of entry `i`'s tensors (its copy too), once per buffer, so their copies are direct DMA. */
  private pin(call: FusedAdamWCall, i: number): void {
    const backend = getBackend(this.device);
    if (!backend.pinHost) return;
    for (const t of [call.params[i], call.grads[i], call.expAvg[i], call.expAvgSq[i], call.lowPrecision?.[i] ?? null]) {
      if (!t || t.device !== "cpu") continue;
      const array = t.backend.readShared?.(t);
      if (!array || this.pinned.has(array.buffer)) continue;
      backend.pinHost(array);
      this.pinned.set(array.buffer, array);
    }
  }

  /** The host time split since the last call (see `timings`), starting the next count from zero. */
  takeTimings(): { readonly queueMs: number; readonly cpuMs: number; readonly waitMs: number } {
    const t = this.timings;
    this.timings = { queueMs: 0, cpuMs: 0, waitMs: 0 };
    return t;
  }

  /** Unpins what this step pinned (the engine's teardown, and a load that replaced the optimizer state). */
  unpinAll(): void {
    const backend = getBackend(this.device);
    for (const array of this.pinned.values()) backend.unpinHost?.(array);
    this.pinned.clear();
  }
}
