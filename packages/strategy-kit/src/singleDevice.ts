/** The `single_device` strategy: one process, one device, no communication. Everything is BaseStrategy's. */
import { BaseStrategy, type BaseStrategyOptions } from "./baseStrategy";

export type SingleDeviceOptions = BaseStrategyOptions;

export class SingleDeviceStrategy extends BaseStrategy {
  readonly name: string = "single_device";
}
