/**
 * Philox4x32-10 counter-based random numbers, specified bit for bit so every backend draws the
 * same values: element i of a draw uses counter (offset + i) split into two 32-bit words and the
 * 64-bit seed as key. Uniform uses the top 24 bits of word 0; normal uses Box-Muller on words 0, 1.
 *
 * JavaScript has no 64-bit integer multiply on numbers, so the high half of a 32x32 product is
 * assembled from 16-bit limbs (exact in doubles); the low half is Math.imul.
 */
import type { PhiloxState, View } from "../backend";
import { storeView, numelOf } from "./strided";

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TWO_POW_32 = 4294967296;
const TWO_POW_M24 = 1 / 16777216;

/** High 32 bits of the unsigned 64-bit product a * b (a, b unsigned 32-bit). */
function mulhi(a: number, b: number): number {
  const aL = a & 0xffff;
  const aH = a >>> 16;
  const bL = b & 0xffff;
  const bH = b >>> 16;
  const lh = aL * bH;
  const hl = aH * bL;
  const mid = ((aL * bL) >>> 16) + (lh & 0xffff) + (hl & 0xffff);
  return (aH * bH + Math.floor(lh / 65536) + Math.floor(hl / 65536) + Math.floor(mid / 65536)) >>> 0;
}

// Output words of the last block, so the per-element path allocates nothing.
const block = new Uint32Array(4);

function philoxInto(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number): void {
  for (let round = 0; round < 10; round++) {
    if (round > 0) {
      k0 = (k0 + W0) >>> 0;
      k1 = (k1 + W1) >>> 0;
    }
    const hi0 = mulhi(M0, c0);
    const lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi(M1, c2);
    const lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
  }
  block[0] = c0;
  block[1] = c1;
  block[2] = c2;
  block[3] = c3;
}

/** Philox4x32-10 of counter [counterLo, counterHi, 0, 0] under key [keyLo, keyHi]. */
export function philox4x32(
  counterLo: number,
  counterHi: number,
  keyLo: number,
  keyHi: number,
): [number, number, number, number];
/** Full four-word counter form, for known-answer tests. */
export function philox4x32(
  counterLo: number,
  counterHi: number,
  keyLo: number,
  keyHi: number,
  counter2: number,
  counter3: number,
): [number, number, number, number];
export function philox4x32(
  counterLo: number,
  counterHi: number,
  keyLo: number,
  keyHi: number,
  counter2 = 0,
  counter3 = 0,
): [number, number, number, number] {
  philoxInto(counterLo >>> 0, counterHi >>> 0, counter2 >>> 0, counter3 >>> 0, keyLo >>> 0, keyHi >>> 0);
  return [block[0], block[1], block[2], block[3]];
}

export function random(kind: "uniform" | "normal", out: View, state: PhiloxState): void {
  const n = numelOf(out.shape);
  const k0 = Number(BigInt.asUintN(32, state.seed));
  const k1 = Number(BigInt.asUintN(32, state.seed >> 32n));
  const vals = new Float64Array(n);
  const base = state.offset;
  for (let i = 0; i < n; i++) {
    const c = base + i;
    philoxInto(c >>> 0, Math.floor(c / TWO_POW_32) >>> 0, 0, 0, k0, k1);
    if (kind === "uniform") {
      vals[i] = (block[0] >>> 8) * TWO_POW_M24;
    } else {
      const u1 = ((block[0] >>> 8) + 1) * TWO_POW_M24;
      const u2 = (block[1] >>> 8) * TWO_POW_M24;
      vals[i] = Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
    }
  }
  storeView(vals, out);
}
