import { describe, expect, it } from "vitest";
import * as T from "../src";

describe("views share storage and copy nothing", () => {
  it("reshape/transpose/permute/slice/expand are views with the right strides", () => {
    const x = T.arange(0, 24, 1, { dtype: "float32" });
    const before = T.memoryStats("cpu").liveBytes;
    const v = x.reshape(2, 3, 4);
    const tr = v.transpose(0, 2);
    const p = v.permute(1, 0, 2);
    const s = v.slice(2, 1, 3);
    const e = T.tensor([[1], [2]]).expand(2, 5);
    expect(T.memoryStats("cpu").liveBytes - before).toBe(8); // only the small tensor e's storage
    expect(v.storage).toBe(x.storage);
    expect(tr.shape).toEqual([4, 3, 2]);
    expect(tr.strides).toEqual([1, 4, 12]);
    expect(p.strides).toEqual([4, 12, 1]);
    expect(s.shape).toEqual([2, 3, 2]);
    expect(s.offset).toBe(1);
    expect(s.toArray()).toEqual([1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22]);
    expect(e.strides).toEqual([1, 0]);
    expect(e.toNested()).toEqual([[1, 1, 1, 1, 1], [2, 2, 2, 2, 2]]);
    expect(tr.isContiguous()).toBe(false);
    expect(tr.contiguous().isContiguous()).toBe(true);
  });

  it("writing through a view changes the base", () => {
    const x = T.zeros([3, 4]);
    T.noGrad(() => x.slice(1, 1, 3).fill_(7));
    expect(x.toNested()).toEqual([[0, 7, 7, 0], [0, 7, 7, 0], [0, 7, 7, 0]]);
    const y = T.zeros([2, 3]);
    y.transpose(0, 1).copy_(T.tensor([[1, 2], [3, 4], [5, 6]]));
    expect(y.toNested()).toEqual([[1, 3, 5], [2, 4, 6]]);
  });

  it("view refuses an incompatible layout; reshape copies instead", () => {
    const x = T.arange(0, 6, 1, { dtype: "float32" }).reshape(2, 3).t();
    expect(() => x.view(6)).toThrow(/not compatible with the layout/);
    const r = x.reshape(6);
    expect(r.storage).not.toBe(x.storage);
    expect(r.toArray()).toEqual([0, 3, 1, 4, 2, 5]);
  });

  it("shape errors name the shapes", () => {
    expect(() => T.zeros([2, 3]).reshape(4, 2)).toThrow("reshape: shape [4, 2] is invalid for 6 elements");
    expect(() => T.add(T.zeros([2, 3]), T.zeros([4]))).toThrow("shapes [2, 3] and [4] cannot be broadcast");
    expect(() => T.matmul(T.zeros([2, 3]), T.zeros([4, 2]))).toThrow("inner dimensions differ: [2, 3] @ [4, 2]");
    expect(() => T.zeros([2]).transpose(0, 3)).toThrow(/out of range/);
    expect(() => T.zeros([2, -1])).toThrow("invalid size -1");
    expect(() => T.tensor([1, 2], { dtype: "float8" as never })).toThrow(/dtype: got "float8"; expected one of/);
  });

  it("cat, split, stack, select", () => {
    const a = T.tensor([[1, 2], [3, 4]]);
    const b = T.tensor([[5], [6]]);
    expect(T.cat([a, b], 1).toNested()).toEqual([[1, 2, 5], [3, 4, 6]]);
    const [p, q] = T.split(T.arange(0, 5, 1, { dtype: "float32" }), [2, 3]);
    expect(p.toArray()).toEqual([0, 1]);
    expect(q.toArray()).toEqual([2, 3, 4]);
    expect(T.stack([a, a], 0).shape).toEqual([2, 2, 2]);
    expect(a.select(1, -1).toArray()).toEqual([2, 4]);
  });

  it("dtypes: int32 arithmetic, casts, 16-bit storage", () => {
    const i = T.arange(5).add(3);
    expect(i.dtype).toBe("int32");
    expect(i.toArray()).toEqual([3, 4, 5, 6, 7]);
    const h = T.tensor([1.5, -2.25, 1 / 3], { dtype: "float16" });
    expect(h.toHost()).toBeInstanceOf(Uint16Array);
    expect(h.toArray()[2]).toBeCloseTo(1 / 3, 3);
    expect(T.cast(T.tensor([2.7, -2.7]), "int32").toArray()).toEqual([2, -2]);
    expect(T.add(T.tensor([1], { dtype: "bfloat16" }), T.tensor([1], { dtype: "float16" })).dtype).toBe("float32");
  });
});

describe("default device", () => {
  it("withDevice sets where factories put tensors, and restores it", () => {
    expect(T.defaultDeviceName()).toBe("cpu");
    expect(() => T.withDevice("cuda:0", () => T.zeros([1]))).toThrow(/no backend is registered for "cuda"/);
    expect(T.defaultDeviceName()).toBe("cpu");
    expect(T.withDevice("cpu", () => T.randn([2]).device)).toBe("cpu");
  });
});
