/** What every command gets: where to write, and where to leave the exit code it decided on. */
import type { CliIO } from "./io";

export interface CliContext {
  readonly io: CliIO;
  /** Set by commands whose work ends in a code of its own (`fulgur run`: the job's). */
  exitCode: number;
}
