/** Human-readable byte counts for memory summaries and error messages. */

export function formatBytes(n: number): string {
  if (!Number.isFinite(n)) return String(n);
  const abs = Math.abs(n);
  if (abs >= 1 << 30) return `${(n / 2 ** 30).toFixed(2)} GiB`;
  if (abs >= 1 << 20) return `${(n / 2 ** 20).toFixed(2)} MiB`;
  if (abs >= 1 << 10) return `${(n / 2 ** 10).toFixed(2)} KiB`;
  return `${n} B`;
}
