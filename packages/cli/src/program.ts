/**
 * The `fulgur` program: the subcommands, global --version and --help, and one place that turns
 * what went wrong into an exit code. Bad flags and bad config files exit with 2 (commander's own
 * parse errors included); failures of the work exit with 1 and show the message alone, with the
 * stack only when FULGUR_DEBUG=1.
 */
import { Command, CommanderError } from "commander";
import { benchCommand } from "./commands/bench";
import { pipelineCommand } from "./commands/pipeline";
import { planCommand } from "./commands/plan";
import { checkpointCommand } from "./commands/checkpoint";
import { envCommand } from "./commands/env";
import { fitCommand } from "./commands/fit";
import { runCommand } from "./commands/run";
import { strategiesCommand } from "./commands/strategies";
import type { CliContext } from "./context";
import { EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError } from "./errors";
import { type CliIO, processIO } from "./io";
import { CLI_VERSION } from "./packages";

const EXAMPLES = `
Examples:
  $ fulgur run --nproc-per-node 4 train.ts            launch 4 ranks (torchrun-compatible flags)
  $ fulgur fit --config gpt.yaml --set trainer.maxSteps=100
  $ fulgur checkpoint inspect fulgur_logs/version_0/checkpoints/last.safetensors
  $ fulgur checkpoint convert last.safetensors gpt.safetensors --weights-only
  $ fulgur strategies
  $ fulgur plan --config 1b --devices 8 --gpu-memory 80GiB
  $ fulgur env --json
  $ fulgur bench --config 1b --devices 1

Set FULGUR_DEBUG=1 to see stack traces. Run \`fulgur <command> --help\` for a command's options.`;

/** exitOverride and output go to every command, including those added with addCommand. */
function configure(cmd: Command, io: CliIO): void {
  cmd.exitOverride();
  cmd.configureOutput({
    writeOut: (s) => io.out(s),
    writeErr: (s) => io.err(s),
  });
  cmd.showSuggestionAfterError(true);
  for (const sub of cmd.commands) configure(sub, io);
}

/** Builds the program. Tests drive it with captured IO; the bin with the process's. */
export function createProgram(ctx: CliContext): Command {
  const program = new Command("fulgur")
    .description("Fulgur: train large models in TypeScript, on one GPU or many")
    .version(CLI_VERSION, "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .enablePositionalOptions()
    .addHelpText("after", EXAMPLES)
    .addCommand(runCommand(ctx))
    .addCommand(fitCommand(ctx))
    .addCommand(checkpointCommand(ctx))
    .addCommand(strategiesCommand(ctx))
    .addCommand(planCommand(ctx))
    .addCommand(envCommand(ctx))
    .addCommand(benchCommand(ctx))
    .addCommand(pipelineCommand(ctx));
  configure(program, ctx.io);
  return program;
}

function debugEnabled(): boolean {
  return process.env.FULGUR_DEBUG === "1" || process.env.FULGUR_DEBUG === "true";
}

/** Runs `fulgur <argv...>` and resolves with the exit code; never throws and never calls process.exit. */
export async function runCli(argv: readonly string[], io: CliIO = processIO): Promise<number> {
  const ctx: CliContext = { io, exitCode: EXIT_OK };
  const program = createProgram(ctx);
  try {
    if (argv.length === 0) {
      io.err(program.helpInformation());
      return EXIT_USAGE;
    }
    await program.parseAsync([...argv], { from: "user" });
    return ctx.exitCode;
  } catch (err) {
    if (err instanceof CommanderError) {
      // Commander has already printed its message ("error: unknown option '--x'").
      return err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
    }
    const e = err instanceof Error ? err : new Error(String(err));
    if (e instanceof UsageError) {
      io.err(`error: ${e.message}\n`);
      if (debugEnabled()) io.err(`${e.stack}\n`);
      return EXIT_USAGE;
    }
    io.err(debugEnabled() ? `fulgur: ${e.stack ?? e.message}\n` : `fulgur: ${e.message}\n`);
    return EXIT_FAILURE;
  }
}
