/**
 * How a row-major strided batched product maps onto cuBLASLt's column-major world, as pure
 * arithmetic (tested without a GPU).
 *
 * cuBLASLt computes D = op(A) op(B) with column-major matrices. A row-major [R, C] matrix with row
 * stride ld is, byte for byte, a column-major [C, R] matrix with leading dimension ld, so
 * out = a @ b (row-major) is computed as out^T = b^T a^T (column-major): cuBLAS's "A" is our b and
 * its "B" is our a, and no data moves. A transposed view (column-major storage) is handled with
 * op = T instead. A view that is neither (both strides > 1) has no cuBLAS layout and is copied to a
 * contiguous temporary by the caller.
 */

export interface Layout2D {
  /** Rows, columns and leading dimension of the column-major matrix cuBLASLt sees. */
  readonly rows: number;
  readonly cols: number;
  readonly ld: number;
  /** 0 = CUBLAS_OP_N, 1 = CUBLAS_OP_T. */
  readonly op: 0 | 1;
}

/**
 * The cuBLASLt layout of a row-major operand [R, C] with strides (rs, cs) used as op(X) of shape
 * [C, R] (the transposed role above), or null when the strides have no such layout.
 */
export function transposedRole(R: number, C: number, rs: number, cs: number): Layout2D | null {
  if (rs < 0 || cs < 0) return null;
  // Row-major storage (each row contiguous) is column-major [C, R] as is: op N.
  if (cs === 1 || C === 1) {
    const ld = R === 1 ? Math.max(C, 1) : rs;
    if (ld >= Math.max(C, 1)) return { rows: C, cols: R, ld, op: 0 };
  }
  // Column-major storage (each column contiguous) is column-major [R, C]; op T makes it [C, R].
  if (rs === 1 || R === 1) {
    const ld = C === 1 ? Math.max(R, 1) : cs;
    if (ld >= Math.max(R, 1)) return { rows: R, cols: C, ld, op: 1 };
  }
  return null;
}

export interface MatmulShape {
  readonly batch: number;
  readonly M: number;
  readonly N: number;
  readonly K: number;
}

/** One operand's view of the product: matrix strides and the stride between batch entries (0 = shared). */
export interface MatrixView {
  readonly shape: readonly number[];
  readonly strides: readonly number[];
}

export interface OperandPlan {
  readonly layout: Layout2D;
  readonly batchStride: number;
}

export interface MatmulPlan {
  readonly shape: MatmulShape;
  /** cuBLAS "A" = our b, "B" = our a, "D" = our out (all in the transposed role). */
  readonly A: OperandPlan;
  readonly B: OperandPlan;
  readonly D: OperandPlan;
  /** Batch folded into M because b is shared and a/out rows continue across batch entries. */
  readonly folded: boolean;
}

function matrixStrides(v: MatrixView): { rs: number; cs: number; bs: number; batch: number } {
  const nd = v.shape.length;
  if (nd < 2 || nd > 3) throw new RangeError(`matmul operand must be 2-D or 3-D, got [${v.shape.join(", ")}]`);
  const batch = nd === 3 ? v.shape[0] : 1;
  return { rs: v.strides[nd - 2], cs: v.strides[nd - 1], bs: nd === 3 && batch !== 1 ? v.strides[0] : 0, batch };
}

export function matmulShape(a: MatrixView, b: MatrixView, out: MatrixView): MatmulShape {
  const nd = out.shape.length;
  const batch = nd === 3 ? out.shape[0] : 1;
  const M = out.shape[nd - 2];
  const N = out.shape[nd - 1];
  const K = a.shape[a.shape.length - 1];
  if (a.shape[a.shape.length - 2] !== M || b.shape[b.shape.length - 2] !== K || b.shape[b.shape.length - 1] !== N) {
    throw new RangeError(`matmul: a [${a.shape.join(", ")}] @ b [${b.shape.join(", ")}] does not give out [${out.shape.join(", ")}]`);
  }
  for (const [name, v] of [["a", a], ["b", b]] as const) {
    if (v.shape.length === 3 && v.shape[0] !== 1 && v.shape[0] !== batch) {
      throw new RangeError(`matmul: ${name} has batch ${v.shape[0]} but out has batch ${batch}`);
    }
  }
  return { batch, M, N, K };
}

/**
 * The cuBLASLt plan for out = a @ b, or null for an operand that needs a contiguous copy
 * (`needsCopy` says which).
 */
export function planMatmul(
  a: MatrixView,
  b: MatrixView,
  out: MatrixView,
): { plan: MatmulPlan; needsCopy: null } | { plan: null; needsCopy: "a" | "b" | "out" } {
  const shape = matmulShape(a, b, out);
  const { M, N, K } = shape;
  const sa = matrixStrides(a);
  const sb = matrixStrides(b);
  const so = matrixStrides(out);
  const Bl = transposedRole(M, K, sa.rs, sa.cs);
  if (Bl === null) return { plan: null, needsCopy: "a" };
  const Al = transposedRole(K, N, sb.rs, sb.cs);
  if (Al === null) return { plan: null, needsCopy: "b" };
  const Dl = transposedRole(M, N, so.rs, so.cs);
  // D has no transpose option in cuBLASLt: it must be row-major here.
  if (Dl === null || Dl.op !== 0) return { plan: null, needsCopy: "out" };
  // b shared by every batch entry while a and out rows run on across entries: one big GEMM.
  if (shape.batch > 1 && sb.bs === 0 && Bl.op === 0 && sa.bs === M * Bl.ld && so.bs === M * Dl.ld) {
    const M2 = shape.batch * M;
    return {
      plan: {
        shape: { batch: 1, M: M2, N, K },
        A: { layout: Al, batchStride: 0 },
        B: { layout: { ...Bl, cols: M2 }, batchStride: 0 },
        D: { layout: { ...Dl, cols: M2 }, batchStride: 0 },
        folded: true,
      },
      needsCopy: null,
    };
  }
  return {
    plan: {
      shape,
      A: { layout: Al, batchStride: sb.bs },
      B: { layout: Bl, batchStride: sa.bs },
      D: { layout: Dl, batchStride: so.bs },
      folded: false,
    },
    needsCopy: null,
  };
}

/** Largest power of two (<= 256) dividing a device address: cuBLASLt's heuristics filter kernels by it. */
export function alignmentOf(address: bigint): number {
  let a = 1;
  while (a < 256 && address % BigInt(a * 2) === 0n) a *= 2;
  return a;
}
