/** Global behaviour of the program: version, help, exit codes, stack traces only on request. */
import { afterEach, describe, expect, it } from "vitest";
import { CLI_VERSION, EXIT_USAGE } from "../src/index";
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { cli, tempDir } from "./helpers";

describe("fulgur", () => {
  afterEach(() => {
    delete process.env.FULGUR_DEBUG;
  });

  it("prints its version from package.json", async () => {
    const r = await cli("--version");
    expect(r.code).toBe(0);
    expect(r.out.trim()).toBe(CLI_VERSION);
    expect(CLI_VERSION).toMatch(/^\d+\.\d+\.\d+/);
  });

  it("lists every command with examples in --help", async () => {
    const r = await cli("--help");
    expect(r.code).toBe(0);
    for (const c of ["run", "fit", "checkpoint", "strategies", "env", "bench"]) expect(r.out).toMatch(new RegExp(`^  ${c}\\b`, "m"));
    expect(r.out).toContain("Examples:");
    expect(r.out).toContain("FULGUR_DEBUG=1");
  });

  it("shows help and exits 2 without a command", async () => {
    const r = await cli();
    expect(r.code).toBe(EXIT_USAGE);
    expect(r.err).toContain("Usage: fulgur");
  });

  it("exits 2 on an unknown command or option, naming it", async () => {
    const a = await cli("trian");
    expect(a.code).toBe(2);
    expect(a.err).toContain("error: unknown command 'trian'");
    const b = await cli("strategies", "--jsn");
    expect(b.code).toBe(2);
    expect(b.err).toContain("error: unknown option '--jsn'");
    expect(b.err).toContain("--json");
  });

  it("shows a failure's message without a stack unless FULGUR_DEBUG=1", async () => {
    // A directory that claims to be a sharded checkpoint but whose index is not JSON.
    const bad = join(tempDir(), "broken");
    mkdirSync(bad);
    writeFileSync(join(bad, "index.json"), "{ not json");
    const quiet = await cli("checkpoint", "reshard", bad, join(bad, "..", "out"), "--world-size", "2");
    expect(quiet.code).toBe(1);
    expect(quiet.err).toMatch(/^fulgur: .*index\.json/);
    expect(quiet.err).not.toMatch(/\n\s+at /);
    process.env.FULGUR_DEBUG = "1";
    const loud = await cli("checkpoint", "reshard", bad, join(bad, "..", "out"), "--world-size", "2");
    expect(loud.code).toBe(1);
    expect(loud.err).toMatch(/\n\s+at /);
  });
});
