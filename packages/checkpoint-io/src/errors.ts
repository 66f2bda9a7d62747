/**
 * The one error a malformed checkpoint file produces. It names the file and says what is wrong
 * with it, so a user with a corrupt download or a half-written file knows which file and why
 * without a debugger. `kind` lets callers (the CLI's `checkpoint inspect`, retry logic) branch
 * on the problem without parsing the message.
 */

export type CheckpointFormatProblem =
  /** The file ends before the data its header promises (or before the header itself). */
  | "truncated"
  /** The 8-byte header length is impossible (too large, past the end of the file). */
  | "header_length"
  /** The header is not UTF-8 JSON of the expected shape. */
  | "header"
  /** A tensor's dtype is not a safetensors dtype this reader knows. */
  | "dtype"
  /** A tensor's shape or byte size is invalid or disagrees with its data_offsets. */
  | "shape"
  /** data_offsets out of range, overlapping, leaving gaps or not covering the buffer. */
  | "offsets"
  /** `__metadata__` is not a map of strings. */
  | "metadata"
  /** The file is a checkpoint of a format or format version this reader refuses. */
  | "format"
  /** A tensor's values cannot be represented in the Fulgur dtype it maps to. */
  | "conversion"
  /** The path is a directory (or another non-file) where a checkpoint file was expected. */
  | "not_a_file";

export class CheckpointFormatError extends Error {
  override readonly name = "CheckpointFormatError";

  constructor(
    /** The file the problem was found in. */
    readonly path: string,
    readonly problem: CheckpointFormatProblem,
    /** What is wrong, without the path. */
    readonly detail: string,
  ) {
    super(`${path}: ${detail}`);
  }
}
