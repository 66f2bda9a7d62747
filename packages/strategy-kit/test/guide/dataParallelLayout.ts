/**
 * DataParallelLayout: the ranks the loader shards data over. Here every two ranks form one replica
 * that sees one shard (as the stages of a pipeline do), so two ranks share each batch.
 */
import type { DataParallelLayout } from "@fulgur/core";
import { AveragingStrategy } from "./averagingStrategy";

export class PairedStrategy extends AveragingStrategy implements DataParallelLayout {
  override readonly name: string = "paired";

  get dataParallelRank(): number {
    return Math.floor(this.globalRank / 2);
  }

  get dataParallelSize(): number {
    return Math.ceil(this.worldSize / 2);
  }
}
