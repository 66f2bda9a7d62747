/** The bytes <-> tensor helpers used by tools that work below CheckpointIO. */
import { fromHost } from "@fulgur/tensor";
import { describe, expect, it } from "vitest";
import { decodeSafetensors, encodeSafetensors, fulgurDTypeOf, loadTensors, safetensorsDTypeOf, tensorsToSafetensors } from "../src/index";

describe("tensorsToSafetensors / loadTensors", () => {
  it("maps each Fulgur dtype to its safetensors name and back", () => {
    const pairs = [["float32", "F32"], ["float64", "F64"], ["bfloat16", "BF16"], ["float16", "F16"], ["int32", "I32"]] as const;
    for (const [fulgur, st] of pairs) {
      expect(safetensorsDTypeOf(fulgur)).toBe(st);
      expect(fulgurDTypeOf(st)).toBe(fulgur);
    }
    expect(fulgurDTypeOf("I64")).toBe("int32");
    expect(fulgurDTypeOf("F8_E5M2")).toBeUndefined();
    expect(() => safetensorsDTypeOf("int8" as never)).toThrow(/dtype "int8" has no safetensors equivalent; expected one of float32/);
    expect(() => safetensorsDTypeOf("constructor" as never)).toThrow(/dtype "constructor" has no safetensors equivalent/);
  });

  it("produces little-endian row-major bytes of the logical (not stored) layout", () => {
    const t = fromHost(new Float32Array([1, 2, 3, 4, 5, 6]), [2, 3], "float32").transpose(0, 1);
    const raw = tensorsToSafetensors({ t });
    expect(raw.t.dtype).toBe("F32");
    expect(raw.t.shape).toEqual([3, 2]);
    const f = new Float32Array(raw.t.data.buffer.slice(raw.t.data.byteOffset, raw.t.data.byteOffset + raw.t.data.byteLength));
    expect(Array.from(f)).toEqual([1, 4, 2, 5, 3, 6]);
    expect(Array.from(raw.t.data.subarray(0, 4))).toEqual([0x00, 0x00, 0x80, 0x3f]);
  });

  it("round-trips through an in-memory file, reading unaligned data correctly", () => {
    const tensors = {
      u8pad: fromHost(new Int32Array([1]), [1], "int32"),
      h: fromHost(new Uint16Array([0x3c00, 0x7e01]), [2], "float16"),
    };
    const bytes = encodeSafetensors(tensorsToSafetensors(tensors), { k: "v" });
    // Shift the whole file by one byte so every tensor's data sits at an odd address.
    const shifted = new Uint8Array(bytes.length + 1);
    shifted.set(bytes, 1);
    const decoded = decodeSafetensors(shifted.subarray(1));
    expect(decoded.metadata).toEqual({ k: "v" });
    const back = loadTensors(decoded.tensors);
    expect(back.u8pad.toArray()).toEqual([1]);
    expect(Array.from(back.h.toHost())).toEqual([0x3c00, 0x7e01]);
  });

  it("names the tensor that is not a Tensor", () => {
    expect(() => tensorsToSafetensors({ x: { shape: [1] } as never })).toThrow(/tensors\["x"\] must be a Tensor/);
  });
});
