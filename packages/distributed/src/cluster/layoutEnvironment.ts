/**
 * The shared half of the environments that read a whole rank layout from variables (torchrun,
 * SLURM): the layout is read and checked once, then every getter answers from it.
 */
import type { FulgurClusterEnvironment, RankLayout } from "./torchElastic";

export abstract class LayoutEnvironment implements FulgurClusterEnvironment {
  abstract readonly name: string;
  abstract readonly createsProcessesExternally: boolean;
  private cached: RankLayout | undefined;

  abstract detect(): boolean;

  /** Reads and checks every variable; throws naming the first bad one. Called once. */
  protected abstract readLayout(): RankLayout;

  layout(): RankLayout {
    this.cached ??= Object.freeze(this.readLayout());
    return this.cached;
  }

  worldSize(): number {
    return this.layout().worldSize;
  }
  globalRank(): number {
    return this.layout().rank;
  }
  localRank(): number {
    return this.layout().localRank;
  }
  localWorldSize(): number {
    return this.layout().localWorldSize;
  }
  nodeRank(): number {
    return this.layout().nodeRank;
  }
  mainAddress(): string {
    return this.layout().mainAddress;
  }
  mainPort(): number {
    return this.layout().mainPort;
  }
}
