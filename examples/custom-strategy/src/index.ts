/** A third-party Fulgur strategy package: importing it registers `ema_single_device`. */
import { StrategyRegistry } from "@fulgur/core";
import { type EmaOptions, EmaSingleDeviceStrategy } from "./emaStrategy";

export { EmaSingleDeviceStrategy, type EmaOptions };

export function registerStrategies(registry: typeof StrategyRegistry = StrategyRegistry): void {
  if (registry.has("ema_single_device")) return;
  registry.register("ema_single_device", (o) => new EmaSingleDeviceStrategy(o as EmaOptions), {
    description: "single device, plus an exponential moving average of the weights saved in checkpoints",
    defaults: { decay: 0.9 },
    package: "fulgur-custom-strategy-example",
  });
}

registerStrategies();
