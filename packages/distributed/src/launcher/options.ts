/**
 * The launcher's options, validated at the door (DESIGN.md decision 10): before any process is
 * started, a bad option fails with its name, its `fulgur run` flag, the value given and what is
 * allowed. zod finds the bad field; the sentence comes from the table below, so every error
 * reads the same whatever zod's own wording.
 */
import { z } from "zod";
import { DistributedArgumentError } from "../errors";

export interface LaunchOptions {
  /** Ranks to start on this node. */
  readonly nprocPerNode: number;
  /** Nodes in the job (default 1). */
  readonly nnodes?: number;
  /** This node's index, 0 .. nnodes-1 (default 0). */
  readonly nodeRank?: number;
  /** Address of node 0, where rank 0 hosts the store (default 127.0.0.1). */
  readonly masterAddr?: string;
  /** Store port on node 0 (default: a free port for one node, 29500 for several). */
  readonly masterPort?: number;
  /** The training script: .ts/.mts/.cts run through tsx, .js/.mjs/.cjs with plain node. */
  readonly script: string;
  readonly args?: readonly string[];
  /** Environment of the ranks (default process.env); the rank variables are added to it. */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** Working directory of the ranks (default process.cwd()). */
  readonly cwd?: string;
  /** Shared secret of the job's store; default FULGUR_STORE_TOKEN from `env`, else a fresh random one (one node only). */
  readonly storeToken?: string;
  /** After a rank fails, how long the others get between SIGTERM and SIGKILL (default 5000 ms). */
  readonly killGraceMs?: number;
  /** Extra flags for node itself, before the script (e.g. --max-old-space-size=8192). */
  readonly nodeArgs?: readonly string[];
  /** Where prefixed rank output goes (default process.stdout / process.stderr). */
  readonly stdout?: NodeJS.WritableStream;
  readonly stderr?: NodeJS.WritableStream;
  /** Forward SIGINT/SIGTERM received by this process to the ranks (default true). */
  readonly forwardSignals?: boolean;
}

/** Options after validation, with defaults filled in (the port is resolved later, it needs the network). */
export interface ResolvedLaunchOptions {
  readonly nprocPerNode: number;
  readonly nnodes: number;
  readonly nodeRank: number;
  readonly masterAddr: string;
  readonly masterPort: number | undefined;
  readonly script: string;
  readonly args: readonly string[];
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly cwd: string;
  readonly storeToken: string | undefined;
  readonly killGraceMs: number;
  readonly nodeArgs: readonly string[];
  readonly stdout: NodeJS.WritableStream;
  readonly stderr: NodeJS.WritableStream;
  readonly forwardSignals: boolean;
}

/** Field → (CLI flag, what is allowed), for error messages. */
const FIELDS: Record<string, { flag?: string; allowed: string }> = {
  nprocPerNode: { flag: "--nproc-per-node", allowed: "a positive integer (the number of ranks to start on this node)" },
  nnodes: { flag: "--nnodes", allowed: "a positive integer (the number of nodes in the job)" },
  nodeRank: { flag: "--node-rank", allowed: "an integer from 0 to nnodes-1" },
  masterAddr: { flag: "--master-addr", allowed: "a non-empty host name or IP address of node 0" },
  masterPort: { flag: "--master-port", allowed: "an integer from 1 to 65535" },
  script: { allowed: "a path to a script ending in .ts, .mts, .cts, .js, .mjs or .cjs" },
  args: { allowed: "an array of strings (the script's arguments)" },
  env: { allowed: "an object of string values" },
  cwd: { allowed: "a directory path" },
  storeToken: { allowed: "a non-empty string" },
  killGraceMs: { allowed: "a non-negative number of milliseconds" },
  nodeArgs: { allowed: "an array of strings" },
  stdout: { allowed: "a writable stream" },
  stderr: { allowed: "a writable stream" },
  forwardSignals: { allowed: "true or false" },
};

/** CLI parsers hand over strings; accept "4" as 4 but keep "4x" a string so it fails with its value. */
const integerLike = (schema: z.ZodNumber) =>
  z.preprocess((v) => (typeof v === "string" && /^\s*[+-]?\d+\s*$/.test(v) ? Number(v) : v), schema);

const writable = z.custom<NodeJS.WritableStream>((v) => typeof v === "object" && v !== null && typeof (v as { write?: unknown }).write === "function");

const schema = z.strictObject({
  nprocPerNode: integerLike(z.number().int().min(1)),
  nnodes: integerLike(z.number().int().min(1)).optional(),
  nodeRank: integerLike(z.number().int().min(0)).optional(),
  masterAddr: z.string().trim().min(1).optional(),
  masterPort: integerLike(z.number().int().min(1).max(65535)).optional(),
  script: z.string().regex(/\.(ts|mts|cts|js|mjs|cjs)$/),
  args: z.array(z.string()).optional(),
  // process.env is not a plain object; copy it so the record check sees its values.
  env: z
    .preprocess((v) => (v && typeof v === "object" ? { ...(v as object) } : v), z.record(z.string(), z.string().optional()))
    .optional(),
  cwd: z.string().min(1).optional(),
  storeToken: z.string().min(1).optional(),
  killGraceMs: z.number().min(0).optional(),
  nodeArgs: z.array(z.string()).optional(),
  stdout: writable.optional(),
  stderr: writable.optional(),
  forwardSignals: z.boolean().optional(),
});

function show(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean" || value === null || value === undefined) return String(value);
  return typeof value;
}

function optionError(field: string, value: unknown, allowed?: string): DistributedArgumentError {
  const info = FIELDS[field];
  const name = info?.flag ? `${field} (${info.flag})` : field;
  return new DistributedArgumentError(`launch option ${name}: got ${show(value)}; expected ${allowed ?? info?.allowed ?? "a valid value"}`);
}

/** Validates launcher options and fills in defaults; throws DistributedArgumentError naming the first bad option. */
export function resolveLaunchOptions(options: LaunchOptions): ResolvedLaunchOptions {
  if (typeof options !== "object" || options === null) {
    throw new DistributedArgumentError(`launch options: got ${show(options)}; expected an object with at least nprocPerNode and script`);
  }
  const parsed = schema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    if (issue.code === "unrecognized_keys") {
      throw new DistributedArgumentError(
        `launch options: unknown option(s) ${issue.keys.map((k) => JSON.stringify(k)).join(", ")}; known options are ${Object.keys(FIELDS).join(", ")}`,
      );
    }
    const field = String(issue.path[0] ?? "");
    throw optionError(field, (options as unknown as Record<string, unknown>)[field]);
  }
  const o = parsed.data;
  const nnodes = o.nnodes ?? 1;
  const nodeRank = o.nodeRank ?? 0;
  if (nodeRank >= nnodes) throw optionError("nodeRank", nodeRank, `an integer from 0 to ${nnodes - 1} (node-rank must be less than nnodes=${nnodes})`);
  const env = o.env ?? process.env;
  return {
    nprocPerNode: o.nprocPerNode,
    nnodes,
    nodeRank,
    masterAddr: o.masterAddr ?? "127.0.0.1",
    masterPort: o.masterPort,
    script: o.script,
    args: o.args ?? [],
    env,
    cwd: o.cwd ?? process.cwd(),
    storeToken: o.storeToken ?? (env.FULGUR_STORE_TOKEN || undefined),
    killGraceMs: o.killGraceMs ?? 5_000,
    nodeArgs: o.nodeArgs ?? [],
    stdout: o.stdout ?? process.stdout,
    stderr: o.stderr ?? process.stderr,
    forwardSignals: o.forwardSignals ?? true,
  };
}

export { optionError };
