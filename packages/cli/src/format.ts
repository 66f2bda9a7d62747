/** Text output helpers: byte sizes, counts and aligned columns. */
import { formatBytes as formatBytesIn } from "@fulgur/trainer";

/** Binary units, two to three significant figures ("1.50 GiB", "12.3 MiB", "340 KiB"). */
export function formatBytes(bytes: number): string {
  return formatBytesIn(bytes, (v) => (v >= 100 ? 0 : v >= 10 ? 1 : 2));
}

export function formatCount(n: number): string {
  return n.toLocaleString("en-US");
}

/** Rows padded into columns; the last column is never padded, so long descriptions do not push trailing spaces. */
export function table(rows: readonly (readonly string[])[], indent = "  "): string {
  if (rows.length === 0) return "";
  const widths: number[] = [];
  for (const row of rows) row.forEach((cell, i) => (widths[i] = Math.max(widths[i] ?? 0, cell.length)));
  return rows
    .map((row) => indent + row.map((cell, i) => (i === row.length - 1 ? cell : cell.padEnd(widths[i]))).join("  ").trimEnd())
    .join("\n") + "\n";
}
