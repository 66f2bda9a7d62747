/**
 * The `meta` half of a checkpoint (step, epoch, RNG state, hyper-parameters) must survive a trip
 * through JSON unchanged, because that is how it is stored. JSON.stringify would silently drop
 * `undefined` and functions and turn NaN into null; these checks refuse such values up front,
 * naming the field, so a resumed run never finds a quietly altered meta.
 */

function describe(v: unknown): string {
  if (v === undefined) return "undefined";
  if (typeof v === "number") return String(v);
  if (typeof v === "bigint") return `${v}n`;
  if (typeof v === "function") return "a function";
  if (typeof v === "symbol") return "a symbol";
  if (typeof v === "object" && v !== null) return `a ${v.constructor?.name ?? "null-prototype object"}`;
  return JSON.stringify(v);
}

/** Throws a TypeError naming the first value under `field` that JSON cannot carry faithfully. */
export function assertJsonValue(value: unknown, field: string, seen: Set<object> = new Set()): void {
  const bad = (what: string): never => {
    throw new TypeError(`${field} is ${what}; checkpoint meta must be JSON: null, booleans, finite numbers, strings, arrays and plain objects`);
  };
  if (value === null || typeof value === "boolean" || typeof value === "string") return;
  if (typeof value === "number") {
    if (!Number.isFinite(value)) bad(describe(value));
    return;
  }
  if (typeof value !== "object") {
    return bad(value === undefined ? "undefined (omit the key or use null)" : describe(value));
  }
  if (seen.has(value)) bad("a circular reference");
  seen.add(value);
  if (Array.isArray(value)) {
    value.forEach((v, i) => assertJsonValue(v, `${field}[${i}]`, seen));
  } else {
    const proto = Object.getPrototypeOf(value);
    if (proto !== Object.prototype && proto !== null) bad(describe(value));
    for (const [k, v] of Object.entries(value)) {
      assertJsonValue(v, /^[A-Za-z_$][\w$]*$/.test(k) ? `${field}.${k}` : `${field}[${JSON.stringify(k)}]`, seen);
    }
  }
  seen.delete(value);
}
