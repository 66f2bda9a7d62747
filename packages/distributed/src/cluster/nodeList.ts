/**
 * SLURM's compact host lists (`node[001-003,007],gpu5`, `rack[1-2]-n[01-02]`) and task counts
 * (`2(x3),1`), expanded the way `scontrol show hostnames` does: ranges keep the zero padding of
 * their start, several bracket groups in one name multiply out left to right.
 */
import { DistributedArgumentError } from "../errors";

/** Refuses lists that would expand to more hosts than any cluster has: almost surely a typo. */
const MAX_HOSTS = 1_000_000;

/** Expands a SLURM host list into host names, in order. */
export function expandNodeList(list: string, field = "SLURM_NODELIST"): string[] {
  const bad = (why: string) => new DistributedArgumentError(`${field}=${JSON.stringify(list)} is not a valid host list: ${why}`);
  const hosts: string[] = [];
  for (const item of splitTopLevel(list, bad)) {
    if (item === "") throw bad("empty host name");
    for (const h of expandName(item, bad)) {
      hosts.push(h);
      if (hosts.length > MAX_HOSTS) throw bad(`it expands to more than ${MAX_HOSTS} hosts`);
    }
  }
  if (hosts.length === 0) throw bad("no hosts");
  return hosts;
}

/** Splits on commas outside brackets. */
function splitTopLevel(list: string, bad: (why: string) => Error): string[] {
  const out: string[] = [];
  let depth = 0;
  let start = 0;
  for (let i = 0; i < list.length; i++) {
    const c = list[i];
    if (c === "[") {
      if (depth > 0) throw bad("nested brackets");
      depth++;
    } else if (c === "]") {
      if (depth === 0) throw bad(`"]" without "[" at position ${i}`);
      depth--;
    } else if (c === "," && depth === 0) {
      out.push(list.slice(start, i).trim());
      start = i + 1;
    }
  }
  if (depth !== 0) throw bad('"[" is never closed');
  out.push(list.slice(start).trim());
  return out;
}

/** Expands one name with zero or more bracket groups, e.g. `rack[1-2]-n[01-02]`. */
function expandName(name: string, bad: (why: string) => Error): string[] {
  const open = name.indexOf("[");
  if (open < 0) return [name];
  const close = name.indexOf("]", open);
  const prefix = name.slice(0, open);
  const values = expandRanges(name.slice(open + 1, close), bad);
  const rests = expandName(name.slice(close + 1), bad);
  const out: string[] = [];
  for (const v of values) for (const r of rests) out.push(prefix + v + r);
  return out;
}

/** `001-003,007` → ["001", "002", "003", "007"]. */
function expandRanges(body: string, bad: (why: string) => Error): string[] {
  if (body.trim() === "") throw bad("empty brackets");
  const out: string[] = [];
  for (const part of body.split(",")) {
    const m = /^\s*(\d+)(?:\s*-\s*(\d+))?\s*$/.exec(part);
    if (!m) throw bad(`"${part}" is not a number or a range like 001-004`);
    const [, lo, hi] = m;
    const width = lo.length;
    const a = Number(lo);
    const b = hi === undefined ? a : Number(hi);
    if (b < a) throw bad(`range ${lo}-${hi} runs backwards`);
    if (b - a > MAX_HOSTS) throw bad(`range ${lo}-${hi} is too large`);
    for (let n = a; n <= b; n++) out.push(String(n).padStart(width, "0"));
  }
  return out;
}

/** Expands SLURM_TASKS_PER_NODE (`2(x3),1`) into one count per node: [2, 2, 2, 1]. */
export function expandTasksPerNode(value: string, field = "SLURM_TASKS_PER_NODE"): number[] {
  const out: number[] = [];
  for (const part of value.split(",")) {
    const m = /^\s*(\d+)(?:\(x(\d+)\))?\s*$/.exec(part);
    if (!m || Number(m[1]) < 1 || (m[2] !== undefined && Number(m[2]) < 1)) {
      throw new DistributedArgumentError(
        `${field}=${JSON.stringify(value)} is not valid: "${part}" should be a positive count, optionally repeated like 2(x3)`,
      );
    }
    const repeat = m[2] === undefined ? 1 : Number(m[2]);
    if (out.length + repeat > MAX_HOSTS) throw new DistributedArgumentError(`${field}=${JSON.stringify(value)} lists too many nodes`);
    for (let i = 0; i < repeat; i++) out.push(Number(m[1]));
  }
  return out;
}
