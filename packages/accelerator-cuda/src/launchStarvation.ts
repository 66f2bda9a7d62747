/**
 * FULGUR_CUDA_STARVATION=1: at every kernel launch and cuBLASLt call, asks whether the stream had
 * already run everything queued before it (cudaStreamQuery). If it had, the GPU sat idle waiting
 * for the host: the host, not the GPU, set the pace there. At exit it prints one JSON line to
 * stderr: launches, how many found the stream idle, and the kernels that most often did. This says
 * where a step's wall time over its GPU time goes (host work between launches, or a sync before
 * them), which a per-kernel profiler (ncu) cannot see. Off unless set: a launch then pays one null
 * check. One query costs about a microsecond, so the probe itself barely moves what it measures.
 */
import type { Ptr } from "./ffi/cudart";
import { lazyBindings } from "./ffi/libraries";

const CUDA_SUCCESS = 0;

/** What the probe found: launches, those that found their stream idle, and the kernels that most often did. */
export interface StarvationReport {
  readonly launches: number;
  readonly idle: number;
  readonly top: readonly { readonly kernel: string; readonly launches: number; readonly idle: number }[];
}

/** A probe over a stream query (cudaStreamQuery: 0 when the stream has nothing left to run). */
export function createStarvationProbe(query: (stream: Ptr) => number, topN = 30): { probe(kernel: string, stream: Ptr): void; report(): StarvationReport } {
  let launches = 0;
  let idle = 0;
  const byKernel = new Map<string, { launches: number; idle: number }>();
  return {
    probe(kernel, stream) {
      const wasIdle = query(stream) === CUDA_SUCCESS;
      // cuBLASLt names carry the whole shape; the product's dimensions are enough to attribute.
      const key = kernel.startsWith("cublasLt:") ? kernel.split(":").slice(0, 2).join(":") : kernel;
      const c = byKernel.get(key) ?? { launches: 0, idle: 0 };
      c.launches++;
      launches++;
      if (wasIdle) {
        c.idle++;
        idle++;
      }
      byKernel.set(key, c);
    },
    report() {
      const top = [...byKernel.entries()]
        .sort((a, b) => b[1].idle - a[1].idle)
        .slice(0, topN)
        .map(([kernel, c]) => ({ kernel, ...c }));
      return { launches, idle, top };
    },
  };
}

const query = lazyBindings<{ cudaStreamQuery(stream: Ptr): number }>("cudart", {
  cudaStreamQuery: "int cudaStreamQuery(void *stream)",
});

function start(flag: string | undefined): ReturnType<typeof createStarvationProbe> | null {
  if (flag !== "1") return null;
  const p = createStarvationProbe((stream) => query().cudaStreamQuery(stream));
  process.on("exit", () => process.stderr.write(`${JSON.stringify({ starvation: p.report() })}\n`));
  return p;
}

const active = start(process.env.FULGUR_CUDA_STARVATION);

/** Notes whether `stream` was idle when `kernel` was about to be queued on it (when the probe is on). */
export function probeStarvation(kernel: string, stream: Ptr): void {
  if (active !== null) active.probe(kernel, stream);
}
