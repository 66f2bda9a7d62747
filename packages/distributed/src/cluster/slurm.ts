/**
 * SLURM: one task per rank started by `srun`. Ranks come from SLURM_PROCID / SLURM_NTASKS /
 * SLURM_LOCALID / SLURM_NODEID; the main address is the first host of the job's node list unless
 * MASTER_ADDR says otherwise, and the port is derived from the job id (as Lightning does) so every
 * task of a job agrees on it without talking, while two jobs on one node rarely collide.
 */
import { checkBelow, optional, optionalInteger, parseInteger, parsePort, requiredInteger, type Env } from "./envVars";
import { expandNodeList, expandTasksPerNode } from "./nodeList";
import { LayoutEnvironment } from "./layoutEnvironment";
import type { RankLayout } from "./torchElastic";
import { DistributedArgumentError } from "../errors";

const HINT = "srun sets it for every task; run the job with srun inside the allocation";

/** The port a job uses when MASTER_PORT is unset: 15000 + the last four digits of the job id. */
export function portFromJobId(jobId: string): number {
  const digits = parseInteger("SLURM_JOB_ID", jobId, 0);
  return 15000 + (digits % 10000);
}

export class SlurmEnvironment extends LayoutEnvironment {
  readonly name = "slurm";
  readonly createsProcessesExternally = true;

  constructor(private readonly env: Env = process.env) {
    super();
  }

  /** True inside an srun task; false in an interactive allocation's shell, where the user launches ranks. */
  detect(): boolean {
    if (optional(this.env, "SLURM_NTASKS") === undefined || optional(this.env, "SLURM_PROCID") === undefined) return false;
    const jobName = optional(this.env, "SLURM_JOB_NAME");
    return jobName !== "bash" && jobName !== "interactive";
  }

  protected readLayout(): RankLayout {
    const env = this.env;
    const worldSize = requiredInteger(env, "SLURM_NTASKS", HINT, 1);
    const rank = requiredInteger(env, "SLURM_PROCID", HINT, 0);
    checkBelow("SLURM_PROCID", rank, "SLURM_NTASKS", worldSize);
    const nodeRank = requiredInteger(env, "SLURM_NODEID", HINT, 0);
    const nnodes = optionalInteger(env, "SLURM_NNODES", 1) ?? optionalInteger(env, "SLURM_JOB_NUM_NODES", 1);
    if (nnodes !== undefined) checkBelow("SLURM_NODEID", nodeRank, "SLURM_NNODES", nnodes);
    const localWorldSize = this.tasksOnThisNode(nodeRank);
    const localRank = requiredInteger(env, "SLURM_LOCALID", HINT, 0);
    checkBelow("SLURM_LOCALID", localRank, "the tasks on this node", localWorldSize);
    const mainAddress = optional(env, "MASTER_ADDR") ?? this.firstHost();
    const masterPort = optional(env, "MASTER_PORT");
    let mainPort: number;
    if (masterPort !== undefined) mainPort = parsePort("MASTER_PORT", masterPort);
    else {
      const jobId = optional(env, "SLURM_JOB_ID") ?? optional(env, "SLURM_JOBID");
      if (jobId === undefined) {
        throw new DistributedArgumentError("neither MASTER_PORT nor SLURM_JOB_ID is set; set MASTER_PORT to a free port for the job");
      }
      mainPort = portFromJobId(jobId);
    }
    return { worldSize, rank, localRank, localWorldSize, nodeRank, mainAddress, mainPort };
  }

  private tasksOnThisNode(nodeRank: number): number {
    const perNode = optionalInteger(this.env, "SLURM_NTASKS_PER_NODE", 1);
    if (perNode !== undefined) return perNode;
    const compact = optional(this.env, "SLURM_TASKS_PER_NODE") ?? optional(this.env, "SLURM_STEP_TASKS_PER_NODE");
    if (compact === undefined) {
      throw new DistributedArgumentError(`neither SLURM_NTASKS_PER_NODE nor SLURM_TASKS_PER_NODE is set; ${HINT}`);
    }
    const counts = expandTasksPerNode(compact);
    if (nodeRank >= counts.length) {
      throw new DistributedArgumentError(
        `SLURM_NODEID=${nodeRank} but SLURM_TASKS_PER_NODE=${JSON.stringify(compact)} describes only ${counts.length} node(s)`,
      );
    }
    return counts[nodeRank];
  }

  private firstHost(): string {
    const list = optional(this.env, "SLURM_NODELIST");
    if (list !== undefined) return expandNodeList(list, "SLURM_NODELIST")[0];
    const jobList = optional(this.env, "SLURM_JOB_NODELIST");
    if (jobList !== undefined) return expandNodeList(jobList, "SLURM_JOB_NODELIST")[0];
    throw new DistributedArgumentError("none of MASTER_ADDR, SLURM_NODELIST, SLURM_JOB_NODELIST is set; set MASTER_ADDR to rank 0's host");
  }
}
