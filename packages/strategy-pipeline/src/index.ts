/**
 * @fulgur/strategy-pipeline: pipeline parallelism. Schedules as data (GPipe, 1F1B, interleaved
 * 1F1B, ZB-H1), a validator and a simulator for them, text and SVG pictures, and the strategy that
 * runs them on real tensors. Importing the package registers `pipeline`, `pipeline_1f1b` and
 * `pipeline_gpipe`.
 */
import { StrategyRegistry } from "@fulgur/core";
import { registerStrategies } from "./registration";

export { PIPELINE_DEFAULTS, PipelineOptionError, parsePipelineOptions, type PipelineOptions, type ResolvedPipelineOptions } from "./api";
export { PipelineStrategy } from "./strategy";
export { PACKAGE_NAME, PIPELINE_STRATEGIES, registerStrategies, type PipelineStrategyEntry } from "./registration";
export {
  SCHEDULE_NAMES,
  channelOf,
  rankOfStage,
  type Action,
  type ActionKind,
  type CommKind,
  type ComputeKind,
  type PipelineSchedule,
  type ScheduleName,
  type ScheduleShape,
} from "./schedules/action";
export { SCHEDULES, buildSchedule } from "./schedules/index";
export { gpipe } from "./schedules/gpipe";
export { oneFOneB } from "./schedules/oneFOneB";
export { interleaved } from "./schedules/interleaved";
export { zbh1 } from "./schedules/zbh1";
export { InvalidScheduleError, assertValidSchedule, validateSchedule } from "./schedules/validate";
export { ScheduleDeadlockError, simulate, summarize, type Costs, type TimedAction, type Timeline } from "./simulator";
export { renderText, type TextRenderOptions } from "./render/text";
export { renderSvg, type SvgRenderOptions } from "./render/svg";
export { DEFAULT_COSTS, renderSchedule, type RenderScheduleInput } from "./render/schedule";
export { balancedBounds, boundsFromSplitPoints, type StageBounds } from "./partition";
export { StagedModel, findBlocks } from "./stagedModel";
export { splitBatch } from "./microBatches";

registerStrategies(StrategyRegistry);
