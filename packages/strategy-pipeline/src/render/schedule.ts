/**
 * `renderSchedule`: a named schedule, checked and simulated, drawn as text or SVG. What the CLI's
 * `fulgur pipeline show` prints, and what the guide's pictures are.
 */
import type { ScheduleName } from "../schedules/action";
import { buildSchedule } from "../schedules/index";
import { assertValidSchedule } from "../schedules/validate";
import { type Costs, simulate } from "../simulator";
import { renderSvg } from "./svg";
import { renderText } from "./text";

export interface RenderScheduleInput {
  readonly stages: number;
  readonly microBatches: number;
  readonly schedule: ScheduleName;
  readonly virtualStages?: number;
  /** Default F = B = W = 1 (an unsplit backward then costs 2). */
  readonly costs?: Costs;
}

export const DEFAULT_COSTS: Costs = Object.freeze({ forward: 1, backward: 1, weight: 1 });

export function renderSchedule(input: RenderScheduleInput, format: "text" | "svg" = "text"): string {
  const schedule = assertValidSchedule(
    buildSchedule(input.schedule, { stages: input.stages, microBatches: input.microBatches, virtualStages: input.virtualStages }),
  );
  const timeline = simulate(schedule, input.costs ?? DEFAULT_COSTS);
  if (format === "svg") return renderSvg(timeline);
  if (format === "text") return renderText(timeline);
  throw new RangeError(`renderSchedule format: got ${JSON.stringify(format)}; expected "text" or "svg"`);
}
