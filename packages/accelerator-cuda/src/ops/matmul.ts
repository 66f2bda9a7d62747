/**
 * Host side of the matrix product through cuBLASLt (Backend.matmul): bf16/f16/f32/f64 inputs with
 * fp32 (f64) accumulation, bias and GELU fused into the epilogue, batched with strides (a shared
 * operand has batch stride 0). The layout arithmetic is in matmulPlan.ts; this file owns the
 * cuBLASLt handle, the workspace and a cache of descriptors and chosen algorithms per problem, so a
 * training step's repeated shapes pay for the heuristic once. fp32 inputs use exact fp32 math;
 * FULGUR_ALLOW_TF32=1 trades that for TF32 tensor cores.
 */
import type { DType, MatmulOptions, View } from "@fulgur/tensor";
import type { CudaBackend } from "../cudaBackend";
import { check, statusError } from "../check";
import type { Ptr } from "../ffi/cudart";
import * as lt from "../ffi/cublasLt";
import { ptrOf } from "../storage";
import { contiguousViewOf } from "./common";
import { isContiguous, numelOf } from "./layout";
import type { Layout2D, MatmulPlan } from "./matmulPlan";
import { alignmentOf, planMatmul } from "./matmulPlan";

const WORKSPACE_BYTES = 32 << 20;

const CUDA_TYPE: Partial<Record<DType, number>> = {
  float32: lt.CUDA_R_32F,
  float64: lt.CUDA_R_64F,
  bfloat16: lt.CUDA_R_16BF,
  float16: lt.CUDA_R_16F,
};

interface CachedPlan {
  readonly desc: Ptr;
  readonly a: Ptr;
  readonly b: Ptr;
  readonly d: Ptr;
  readonly algo: Uint8Array;
  readonly workspace: number;
}

/** Per-device cuBLASLt state: handle, workspace, descriptor/algorithm cache. */
export class LtContext {
  private readonly plans = new Map<string, CachedPlan | null>();
  private constructor(
    readonly handle: Ptr,
    readonly workspace: Ptr,
  ) {}

  static create(b: CudaBackend): LtContext {
    const out: [Ptr | null] = [null];
    check(lt.cublasLt().cublasLtCreate(out), "cublasLtCreate", "cublasLt");
    return new LtContext(out[0]!, b.ctx.allocator.alloc(WORKSPACE_BYTES));
  }

  plan(key: string, build: () => CachedPlan | null): CachedPlan | null {
    if (!this.plans.has(key)) this.plans.set(key, build());
    return this.plans.get(key)!;
  }
}

function i32(v: number): Int32Array {
  return new Int32Array([v]);
}

function i64(v: number): BigInt64Array {
  return new BigInt64Array([BigInt(v)]);
}

function layout(type: number, l: Layout2D, batch: number, batchStride: number): Ptr {
  const L = lt.cublasLt();
  const out: [Ptr | null] = [null];
  check(L.cublasLtMatrixLayoutCreate(out, type, l.rows, l.cols, l.ld), "cublasLtMatrixLayoutCreate", "cublasLt");
  const h = out[0]!;
  if (batch > 1) {
    check(L.cublasLtMatrixLayoutSetAttribute(h, lt.CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, i32(batch), 4), "cublasLtMatrixLayoutSetAttribute", "cublasLt", "batch count");
    check(
      L.cublasLtMatrixLayoutSetAttribute(h, lt.CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, i64(batchStride), 8),
      "cublasLtMatrixLayoutSetAttribute",
      "cublasLt",
      "strided batch offset",
    );
  }
  return h;
}

function buildPlan(
  ctx: LtContext,
  plan: MatmulPlan,
  types: { ab: number; d: number; bias: number | null },
  compute: { type: number; scale: number },
  epilogue: number,
  align: readonly number[],
): CachedPlan | null {
  const L = lt.cublasLt();
  const out: [Ptr | null] = [null];
  check(L.cublasLtMatmulDescCreate(out, compute.type, compute.scale), "cublasLtMatmulDescCreate", "cublasLt");
  const desc = out[0]!;
  const set = (attr: number, buf: ArrayBufferView, what: string) =>
    check(L.cublasLtMatmulDescSetAttribute(desc, attr, buf, buf.byteLength), "cublasLtMatmulDescSetAttribute", "cublasLt", what);
  set(lt.CUBLASLT_MATMUL_DESC_TRANSA, i32(plan.A.layout.op), "transa");
  set(lt.CUBLASLT_MATMUL_DESC_TRANSB, i32(plan.B.layout.op), "transb");
  set(lt.CUBLASLT_MATMUL_DESC_EPILOGUE, new Uint32Array([epilogue]), "epilogue");
  if (types.bias !== null) set(lt.CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE, i32(types.bias), "bias data type");
  const { batch } = plan.shape;
  const a = layout(types.ab, plan.A.layout, batch, plan.A.batchStride);
  const b = layout(types.ab, plan.B.layout, batch, plan.B.batchStride);
  const d = layout(types.d, plan.D.layout, batch, plan.D.batchStride);
  const pref: [Ptr | null] = [null];
  check(L.cublasLtMatmulPreferenceCreate(pref), "cublasLtMatmulPreferenceCreate", "cublasLt");
  const p = pref[0]!;
  const setPref = (attr: number, buf: ArrayBufferView) =>
    check(L.cublasLtMatmulPreferenceSetAttribute(p, attr, buf, buf.byteLength), "cublasLtMatmulPreferenceSetAttribute", "cublasLt");
  setPref(lt.CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, new BigUint64Array([BigInt(WORKSPACE_BYTES)]));
  // The defaults assume 256-byte aligned pointers; views at odd offsets need kernels that do not.
  setPref(lt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, new Uint32Array([align[0]]));
  setPref(lt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, new Uint32Array([align[1]]));
  setPref(lt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, new Uint32Array([align[2]]));
  setPref(lt.CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, new Uint32Array([align[2]]));
  const results = new Uint8Array(lt.HEURISTIC_RESULT_BYTES);
  const returned: [number] = [0];
  const code = L.cublasLtMatmulAlgoGetHeuristic(ctx.handle, desc, a, b, d, d, p, 1, results, returned);
  L.cublasLtMatmulPreferenceDestroy(p);
  if (code !== 0 || returned[0] === 0) {
    L.cublasLtMatmulDescDestroy(desc);
    for (const h of [a, b, d]) L.cublasLtMatrixLayoutDestroy(h);
    if (code !== 0 && code !== lt.CUBLAS_STATUS_NOT_SUPPORTED) throw statusError(code, "cublasLtMatmulAlgoGetHeuristic", "cublasLt");
    return null;
  }
  const ws = Number(new DataView(results.buffer).getBigUint64(lt.HEURISTIC_WORKSPACE_OFFSET, true));
  return { desc, a, b, d, algo: results.slice(0, lt.MATMUL_ALGO_BYTES), workspace: ws };
}

function computeFor(dtype: DType): { type: number; scale: number } {
  if (dtype === "float64") return { type: lt.CUBLAS_COMPUTE_64F, scale: lt.CUDA_R_64F };
  if (dtype === "float32" && process.env.FULGUR_ALLOW_TF32 === "1") return { type: lt.CUBLAS_COMPUTE_32F_FAST_TF32, scale: lt.CUDA_R_32F };
  return { type: lt.CUBLAS_COMPUTE_32F, scale: lt.CUDA_R_32F };
}

/** Runs the product with the requested epilogue, or returns false when cuBLASLt has no kernel for it. */
function runLt(
  b: CudaBackend,
  plan: MatmulPlan,
  pa: Ptr,
  pb: Ptr,
  po: Ptr,
  dtypes: { ab: DType; out: DType },
  bias: { ptr: Ptr; dtype: DType } | null,
  gelu: boolean,
  alpha: number,
  beta: number,
): boolean {
  const ltc = b.lt();
  const epilogue = bias ? (gelu ? lt.CUBLASLT_EPILOGUE_GELU_BIAS : lt.CUBLASLT_EPILOGUE_BIAS) : gelu ? lt.CUBLASLT_EPILOGUE_GELU : lt.CUBLASLT_EPILOGUE_DEFAULT;
  // cuBLAS "A" is our b, "B" is our a (see matmulPlan.ts).
  const align = [alignmentOf(pb), alignmentOf(pa), alignmentOf(po)];
  const types = { ab: CUDA_TYPE[dtypes.ab]!, d: CUDA_TYPE[dtypes.out]!, bias: bias ? CUDA_TYPE[bias.dtype]! : null };
  const compute = computeFor(dtypes.ab);
  const key = JSON.stringify([plan, types, compute, epilogue, align]);
  const cp = ltc.plan(key, () => buildPlan(ltc, plan, types, compute, epilogue, align));
  if (cp === null) return false;
  const L = lt.cublasLt();
  if (bias) {
    const ptr = new BigUint64Array([bias.ptr]);
    check(L.cublasLtMatmulDescSetAttribute(cp.desc, lt.CUBLASLT_MATMUL_DESC_BIAS_POINTER, ptr, 8), "cublasLtMatmulDescSetAttribute", "cublasLt", "bias pointer");
  }
  const scale = dtypes.ab === "float64" ? Float64Array : Float32Array;
  check(
    L.cublasLtMatmul(ltc.handle, cp.desc, new scale([alpha]), pb, cp.a, pa, cp.b, new scale([beta]), po, cp.d, po, cp.d, cp.algo, ltc.workspace, cp.workspace, b.ctx.compute.handle),
    "cublasLtMatmul",
    "cublasLt",
    `[${plan.shape.batch}] ${plan.shape.M}x${plan.shape.K} @ ${plan.shape.K}x${plan.shape.N} (${dtypes.ab} -> ${dtypes.out})`,
  );
  return true;
}

function staged(b: CudaBackend, v: View): { view: View; release(): void } {
  const tmp = b.alloc(v.storage.dtype, numelOf(v.shape));
  const tv = contiguousViewOf(tmp, v.shape);
  b.copy(v, tv);
  return { view: tv, release: () => b.free(tmp) };
}

export function matmul(b: CudaBackend, a: View, bm: View, out: View, options: MatmulOptions = {}): void {
  const alpha = options.alpha ?? 1;
  const beta = options.beta ?? 0;
  const ab = a.storage.dtype;
  const od = out.storage.dtype;
  if (bm.storage.dtype !== ab) throw new TypeError(`matmul: a is ${ab} but b is ${bm.storage.dtype}; cast one first`);
  if (CUDA_TYPE[ab] === undefined) throw new TypeError(`matmul: ${ab} inputs are not supported on CUDA; use float32, bfloat16, float16 or float64`);
  if (od !== ab && !(od === "float32" && (ab === "bfloat16" || ab === "float16"))) {
    throw new TypeError(`matmul: ${ab} inputs can write a ${ab} or float32 output, not ${od}`);
  }
  const planned = planMatmul(a, bm, out);
  if (planned.plan === null) {
    // An operand with no cuBLAS layout: make it contiguous and plan again.
    const which = planned.needsCopy;
    if (which === "out") {
      const tmp = b.alloc(od, numelOf(out.shape));
      const tv = contiguousViewOf(tmp, out.shape);
      if (beta !== 0) b.copy(out, tv);
      matmul(b, a, bm, tv, options);
      b.copy(tv, out);
      b.free(tmp);
      return;
    }
    const s = staged(b, which === "a" ? a : bm);
    try {
      matmul(b, which === "a" ? s.view : a, which === "b" ? s.view : bm, out, options);
    } finally {
      s.release();
    }
    return;
  }
  const plan = planned.plan;
  const { M, N, K } = plan.shape;
  if (M === 0 || N === 0) return;
  let bias: { ptr: Ptr; dtype: DType; view: View; release(): void } | null = null;
  if (options.bias) {
    const bv = options.bias;
    if (numelOf(bv.shape) !== N) throw new RangeError(`matmul: bias has ${numelOf(bv.shape)} elements; expected N = ${N}`);
    const contiguous = isContiguous(bv.shape, bv.strides);
    const s = contiguous ? { view: bv, release: () => {} } : staged(b, bv);
    bias = { ptr: ptrOf(s.view, b), dtype: bv.storage.dtype, view: s.view, release: s.release };
  }
  try {
    const gelu = options.gelu === true;
    if (K > 0 && runLt(b, plan, ptrOf(a, b), ptrOf(bm, b), ptrOf(out, b), { ab, out: od }, bias, gelu, alpha, beta)) return;
    // No fused kernel for this combination (or K = 0): plain product, then the epilogue elementwise.
    if (K > 0) {
      if (!runLt(b, plan, ptrOf(a, b), ptrOf(bm, b), ptrOf(out, b), { ab, out: od }, null, false, alpha, beta)) {
        throw new Error(`matmul: cuBLASLt has no algorithm for ${ab} [${plan.shape.batch}] ${M}x${K} @ ${K}x${N} -> ${od}`);
      }
    } else if (beta === 0) b.fill(out, 0);
    else b.unary("mul_scalar", out, out, beta);
    if (bias) b.binary("add", out, { ...bias.view, shape: [N], strides: [bias.view.strides[bias.view.strides.length - 1] ?? 1] }, out);
    if (gelu) b.unary("gelu", out, out);
  } finally {
    bias?.release();
  }
}
