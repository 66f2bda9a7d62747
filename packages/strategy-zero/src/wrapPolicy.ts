/**
 * Which modules become units. The default is FSDP's: each element of a ModuleList (a
 * transformer's blocks), outermost lists only; `autoWrapPolicy` replaces it with a set of classes
 * (or class names) or a function of the module and its parameter count, again outermost matches
 * only. Proposed to move into @fulgur/sharding (`unitPaths`), so FSDP and ZeRO share one copy.
 */
import { type Module, ModuleList } from "@fulgur/nn";
import type { WrapPolicy } from "./api";

function parentPath(path: string): string {
  const dot = path.lastIndexOf(".");
  return dot < 0 ? "" : path.slice(0, dot);
}

function matcher(root: Module, policy: WrapPolicy | null): (path: string, module: Module) => boolean {
  if (policy === null) {
    const lists = new Set(root.namedModules().flatMap(([path, m]) => (m instanceof ModuleList ? [path] : [])));
    return (path) => lists.has(parentPath(path));
  }
  if (typeof policy === "function") return (_path, m) => policy(m, m.numParameters());
  return (_path, m) => policy.some((entry) => (typeof entry === "string" ? m.constructor.name === entry : m instanceof entry));
}

/** Paths of the unit modules in `root`, in module order; a chosen module's descendants are never chosen too. */
export function unitPaths(root: Module, policy: WrapPolicy | null): string[] {
  const matches = matcher(root, policy);
  const chosen: string[] = [];
  for (const [path, m] of root.namedModules()) {
    if (path === "" || chosen.some((c) => path.startsWith(`${c}.`))) continue;
    if (matches(path, m)) chosen.push(path);
  }
  return chosen;
}
