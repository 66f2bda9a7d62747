/**
 * The DeepSpeed guide (docs/guide/deepspeed.md) and this package's README are held to the code:
 * every example they show is a file under fixtures/guide that runs here and prints what the page
 * shows, the table of honoured keys is HONOURED_KEYS, and the warning shown is the one printed.
 * The examples import the BUILT packages (build them first: `npx tsup`).
 */
import { execFile } from "node:child_process";
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { describe, expect, it } from "vitest";
import { HONOURED_KEYS } from "../src/index";
import { idleKeysWarning, keysWithoutEffect } from "../src/keys";

const read = (relative: string): string => readFileSync(fileURLToPath(new URL(relative, import.meta.url)), "utf8");
const GUIDE = read("../../../docs/guide/deepspeed.md");
const README = read("../README.md");
const example = (name: string): string => read(`./fixtures/guide/${name}`);
const LAUNCH_VARS = /^(RANK|WORLD_SIZE|LOCAL_RANK|LOCAL_WORLD_SIZE|NODE_RANK|GROUP_RANK|MASTER_ADDR|MASTER_PORT|SLURM_.*|FULGUR_.*)$/;

/** The fenced blocks of a page in the given language. */
function blocks(page: string, lang: string): string[] {
  return [...page.matchAll(new RegExp("```" + lang + "\\n([\\s\\S]*?)\\n```", "g"))].map((m) => m[1]);
}

async function runExample(name: string): Promise<string> {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !LAUNCH_VARS.test(k)));
  const { stdout } = await promisify(execFile)(process.execPath, [fileURLToPath(new URL(`./fixtures/guide/${name}`, import.meta.url))], { env, timeout: 90_000 });
  return stdout;
}

/** The text block the page shows after `marker`, as lines. */
function shownAfter(page: string, marker: string): string[] {
  const at = page.indexOf(marker);
  expect(at, marker).toBeGreaterThanOrEqual(0);
  return blocks(page.slice(at), "text")[0].split("\n");
}

describe("docs/guide/deepspeed.md and the README", () => {
  it("show the example files as they are", () => {
    for (const name of ["writer.mjs", "zero3.mjs", "zero-config.mjs", "zero-keep.mjs", "zero-tiers.mjs"]) expect(blocks(GUIDE, "js"), name).toContain(example(name).trimEnd());
    expect(blocks(GUIDE, "json")).toContain(example("ds_config.json").trimEnd());
    for (const name of ["writer.mjs", "zero3.mjs"]) expect(blocks(README, "js"), name).toContain(example(name).trimEnd());
  });

  it("list exactly the honoured keys, each saying what the code says", () => {
    const rows = [...GUIDE.matchAll(/^\| `([^`]+)` \| (.*) \|$/gm)].filter((m) => m[1] in HONOURED_KEYS || m[1].includes("."));
    expect(Object.fromEntries(rows.map((m) => [m[1], m[2]]))).toEqual(Object.fromEntries(Object.entries(HONOURED_KEYS).map(([k, r]) => [k, r.does])));
  });

  it("show the warning a Hugging Face ZeRO-3 config gets under bf16-mixed", () => {
    const config = JSON.parse(read("./fixtures/configs/hf-zero3-offload.json"));
    const idle = keysWithoutEffect(config, { stage: 3, precision: "bf16-mixed", scalerReachable: false });
    const warning = idleKeysWarning("deepspeed", 'the config "ds_config_zero3.json"', idle)!;
    expect(shownAfter(GUIDE, "For Hugging Face's ZeRO-3 example config").join("\n")).toBe(warning);
  });
});

describe("the examples run and print what the guide shows", () => {
  it("zero3.mjs: stage 3 by name on 2 processes", async () => {
    const printed = (await runExample("zero3.mjs")).trimEnd().split("\n");
    const shown = shownAfter(GUIDE, "`node zero3.mjs` starts two processes");
    expect(printed.slice(0, 2)).toEqual(shown.slice(0, 2));
    expect(printed[2]).toMatch(/^\[rank 0\] stage 3: loss \d+\.\d\d after 6 steps$/);
  });

  it("zero-keep.mjs: stage 3 offload keeping what fits in the bytes given, and the line saying where units are", async () => {
    const printed = (await runExample("zero-keep.mjs")).trimEnd().split("\n");
    const shown = shownAfter(GUIDE, "At start rank 0 prints where the units are");
    expect(printed).toContain(shown[0]);
    expect(printed.at(-1)).toMatch(/^\[rank 0\] loss \d+\.\d\d after 4 steps$/);
  });

  it("zero-tiers.mjs: NVMe offload keeping in host memory what fits in the bytes given; the line saying where units are", async () => {
    const printed = (await runExample("zero-tiers.mjs")).trimEnd().split("\n");
    const shown = shownAfter(GUIDE, "Rank 0 says how the units were placed");
    expect(printed).toContain(shown[0]);
    expect(printed.at(-1)).toMatch(/^\[rank 0\] loss \d+\.\d\d after 4 steps$/);
  });

  it("zero-config.mjs: stage 2 with CPU offload from ds_config.json, \"auto\" filled in by the Trainer", async () => {
    const printed = (await runExample("zero-config.mjs")).trimEnd().split("\n");
    const shown = shownAfter(GUIDE, "const strategy = new DeepSpeedStrategy");
    expect(printed).toContain(shown[0]);
    expect(printed.at(-1)).toMatch(/^\[rank 0\] stage 2, offload cpu: loss \d+\.\d\d$/);
  });
});
