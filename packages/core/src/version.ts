/**
 * The contract version every plugin states. A plugin built against another copy or minor version
 * of @fulgur/core works as long as the major version matches (DESIGN.md, decision 11): the
 * registries check the shape of what they are given and this number, never its class.
 *
 * Version 2: the precision owns the optimizer step (`Precision.optimizerStep` takes options and
 * resolves to the step's result), `Work.synchronize()`, the strategy context's `checkpointIO` is
 * optional (the strategy's own default applies), and the abilities of decision 13.
 */
export const CONTRACT_VERSION = 2;

export function isCompatibleContract(version: unknown): boolean {
  return typeof version === "number" && Math.floor(version) === CONTRACT_VERSION;
}
