/**
 * The transformer MLP, fc2(gelu(fc1(x))), as one autograd node so the GELU rides in the matrix
 * products' epilogues both ways: forward, the fc1 product adds the bias, stores the pre-activation
 * and applies GELU in one pass; backward, the product that makes the pre-activation's gradient
 * (g @ W2) multiplies by GELU'(pre-activation) on the way out. Composed
 * from linear and gelu, the same step costs a separate GELU kernel each way plus a bias-gradient
 * reduction. Values and gradients are those of the composition (see test/gelu-mlp.test.ts).
 */
import { formatShape } from "../shape";
import type { Tensor } from "../tensor";
import { autocastOperand, autocastParam, gradRows, linearParamGrads, productWithWeight, productWithWeightT } from "./linalg";
import { emptyTensor, record, sameDevice } from "./util";
import { contiguous, reshape } from "./views";

function checkShape(field: string, t: Tensor | null, shape: readonly number[]): void {
  if (t && (t.ndim !== shape.length || t.shape.some((s, i) => s !== shape[i]))) {
    throw new RangeError(`geluMlp: ${field} must have shape ${formatShape(shape)}, got ${formatShape(t.shape)}`);
  }
}

/**
 * linear(gelu(linear(x, w1, b1)), w2, b2) with GELU's tanh form (PyTorch's approximate="tanh"):
 * x [..., d], w1 [hidden, d], b1 [hidden], w2 [d, hidden], b2 [d] (biases optional) -> [..., d].
 */
export function geluMlp(x0: Tensor, w1_0: Tensor, b1_0: Tensor | null, w2_0: Tensor, b2_0: Tensor | null): Tensor {
  sameDevice("geluMlp", x0, w1_0, b1_0, w2_0, b2_0);
  if (w1_0.ndim !== 2) throw new RangeError(`geluMlp: w1 must be 2-D [hidden, in], got ${formatShape(w1_0.shape)}`);
  const [hidden, d] = w1_0.shape;
  if (x0.ndim < 1 || x0.shape[x0.ndim - 1] !== d) {
    throw new RangeError(`geluMlp: x must end in ${d} features (w1 is ${formatShape(w1_0.shape)}), got ${formatShape(x0.shape)}`);
  }
  checkShape("b1", b1_0, [hidden]);
  checkShape("w2", w2_0, [w2_0.shape[0], hidden]);
  const outF = w2_0.shape[0];
  checkShape("b2", b2_0, [outF]);
  const x = autocastOperand(x0);
  const w1 = autocastParam(w1_0);
  const w2 = autocastParam(w2_0);
  const b1 = b1_0 ? autocastParam(b1_0) : null;
  const b2 = b2_0 ? autocastParam(b2_0) : null;
  if (x.dtype !== w1.dtype || x.dtype !== w2.dtype) throw new TypeError(`geluMlp: x is ${x.dtype} but the weights are ${w1.dtype} and ${w2.dtype}`);
  const lead = x.shape.slice(0, -1);
  const x2 = contiguous(reshape(x, [-1, d]));
  const pre = emptyTensor([x2.shape[0], hidden], x.dtype, x.device);
  const h = productWithWeightT(x2, w1, { ...(b1 ? { bias: b1 } : {}), gelu: true, geluAux: pre });
  const y2 = productWithWeightT(h, w2, b2 ? { bias: b2 } : undefined);
  const y = reshape(y2, [...lead, outF]);
  y2.dispose();
  const xNeedsGrad = x.requiresGrad;
  const result = record(y, "GeluMLP", [x2, w1_0, b1_0, w2_0, b2_0], [x2, w1, w2, pre, h], (g, [sx, sw1, sw2, spre, sh], ctx) => {
    // A split backward's passes ([Note: the weight pass] in autograd.ts) ask for x, or for the weights.
    const [wantX, wantW1, wantB1, wantW2, wantB2] = [0, 1, 2, 3, 4].map((i) => ctx.wantsGrad(i));
    const g2 = gradRows(g, sh.dtype, outF);
    const [gw2, gb2] = linearParamGrads(g2, sh, wantW2 ? w2_0 : null, wantB2 ? b2_0 : null, { ctx, index: 3 });
    const firstWeights = (wantW1 && w1_0.requiresGrad) || (wantB1 && b1_0 !== null && b1_0.requiresGrad);
    const needsPre = (wantX && xNeedsGrad) || firstWeights;
    if (!needsPre) return [null, null, null, gw2, gb2];
    // d(pre) = (g @ W2) * GELU'(pre) in the product's epilogue; fc1's bias gradient then comes out
    // of fc1's weight-gradient product like any linear layer's. (cuBLASLt's DGELU_BGRAD would sum it
    // in the first product, but runs that sum as a separate kernel 12x slower than the BGRADB one.)
    // The weight pass takes the d(pre) the input pass made, rather than making it again.
    const dpre = ctx.kept[0] ?? productWithWeight(g2, sw2, { geluGradAux: spre });
    const [gw1, gb1] = linearParamGrads(dpre, sx, wantW1 ? w1_0 : null, wantB1 ? b1_0 : null, { ctx, index: 1 });
    const gx = wantX && xNeedsGrad ? productWithWeight(dpre, sw1) : null;
    const deferred = [1, 2].some((i) => !ctx.wantsGrad(i));
    if (deferred && wantX) ctx.keepForWeightPass(dpre);
    else if (dpre !== ctx.kept[0]) dpre.dispose();
    return [gx, gw1, gb1, gw2, gb2];
  });
  if (x2 !== x) x2.dispose();
  return result;
}
