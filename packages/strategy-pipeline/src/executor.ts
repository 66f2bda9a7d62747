/**
 * Runs one rank's action list on real tensors: forwards through the staged model, backwards with
 * the gradient received from the next stage, activations and gradients exchanged with send/recv on
 * the pipeline group. Receives block where they stand in the list (`synchronize()`, decision 14);
 * sends are issued and left in flight, and settled before the batch returns, so two ranks sending
 * to each other never wait on each other. In schedules with W actions (ZB-H1), B is the input pass
 * of a split backward (@fulgur/tensor's `deferWeightGradients`): it computes the gradient of the
 * stage's input, which is sent upstream, and leaves the weights' products for W, which runs them
 * when the schedule has nothing else to do ([Note: the weight pass] in the tensor package).
 *
 * [Note: activation headers] A receiving stage does not know the shape of what comes (the micro-
 * batch's last one may be smaller, a model may change widths), so each activation is preceded on
 * its channel by a small int32 header: dtype, rank, dimensions. Gradients need none: a gradient has
 * the shape and dtype of the receiver's own output.
 */
import type { ProcessGroup, Work } from "@fulgur/core";
import {
  DTYPES,
  type DType,
  type DeferredWeightGradients,
  type Tensor,
  deferWeightGradients,
  fromHost,
  noGrad,
  zeros,
} from "@fulgur/tensor";
import {
  type Action,
  type PipelineSchedule,
  channelOf,
  rankOfStage,
} from "./schedules/action";
import type { TimedAction } from "./simulator";
import type { StagedModel } from "./stagedModel";

const HEADER = 2 + 8;

export interface RunInput {
  readonly schedule: PipelineSchedule;
  /** This rank's place in the pipeline group. */
  readonly rank: number;
  readonly group: ProcessGroup;
  readonly model: StagedModel;
  readonly device: string;
  readonly microBatches: readonly unknown[];
  /** The user's training step on a micro-batch: its loss (on the last stage). */
  readonly trainingStep: (microBatch: unknown) => Tensor;
  /** Multiplies each micro-batch loss before backward: 1 / (micro-batches · loss divisor). */
  readonly lossScale: number;
  /** Backward of a scaled loss through the precision (loss scaling for fp16). */
  readonly backwardLoss: (loss: Tensor) => void;
}

export interface RunResult {
  /** Sum of the micro-batch losses (unscaled), on the rank holding the last stage; else null. */
  readonly lossSum: Tensor | null;
  /** This rank's compute actions with wall-clock start and end, in ms since the epoch. */
  readonly timeline: TimedAction[];
}

const now = () => performance.timeOrigin + performance.now();

export function runActions(input: RunInput): RunResult {
  const { schedule, rank, group, model, device } = input;
  const p = schedule.stages;
  const last = p * schedule.virtualStages - 1;
  const key = (mb: number, s: number) => `${mb}:${s}`;
  const inputs = new Map<string, Tensor>();
  const outputs = new Map<string, Tensor>();
  const grads = new Map<string, Tensor>();
  const weightPasses = new Map<string, DeferredWeightGradients>();
  const inFlight: { work: Work; tensor: Tensor }[] = [];
  const timeline: TimedAction[] = [];
  let lossSum: Tensor | null = null;

  const send = (t: Tensor, a: Action) => {
    const { tag } = channelOf(a);
    const tensor = noGrad(() => t.detach().contiguous());
    inFlight.push({ work: group.send(tensor, a.peer!, tag), tensor });
  };
  const recv = (t: Tensor, a: Action) =>
    group.recv(t, a.peer!, channelOf(a).tag).synchronize();
  const timed = (a: Action, fn: () => void) => {
    const start = now();
    fn();
    timeline.push({
      kind: a.kind as "F" | "B" | "W",
      microBatch: a.microBatch,
      stage: a.stage,
      start,
      end: now(),
    });
  };

  try {
    for (const a of schedule.ranks[rank]) {
      const k = key(a.microBatch, a.stage);
      switch (a.kind) {
        case "recv_act": {
          const header = zeros([HEADER], { dtype: "int32" });
          recv(header, a);
          const h = Array.from(header.toHost() as Int32Array);
          const dtype = DTYPES[h[0]] as DType;
          const t = zeros(h.slice(2, 2 + h[1]), { dtype, device });
          recv(t, a);
          inputs.set(k, t.requiresGrad_(true));
          break;
        }
        case "send_act": {
          const out = outputs.get(k)!;
          const h = new Int32Array(HEADER);
          h[0] = DTYPES.indexOf(out.dtype);
          h[1] = out.ndim;
          out.shape.forEach((d, i) => (h[2 + i] = d));
          send(fromHost(h, [HEADER], "int32"), a);
          send(out, a);
          break;
        }
        case "F":
          timed(a, () => {
            // A neighbouring stage on this rank hands its output over locally (p = 1 with virtual stages).
            let x = inputs.get(k) ?? null;
            if (!x && a.stage > 0 && rankOfStage(a.stage - 1, p) === rank) {
              x = noGrad(() =>
                outputs.get(key(a.microBatch, a.stage - 1))!.detach()
              ).requiresGrad_(true);
              inputs.set(k, x);
            }
            const out = model.forward(a.stage, x, () =>
              input.trainingStep(input.microBatches[a.microBatch])
            );
            if (a.stage === last) {
              const l = noGrad(() => out.detach().cast("float32").reshape([1]));
              lossSum = lossSum ? noGrad(() => lossSum!.add(l)) : l;
            }
            outputs.set(k, out);
          });
          break;
        case "recv_grad": {
          const out = outputs.get(k)!;
          const g = zeros(out.shape, { dtype: out.dtype, device });
          recv(g, a);
          grads.set(k, g);
          break;
        }
        case "B":
          timed(a, () => {
            const out = outputs.get(k)!;
            const backward = () => {
              if (a.stage === last) input.backwardLoss(out.mul(input.lossScale));
              else {
                const g =
                  grads.get(k) ??
                  inputs.get(key(a.microBatch, a.stage + 1))?.grad;
                if (!g)
                  throw new Error(
                    `pipeline: no gradient for micro-batch ${a.microBatch} of stage ${a.stage}`
                  );
                out.backward(g);
              }
            };
            if (schedule.splitBackward) {
              // The stage's input gradient now (it is sent upstream); the weights' in W.
              const x = inputs.get(k);
              weightPasses.set(k, deferWeightGradients(backward, x ? [x] : []));
            } else backward();
            if (a.stage !== last) out.dispose();
            outputs.delete(k);
            grads.get(k)?.dispose();
            grads.delete(k);
          });
          break;
        case "send_grad": {
          const x = inputs.get(k)!;
          send(
            x.grad ?? noGrad(() => zeros(x.shape, { dtype: x.dtype, device })),
            a
          );
          // Its gradient is on its way (the send holds its own view): the received activation and
          // its gradient are done with here. Kept, they grew every step by what the rank received.
          inputs.delete(k);
          x.grad?.dispose();
          x.grad = null;
          x.dispose();
          break;
        }
        case "W":
          timed(a, () => {
            const pass = weightPasses.get(k);
            if (!pass) throw new Error(`pipeline: W before B for micro-batch ${a.microBatch} of stage ${a.stage}`);
            weightPasses.delete(k);
            pass.run();
          });
          break;
      }
    }
    for (const f of inFlight) f.work.synchronize();
  } finally {
    for (const pass of weightPasses.values()) pass.dispose();
    // Activations are untracked (see StagedModel.forward): those of a failed batch are freed here.
    for (const [k, out] of outputs) if (!k.endsWith(`:${last}`)) out.dispose();
  }
  return { lossSum, timeline };
}
