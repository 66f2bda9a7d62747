/**
 * `initProcessGroup`: the one call a training script makes to join its job. Rank 0 hosts the
 * store on the cluster environment's main address and port, every rank (rank 0 included)
 * connects to it with the job's token, and the world CPU process group is built on top.
 */
import type { ClusterEnvironment } from "@fulgur/core";
import { detectClusterEnvironment, type ClusterEnvironmentName } from "./cluster/detect";
import { createCpuProcessGroup, type CpuProcessGroup } from "./processGroup/cpuProcessGroup";
import { DEFAULT_TIMEOUT_MS, type HostGroupOptions } from "./processGroup/hostGroup";
import { TcpStore } from "./store/client";
import { StoreServer } from "./store/server";
import { checkTimeout } from "./util/timers";

export interface InitProcessGroupOptions extends HostGroupOptions {
  /** Where this rank stands; default: detected from the environment (torchrun variables, SLURM, local). */
  readonly cluster?: ClusterEnvironment | ClusterEnvironmentName;
  /** Environment to detect from and read the token from (default process.env). */
  readonly env?: Readonly<Record<string, string | undefined>>;
  /** The job's store token (default FULGUR_STORE_TOKEN, else "" which only matches other ""). */
  readonly token?: string;
  /** Name of the world group in store keys (default "default"). */
  readonly name?: string;
}

export interface Initialized {
  readonly cluster: ClusterEnvironment;
  readonly store: TcpStore;
  readonly group: CpuProcessGroup;
  /** The store server, on rank 0 only. */
  readonly server: StoreServer | undefined;
  /**
   * Leaves the job: waits for every rank at a barrier (so rank 0 does not take the store away from
   * ranks still using it), then destroys the group and closes the store and, on rank 0, its server.
   */
  shutdown(): Promise<void>;
}

export async function initProcessGroup(options: InitProcessGroupOptions = {}): Promise<Initialized> {
  const env = options.env ?? process.env;
  const cluster = detectClusterEnvironment(env, options.cluster);
  const timeoutMs = checkTimeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS, "timeoutMs");
  const rank = cluster.globalRank();
  const size = cluster.worldSize();
  const host = cluster.mainAddress();
  const token = options.token ?? env.FULGUR_STORE_TOKEN ?? "";
  // With one rank nobody else needs to know the port in advance; 0 lets the system pick one.
  const wantedPort = size === 1 && !env.MASTER_PORT ? 0 : cluster.mainPort();
  const server = rank === 0 ? await StoreServer.start({ host, port: wantedPort, token }) : undefined;
  const port = server ? server.port : wantedPort;
  let store: TcpStore;
  try {
    store = await TcpStore.connect({ host, port, token, timeoutMs, connectTimeoutMs: Math.min(timeoutMs, 300_000) });
  } catch (err) {
    await server?.close();
    throw err;
  }
  const group = await createCpuProcessGroup({
    store,
    rank,
    size,
    name: options.name,
    token,
    timeoutMs,
    smallTensorBytes: options.smallTensorBytes,
  }).catch(async (err: unknown) => {
    await store.close();
    await server?.close();
    throw err;
  });
  let closed = false;
  return {
    cluster,
    store,
    group,
    server,
    async shutdown() {
      if (closed) return;
      closed = true;
      try {
        await group.barrier().wait();
      } finally {
        await group.destroy();
        await store.close();
        await server?.close();
      }
    },
  };
}
