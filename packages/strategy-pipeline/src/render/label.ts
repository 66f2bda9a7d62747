/** How an action is named in pictures: kind and micro-batch, and the chunk (a, b, ...) when a rank holds several. */
import type { TimedAction } from "../simulator";

export function actionLabel(a: Pick<TimedAction, "kind" | "microBatch" | "stage">, stages: number, virtualStages: number): string {
  const chunk = virtualStages > 1 ? String.fromCharCode(97 + Math.floor(a.stage / stages)) : "";
  return `${a.kind}${a.microBatch}${chunk}`;
}
