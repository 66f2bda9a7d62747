/** Every schedule by name. */
import type { PipelineSchedule, ScheduleName, ScheduleShape } from "./action";
import { gpipe } from "./gpipe";
import { interleaved } from "./interleaved";
import { oneFOneB } from "./oneFOneB";
import { zbh1 } from "./zbh1";

export const SCHEDULES: Readonly<Record<ScheduleName, (shape: ScheduleShape) => PipelineSchedule>> = Object.freeze({
  gpipe,
  "1f1b": oneFOneB,
  interleaved,
  "zb-h1": zbh1,
});

export function buildSchedule(name: ScheduleName, shape: ScheduleShape): PipelineSchedule {
  const make = SCHEDULES[name];
  if (!make) throw new RangeError(`schedule: got ${JSON.stringify(name)}; expected one of ${Object.keys(SCHEDULES).join(", ")}`);
  return make(shape);
}
