/**
 * A timeline as a text Gantt chart, one row per rank, one column per time unit, each column showing
 * the action running then (repeated over a long action, as the papers' pictures do) or dots when the
 * rank idles. Exact for simulated timelines with costs that are multiples of the unit; a recorded
 * (wall-clock) timeline is rounded to columns, the later action winning a shared column.
 */
import type { Timeline } from "../simulator";
import { actionLabel } from "./label";

export interface TextRenderOptions {
  /** Time per column (default: the shortest action, widened so that at most `maxColumns` are drawn). */
  readonly unit?: number;
  readonly maxColumns?: number;
}

const percent = (x: number) => `${(100 * x).toFixed(1)}%`;

export function renderText(timeline: Timeline, options: TextRenderOptions = {}): string {
  const { stages, virtualStages } = timeline;
  const all = timeline.ranks.flat();
  const t0 = all.length ? Math.min(...all.map((a) => a.start)) : 0;
  const shortest = all.reduce((m, a) => (a.end > a.start ? Math.min(m, a.end - a.start) : m), Infinity);
  const maxColumns = options.maxColumns ?? 160;
  let unit = options.unit ?? (Number.isFinite(shortest) ? shortest : 1);
  if (timeline.makespan / unit > maxColumns) unit = timeline.makespan / maxColumns;
  const columns = Math.max(1, Math.round(timeline.makespan / unit));
  const labels = all.map((a) => actionLabel(a, stages, virtualStages));
  const width = Math.max(2, ...labels.map((l) => l.length));
  const idle = ".".repeat(width);
  const rankWidth = String(timeline.ranks.length - 1).length;
  const rows = timeline.ranks.map((list, r) => {
    const cells = new Array<string>(columns).fill(idle);
    for (const a of list) {
      const from = Math.round((a.start - t0) / unit);
      const to = Math.max(from + 1, Math.round((a.end - t0) / unit));
      const label = actionLabel(a, stages, virtualStages).padEnd(width);
      for (let c = from; c < Math.min(to, columns); c++) cells[c] = label;
    }
    return `rank ${String(r).padStart(rankWidth)} | ${cells.join(" ")}`.trimEnd();
  });
  const v = virtualStages > 1 ? `, ${virtualStages} virtual stages per rank` : "";
  return [
    `${timeline.schedule}: ${stages} stages, ${timeline.microBatches} micro-batches${v} (one column = ${+unit.toPrecision(3)})`,
    ...rows,
    `bubble: ${percent(timeline.bubbleFraction)} of rank time idle (idle/busy ${percent(timeline.bubbleRatio)})`,
  ].join("\n") + "\n";
}
