/** `fulgur pipeline show`: a pipeline schedule, checked and simulated, drawn as text or SVG. */
import { Command, Option } from "commander";
import type { CliContext } from "../context";
import { UsageError } from "../errors";
import { tryImport } from "../packages";
import { oneOf, positiveInt } from "../parsers";

const SCHEDULES = ["gpipe", "1f1b", "interleaved", "zb-h1"] as const;
const FORMATS = ["text", "svg"] as const;

type Render = (input: { stages: number; microBatches: number; schedule: string; virtualStages?: number }, format: string) => string;

interface ShowOptions {
  stages: number;
  microBatches: number;
  schedule: (typeof SCHEDULES)[number];
  virtualStages?: number;
  format: (typeof FORMATS)[number];
}

export function pipelineCommand(ctx: CliContext): Command {
  const pipeline = new Command("pipeline").description("pipeline-parallel schedules");
  pipeline
    .command("show")
    .description("draw a schedule's timeline (F = B = W = 1 time unit) and its bubble")
    .addOption(new Option("--stages <n>", "pipeline ranks").argParser(positiveInt("pipeline ranks")).makeOptionMandatory())
    .addOption(new Option("--micro-batches <n>", "micro-batches per batch").argParser(positiveInt("micro-batches")).makeOptionMandatory())
    .addOption(new Option("--schedule <name>", "gpipe, 1f1b, interleaved or zb-h1 (default 1f1b)").argParser(oneOf(SCHEDULES)))
    .addOption(new Option("--virtual-stages <n>", "stages per rank (interleaved)").argParser(positiveInt("stages per rank")))
    .addOption(new Option("--format <format>", "text or svg (default text)").argParser(oneOf(FORMATS)))
    .addHelpText("after", "\nExamples:\n  $ fulgur pipeline show --stages 4 --micro-batches 8 --schedule zb-h1\n  $ fulgur pipeline show --stages 4 --micro-batches 8 --schedule interleaved --virtual-stages 2 --format svg > 1f1b.svg")
    .action(async (o: ShowOptions) => {
      const loaded = await tryImport("@fulgur/strategy-pipeline");
      if (loaded.status !== "loaded") throw new UsageError(`fulgur pipeline show needs @fulgur/strategy-pipeline: ${loaded.reason}`);
      const render = loaded.module.renderSchedule as Render;
      try {
        ctx.io.out(render({ stages: o.stages, microBatches: o.microBatches, schedule: o.schedule ?? "1f1b", virtualStages: o.virtualStages }, o.format ?? "text"));
      } catch (err) {
        // A shape the schedule cannot take (interleaved with micro-batches not a multiple of the stages).
        throw new UsageError((err as Error).message);
      }
    });
  return pipeline;
}
