/** Construction options every layer accepts: where its parameters live and which generator initialises them. */
import type { DType, Generator } from "@fulgur/tensor";

export interface LayerOptions {
  /** Parameter dtype (default float32). */
  readonly dtype?: DType;
  /** Parameter device (default "cpu"). */
  readonly device?: string;
  /** Initialisation draws come from here; the tensor package's default generator otherwise. */
  readonly generator?: Generator;
}
