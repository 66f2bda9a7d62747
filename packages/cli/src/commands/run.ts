/**
 * `fulgur run`: torchrun for Fulgur. Starts `--nproc-per-node` ranks of a script on this node with
 * the torchrun variables (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, ...) and exits with the job's
 * exit code. Both spellings of torchrun's flags work (`--nproc-per-node` and `--nproc_per_node`),
 * so existing launch lines carry over. Everything is checked before a process is spawned.
 */
import { existsSync, statSync } from "node:fs";
import { resolve } from "node:path";
import { Command, Option } from "commander";
import { DistributedArgumentError, launch } from "@fulgur/distributed";
import { UsageError, invalidArgument, invalidOption } from "../errors";
import type { CliContext } from "../context";
import { writableOf } from "../io";
import { collect, integerIn, nonEmpty, positiveInt } from "../parsers";

const SCRIPT_EXT = /\.(ts|mts|cts|js|mjs|cjs)$/;

/** The launch flags; each also accepts torchrun's underscore spelling. */
const FLAGS = {
  nprocPerNode: { flags: "--nproc-per-node <n>", alias: "--nproc_per_node <n>", help: "ranks to start on this node", parse: positiveInt("the number of ranks to start on this node") },
  nnodes: { flags: "--nnodes <n>", alias: undefined, help: "nodes in the job", parse: positiveInt("the number of nodes in the job") },
  nodeRank: { flags: "--node-rank <r>", alias: "--node_rank <r>", help: "this node's index, 0 to nnodes-1", parse: integerIn(0, Number.MAX_SAFE_INTEGER, "expected an integer from 0 to nnodes-1") },
  masterAddr: { flags: "--master-addr <addr>", alias: "--master_addr <addr>", help: "address of node 0 (default 127.0.0.1)", parse: nonEmpty("a host name or IP address of node 0") },
  masterPort: { flags: "--master-port <port>", alias: "--master_port <port>", help: "store port on node 0 (default: a free port on one node, 29500 on several)", parse: integerIn(1, 65535, "expected an integer from 1 to 65535") },
} as const;

type FlagKey = keyof typeof FLAGS;

/** Attribute names commander gives the underscore aliases. */
const ALIAS_ATTR: Partial<Record<FlagKey, string>> = {
  nprocPerNode: "nproc_per_node",
  nodeRank: "node_rank",
  masterAddr: "master_addr",
  masterPort: "master_port",
};

export interface RunOptions {
  nprocPerNode: number;
  nnodes: number;
  nodeRank: number;
  masterAddr?: string;
  masterPort?: number;
  nodeArg: string[];
  script: string;
  args: string[];
}

/** Merges the two spellings and checks what no single flag can (node-rank < nnodes, the script). */
export function resolveRunOptions(raw: Record<string, unknown>, script: string, args: string[]): RunOptions {
  const pick = <T>(key: FlagKey): T | undefined => (raw[key] ?? (ALIAS_ATTR[key] ? raw[ALIAS_ATTR[key]!] : undefined)) as T | undefined;
  const nnodes = pick<number>("nnodes") ?? 1;
  const nodeRank = pick<number>("nodeRank") ?? 0;
  if (nodeRank >= nnodes) {
    throw invalidOption(FLAGS.nodeRank.flags, String(nodeRank), `expected an integer from 0 to ${nnodes - 1} (--node-rank must be less than --nnodes ${nnodes})`);
  }
  if (!SCRIPT_EXT.test(script)) {
    throw invalidArgument("script", script, "expected a script ending in .ts, .mts, .cts, .js, .mjs or .cjs");
  }
  const abs = resolve(script);
  if (!existsSync(abs) || !statSync(abs).isFile()) {
    throw invalidArgument("script", script, `expected an existing script file (${abs} does not exist)`);
  }
  return {
    nprocPerNode: pick<number>("nprocPerNode") ?? 1,
    nnodes,
    nodeRank,
    masterAddr: pick<string>("masterAddr"),
    masterPort: pick<number>("masterPort"),
    nodeArg: (raw.nodeArg as string[] | undefined) ?? [],
    script,
    args,
  };
}

export function runCommand(ctx: CliContext): Command {
  const cmd = new Command("run")
    .description("launch a training script on N ranks of this node (torchrun-compatible)")
    .usage("[options] <script> [args...]")
    .argument("<script>", "the training script (.ts/.mts/.cts run through tsx, .js/.mjs/.cjs with node)")
    .argument("[args...]", "arguments passed to the script")
    // Options after the script belong to the script, as with torchrun.
    .passThroughOptions();
  for (const f of Object.values(FLAGS)) {
    const parse = f.parse as (value: string) => unknown;
    cmd.addOption(new Option(f.flags, f.help).argParser(parse));
    if (f.alias) cmd.addOption(new Option(f.alias).argParser(parse).hideHelp());
  }
  cmd
    .addOption(new Option("--standalone", "accepted for torchrun compatibility (one node is always standalone)"))
    .addOption(new Option("--node-arg <flag>", "a flag for node itself, before the script (repeatable), e.g. --node-arg=--max-old-space-size=8192").argParser(collect((v: string) => v)))
    .addHelpText(
      "after",
      `
Every rank gets WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK, MASTER_ADDR, MASTER_PORT and
FULGUR_STORE_TOKEN; its output is prefixed with [rank N]. When a rank fails the others are stopped and
the job exits with the failing rank's code. Multi-node jobs need the same FULGUR_STORE_TOKEN on every node.

Examples:
  $ fulgur run --nproc-per-node 4 train.ts --epochs 3
  $ fulgur run --nproc_per_node=2 train.mjs
  $ FULGUR_STORE_TOKEN=$SECRET fulgur run --nnodes 2 --node-rank 0 --master-addr 10.0.0.1 --master-port 29500 --nproc-per-node 8 train.ts`,
    )
    .action(async (script: string, args: string[], raw: Record<string, unknown>) => {
      const o = resolveRunOptions(raw, script, args);
      try {
        const result = await launch({
          nprocPerNode: o.nprocPerNode,
          nnodes: o.nnodes,
          nodeRank: o.nodeRank,
          masterAddr: o.masterAddr,
          masterPort: o.masterPort,
          script: o.script,
          args: o.args,
          nodeArgs: o.nodeArg,
          stdout: writableOf(ctx.io.out),
          stderr: writableOf(ctx.io.err),
        });
        ctx.exitCode = result.exitCode;
      } catch (err) {
        // The launcher refuses bad options (a busy port, a missing store token) before spawning anything.
        if (err instanceof DistributedArgumentError) throw new UsageError(err.message);
        throw err;
      }
    });
  return cmd;
}
