/**
 * Picks the cluster environment a process runs in: the first of torchrun variables, SLURM and the
 * local default that recognises itself, unless the user names one. torchrun variables come first
 * because a launcher inside a SLURM allocation (`fulgur run` under salloc) sets them on purpose.
 */
import type { ClusterEnvironment } from "@fulgur/core";
import { DistributedArgumentError } from "../errors";
import type { Env } from "./envVars";
import { LocalEnvironment } from "./local";
import { SlurmEnvironment } from "./slurm";
import { TorchElasticEnvironment, type FulgurClusterEnvironment } from "./torchElastic";

export type ClusterEnvironmentName = "torchelastic" | "slurm" | "local";

const FACTORIES: Record<ClusterEnvironmentName, (env: Env) => FulgurClusterEnvironment> = {
  torchelastic: (env) => new TorchElasticEnvironment(env),
  slurm: (env) => new SlurmEnvironment(env),
  local: (env) => new LocalEnvironment(env),
};

/** Candidates in detection order. */
const ORDER: readonly ClusterEnvironmentName[] = ["torchelastic", "slurm", "local"];

/**
 * The environment describing this process. `explicit` (an environment object, used as is, or a
 * name) overrides detection; an unknown name is an error listing the known ones.
 */
export function detectClusterEnvironment(
  env: Env = process.env,
  explicit?: ClusterEnvironment | ClusterEnvironmentName,
): ClusterEnvironment {
  if (typeof explicit === "object" && explicit !== null) return explicit;
  if (explicit !== undefined) {
    const make = FACTORIES[explicit as ClusterEnvironmentName];
    if (!make) {
      throw new DistributedArgumentError(
        `cluster environment: got ${JSON.stringify(explicit)}; expected one of ${ORDER.join(", ")} or a ClusterEnvironment object`,
      );
    }
    return make(env);
  }
  for (const name of ORDER) {
    const candidate = FACTORIES[name](env);
    if (candidate.detect()) return candidate;
  }
  return new LocalEnvironment(env);
}
