// One rank of a job whose forward pass gathers sharded weights in a synchronous hook, as FSDP does:
// no await between the gather and the use. Run: fulgur run --nproc-per-node 2 examples/synchronize.ts
import { initProcessGroup } from "@fulgur/distributed";
import { tensor, zeros, type Tensor } from "@fulgur/tensor";

const { group, shutdown } = await initProcessGroup({ timeoutMs: 60_000 });
const shard = tensor([group.rank + 1, group.rank + 1]);
const full = zeros([2 * group.size]);

function forward(x: Tensor): Tensor {
  group.allGather(full, shard).synchronize(); // returns once `full` holds every rank's shard
  return x.mul(full).sum();
}

console.log(`rank ${group.rank}: ${forward(tensor(new Array(2 * group.size).fill(1))).item()}`);
await shutdown();
