/**
 * A training step's device memory, simulated segment by segment (DESIGN.md decision 2 makes it
 * deterministic, so it can be predicted): forward saves each segment's activations, backward
 * walks the segments in reverse, freeing them as it allocates gradients, and the optimizer step
 * holds every gradient. A strategy describes what it holds for the whole step and what it
 * gathers and allocates around each segment; the simulation finds the moment of the peak and the
 * bytes held then, split as a plan reports them.
 *
 * [Note: the peak moment] Reported parts are those held at the peak, not each part's own
 * maximum: with one micro-batch per step, gradients do not exist yet when backward starts with
 * every activation saved, so a replicated model peaks there with no gradient bytes (or at the
 * optimizer step with no activation bytes, whichever is higher). From the second micro-batch of
 * an accumulation window on, gradients exist throughout.
 */
import type { MemoryBreakdown, MemoryPhase } from "@fulgur/core";
import type { ActivationProfile, ActivationSegment } from "@fulgur/nn";

/** Bytes held on the device from step to step. */
export interface HeldBytes {
  readonly parameters: number;
  readonly gradients: number;
  readonly optimizerState: number;
  readonly gatheredUnits: number;
  readonly communication: number;
  readonly workspace: number;
}

/** What a strategy holds around one segment of the forward pass. */
export interface SegmentMemory {
  /** Gathered while the segment computes, forward and backward (its unit, the prefetched ones, their autocast copies). */
  readonly gathered: number;
  /** Gathered from the segment's forward until its backward (units kept between them). */
  readonly keptGathered?: number;
  /** Gradient bytes its backward allocates and keeps until the optimizer step. */
  readonly gradientsKept: number;
  /** Gradient bytes held only during its backward (a sharded unit's flat buffer before the reduce-scatter). */
  readonly gradientBuffer: number;
  /** Workspace held while the segment computes, forward and backward (autocast copies that come and go with a unit). */
  readonly workspace?: number;
  /** Reduced gradients not yet added into their slice (a sharded unit's reduce-scatter output), during the segment's forward and its backward. */
  readonly reducedGradients?: { readonly forward: number; readonly backward: number };
}

export interface StepLayout {
  readonly held: HeldBytes;
  segment(s: ActivationSegment, index: number): SegmentMemory;
  /** Gradients the step allocates beyond those the segments kept (parameters no segment names). */
  readonly otherGradients: number;
  /** Bytes only the optimizer step adds (gathered gradients, unsharded state). */
  readonly optimizerWorkspace: number;
}

export interface StepPeak {
  readonly breakdown: MemoryBreakdown;
  readonly phase: MemoryPhase;
  readonly where: string;
  /** The optimizer step's moment (the peak's when it is there): what the host's own step memory is set beside. */
  readonly optimizerStep: MemoryBreakdown;
}

interface Moment {
  readonly phase: MemoryPhase;
  readonly where: string;
  readonly parts: Omit<MemoryBreakdown, "total">;
}

const total = (p: Omit<MemoryBreakdown, "total">): number =>
  p.parameters + p.gradients + p.optimizerState + p.gatheredUnits + p.communication + p.activations + p.workspace;

/** The highest moment of a step; an empty profile gives the held bytes and the optimizer step only. */
export function simulateStep(profile: ActivationProfile | null, layout: StepLayout): StepPeak {
  const { held } = layout;
  const segments = profile?.segments ?? [];
  const memory = segments.map((s, i) => layout.segment(s, i));
  const moments: Moment[] = [];
  const at = (phase: MemoryPhase, where: string, extra: { gradients?: number; gathered?: number; activations?: number; workspace?: number }): void => {
    moments.push({
      phase,
      where,
      parts: {
        parameters: held.parameters,
        gradients: held.gradients + (extra.gradients ?? 0),
        optimizerState: held.optimizerState,
        gatheredUnits: held.gatheredUnits + (extra.gathered ?? 0),
        communication: held.communication,
        activations: extra.activations ?? 0,
        workspace: held.workspace + (extra.workspace ?? 0),
      },
    });
  };
  let saved = 0;
  let kept = 0;
  segments.forEach((s, i) => {
    at("forward", `forward of ${s.name}`, {
      gradients: memory[i].reducedGradients?.forward ?? 0,
      gathered: memory[i].gathered + kept,
      activations: saved + s.savedBytes + s.forwardTransientBytes,
      workspace: memory[i].workspace,
    });
    saved += s.savedBytes;
    kept += memory[i].keptGathered ?? 0;
  });
  let gradients = 0;
  for (let i = segments.length - 1; i >= 0; i--) {
    const s = segments[i];
    const m = memory[i];
    gradients += m.gradientsKept;
    at("backward", `backward of ${s.name}`, {
      gradients: gradients + m.gradientBuffer + (m.reducedGradients?.backward ?? 0) + (i === 0 ? layout.otherGradients : 0),
      gathered: m.gathered + kept,
      activations: saved + s.backwardTransientBytes,
      workspace: m.workspace,
    });
    saved -= s.savedBytes;
    kept -= m.keptGathered ?? 0;
  }
  at("optimizer", "optimizer step", { gradients: gradients + layout.otherGradients, workspace: layout.optimizerWorkspace });
  let best = moments[0];
  for (const m of moments) if (total(m.parts) > total(best.parts)) best = m;
  const step = moments[moments.length - 1].parts;
  return {
    breakdown: Object.freeze({ ...best.parts, total: total(best.parts) }),
    phase: best.phase,
    where: best.where,
    optimizerStep: Object.freeze({ ...step, total: total(step) }),
  };
}
