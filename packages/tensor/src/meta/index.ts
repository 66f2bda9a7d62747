/** The meta device's surface: the backend and what a storage records; the replay is materialize.ts. */
export { MetaBackend, metaBackend } from "./backend";
export { MetaStorage, MATERIALISE_HINT, RecordedView, metaHasNoData, type KernelName, type LogEntry } from "./storage";
