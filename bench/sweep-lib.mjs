#!/usr/bin/env node
/**
 * The JSON work of bench/sweep.sh, which bash cannot do safely. Subcommands:
 *
 *   plan PAIRS_FILE ONLY STRATEGIES_JSON BENCH_HELP [PAIRS_OUT]
 *       The pairs to run, in table order, one a line, tab-separated:
 *       pair, anchor mode, Fulgur strategy, pipeline (1|0), target, options JSON (or -), skip reason (or -).
 *       ONLY is a comma-separated list of pair names, or "-" for all. STRATEGIES_JSON is the output of
 *       `fulgur strategies --json` (a file), BENCH_HELP the output of `fulgur bench --help` (a file).
 *       PAIRS_OUT, if given, receives the chosen rows of the table as JSON (for the header line).
 *       Exits 2 with a message on an unknown --only name or a malformed table.
 *   names PAIRS_FILE
 *       The pair names of the table, comma-separated (for messages).
 *   obj KEY VALUE [KEY VALUE ...]
 *       One JSON object on one line. A KEY written @KEY takes VALUE as JSON (kept as a string under
 *       KEY_unparsed if it does not parse); a KEY written #KEY takes VALUE as a number; others are strings.
 */
import { readFileSync, writeFileSync } from "node:fs";

const [cmd, ...args] = process.argv.slice(2);

function fail(message, code = 2) {
  process.stderr.write(`sweep.sh: ${message}\n`);
  process.exit(code);
}

function readPairs(file) {
  let table;
  try {
    table = JSON.parse(readFileSync(file, "utf8"));
  } catch (e) {
    fail(`cannot read the pairs table ${file}: ${e.message}`);
  }
  const pairs = table?.pairs;
  if (!Array.isArray(pairs) || pairs.length === 0) fail(`${file}: expected {"pairs": [ ... ]} with at least one pair`);
  const seen = new Set();
  const NAME = /^[A-Za-z0-9_.:-]+$/;
  for (const [i, p] of pairs.entries()) {
    for (const k of ["pair", "anchor", "fulgur"]) {
      if (typeof p?.[k] !== "string" || !NAME.test(p[k])) fail(`${file}: pairs[${i}].${k} must be a name (letters, digits, '_', '.', ':', '-')`);
    }
    if (p.target !== undefined && !(typeof p.target === "number" && p.target > 0)) fail(`${file}: pairs[${i}].target must be a positive number`);
    if (p.options !== undefined && (typeof p.options !== "object" || p.options === null || Array.isArray(p.options))) {
      fail(`${file}: pairs[${i}].options must be an object of strategy options`);
    }
    if (seen.has(p.pair)) fail(`${file}: pair "${p.pair}" appears twice`);
    seen.add(p.pair);
  }
  return pairs;
}

/** Why `name` cannot be run by `fulgur bench`, or null when it is registered. */
function unregisteredReason(name, strategies) {
  if ((strategies.strategies ?? []).some((s) => s.name === name)) return null;
  const unloaded = (strategies.unloaded ?? []).find((u) => u.kind === "strategy" && (u.names ?? []).includes(name));
  if (unloaded) {
    return `strategy "${name}" is not registered: ${unloaded.package} (${unloaded.status})` + (unloaded.reason ? `: ${unloaded.reason.split("\n")[0]}` : "");
  }
  return `strategy "${name}" is not registered (not in \`fulgur strategies --json\`: its package does not exist yet or is not installed)`;
}

function plan([pairsFile, only, strategiesFile, helpFile, pairsOut]) {
  const pairs = readPairs(pairsFile);
  let chosen = pairs;
  if (only && only !== "-") {
    const names = only.split(",").map((s) => s.trim()).filter(Boolean);
    if (names.length === 0) fail("--only needs at least one pair name");
    const unknown = names.filter((n) => !pairs.some((p) => p.pair === n));
    if (unknown.length > 0) fail(`--only: unknown pair ${unknown.map((n) => `"${n}"`).join(", ")}; the pairs are ${pairs.map((p) => p.pair).join(", ")} (${pairsFile})`);
    chosen = pairs.filter((p) => names.includes(p.pair));
  }
  let strategies;
  try {
    strategies = JSON.parse(readFileSync(strategiesFile, "utf8"));
  } catch (e) {
    fail(`\`fulgur strategies --json\` did not print JSON (${e.message}); is packages/cli built?`, 1);
  }
  if (pairsOut) writeFileSync(pairsOut, JSON.stringify(chosen));
  const help = readFileSync(helpFile, "utf8");
  const takesOptions = help.includes("--strategy-options");
  for (const p of chosen) {
    let reason = unregisteredReason(p.fulgur, strategies);
    if (!reason && p.options && !takesOptions) {
      reason = `needs strategy options ${JSON.stringify(p.options)}, and \`fulgur bench\` has no --strategy-options flag and no registered strategy name carries them`;
    }
    const fields = [p.pair, p.anchor, p.fulgur, p.pipeline ? "1" : "0", String(p.target ?? "-"), p.options ? JSON.stringify(p.options) : "-", reason ?? "-"];
    process.stdout.write(fields.map((f) => f.replace(/[\t\n]/g, " ")).join("\t") + "\n");
  }
}

function obj(kv) {
  if (kv.length % 2 !== 0) fail("sweep-lib obj: expected KEY VALUE pairs", 1);
  const o = {};
  for (let i = 0; i < kv.length; i += 2) {
    const [k, v] = [kv[i], kv[i + 1]];
    if (k.startsWith("@")) {
      try {
        o[k.slice(1)] = JSON.parse(v);
      } catch {
        o[`${k.slice(1)}_unparsed`] = v;
      }
    } else if (k.startsWith("#")) {
      o[k.slice(1)] = Number(v);
    } else {
      o[k] = v;
    }
  }
  process.stdout.write(JSON.stringify(o) + "\n");
}

switch (cmd) {
  case "plan":
    plan(args);
    break;
  case "names":
    process.stdout.write(readPairs(args[0]).map((p) => p.pair).join(",") + "\n");
    break;
  case "obj":
    obj(args);
    break;
  default:
    fail(`sweep-lib: unknown subcommand ${cmd ?? "(none)"}`, 1);
}
