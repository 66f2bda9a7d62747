/** `fulgur run`: flag validation before anything is spawned, and a real 2-rank job through the built executable. */
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { resolveRunOptions } from "../src/index";
import { cli, spawnBin, tempDir } from "./helpers";

let dir: string;
let script: string;
let marker: string;

beforeAll(() => {
  dir = tempDir();
  marker = join(dir, "started");
  script = join(dir, "rank.mjs");
  // Leaves a marker, so a test can tell whether any rank was ever started.
  writeFileSync(
    script,
    `import { appendFileSync } from "node:fs";
appendFileSync(${JSON.stringify(marker)}, process.env.RANK + "\\n");
console.log("RANK=" + process.env.RANK + " WORLD_SIZE=" + process.env.WORLD_SIZE + " LOCAL_RANK=" + process.env.LOCAL_RANK + " args=" + process.argv.slice(2).join(","));
`,
  );
});

describe("fulgur run: validation", () => {
  const cases: [string[], string][] = [
    [["--nproc-per-node", "0"], "error: option '--nproc-per-node <n>' argument '0' is invalid. expected a positive integer (the number of ranks to start on this node)"],
    [["--nproc_per_node=two"], "error: option '--nproc_per_node <n>' argument 'two' is invalid. expected a positive integer (the number of ranks to start on this node)"],
    [["--nnodes", "-1"], "error: option '--nnodes <n>' argument '-1' is invalid. expected a positive integer (the number of nodes in the job)"],
    [["--master-port", "70000"], "error: option '--master-port <port>' argument '70000' is invalid. expected an integer from 1 to 65535"],
    [["--master_port", "1.5"], "error: option '--master_port <port>' argument '1.5' is invalid. expected an integer from 1 to 65535"],
    [["--master-addr", " "], "error: option '--master-addr <addr>' argument ' ' is invalid. expected a host name or IP address of node 0"],
    [["--nnodes", "2", "--node-rank", "2"], "error: option '--node-rank <r>' argument '2' is invalid. expected an integer from 0 to 1 (--node-rank must be less than --nnodes 2)"],
  ];
  for (const [flags, message] of cases) {
    it(`rejects ${flags.join(" ")} with exit code 2 before spawning`, async () => {
      const r = await cli("run", ...flags, script);
      expect(r.code).toBe(2);
      expect(r.err.trim()).toBe(message);
      expect(existsSync(marker)).toBe(false);
    });
  }

  it("rejects a missing script and a script of another kind", async () => {
    const missing = await cli("run", "--nproc-per-node", "2", join(dir, "nope.mjs"));
    expect(missing.code).toBe(2);
    expect(missing.err.trim()).toBe(
      `error: command-argument value '${join(dir, "nope.mjs")}' is invalid for argument 'script'. expected an existing script file (${join(dir, "nope.mjs")} does not exist)`,
    );
    const py = await cli("run", "train.py");
    expect(py.code).toBe(2);
    expect(py.err.trim()).toBe("error: command-argument value 'train.py' is invalid for argument 'script'. expected a script ending in .ts, .mts, .cts, .js, .mjs or .cjs");
    expect(existsSync(marker)).toBe(false);
  });

  it("refuses a multi-node job without a shared store token, before spawning", async () => {
    const saved = process.env.FULGUR_STORE_TOKEN;
    delete process.env.FULGUR_STORE_TOKEN;
    try {
      const r = await cli("run", "--nnodes", "2", "--node-rank", "1", "--master-port", "29511", script);
      expect(r.code).toBe(2);
      expect(r.err).toContain("needs the same FULGUR_STORE_TOKEN on every node");
    } finally {
      if (saved !== undefined) process.env.FULGUR_STORE_TOKEN = saved;
    }
    expect(existsSync(marker)).toBe(false);
  });

  it("merges torchrun's underscore spellings with the dashed ones", () => {
    const o = resolveRunOptions({ nproc_per_node: 3, node_rank: 1, nnodes: 2, master_addr: "10.0.0.1", master_port: 29400 }, script, ["--x"]);
    expect(o).toMatchObject({ nprocPerNode: 3, nnodes: 2, nodeRank: 1, masterAddr: "10.0.0.1", masterPort: 29400, args: ["--x"] });
    expect(resolveRunOptions({}, script, []).nprocPerNode).toBe(1);
  });
});

describe("fulgur run: the built executable", () => {
  it("fails --nproc-per-node 0 with exit code 2 and starts no rank", () => {
    const r = spawnBin(["run", "--nproc-per-node", "0", script]);
    expect(r.code).toBe(2);
    expect(r.err).toContain("error: option '--nproc-per-node <n>' argument '0' is invalid.");
    expect(existsSync(marker)).toBe(false);
  });

  it("runs a 2-rank job, passing the script's own flags through", () => {
    const r = spawnBin(["run", "--nproc_per_node=2", script, "--lr", "3"], { cwd: dir });
    expect(r.err).toBe("");
    expect(r.code).toBe(0);
    const lines = r.out.trim().split("\n").sort();
    expect(lines).toEqual([
      "[rank 0] RANK=0 WORLD_SIZE=2 LOCAL_RANK=0 args=--lr,3",
      "[rank 1] RANK=1 WORLD_SIZE=2 LOCAL_RANK=1 args=--lr,3",
    ]);
  });

  it("exits with the failing rank's code", () => {
    const failing = join(dir, "fail.mjs");
    writeFileSync(failing, "if (process.env.RANK === '1') process.exit(7); setTimeout(() => {}, 20000);\n");
    const r = spawnBin(["run", "--nproc-per-node", "2", failing]);
    expect(r.code).toBe(7);
    expect(r.err).toContain("rank 1 exited with code 7; the other ranks were stopped");
  });
});
