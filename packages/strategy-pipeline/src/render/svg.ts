/**
 * A timeline as an SVG Gantt chart: one row per rank, one <rect> per compute action (with a <title>
 * naming it, shown on hover), coloured by kind; nothing else is a rect, so a test can count them.
 */
import type { Timeline } from "../simulator";
import { actionLabel } from "./label";

export interface SvgRenderOptions {
  /** Pixels per time unit (default: the chart is 960 px wide). */
  readonly scale?: number;
  readonly rowHeight?: number;
}

const COLOURS: Readonly<Record<string, string>> = { F: "#4c78a8", B: "#59a14f", W: "#f28e2b" };
const LEFT = 64;
const TOP = 24;

const escape = (s: string) => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
const num = (x: number) => String(+x.toFixed(2));

export function renderSvg(timeline: Timeline, options: SvgRenderOptions = {}): string {
  const all = timeline.ranks.flat();
  const t0 = all.length ? Math.min(...all.map((a) => a.start)) : 0;
  const scale = options.scale ?? (timeline.makespan > 0 ? 960 / timeline.makespan : 1);
  const row = options.rowHeight ?? 24;
  const width = LEFT + timeline.makespan * scale + 8;
  const height = TOP + timeline.ranks.length * row + 8;
  const parts: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${num(width)}" height="${num(height)}" viewBox="0 0 ${num(width)} ${num(height)}" font-family="monospace" font-size="11">`,
    `<text x="4" y="14">${escape(`${timeline.schedule}: ${timeline.stages} stages, ${timeline.microBatches} micro-batches, bubble ${(100 * timeline.bubbleFraction).toFixed(1)}%`)}</text>`,
  ];
  timeline.ranks.forEach((list, r) => {
    const y = TOP + r * row;
    parts.push(`<text x="4" y="${num(y + row * 0.7)}">rank ${r}</text>`);
    for (const a of list) {
      const label = actionLabel(a, timeline.stages, timeline.virtualStages);
      const x = LEFT + (a.start - t0) * scale;
      const w = Math.max(0.5, (a.end - a.start) * scale);
      parts.push(
        `<rect x="${num(x)}" y="${num(y + 2)}" width="${num(w)}" height="${num(row - 4)}" fill="${COLOURS[a.kind]}" stroke="#fff"><title>${escape(`${label} (stage ${a.stage})`)}</title></rect>`,
      );
      if (w >= label.length * 7) parts.push(`<text x="${num(x + 2)}" y="${num(y + row * 0.7)}" fill="#fff">${escape(label)}</text>`);
    }
  });
  parts.push("</svg>");
  return parts.join("\n") + "\n";
}
