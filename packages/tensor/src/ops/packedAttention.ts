/**
 * Self-attention straight from a fused qkv projection, as one autograd node. A GPT block computes
 * qkv = x @ Wqkv^T ([B, T, 3 * H * D]: the q, k and v blocks, each H heads of D), views it as
 * [B, T, 3, H, D], permutes to q, k, v of [B, H, T, D], attends, and transposes the result back to
 * [B, T, H * D] for the output projection. Composed from views, that costs copies both ways: the
 * transposed output is copied to be reshaped, its gradient is copied to be contiguous, and the
 * gradients of the three selects are each a zero-filled full-size buffer, summed into one and
 * copied again to undo the permute. Here the kernels read q, k, v as strided views of qkv, write
 * the output token-major (so [B, T, H * D] is already contiguous) and write dq, dk, dv straight into
 * their slots of one [B, T, 3 * H * D] gradient, which every slot fills, so nothing is zeroed.
 */
import type { View } from "../backend";
import { formatShape } from "../shape";
import type { Tensor } from "../tensor";
import { cast } from "./elementwise";
import { autocastOperand } from "./linalg";
import type { AttentionOptions } from "./nn";
import { emptyTensor, record } from "./util";
import { contiguous } from "./views";

/** The [B, H, T, D] views of q, k and v inside a contiguous-row qkv [B, T, 3 * H * D]. */
function qkvViews(qkv: Tensor, nHeads: number): { q: View; k: View; v: View } {
  const [bsz, t, c3] = qkv.shape;
  const c = c3 / 3;
  const d = c / nHeads;
  const strides = [qkv.strides[0], d, qkv.strides[1], 1];
  const shape = [bsz, nHeads, t, d];
  const at = (block: number): View => ({ storage: qkv.storage, shape, strides, offset: qkv.offset + block * c });
  return { q: at(0), k: at(1), v: at(2) };
}

/** A contiguous [B, T, H * D] tensor seen as [B, H, T, D]. */
function headsView(x: Tensor, nHeads: number): View {
  const [bsz, t, c] = x.shape;
  const d = c / nHeads;
  return { storage: x.storage, shape: [bsz, nHeads, t, d], strides: [t * c, d, c, 1], offset: x.offset };
}

/**
 * Multi-head self-attention of a fused projection: qkv [B, T, 3 * H * D] -> [B, T, H * D], the
 * same values and gradients as splitting qkv into q, k, v heads, calling
 * scaledDotProductAttention and merging the heads back, without the copies (see the file header).
 */
export function qkvAttention(qkv0: Tensor, nHeads: number, options: AttentionOptions = {}): Tensor {
  if (!Number.isInteger(nHeads) || nHeads < 1) throw new RangeError(`qkvAttention: nHeads must be a positive integer, got ${nHeads}`);
  if (qkv0.ndim !== 3 || qkv0.shape[2] % (3 * nHeads) !== 0 || qkv0.shape[2] === 0) {
    throw new RangeError(`qkvAttention: qkv must be [batch, seq, 3 * heads * headDim] with ${nHeads} heads; got ${formatShape(qkv0.shape)}`);
  }
  if (qkv0.dtype === "int32") throw new TypeError("qkvAttention: qkv must be floating point, got int32");
  const cast0 = autocastOperand(qkv0);
  // Rows must be contiguous for the q/k/v views; a linear layer's output always is.
  const qkv = cast0.strides[2] === 1 && cast0.strides[1] === cast0.shape[2] ? cast0 : contiguous(cast0);
  const [bsz, t, c3] = qkv.shape;
  const c = c3 / 3;
  const d = c / nHeads;
  const causal = options.causal ?? false;
  const scale = options.scale ?? 1 / Math.sqrt(d);
  const { q, k, v } = qkvViews(qkv, nHeads);
  const out = emptyTensor([bsz, t, c], qkv.dtype, qkv.device);
  const lse = emptyTensor([bsz, nHeads, t], qkv.dtype === "float64" ? "float64" : "float32", qkv.device);
  qkv.backend.attention(q, k, v, headsView(out, nHeads), lse, causal, scale);
  const y = record(out, "QKVAttention", [qkv], [qkv, out, lse], (g, [sqkv, so, slse]) => {
    const g1 = g.dtype === so.dtype ? g : cast(g, so.dtype);
    const gc = g1.strides[2] === 1 && g1.strides[1] === c && g1.strides[0] === t * c ? g1 : contiguous(g1);
    const gqkv = emptyTensor([bsz, t, c3], sqkv.dtype, sqkv.device);
    const views = qkvViews(sqkv, nHeads);
    const grads = qkvViews(gqkv, nHeads);
    sqkv.backend.attentionBackward(views.q, views.k, views.v, headsView(so, nHeads), slse, headsView(gc, nHeads), grads.q, grads.k, grads.v, causal, scale);
    return [gqkv];
  });
  lse.dispose();
  return y;
}
