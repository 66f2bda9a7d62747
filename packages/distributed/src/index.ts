/**
 * @fulgur/distributed: the TCP rendezvous store, the CPU process group over TCP, the launcher
 * behind `fulgur run`, cluster environments (torchrun variables, SLURM, local) and failure
 * propagation between ranks.
 */
export { StoreServer, type StoreServerOptions } from "./store/server";
export { TcpStore, type TcpStoreOptions } from "./store/client";

export { CpuProcessGroup, createCpuProcessGroup, type CpuProcessGroupOptions } from "./processGroup/cpuProcessGroup";
export {
  HostProcessGroup,
  createHostProcessGroup,
  DEFAULT_SMALL_TENSOR_BYTES,
  DEFAULT_TIMEOUT_MS,
  type CreateHostGroupOptions,
  type HostGroupOptions,
} from "./processGroup/hostGroup";
export { formatCollectives, type CollectiveRecord, type CollectiveState } from "./processGroup/collectiveLog";
export { PromiseWork } from "./processGroup/work";

export { launch, nodeArguments, rankEnvironment, type LaunchResult } from "./launcher/launcher";
export { resolveLaunchOptions, type LaunchOptions, type ResolvedLaunchOptions } from "./launcher/options";

export { TorchElasticEnvironment, type FulgurClusterEnvironment, type RankLayout } from "./cluster/torchElastic";
export { SlurmEnvironment, portFromJobId } from "./cluster/slurm";
export { LocalEnvironment } from "./cluster/local";
export { detectClusterEnvironment, type ClusterEnvironmentName } from "./cluster/detect";
export { expandNodeList, expandTasksPerNode } from "./cluster/nodeList";
export { findFreePort, isPortFree } from "./cluster/freePort";

export {
  FAILURE_KEY,
  FailureChannel,
  failureError,
  reportFailure,
  watchForFailures,
  type FailureOptions,
  type FailureReport,
  type FailureWatch,
  type WatchOptions,
} from "./failure";
export { initProcessGroup, type HostedStoreServer, type Initialized, type InitProcessGroupOptions } from "./init";

export {
  CollectiveMismatchError,
  CollectiveTimeoutError,
  DistributedArgumentError,
  GroupAbortedError,
  GroupFailedError,
  PeerLostError,
  RankFailureError,
  StoreBindError,
  StoreConnectionError,
  StoreRequestError,
  StoreTimeoutError,
  StoreTokenMismatchError,
  type CollectiveContext,
} from "./errors";
