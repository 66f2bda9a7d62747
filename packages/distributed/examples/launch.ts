// Starts allreduce.ts as a 3-rank job on this machine, as `fulgur run --nproc-per-node 3` does.
import path from "node:path";
import { fileURLToPath } from "node:url";
import { launch } from "@fulgur/distributed";

const here = path.dirname(fileURLToPath(import.meta.url));
const result = await launch({ nprocPerNode: 3, script: path.join(here, "allreduce.ts") });
process.exit(result.exitCode);
