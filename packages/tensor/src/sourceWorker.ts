/**
 * Worker threads started from the TypeScript sources (vitest, tsx) have no .js entry to run, and a
 * worker thread does not inherit the tsx loader: they run the one bootstrap, tsxBootstrap.mjs, which
 * registers tsx and imports the .ts entry named by `workerData.entry`. It sits at the package root,
 * one level above both src/ (this file) and dist/ (the bundle this file becomes part of), so the
 * same relative URL finds it from either. Built packages run their bundled worker entries instead.
 */
export const tsxWorkerBootstrap: URL = new URL("../tsxBootstrap.mjs", import.meta.url);
