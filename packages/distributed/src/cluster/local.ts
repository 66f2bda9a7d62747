/**
 * The plain local default: one process, rank 0 of a world of 1, rendezvous on 127.0.0.1 and a
 * free port (MASTER_ADDR / MASTER_PORT win when set). It detects itself everywhere, so it is
 * tried last; `createsProcessesExternally` is false, which tells the Trainer it may launch the
 * other ranks itself (DESIGN.md decision 1).
 */
import { optional, parsePort, type Env } from "./envVars";
import { findFreePortSync } from "./freePort";
import type { FulgurClusterEnvironment, RankLayout } from "./torchElastic";

export class LocalEnvironment implements FulgurClusterEnvironment {
  readonly name = "local";
  readonly createsProcessesExternally = false;
  private cached: RankLayout | undefined;

  constructor(private readonly env: Env = process.env) {}

  detect(): boolean {
    return true;
  }

  layout(): RankLayout {
    if (this.cached) return this.cached;
    const mainAddress = optional(this.env, "MASTER_ADDR") ?? "127.0.0.1";
    const port = optional(this.env, "MASTER_PORT");
    const mainPort = port !== undefined ? parsePort("MASTER_PORT", port) : findFreePortSync(mainAddress);
    this.cached = Object.freeze({ worldSize: 1, rank: 0, localRank: 0, localWorldSize: 1, nodeRank: 0, mainAddress, mainPort });
    return this.cached;
  }

  worldSize(): number {
    return 1;
  }
  globalRank(): number {
    return 0;
  }
  localRank(): number {
    return 0;
  }
  localWorldSize(): number {
    return 1;
  }
  nodeRank(): number {
    return 0;
  }
  mainAddress(): string {
    return this.layout().mainAddress;
  }
  /** MASTER_PORT, or a port that was free when first asked (then the same one on every call). */
  mainPort(): number {
    return this.layout().mainPort;
  }
}
