/**
 * The rendezvous store's wire format: length-prefixed binary frames over TCP, our own so that
 * nothing but node:net is needed and a stray client (a port scanner, an HTTP probe) is spotted
 * from its first four bytes.
 *
 * A frame is `u32 length` (big-endian, of what follows) then `u8 opcode`, `u32 request id` and the
 * opcode's fields. Byte strings are `u32 length` + bytes; strings are UTF-8 byte strings; numbers
 * are float64 (counters stay exact up to 2^53). The client numbers its requests and the server
 * echoes the id in its reply, so slow waits and quick sets can share one connection.
 */

/** Frames larger than this are refused: no store value is near it, while garbage usually is. */
export const MAX_FRAME_BYTES = 256 * 1024 * 1024;
/** The limit before a peer has presented the token: enough for a hello, too little to exhaust memory. */
export const MAX_HELLO_BYTES = 64 * 1024;

export const Op = {
  Hello: 1,
  Set: 2,
  Get: 3,
  Wait: 4,
  Add: 5,
  CompareSet: 6,
  Delete: 7,
  // Replies.
  Ok: 100,
  Value: 101,
  Number: 102,
  Bool: 103,
  Error: 104,
} as const;
// The opcode types, one per member, so messages can be discriminated on `op`.
// eslint-disable-next-line @typescript-eslint/no-namespace
export declare namespace Op {
  type Hello = typeof Op.Hello;
  type Set = typeof Op.Set;
  type Get = typeof Op.Get;
  type Wait = typeof Op.Wait;
  type Add = typeof Op.Add;
  type CompareSet = typeof Op.CompareSet;
  type Delete = typeof Op.Delete;
  type Ok = typeof Op.Ok;
  type Value = typeof Op.Value;
  type Number = typeof Op.Number;
  type Bool = typeof Op.Bool;
  type Error = typeof Op.Error;
}
export type Op = (typeof Op)[keyof typeof Op];

/** Why the server refused a request; the client turns each into its own error class. */
export type ErrorCode = "timeout" | "token" | "bad_request" | "not_integer";

export type Request =
  | { op: Op.Hello; id: number; token: string }
  | { op: Op.Set; id: number; key: string; value: Uint8Array }
  | { op: Op.Get; id: number; key: string; timeoutMs: number }
  | { op: Op.Wait; id: number; keys: string[]; timeoutMs: number }
  | { op: Op.Add; id: number; key: string; amount: number }
  | { op: Op.CompareSet; id: number; key: string; expected: Uint8Array; desired: Uint8Array }
  | { op: Op.Delete; id: number; key: string };

export type Reply =
  | { op: Op.Ok; id: number }
  | { op: Op.Value; id: number; value: Uint8Array }
  | { op: Op.Number; id: number; value: number }
  | { op: Op.Bool; id: number; value: boolean }
  | { op: Op.Error; id: number; code: ErrorCode; message: string; keys: string[] };

export type Message = Request | Reply;

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder("utf-8", { fatal: true });

export function toBytes(value: Uint8Array | string): Uint8Array {
  return typeof value === "string" ? utf8.encode(value) : value;
}

/** Appends fields to a growing list of chunks, then joins them behind the frame header once. */
class FrameWriter {
  private readonly parts: Uint8Array[] = [];
  private length = 0;

  constructor(op: Op, id: number) {
    const head = Buffer.alloc(5);
    head.writeUInt8(op, 0);
    head.writeUInt32BE(id >>> 0, 1);
    this.push(head);
  }

  private push(part: Uint8Array): void {
    this.parts.push(part);
    this.length += part.byteLength;
  }

  bytes(value: Uint8Array): this {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(value.byteLength, 0);
    this.push(len);
    this.push(value);
    return this;
  }

  string(value: string): this {
    return this.bytes(utf8.encode(value));
  }

  number(value: number): this {
    const b = Buffer.alloc(8);
    b.writeDoubleBE(value, 0);
    this.push(b);
    return this;
  }

  u8(value: number): this {
    this.push(Uint8Array.of(value));
    return this;
  }

  strings(values: readonly string[]): this {
    const n = Buffer.alloc(4);
    n.writeUInt32BE(values.length, 0);
    this.push(n);
    for (const v of values) this.string(v);
    return this;
  }

  finish(): Buffer {
    const prefix = Buffer.alloc(4);
    prefix.writeUInt32BE(this.length, 0);
    return Buffer.concat([prefix, ...this.parts], 4 + this.length);
  }
}

export function encode(m: Message): Buffer {
  const w = new FrameWriter(m.op, m.id);
  switch (m.op) {
    case Op.Hello:
      return w.string(m.token).finish();
    case Op.Set:
      return w.string(m.key).bytes(m.value).finish();
    case Op.Get:
      return w.string(m.key).number(m.timeoutMs).finish();
    case Op.Wait:
      return w.strings(m.keys).number(m.timeoutMs).finish();
    case Op.Add:
      return w.string(m.key).number(m.amount).finish();
    case Op.CompareSet:
      return w.string(m.key).bytes(m.expected).bytes(m.desired).finish();
    case Op.Delete:
      return w.string(m.key).finish();
    case Op.Ok:
      return w.finish();
    case Op.Value:
      return w.bytes(m.value).finish();
    case Op.Number:
      return w.number(m.value).finish();
    case Op.Bool:
      return w.u8(m.value ? 1 : 0).finish();
    case Op.Error:
      return w.string(m.code).string(m.message).strings(m.keys).finish();
  }
}

/** Thrown for a frame that is not ours; the peer is then disconnected. */
export class ProtocolError extends Error {
  override readonly name = "ProtocolError";
}

/** Reads the fields of one frame body in order, checking every length against what is left. */
class FrameReader {
  private pos = 5;
  constructor(private readonly body: Buffer) {}

  private need(n: number): void {
    if (this.pos + n > this.body.length) throw new ProtocolError("truncated store frame");
  }
  bytes(): Uint8Array {
    this.need(4);
    const n = this.body.readUInt32BE(this.pos);
    this.pos += 4;
    this.need(n);
    // Copy: the body is a slice of a reused receive buffer.
    const out = new Uint8Array(this.body.subarray(this.pos, this.pos + n));
    this.pos += n;
    return out;
  }
  string(): string {
    try {
      return utf8Decoder.decode(this.bytes());
    } catch (e) {
      if (e instanceof ProtocolError) throw e;
      throw new ProtocolError("store frame holds a string that is not UTF-8");
    }
  }
  number(): number {
    this.need(8);
    const v = this.body.readDoubleBE(this.pos);
    this.pos += 8;
    return v;
  }
  u8(): number {
    this.need(1);
    return this.body.readUInt8(this.pos++);
  }
  strings(): string[] {
    this.need(4);
    const n = this.body.readUInt32BE(this.pos);
    this.pos += 4;
    if (n > this.body.length) throw new ProtocolError("store frame key count exceeds the frame");
    const out: string[] = [];
    for (let i = 0; i < n; i++) out.push(this.string());
    return out;
  }
  done(): void {
    if (this.pos !== this.body.length) throw new ProtocolError("store frame has trailing bytes");
  }
}

const ERROR_CODES: readonly string[] = ["timeout", "token", "bad_request", "not_integer"];

export function decode(body: Buffer): Message {
  if (body.length < 5) throw new ProtocolError("store frame shorter than its header");
  const op = body.readUInt8(0);
  const id = body.readUInt32BE(1);
  const r = new FrameReader(body);
  let m: Message;
  switch (op) {
    case Op.Hello:
      m = { op: Op.Hello, id, token: r.string() };
      break;
    case Op.Set:
      m = { op: Op.Set, id, key: r.string(), value: r.bytes() };
      break;
    case Op.Get:
      m = { op: Op.Get, id, key: r.string(), timeoutMs: r.number() };
      break;
    case Op.Wait:
      m = { op: Op.Wait, id, keys: r.strings(), timeoutMs: r.number() };
      break;
    case Op.Add:
      m = { op: Op.Add, id, key: r.string(), amount: r.number() };
      break;
    case Op.CompareSet:
      m = { op: Op.CompareSet, id, key: r.string(), expected: r.bytes(), desired: r.bytes() };
      break;
    case Op.Delete:
      m = { op: Op.Delete, id, key: r.string() };
      break;
    case Op.Ok:
      m = { op: Op.Ok, id };
      break;
    case Op.Value:
      m = { op: Op.Value, id, value: r.bytes() };
      break;
    case Op.Number:
      m = { op: Op.Number, id, value: r.number() };
      break;
    case Op.Bool:
      m = { op: Op.Bool, id, value: r.u8() !== 0 };
      break;
    case Op.Error: {
      const code = r.string();
      if (!ERROR_CODES.includes(code)) throw new ProtocolError(`unknown store error code ${JSON.stringify(code)}`);
      m = { op: Op.Error, id, code: code as ErrorCode, message: r.string(), keys: r.strings() };
      break;
    }
    default:
      throw new ProtocolError(`unknown store opcode ${op}`);
  }
  r.done();
  return m;
}

/**
 * Cuts a byte stream into frame bodies. Chunks are kept as a list and joined only when a whole
 * frame is there, so a large value arriving in many small TCP reads is copied once, not once per read.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private buffered = 0;

  /** Servers start low (a hello is tiny) and raise it once the peer has shown the token. */
  constructor(public maxFrameBytes = MAX_FRAME_BYTES) {}

  /** Feeds bytes; returns the complete frame bodies they finish. Throws ProtocolError on an oversized frame. */
  push(chunk: Buffer): Buffer[] {
    this.feed(chunk);
    const frames: Buffer[] = [];
    for (let body = this.next(); body; body = this.next()) frames.push(body);
    return frames;
  }

  feed(chunk: Buffer): void {
    this.chunks.push(chunk);
    this.buffered += chunk.length;
  }

  /**
   * The next complete frame body, or null. One at a time, so a caller can raise `maxFrameBytes`
   * after the hello before the limit is applied to the frames behind it in the same read.
   */
  next(): Buffer | null {
    if (this.buffered < 4) return null;
    const len = this.peek(4).readUInt32BE(0);
    if (len > this.maxFrameBytes) {
      throw new ProtocolError(`frame of ${len} bytes exceeds the limit of ${this.maxFrameBytes} (not a Fulgur peer?)`);
    }
    if (this.buffered < 4 + len) return null;
    return this.take(4 + len).subarray(4);
  }

  private peek(n: number): Buffer {
    if (this.chunks[0].length >= n) return this.chunks[0];
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined;
  }

  private take(n: number): Buffer {
    const first = this.chunks[0];
    let out: Buffer;
    if (first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const joined = Buffer.concat(this.chunks);
      out = joined.subarray(0, n);
      this.chunks = joined.length > n ? [joined.subarray(n)] : [];
    }
    this.buffered -= n;
    return out;
  }
}
