/**
 * ExceptionAware: told of a failure on this rank before teardown. ParallelStrategy reports it to
 * every rank through the store; this one leaves a note for the job scheduler as well.
 */
import { writeFile } from "node:fs/promises";
import type { ExceptionAware } from "@fulgur/core";
import { SingleDeviceStrategy } from "@fulgur/strategy-kit";

export class NoteTakingStrategy extends SingleDeviceStrategy implements ExceptionAware {
  override readonly name: string = "note_taking";

  constructor(private readonly notePath: string) {
    super();
  }

  async onException(error: unknown): Promise<void> {
    const why = error instanceof Error ? error.message : String(error);
    await writeFile(this.notePath, `${this.name} on rank ${this.globalRank} failed: ${why}\n`);
  }
}
