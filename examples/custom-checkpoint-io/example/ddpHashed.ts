/**
 * `ddp_hashed`: DDP whose checkpoints go through HashedCheckpointIO, registered by name with the
 * checkpoint IO as Lightning's expert page registers `ddp_custom_checkpoint_io`. The Trainer gives
 * a strategy made from this entry the entry's checkpoint IO unless the user picks one in `plugins`.
 */
import { type PluginOptions, type Registry, type Strategy, StrategyRegistry } from "@fulgur/core";
import { type DDPOptions, DDPStrategy } from "@fulgur/strategy-ddp";
import { HashedCheckpointIO } from "../src/index";

export function registerDdpHashed(registry: Registry<Strategy> = StrategyRegistry): void {
  if (registry.has("ddp_hashed")) return;
  registry.register("ddp_hashed", (o: PluginOptions) => new DDPStrategy(o as DDPOptions, "ddp_hashed"), {
    checkpointIO: new HashedCheckpointIO(),
    description: "ddp; checkpoints carry a SHA-256 sidecar and are verified when loaded",
    package: "fulgur-example-custom-checkpoint-io",
  });
}
