// Trains the test fixture's GPT as a CPU pipeline (one process per stage), takes the last batch's
// timeline that the executor recorded on every rank, and prints it beside the simulator's
// prediction for the same schedule with the run's own mean F, B and W durations: what
// docs/guide/pipeline.md shows under "A measured run beside its simulation".
// Needs the built packages (`npx nx run @fulgur/strategy-pipeline:build`). From the repository root:
//   node packages/strategy-pipeline/scripts/measured-beside-simulated.mjs --stages 4 --micro-batches 8 --schedule 1f1b
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import { buildSchedule, renderText, simulate } from "@fulgur/strategy-pipeline";

const { values: a } = parseArgs({
  options: {
    stages: { type: "string", default: "4" },
    "micro-batches": { type: "string", default: "8" },
    schedule: { type: "string", default: "1f1b" },
    layers: { type: "string", default: "8" },
    columns: { type: "string", default: "100" },
  },
});
const stages = Number(a.stages);
const m = Number(a["micro-batches"]);
const fixture = join(dirname(fileURLToPath(import.meta.url)), "..", "test", "fixtures", "train.mjs");
const out = mkdtempSync(join(tmpdir(), "fulgur-timeline-"));
try {
  const options = { microBatches: m, schedule: a.schedule };
  const run = spawnSync(
    process.execPath,
    [fixture, "--out", out, "--strategy", "pipeline", "--devices", String(stages), "--batch", String(2 * m), "--steps", "3", "--layers", a.layers, "--options", JSON.stringify(options)],
    { encoding: "utf8", env: Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|MASTER_ADDR|MASTER_PORT)$/.test(k))) },
  );
  if (run.status !== 0) throw new Error(`the pipeline run failed (exit ${run.status}):\n${run.stderr}`);
  const measured = JSON.parse(readFileSync(join(out, "result-rank0.json"), "utf8")).timeline;
  const mean = (kind) => {
    const spans = measured.ranks.flat().filter((x) => x.kind === kind).map((x) => x.end - x.start);
    return spans.length ? spans.reduce((s, d) => s + d, 0) / spans.length : 0;
  };
  const costs = { forward: mean("F"), backward: mean("B"), weight: mean("W") };
  const schedule = buildSchedule(a.schedule, { stages, microBatches: m, virtualStages: 1 });
  const simulated = simulate(schedule, costs);
  const ms = (v) => `${v.toFixed(2)} ms`;
  const columns = Number(a.columns);
  console.log(`measured: ${a.schedule}, ${stages} CPU processes, ${m} micro-batches of 2 (GPT of ${a.layers} blocks, d 32)`);
  console.log(renderText(measured, { maxColumns: columns }));
  console.log(`mean F ${ms(costs.forward)}, B ${ms(costs.backward)}${costs.weight ? `, W ${ms(costs.weight)}` : ""}; makespan ${ms(measured.makespan)}`);
  console.log();
  console.log(`simulated with those means:`);
  console.log(renderText(simulated, { maxColumns: columns }));
  console.log(`makespan ${ms(simulated.makespan)}`);
} finally {
  rmSync(out, { recursive: true, force: true });
}
