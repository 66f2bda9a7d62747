/**
 * `initProcessGroup`: the one call a training script makes to join its job. Rank 0 hosts the
 * store on the cluster environment's main address and port, every rank (rank 0 included)
 * connects to it with the job's token, and the world CPU process group is built on top.
 *
 * The store server runs in the group's transport thread, not on the caller's: a rank 0 blocked in
 * `Work.synchronize()` must still answer the peers that are joining or looking up addresses (see
 * [Note: the transport thread] in processGroup/cpuProcessGroup.ts).
 */
import type { ClusterEnvironment } from "@fulgur/core";
import { detectClusterEnvironment, type ClusterEnvironmentName } from "./cluster/detect";
import { CpuProcessGroup } from "./processGroup/cpuProcessGroup";
import { DEFAULT_TIMEOUT_MS, type HostGroupOptions } from "./processGroup/hostGroup";
import { GroupThread } from "./processGroup/worker/thread";
import { TcpStore } from "./store/client";
import { checkTimeout } from "./util/timers";

/** The store server rank 0 hosts, running in its group's transport thread. */
export interface HostedStoreServer {
  readonly host: string;
  readonly port: number;
  /** Stops serving; clients' pending requests fail. Idempotent. */
  close(): Promise<void>;
}

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
  readonly server: HostedStoreServer | undefined;
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
  const thread = GroupThread.start();
  let server: HostedStoreServer | undefined;
  let store: TcpStore | undefined;
  try {
    server = rank === 0 ? await hostStoreServer(thread, host, wantedPort, token) : undefined;
    const port = server ? server.port : wantedPort;
    store = await TcpStore.connect({ host, port, token, timeoutMs, connectTimeoutMs: Math.min(timeoutMs, 300_000) });
    const group = await CpuProcessGroup.join(thread, { store, rank, size, name: options.name, token, timeoutMs, smallTensorBytes: options.smallTensorBytes });
    return joined(cluster, store, group, server);
  } catch (err) {
    await store?.close();
    await server?.close();
    await thread.stop();
    throw err;
  }
}

function joined(cluster: ClusterEnvironment, store: TcpStore, group: CpuProcessGroup, server: HostedStoreServer | undefined): Initialized {
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

/** Starts the store server in `thread`, which lives on at least until the server is closed. */
async function hostStoreServer(thread: GroupThread, host: string, port: number, token: string): Promise<HostedStoreServer> {
  const bound = (await thread.request({ t: "serve", host, port, token })) as { port: number };
  thread.retain();
  thread.holdExit();
  let closed = false;
  return {
    host,
    port: bound.port,
    async close() {
      if (closed) return;
      closed = true;
      await thread.request({ t: "closeServer" }).catch(() => undefined);
      await thread.release();
    },
  };
}
