/**
 * The reference GPT, layer for layer the anchor script's (shared/bench/gpt_torch.py): token and
 * learned position embeddings, pre-LayerNorm blocks of causal multi-head attention and a 4x GELU
 * MLP (every Linear with bias), a final LayerNorm and an untied head without bias. Parameter names
 * and registration order match the PyTorch module ("emb.weight", "blocks.0.qkv.weight", ...), so
 * state dicts and per-parameter fixtures line up with PyTorch one to one.
 */
import { arange, autocastDType, checkpoint, crossEntropy, Generator, geluMlp, isGradEnabled, scope } from "@fulgur/tensor";
import type { Tensor } from "@fulgur/tensor";
import { causalAttention } from "./layers/attention";
import { Dropout } from "./layers/dropout";
import { Embedding } from "./layers/embedding";
import { LayerNorm } from "./layers/layerNorm";
import { Linear } from "./layers/linear";
import type { LayerOptions } from "./layers/options";
import { ModuleList } from "./containers";
import { Module } from "./module";
import { checkBoolean, checkPositiveInt, checkRange } from "./validate";

export interface GPTConfig {
  readonly vocabSize: number;
  /** Context length: the most positions the position embedding knows. */
  readonly seqLen: number;
  readonly dModel: number;
  readonly nLayers: number;
  readonly nHeads: number;
  /** The micro-batch the named configuration is run with (demo and benchmark); the model accepts any batch. */
  readonly microBatch?: number;
  /** Dropout after the embeddings, the attention projection and the MLP (default 0, as the anchor). */
  readonly dropout?: number;
  /** Recompute each block's activations during backward instead of keeping them (`checkpoint`). */
  readonly activationCheckpointing?: boolean;
}

/** The named configurations of DESIGN.md. */
export const GPT_CONFIGS = {
  tiny: { dModel: 64, nLayers: 2, nHeads: 4, seqLen: 64, vocabSize: 256, microBatch: 8 },
  small: { dModel: 128, nLayers: 4, nHeads: 4, seqLen: 128, vocabSize: 256, microBatch: 16 },
  "1b": { dModel: 2048, nLayers: 16, nHeads: 16, seqLen: 1024, vocabSize: 32000, microBatch: 4 },
} as const satisfies Record<string, GPTConfig>;

export type GPTConfigName = keyof typeof GPT_CONFIGS;

export interface GPTOptions extends Omit<LayerOptions, "generator"> {
  /** Seeds a private generator for the initial weights; same seed, same weights. */
  readonly seed?: number;
  /** Draw initial weights from this generator (ignored when `seed` is given). */
  readonly generator?: Generator;
}

/** Resolves a configuration name or object and checks every field. */
export function resolveGPTConfig(config: GPTConfig | GPTConfigName): Required<GPTConfig> {
  let c: GPTConfig;
  if (typeof config === "string") {
    if (!Object.hasOwn(GPT_CONFIGS, config)) {
      throw new RangeError(`GPT: unknown configuration ${JSON.stringify(config)}; allowed: ${Object.keys(GPT_CONFIGS).join(", ")}`);
    }
    c = GPT_CONFIGS[config];
  } else c = config;
  const w = "GPT config";
  const out: Required<GPTConfig> = {
    vocabSize: checkPositiveInt(w, "vocabSize", c.vocabSize),
    seqLen: checkPositiveInt(w, "seqLen", c.seqLen),
    dModel: checkPositiveInt(w, "dModel", c.dModel),
    nLayers: checkPositiveInt(w, "nLayers", c.nLayers),
    nHeads: checkPositiveInt(w, "nHeads", c.nHeads),
    microBatch: checkPositiveInt(w, "microBatch", c.microBatch ?? 1),
    dropout: checkRange(w, "dropout", c.dropout ?? 0, 0, 1),
    activationCheckpointing: checkBoolean(w, "activationCheckpointing", c.activationCheckpointing ?? false),
  };
  if (out.dModel % out.nHeads !== 0) {
    throw new RangeError(`${w}: dModel (${out.dModel}) must be divisible by nHeads (${out.nHeads})`);
  }
  return out;
}

/** Parameters of a GPT, from the formula (no weights allocated): the anchor's param_count. */
export function gptParamCount(config: GPTConfig | GPTConfigName): number {
  const { vocabSize: V, seqLen: T, dModel: d, nLayers: L } = resolveGPTConfig(config);
  // emb + pos + per block (qkv, proj, fc1, fc2 weights: 12d², their biases: 9d, two LayerNorms: 4d) + lnf + head
  return V * d + T * d + L * (12 * d * d + 13 * d) + 2 * d + d * V;
}

/** Training FLOPs of one step over `tokens` tokens, as the benchmarks count them (attention in full). */
export function gptFlopsPerStep(config: GPTConfig | GPTConfigName, tokens: number): number {
  const c = resolveGPTConfig(config);
  return 6 * gptParamCount(c) * tokens + 12 * c.nLayers * c.dModel * c.seqLen * tokens;
}

export interface BlockOptions extends LayerOptions {
  readonly dropout?: number;
}

/** Pre-LN transformer block: x + proj(attn(ln1(x))), then x + fc2(gelu(fc1(ln2(x)))). */
export class Block extends Module {
  readonly nHeads: number;

  constructor(dModel: number, nHeads: number, options: BlockOptions = {}) {
    super();
    checkPositiveInt("Block", "dModel", dModel);
    this.nHeads = checkPositiveInt("Block", "nHeads", nHeads);
    if (dModel % nHeads !== 0) throw new RangeError(`Block: dModel (${dModel}) must be divisible by nHeads (${nHeads})`);
    const p = checkRange("Block", "dropout", options.dropout ?? 0, 0, 1);
    const norm = { dtype: options.dtype, device: options.device };
    // Registration (and so initialisation and naming) order is the anchor's: ln1, ln2, qkv, proj, fc1, fc2.
    this.registerModule("ln1", new LayerNorm(dModel, norm));
    this.registerModule("ln2", new LayerNorm(dModel, norm));
    this.registerModule("qkv", new Linear(dModel, 3 * dModel, options));
    this.registerModule("proj", new Linear(dModel, dModel, options));
    this.registerModule("fc1", new Linear(dModel, 4 * dModel, options));
    this.registerModule("fc2", new Linear(4 * dModel, dModel, options));
    this.registerModule("drop", new Dropout(p));
  }

  private mod<M extends Module>(name: string): M {
    return this.getSubmodule(name) as M;
  }

  /**
   * The layer norms hand their output to a matrix product, so under autocast they write it in the
   * autocast dtype directly (what the product would cast it to). The MLP runs as one fused op over
   * fc1's and fc2's parameters (`geluMlp`: GELU inside the products' epilogues), so forward hooks
   * on `fc1` and `fc2` do not fire; hooks on the block and gradient hooks on the parameters do.
   */
  forward(x: Tensor): Tensor {
    const drop = this.mod<Dropout>("drop");
    const narrow = { outputDtype: autocastDType() ?? undefined };
    const attn = causalAttention(this.mod<Linear>("qkv").call(this.mod<LayerNorm>("ln1").call(x, narrow)), this.nHeads);
    const h = x.add(drop.call(this.mod<Linear>("proj").call(attn)));
    const fc1 = this.mod<Linear>("fc1");
    const fc2 = this.mod<Linear>("fc2");
    const mlp = geluMlp(this.mod<LayerNorm>("ln2").call(h, narrow), fc1.weight, fc1.bias, fc2.weight, fc2.bias);
    return h.add(drop.call(mlp));
  }
}

export class GPT extends Module {
  readonly config: Required<GPTConfig>;

  constructor(config: GPTConfig | GPTConfigName, options: GPTOptions = {}) {
    super();
    this.config = resolveGPTConfig(config);
    const { vocabSize: V, seqLen: T, dModel: d, nLayers: L, nHeads: H, dropout } = this.config;
    const generator = options.seed !== undefined ? new Generator(options.seed) : options.generator;
    const layer = { dtype: options.dtype, device: options.device, generator };
    this.registerModule("emb", new Embedding(V, d, layer));
    this.registerModule("pos", new Embedding(T, d, layer));
    const blocks = new ModuleList<Block>();
    for (let i = 0; i < L; i++) blocks.append(new Block(d, H, { ...layer, dropout }));
    this.registerModule("blocks", blocks);
    this.registerModule("lnf", new LayerNorm(d, { dtype: options.dtype, device: options.device }));
    this.registerModule("head", new Linear(d, V, { ...layer, bias: false }));
    this.registerModule("drop", new Dropout(dropout));
  }

  get blocks(): ModuleList<Block> {
    return this.getSubmodule("blocks") as ModuleList<Block>;
  }

  /** idx int32 [B, T] with T <= seqLen -> logits [B, T, vocabSize]. */
  forward(idx: Tensor): Tensor {
    if (idx.dtype !== "int32" || idx.ndim !== 2) {
      throw new TypeError(`GPT.forward: idx must be int32 [batch, seq]; got ${idx.dtype} [${idx.shape.join(", ")}]`);
    }
    const t = idx.shape[1];
    if (t > this.config.seqLen || t === 0) {
      throw new RangeError(`GPT.forward: sequence length ${t} must be in [1, ${this.config.seqLen}] (config seqLen)`);
    }
    const positions = arange(0, t, 1, { dtype: "int32", device: idx.device });
    const tok = (this.getSubmodule("emb") as Embedding).call(idx);
    const pos = (this.getSubmodule("pos") as Embedding).call(positions);
    let x = (this.getSubmodule("drop") as Dropout).call(tok.add(pos));
    const recompute = this.config.activationCheckpointing && this.training && isGradEnabled();
    for (const block of this.blocks) {
      x = recompute ? checkpoint((y: Tensor) => block.call(y), x) : block.call(x);
    }
    const h = (this.getSubmodule("lnf") as LayerNorm).call(x);
    return (this.getSubmodule("head") as Linear).call(h);
  }

  /** Mean cross entropy of next-token prediction: logits of `idx` against `targets` (int32 [B, T]). */
  loss(idx: Tensor, targets: Tensor): Tensor {
    if (targets.dtype !== "int32" || targets.shape.length !== 2 || targets.shape[0] !== idx.shape[0] || targets.shape[1] !== idx.shape[1]) {
      throw new TypeError(
        `GPT.loss: targets must be int32 of idx's shape [${idx.shape.join(", ")}]; got ${targets.dtype} [${targets.shape.join(", ")}]`,
      );
    }
    // In a scope so the logits (large: [B, T, vocab]) are freed as soon as the loss has its copy.
    return scope(() => {
      const logits = (this as GPT).call(idx);
      return crossEntropy(logits.reshape([-1, this.config.vocabSize]), targets.reshape([-1]));
    });
  }

  /** One line for logs and the demo: the configuration and the parameter count. */
  describe(): string {
    const c = this.config;
    const n = this.numParameters();
    return (
      `GPT(dModel=${c.dModel}, nLayers=${c.nLayers}, nHeads=${c.nHeads}, seqLen=${c.seqLen}, vocabSize=${c.vocabSize}` +
      `${c.dropout > 0 ? `, dropout=${c.dropout}` : ""}${c.activationCheckpointing ? ", activationCheckpointing" : ""}): ` +
      `${n.toLocaleString("en-US")} parameters (${humanCount(n)})`
    );
  }

  override extraRepr(): string {
    const c = this.config;
    return `dModel=${c.dModel}, nLayers=${c.nLayers}, nHeads=${c.nHeads}, seqLen=${c.seqLen}, vocabSize=${c.vocabSize}`;
  }
}

/** 938905600 -> "0.94B", 136960 -> "0.14M". */
export function humanCount(n: number): string {
  if (n >= 1e8) return `${(n / 1e9).toFixed(2)}B`;
  if (n >= 1e4) return `${(n / 1e6).toFixed(2)}M`;
  return String(n);
}
