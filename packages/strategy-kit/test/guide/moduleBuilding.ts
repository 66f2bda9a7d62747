/** ModuleBuilding: the strategy runs the user's `configureModel` where it wants the parameters made. */
import type { ModuleBuilding } from "@fulgur/core";
import type { Module } from "@fulgur/nn";
import { SingleDeviceStrategy } from "@fulgur/strategy-kit";
import { withDevice } from "@fulgur/tensor";

export class BuildReportingStrategy extends SingleDeviceStrategy implements ModuleBuilding {
  override readonly name: string = "build_reporting";
  builtParameters = 0;

  async buildModule(module: Module, configure: () => void): Promise<void> {
    // FSDP builds on "meta" (no memory) and materialises one unit at a time; this one builds in place.
    withDevice(this.rootDevice, configure);
    this.builtParameters = module.numParameters();
  }
}
