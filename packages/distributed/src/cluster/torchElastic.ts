/**
 * The torchrun variables (WORLD_SIZE, RANK, LOCAL_RANK, LOCAL_WORLD_SIZE, NODE_RANK / GROUP_RANK,
 * MASTER_ADDR, MASTER_PORT): what `fulgur run`, torchrun and most Kubernetes operators set, so
 * one environment covers them all (DESIGN.md decision 1).
 */
import type { ClusterEnvironment } from "@fulgur/core";
import { DistributedArgumentError } from "../errors";
import { LayoutEnvironment } from "./layoutEnvironment";
import { checkBelow, optional, optionalInteger, parsePort, required, requiredInteger, type Env } from "./envVars";

export interface RankLayout {
  readonly worldSize: number;
  readonly rank: number;
  readonly localRank: number;
  readonly localWorldSize: number;
  readonly nodeRank: number;
  readonly mainAddress: string;
  readonly mainPort: number;
}

/** What every Fulgur environment answers beyond the core contract. */
export interface FulgurClusterEnvironment extends ClusterEnvironment {
  /** Ranks on this node. */
  localWorldSize(): number;
  /** Reads and checks every variable at once; throws naming the first bad one. */
  layout(): RankLayout;
}

const HINT = "torchrun-style launchers (`fulgur run`, torchrun) set it for every rank";

export class TorchElasticEnvironment extends LayoutEnvironment {
  readonly name = "torchelastic";
  readonly createsProcessesExternally = true;

  constructor(private readonly env: Env = process.env) {
    super();
  }

  detect(): boolean {
    return optional(this.env, "RANK") !== undefined && optional(this.env, "WORLD_SIZE") !== undefined;
  }

  protected readLayout(): RankLayout {
    const env = this.env;
    const worldSize = requiredInteger(env, "WORLD_SIZE", HINT, 1);
    const rank = requiredInteger(env, "RANK", HINT, 0);
    checkBelow("RANK", rank, "WORLD_SIZE", worldSize);
    // Launchers that start one process per machine (Kubeflow) set no local variables: one rank per node.
    const localWorldSize = optionalInteger(env, "LOCAL_WORLD_SIZE", 1) ?? 1;
    if (localWorldSize > worldSize) {
      throw new DistributedArgumentError(`LOCAL_WORLD_SIZE=${localWorldSize} must not exceed WORLD_SIZE=${worldSize}`);
    }
    const localRank = optionalInteger(env, "LOCAL_RANK", 0) ?? 0;
    checkBelow("LOCAL_RANK", localRank, "LOCAL_WORLD_SIZE", localWorldSize);
    const nodeRank =
      optionalInteger(env, "NODE_RANK", 0) ?? optionalInteger(env, "GROUP_RANK", 0) ?? Math.floor(rank / localWorldSize);
    const mainAddress = required(env, "MASTER_ADDR", HINT);
    const mainPort = parsePort("MASTER_PORT", required(env, "MASTER_PORT", HINT));
    return { worldSize, rank, localRank, localWorldSize, nodeRank, mainAddress, mainPort };
  }
}
