/**
 * Byte-level language-model data: the bytes of text files, cut into blocks of `seqLen + 1` tokens
 * (inputs and the next-token targets). Vocabulary 256, no tokenizer files needed.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import { extname, join } from "node:path";
import type { Dataset } from "./dataset";

export class ByteTokenizer {
  readonly vocabSize = 256;
  encode(text: string): Int32Array {
    return Int32Array.from(Buffer.from(text, "utf8"));
  }
  decode(ids: ArrayLike<number>): string {
    return Buffer.from(Array.from(ids, (v) => v & 0xff)).toString("utf8");
  }
}

export interface TextDatasetOptions {
  seqLen: number;
  /** Distance between the starts of consecutive blocks (default seqLen: no overlap). */
  stride?: number;
  /** File extensions read when a directory is given (default: common text and source files). */
  extensions?: readonly string[];
  /** Stop reading after this many bytes (default 64 MiB). */
  maxBytes?: number;
}

/** How much of each file is looked at to tell text from binary data. */
const SNIFF_BYTES = 1024;
/** Above this share of invalid UTF-8 it is not text in any encoding worth training on (Latin-1 prose stays under 10%). */
const MAX_INVALID_SHARE = 0.2;

/**
 * Why `bytes` (a file's first bytes) are not text, or undefined when they are: a NUL byte (no text
 * encoding but UTF-16's has them, and UTF-16 read as bytes is not what a byte-level model should
 * learn), or a large share of invalid UTF-8 (compressed, encrypted, image data).
 */
function binaryReason(bytes: Uint8Array): string | undefined {
  const head = bytes.subarray(0, SNIFF_BYTES);
  if (head.includes(0)) return `NUL bytes in its first KiB`;
  // stream: a multi-byte character cut at the end of the sample is not counted as invalid.
  const chars = [...new TextDecoder("utf-8").decode(head, { stream: true })];
  const invalid = chars.filter((c) => c === "\uFFFD").length;
  if (chars.length > 0 && invalid / chars.length > MAX_INVALID_SHARE) return `its first KiB is ${Math.round((100 * invalid) / chars.length)}% invalid UTF-8`;
  return undefined;
}

const DEFAULT_EXTENSIONS = [".md", ".txt", ".ts", ".js", ".json", ".py", ".cu", ".yaml", ".yml"];
const SKIP_DIRS = new Set(["node_modules", ".git", "dist", ".nx", "coverage"]);

/** Every text file under the given files/directories, sorted so the corpus is the same on every machine. */
export function listTextFiles(paths: readonly string[], extensions: readonly string[] = DEFAULT_EXTENSIONS): string[] {
  const out: string[] = [];
  const visit = (p: string): void => {
    const st = statSync(p);
    if (st.isDirectory()) {
      for (const name of readdirSync(p).sort()) if (!SKIP_DIRS.has(name) && !name.startsWith(".")) visit(join(p, name));
    } else if (st.isFile() && (extensions.includes(extname(p)) || paths.includes(p))) out.push(p);
  };
  for (const p of paths) {
    try {
      visit(p);
    } catch (err) {
      throw new Error(`TextDataset: cannot read ${JSON.stringify(p)}: ${(err as Error).message}`);
    }
  }
  return out;
}

export class TextDataset implements Dataset<Int32Array> {
  readonly tokens: Uint8Array;
  readonly seqLen: number;
  readonly stride: number;
  readonly files: string[];

  constructor(paths: string | readonly string[], options: TextDatasetOptions) {
    const list = typeof paths === "string" ? [paths] : paths;
    if (!Number.isInteger(options.seqLen) || options.seqLen < 1) {
      throw new RangeError(`TextDataset: seqLen must be a positive integer, got ${options.seqLen}`);
    }
    this.seqLen = options.seqLen;
    this.stride = options.stride ?? options.seqLen;
    this.files = listTextFiles(list, options.extensions);
    const maxBytes = options.maxBytes ?? 64 * 2 ** 20;
    const chunks: Buffer[] = [];
    let total = 0;
    for (const f of this.files) {
      if (total >= maxBytes) break;
      const b = readFileSync(f);
      const binary = binaryReason(b);
      if (binary) throw new Error(`TextDataset: ${f} is not text (${binary}); give text files (UTF-8), or tokens through your own Dataset`);
      chunks.push(b.subarray(0, maxBytes - total));
      total += Math.min(b.length, maxBytes - total);
    }
    this.tokens = new Uint8Array(Buffer.concat(chunks));
    if (this.tokens.length < this.seqLen + 1) {
      throw new Error(
        `TextDataset: ${this.files.length} file(s) under ${list.join(", ")} hold ${this.tokens.length} bytes; need at least seqLen + 1 = ${this.seqLen + 1}`,
      );
    }
  }

  static fromText(text: string, options: TextDatasetOptions): TextDataset {
    const ds = Object.create(TextDataset.prototype) as TextDataset;
    const tokens = new Uint8Array(Buffer.from(text, "utf8"));
    if (tokens.length < options.seqLen + 1) throw new Error(`TextDataset: text has ${tokens.length} bytes; need at least ${options.seqLen + 1}`);
    Object.assign(ds, { tokens, seqLen: options.seqLen, stride: options.stride ?? options.seqLen, files: [] });
    return ds;
  }

  get length(): number {
    return Math.floor((this.tokens.length - this.seqLen - 1) / this.stride) + 1;
  }

  /** seqLen + 1 consecutive bytes: inputs are [0, seqLen), targets [1, seqLen]. */
  get(index: number): Int32Array {
    if (!Number.isInteger(index) || index < 0 || index >= this.length) {
      throw new RangeError(`TextDataset: index ${index} is out of range for ${this.length} blocks`);
    }
    const start = index * this.stride;
    return Int32Array.from(this.tokens.subarray(start, start + this.seqLen + 1));
  }
}
