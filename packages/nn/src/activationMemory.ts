/**
 * Activation memory of a training step, per segment of the forward pass, from each module kind's
 * own formula: what its ops save for backward and what they hold for a moment. Nothing runs and
 * nothing is allocated, so it works on a model built on the `meta` device (a measurement on `meta`
 * is impossible: it allocates nothing). Strategies turn the segments into a step's peak
 * (@fulgur/strategy-kit's step simulation), adding what they hold and gather around them.
 *
 * [Note: the GPT's saved tensors] Read from the ops the block runs (and checked against measured
 * CPU bytes in test/activationMemory.test.ts). Per token of a block, with r the bytes of the
 * residual stream (the parameters' dtype) and c those of the compute dtype (autocast's, else r):
 * the residual input of each LayerNorm (2·d·r), the LayerNorm outputs the products read (2·d·c),
 * the qkv output and the attention output the projection reads (4·d·c), the MLP's hidden before
 * and after GELU (8·d·c); plus each LayerNorm's mean and reciprocal deviation and attention's
 * log-sum-exp per head (fused attention saves no T×T matrix), in fp32. The head saves the final
 * norm's input and output and the logits (the loss recomputes its softmax from them); backward
 * starts by making the logits' gradient, as large as the logits.
 *
 * [Note: what a weight pass waits with] A split backward's input pass keeps, per op with weights,
 * its saved input and its output gradient until the weight pass (measured on the CPU backend, in
 * test/activationMemory.test.ts). Per token of a block: the two LayerNorms' residual inputs (2·d·r),
 * their output gradients, qkv's and the projection's inputs and output gradients, the MLP's input,
 * output gradient, hidden before and after GELU and the hidden's gradient it kept (22·d·c), and
 * the norms' statistics. The head: the final norm's input and output gradient (2·d·r), the head's
 * input (d·c) and the logits' gradient (V·c). The embeddings: each table's output gradient and ids.
 */
import { type DType, itemsize } from "@fulgur/tensor";
import { GPT } from "./gpt";
import { Linear } from "./layers/linear";
import type { Module } from "./module";

/** One stretch of the forward pass, with the parameters that compute in it. */
export interface ActivationSegment {
  readonly name: string;
  /** Fully qualified names (prefixes) of the modules whose parameters compute here. */
  readonly modules: readonly string[];
  /** Bytes its ops save from its forward until its backward has used them. */
  readonly savedBytes: number;
  /** Bytes held for a moment beside the saved ones during its forward. */
  readonly forwardTransientBytes: number;
  /** Bytes held for a moment during its backward (gradients of activations, recomputed activations). */
  readonly backwardTransientBytes: number;
  /** Bytes of its input: all it keeps when its forward is checkpointed (recomputed in backward). */
  readonly inputBytes?: number;
  /**
   * Bytes a split backward's input pass (B) leaves for its weight pass (W): what its ops with
   * weights saved, their output gradients and what they kept ([Note: the weight pass] in
   * @fulgur/tensor). B frees the rest of `savedBytes`; W frees these.
   */
  readonly deferredBytes?: number;
}

export interface ActivationProfile {
  /** In forward order. */
  readonly segments: readonly ActivationSegment[];
  /** How the figures were made, for a plan's notes. */
  readonly source: string;
}

export interface ActivationProfileOptions {
  /** Samples in one forward pass on one device. */
  readonly microBatch: number;
  /** Tokens per sample (default: the model's context length). */
  readonly seqLen?: number;
  /** The dtype products compute in under autocast (bf16-mixed: "bfloat16"); null or absent for none. */
  readonly computeDtype?: DType | null;
}

/**
 * The activation profile of a module holding one GPT (the GPT itself, or a TrainingModule that
 * registered one), or null when no formula knows the module (the plan then says activations are
 * not estimated).
 */
export function activationProfile(module: Module, options: ActivationProfileOptions): ActivationProfile | null {
  const found = module.namedModules().filter(([, m]) => m instanceof GPT) as [string, GPT][];
  if (found.length !== 1) return null;
  const [path, gpt] = found[0];
  return gptActivationProfile(gpt, options, path);
}

/** The GPT's segments: the embeddings, each block, the head with the loss (see [Note: the GPT's saved tensors]). */
export function gptActivationProfile(gpt: GPT, options: ActivationProfileOptions, path = ""): ActivationProfile {
  const { microBatch } = options;
  if (!Number.isInteger(microBatch) || microBatch < 1) {
    throw new RangeError(`activation profile: microBatch must be a positive integer; got ${JSON.stringify(microBatch)}`);
  }
  const { dModel: d, nLayers, nHeads: H, vocabSize: V, seqLen, activationCheckpointing } = gpt.config;
  const T = options.seqLen ?? seqLen;
  if (!Number.isInteger(T) || T < 1 || T > seqLen) {
    throw new RangeError(`activation profile: seqLen must be an integer in [1, ${seqLen}] (the model's context length); got ${JSON.stringify(options.seqLen)}`);
  }
  const tokens = microBatch * T;
  const r = itemsize(gpt.getSubmodule("emb").parameters()[0]?.dtype ?? "float32");
  const c = options.computeDtype ? itemsize(options.computeDtype) : r;
  const at = (name: string): string => (path === "" ? name : `${path}.${name}`);
  // The inputs and targets (int32), the token ids the embedding keeps for its backward; the
  // position ids and the loss are a few bytes per sequence.
  const embeddings: ActivationSegment = {
    name: "embeddings",
    modules: [at("emb"), at("pos")],
    savedBytes: tokens * 12 + T * 4,
    forwardTransientBytes: tokens * d * r,
    backwardTransientBytes: tokens * d * r,
    deferredBytes: tokens * (d * r + 4) + T * (d * r + 4),
  };
  const blockSaved = tokens * (2 * d * r + 14 * d * c + (4 + H) * 4);
  // Measured on the CPU backend: the MLP's output and the residual sum it is added to in forward;
  // the hidden's gradients while the MLP's backward runs (about 5.5·d elements of c per token).
  const blockForward = tokens * (4 * d * r + 2 * d * c);
  const blockBackward = Math.ceil(tokens * 5.5 * d * c);
  const blocks: ActivationSegment[] = Array.from({ length: nLayers }, (_, i) => ({
    name: `block ${i}`,
    modules: [at(`blocks.${i}`)],
    // Checkpointed: only the block's input is kept; backward recomputes the rest first.
    savedBytes: activationCheckpointing ? tokens * d * r : blockSaved,
    forwardTransientBytes: activationCheckpointing ? blockSaved + blockForward : blockForward,
    backwardTransientBytes: activationCheckpointing ? blockSaved + blockBackward : blockBackward,
    inputBytes: activationCheckpointing ? undefined : tokens * d * r,
    // A checkpointed block's recomputation is deferred like the block itself.
    deferredBytes: tokens * (2 * d * r + 22 * d * c + 16),
  }));
  const head: ActivationSegment = {
    name: "head and loss",
    modules: [at("lnf"), at("head")],
    savedBytes: tokens * (d * r + d * c + V * c + 8),
    forwardTransientBytes: tokens * V * 4,
    backwardTransientBytes: tokens * V * c,
    deferredBytes: tokens * (2 * d * r + d * c + V * c + 8),
  };
  const dropout = gpt.config.dropout > 0 ? "; dropout masks not counted" : "";
  return { segments: [embeddings, ...blocks, head], source: `GPT formula (micro-batch ${microBatch} × ${T} tokens${dropout})` };
}

/**
 * Elements autocast keeps a low-precision copy of between uses: the weights and biases of the
 * matrix products (every Linear, the fused MLP's included), not embeddings or norms.
 */
export function autocastCopyElements(module: Module, under = ""): number {
  let n = 0;
  for (const [name, m] of module.namedModules()) {
    if (under !== "" && name !== under && !name.startsWith(`${under}.`)) continue;
    if (!(m instanceof Linear)) continue;
    for (const p of m.parameters()) if (p.requiresGrad) n += p.numel;
  }
  return n;
}
