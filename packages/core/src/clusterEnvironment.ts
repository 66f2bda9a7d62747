/** Where a rank learns its place in the job: torchrun variables, SLURM, or a plain local default. */

export interface ClusterEnvironment {
  readonly name: string;
  /** Whether this environment describes the current process (e.g. SLURM_PROCID is set). */
  detect(): boolean;
  /** True when something outside Fulgur started one process per rank (torchrun, srun, `fulgur run`). */
  readonly createsProcessesExternally: boolean;
  worldSize(): number;
  globalRank(): number;
  localRank(): number;
  nodeRank(): number;
  mainAddress(): string;
  mainPort(): number;
}
