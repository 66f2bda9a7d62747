/**
 * Building the strategy under test from what the author gave: a function (this process only), or a
 * module and export name that any process can import.
 */
import { type Strategy, assertStrategy } from "@fulgur/core";
import type { StrategyModule, StrategySource } from "./options";

type Exported = ((options: Record<string, unknown>) => Strategy | Promise<Strategy>) | (new (options: Record<string, unknown>) => Strategy);

/** A class must be called with `new`; a plain or arrow function must not be. */
function isClass(fn: Exported): boolean {
  return /^class[\s{]/.test(Function.prototype.toString.call(fn));
}

export async function strategyFromModule(m: StrategyModule): Promise<Strategy> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(m.module)) as Record<string, unknown>;
  } catch (err) {
    throw new Error(`could not import the strategy module ${m.module}: ${(err as Error).message}`);
  }
  const name = m.export ?? "default";
  const exported = mod[name];
  if (typeof exported !== "function") {
    throw new TypeError(
      `${m.module}: export ${JSON.stringify(name)} is ${exported === undefined ? "missing" : `a ${typeof exported}`}; ` +
        `expected a function (options) => Strategy or a Strategy class (exports: ${Object.keys(mod).join(", ") || "none"})`,
    );
  }
  const options = { ...(m.options ?? {}) };
  const fn = exported as Exported;
  return isClass(fn) ? new (fn as new (o: Record<string, unknown>) => Strategy)(options) : await (fn as (o: Record<string, unknown>) => Strategy | Promise<Strategy>)(options);
}

/** A new strategy from `source`, checked by shape (a fresh one per world: strategies are used once). */
export async function buildStrategy(source: StrategySource): Promise<Strategy> {
  const strategy = typeof source === "function" ? await source() : await strategyFromModule(source);
  assertStrategy(strategy, "the strategy under test");
  return strategy;
}
