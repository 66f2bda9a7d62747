/**
 * Where the CLI writes. Commands never touch process.stdout directly, so tests drive the program
 * in-process and read exactly what a user would see.
 */
import { Writable } from "node:stream";

export interface CliIO {
  out(text: string): void;
  err(text: string): void;
}

export const processIO: CliIO = {
  out: (text) => void process.stdout.write(text),
  err: (text) => void process.stderr.write(text),
};

/** A stream over one side of an IO, for APIs that want a stream (the launcher's rank output). */
export function writableOf(write: (text: string) => void): NodeJS.WritableStream {
  return new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      write(typeof chunk === "string" ? chunk : chunk.toString("utf8"));
      callback();
    },
  });
}
