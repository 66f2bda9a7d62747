// One rank of a job: joins through the torchrun variables `fulgur run` (or launch.ts) sets,
// sums a tensor across ranks, prints it. Run: node --import tsx examples/launch.ts
import { initProcessGroup } from "@fulgur/distributed";
import { tensor } from "@fulgur/tensor";

const { group, shutdown } = await initProcessGroup({ timeoutMs: 60_000 });
const t = tensor([group.rank + 1, 10]);
await group.allReduce(t, "sum").wait();
console.log(`rank ${group.rank} of ${group.size}: ${t.toArray().join(", ")}`);
await shutdown();
