/**
 * The contract version every plugin states. A plugin built against another copy or minor version
 * of @fulgur/core works as long as the major version matches (DESIGN.md, decision 11): the
 * registries check the shape of what they are given and this number, never its class.
 */
export const CONTRACT_VERSION = 1;

export function isCompatibleContract(version: unknown): boolean {
  return typeof version === "number" && Math.floor(version) === CONTRACT_VERSION;
}
