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
import { probeStarvation } from "../launchStarvation";
import { traceLaunch } from "../launchTrace";
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
  auxLd: number,
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
  if (auxLd > 0) set(lt.CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_LD, i64(auxLd), "epilogue aux leading dimension");
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
    // INVALID_VALUE is how cuBLASLt turns down some epilogue / dtype pairings (DGELU_BGRAD with a
    // float32 bias gradient for a bf16 product): the caller then runs the unfused path.
    if (code !== 0 && code !== lt.CUBLAS_STATUS_NOT_SUPPORTED && code !== lt.CUBLAS_STATUS_INVALID_VALUE) {
      throw statusError(code, "cublasLtMatmulAlgoGetHeuristic", "cublasLt");
    }
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

/**
 * What the cuBLASLt epilogue does after the product: its code, the vector it reads or writes
 * (bias in; bias gradient out, as BIAS_POINTER) and the auxiliary matrix (GELU's pre-activation,
 * written forward and read backward).
 */
export interface Epilogue {
  readonly code: number;
  readonly vector: { readonly ptr: Ptr; readonly dtype: DType } | null;
  readonly aux: { readonly ptr: Ptr; readonly ld: number } | null;
  /** Frees a staging buffer after the product (`ran`: the product was queued, so copy its result out first). */
  readonly release?: (ran: boolean) => void;
}

const PLAIN: Epilogue = { code: lt.CUBLASLT_EPILOGUE_DEFAULT, vector: null, aux: null };

/** Runs the product with the requested epilogue, or returns false when cuBLASLt has no kernel for it. */
function runLt(
  b: CudaBackend,
  plan: MatmulPlan,
  pa: Ptr,
  pb: Ptr,
  po: Ptr,
  dtypes: { ab: DType; out: DType },
  ep: Epilogue,
  alpha: number,
  beta: number,
): boolean {
  const ltc = b.lt();
  // cuBLAS "A" is our b, "B" is our a (see matmulPlan.ts).
  const align = [alignmentOf(pb), alignmentOf(pa), alignmentOf(po)];
  const types = { ab: CUDA_TYPE[dtypes.ab]!, d: CUDA_TYPE[dtypes.out]!, bias: ep.vector ? CUDA_TYPE[ep.vector.dtype]! : null };
  const compute = computeFor(dtypes.ab);
  const auxLd = ep.aux ? ep.aux.ld : 0;
  const key = JSON.stringify([plan, types, compute, ep.code, auxLd, align]);
  const cp = ltc.plan(key, () => buildPlan(ltc, plan, types, compute, ep.code, auxLd, align));
  if (cp === null) return false;
  const L = lt.cublasLt();
  const setAttr = (attr: number, buf: ArrayBufferView, what: string) =>
    check(L.cublasLtMatmulDescSetAttribute(cp.desc, attr, buf, buf.byteLength), "cublasLtMatmulDescSetAttribute", "cublasLt", what);
  if (ep.vector) setAttr(lt.CUBLASLT_MATMUL_DESC_BIAS_POINTER, new BigUint64Array([ep.vector.ptr]), "bias pointer");
  if (ep.aux) setAttr(lt.CUBLASLT_MATMUL_DESC_EPILOGUE_AUX_POINTER, new BigUint64Array([ep.aux.ptr]), "epilogue aux pointer");
  const scale = dtypes.ab === "float64" ? Float64Array : Float32Array;
  const name = `cublasLt:${plan.shape.batch}x${plan.shape.M}x${plan.shape.N}x${plan.shape.K}:${dtypes.ab}->${dtypes.out}:ep${ep.code}`;
  traceLaunch(name, [], []);
  probeStarvation(name, b.ctx.compute.handle);
  check(
    L.cublasLtMatmul(ltc.handle, cp.desc, new scale([alpha]), pb, cp.a, pa, cp.b, new scale([beta]), po, cp.d, po, cp.d, cp.algo, ltc.workspace, cp.workspace, b.ctx.compute.handle),
    "cublasLtMatmul",
    "cublasLt",
    `[${plan.shape.batch}] ${plan.shape.M}x${plan.shape.K} @ ${plan.shape.K}x${plan.shape.N} (${dtypes.ab} -> ${dtypes.out}, epilogue ${ep.code})`,
  );
  return true;
}

function staged(b: CudaBackend, v: View): { view: View; release(): void } {
  const tmp = b.alloc(v.storage.dtype, numelOf(v.shape));
  const tv = contiguousViewOf(tmp, v.shape);
  b.copy(v, tv);
  return { view: tv, release: () => b.free(tmp) };
}

/** A vector view cuBLASLt can take as BIAS_POINTER: contiguous, in a dtype it knows; else null. */
function plainVector(b: CudaBackend, v: View | undefined, n: number): { ptr: Ptr; dtype: DType } | null {
  if (!v) return null;
  if (numelOf(v.shape) !== n) throw new RangeError(`matmul: a sum vector has ${numelOf(v.shape)} elements; expected ${n}`);
  if (!isContiguous(v.shape, v.strides) || CUDA_TYPE[v.storage.dtype] === undefined || v.storage.dtype === "float64") return null;
  return { ptr: ptrOf(v, b), dtype: v.storage.dtype };
}

/** GELU's auxiliary matrix as cuBLASLt reads it: out's layout, rows contiguous, 16-byte aligned; else null. */
function auxMatrix(b: CudaBackend, v: View | undefined, out: View, M: number, N: number): { ptr: Ptr; ld: number } | null {
  if (!v) return null;
  const nd = v.shape.length;
  if (numelOf(v.shape) !== M * N || v.shape[nd - 1] !== N) throw new RangeError(`matmul: the GELU aux view [${v.shape.join(", ")}] must have out's shape [${M}, ${N}]`);
  if (v.storage.dtype !== out.storage.dtype) return null;
  const ld = nd >= 2 ? v.strides[nd - 2] : N;
  const ptr = ptrOf(v, b);
  if (v.strides[nd - 1] !== 1 || ld < N || ld % 8 !== 0 || ptr % 16n !== 0n) return null;
  return { ptr, ld };
}

/** The fused epilogue for these options, or null when cuBLASLt cannot do it in one product. */
function fusedEpilogue(b: CudaBackend, options: MatmulOptions, out: View, M: number, N: number, bias: { ptr: Ptr; dtype: DType } | null): Epilogue | null {
  const gelu = options.gelu === true;
  if (options.geluGradAux) {
    if (bias || gelu || options.aRowSums) return null;
    const aux = auxMatrix(b, options.geluGradAux, out, M, N);
    if (!aux) return null;
    if (!options.outColSums) return { code: lt.CUBLASLT_EPILOGUE_DGELU, vector: null, aux };
    const v = plainVector(b, options.outColSums, N);
    if (!v) return null;
    if (v.dtype === out.storage.dtype) return { code: lt.CUBLASLT_EPILOGUE_DGELU_BGRAD, vector: v, aux };
    // cuBLASLt writes DGELU_BGRAD's bias gradient in the product's dtype only: through a temporary,
    // then converted (PyTorch's bf16 bias gradients are rounded to bf16 the same way).
    const sums = options.outColSums;
    const tmp = b.alloc(out.storage.dtype, N);
    const release = (ran: boolean) => {
      // Field by field: a Tensor's storage is a getter, which a spread would drop.
      if (ran) b.copy(contiguousViewOf(tmp, [N]), { storage: sums.storage, shape: [N], strides: [1], offset: sums.offset });
      b.free(tmp);
    };
    return { code: lt.CUBLASLT_EPILOGUE_DGELU_BGRAD, vector: { ptr: tmp.ptr, dtype: out.storage.dtype }, aux, release };
  }
  if (options.outColSums) return null;
  if (options.aRowSums) {
    if (bias || gelu) return null;
    const v = plainVector(b, options.aRowSums, M);
    return v ? { code: lt.CUBLASLT_EPILOGUE_BGRADB, vector: v, aux: null } : null;
  }
  if (options.geluAux) {
    if (!gelu) throw new RangeError("matmul: geluAux is only written with gelu: true");
    const aux = auxMatrix(b, options.geluAux, out, M, N);
    if (!aux) return null;
    return { code: bias ? lt.CUBLASLT_EPILOGUE_GELU_AUX_BIAS : lt.CUBLASLT_EPILOGUE_GELU_AUX, vector: bias, aux };
  }
  const code = bias ? (gelu ? lt.CUBLASLT_EPILOGUE_GELU_BIAS : lt.CUBLASLT_EPILOGUE_BIAS) : gelu ? lt.CUBLASLT_EPILOGUE_GELU : lt.CUBLASLT_EPILOGUE_DEFAULT;
  return { code, vector: bias, aux: null };
}

/** A [M, N] (or [1, M, N]) view's rows as [rows, 1]-shaped or [1, N]-shaped reduction targets. */
function asColumn(v: View, n: number): View {
  return { storage: v.storage, shape: [n, 1], strides: [v.strides[v.strides.length - 1] ?? 1, 1], offset: v.offset };
}
function asRow(v: View, n: number): View {
  return { storage: v.storage, shape: [1, n], strides: [n, v.strides[v.strides.length - 1] ?? 1], offset: v.offset };
}
function as2d(v: View): View {
  return v.shape.length === 3 ? { storage: v.storage, shape: v.shape.slice(1), strides: v.strides.slice(1), offset: v.offset } : v;
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
  const extras = options.geluAux || options.geluGradAux || options.outColSums || options.aRowSums;
  for (const [field, v] of [["geluAux", options.geluAux], ["geluGradAux", options.geluGradAux]] as const) {
    if (v && v.storage.dtype !== od) throw new TypeError(`matmul: ${field} must have out's dtype ${od}, got ${v.storage.dtype}`);
  }
  if (extras && plan.shape.batch !== 1) throw new RangeError("matmul: geluAux, geluGradAux, outColSums and aRowSums need a 2-D product (batch 1)");
  let bias: { ptr: Ptr; dtype: DType; view: View; release(): void } | null = null;
  if (options.bias) {
    const bv = options.bias;
    if (numelOf(bv.shape) !== N) throw new RangeError(`matmul: bias has ${numelOf(bv.shape)} elements; expected N = ${N}`);
    const contiguous = isContiguous(bv.shape, bv.strides);
    const s = contiguous ? { view: bv, release: () => {} } : staged(b, bv);
    bias = { ptr: ptrOf(s.view, b), dtype: bv.storage.dtype, view: s.view, release: s.release };
  }
  try {
    const pa = ptrOf(a, b);
    const pb = ptrOf(bm, b);
    const po = ptrOf(out, b);
    const fused = K > 0 ? fusedEpilogue(b, options, out, M, N, bias) : null;
    if (fused) {
      const ran = runLt(b, plan, pa, pb, po, { ab, out: od }, fused, alpha, beta);
      fused.release?.(ran);
      if (ran) return;
    }
    // No fused kernel for this combination (or K = 0): the plain product, then the epilogue's work
    // as separate kernels, with the same results.
    const gelu = options.gelu === true;
    const target = options.geluAux && gelu ? options.geluAux : out;
    if (target !== out && beta !== 0) b.copy(out, target);
    if (K > 0) {
      const pt = ptrOf(target, b);
      if (!runLt(b, plan, pa, pb, pt, { ab, out: od }, PLAIN, alpha, beta)) {
        throw new Error(`matmul: cuBLASLt has no algorithm for ${ab} [${plan.shape.batch}] ${M}x${K} @ ${K}x${N} -> ${od}`);
      }
    } else if (beta === 0) b.fill(target, 0);
    else b.unary("mul_scalar", target, target, beta);
    if (bias) {
      const bv = bias.view;
      b.binary("add", target, { storage: bv.storage, shape: [N], strides: [bv.strides[bv.strides.length - 1] ?? 1], offset: bv.offset }, target);
    }
    if (gelu) b.unary("gelu", target, out);
    if (options.geluGradAux) b.binary("gelu_backward", options.geluGradAux, out, out);
    if (options.outColSums) b.reduce("sum", as2d(out), asRow(options.outColSums, N));
    if (options.aRowSums) b.reduce("sum", as2d(a), asColumn(options.aRowSums, M));
  } finally {
    bias?.release();
  }
}
