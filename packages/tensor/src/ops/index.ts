/** Every op, re-exported for Tensor's methods and the package entry point. */
export * from "./elementwise";
export * from "./reduce";
export * from "./views";
export * from "./linalg";
export * from "./nn";
export * from "./packedAttention";
export * from "./geluMlp";
export {
  autocastCopyStats,
  dropAutocastCopy,
  isLowPrecisionCopyCurrent,
  keepLowPrecisionCopy,
  releaseAutocastCopy,
  restoreAutocastCopy,
  lowPrecisionCopyOf,
  markCopyWritten,
  resetAutocastCopyStats,
  type AutocastCopyStats,
} from "./autocastCopies";
export * from "./creation";
