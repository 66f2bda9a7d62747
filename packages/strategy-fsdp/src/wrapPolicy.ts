/**
 * Choosing modules by policy (Lightning's `auto_wrap_policy` and `activation_checkpointing_policy`):
 * a set of classes, or a function of the module and its parameter count. The default unit is each
 * element of a ModuleList (a transformer's blocks), the shape of nearly every large model.
 */
import { type Module, ModuleList } from "@fulgur/nn";
import type { WrapPolicy } from "./api";

/** Paths (in `root`) of the modules the policy picks, outermost first; a picked module's descendants are not considered. */
export function selectModules(root: Module, policy: WrapPolicy | null): string[] {
  const picked: string[] = [];
  const matches = (m: Module): boolean => {
    if (policy === null) return false;
    if (typeof policy === "function") return policy(m, m.numParameters());
    return policy.some((cls) => (typeof cls === "string" ? m.constructor.name === cls : m instanceof cls));
  };
  for (const [path, m] of root.namedModules()) {
    if (path === "" || picked.some((p) => path.startsWith(`${p}.`))) continue;
    if (matches(m)) picked.push(path);
  }
  return picked;
}

/** The default wrap policy: each element of every ModuleList. */
export function moduleListElements(root: Module): string[] {
  const out: string[] = [];
  for (const [path, m] of root.namedModules()) {
    if (m instanceof ModuleList) for (const [name] of m.namedChildren()) out.push(path === "" ? name : `${path}.${name}`);
  }
  return out.filter((p) => !out.some((q) => q !== p && p.startsWith(`${q}.`)));
}
