/**
 * The `fulgur` executable (tsup adds the `#!/usr/bin/env node` line). It only sets the exit code, so
 * output still being written is flushed before the process ends.
 */
import { runCli } from "./program";

// `fulgur strategies | head` closes the pipe early; that ends the output, it is not a failure.
for (const stream of [process.stdout, process.stderr]) {
  stream.on("error", (err: NodeJS.ErrnoException) => {
    if (err.code === "EPIPE") process.exit(process.exitCode ?? 0);
    throw err;
  });
}

process.exitCode = await runCli(process.argv.slice(2));
