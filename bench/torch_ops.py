#!/usr/bin/env python3
"""PyTorch's figures for the op shapes of packages/accelerator-cuda/bench/ops.bench.ts (the 1b GPT's
shapes), timed the same way: CUDA events around `repeats` back-to-back calls after warm-up, median of
`trials`. One JSON line per op: {framework, op, shape, dtype, ms, tflops | gbps}.

    python3 bench/torch_ops.py [--trials 7] [--repeats 10]
"""
import argparse, json, statistics
import torch, torch.nn.functional as F

p = argparse.ArgumentParser()
p.add_argument("--trials", type=int, default=7)
p.add_argument("--repeats", type=int, default=10)
a = p.parse_args()
dev, bf = "cuda", torch.bfloat16


def timed(fn):
    for _ in range(3):
        fn()
    times = []
    for _ in range(a.trials):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        for _ in range(a.repeats):
            fn()
        e.record()
        torch.cuda.synchronize()
        times.append(s.elapsed_time(e) / a.repeats)
    return statistics.median(times)


def out(op, shape, dtype, ms, **kw):
    print(json.dumps(dict(framework="pytorch", op=op, shape=shape, dtype=dtype, ms=round(ms, 3), **{k: round(v, 3) for k, v in kw.items()})), flush=True)


M, K, N = 4096, 2048, 8192
x, w, b = torch.randn(M, K, device=dev, dtype=bf), torch.randn(N, K, device=dev, dtype=bf), torch.randn(N, device=dev, dtype=bf)
ms = timed(lambda: F.gelu(F.linear(x, w, b), approximate="tanh"))
out("matmul+bias+gelu", f"{M}x{K} @ {K}x{N}", "bfloat16", ms, tflops=2 * M * N * K / ms / 1e9)

B, H, T, D = 4, 16, 1024, 128
q, k, v = (torch.randn(B, H, T, D, device=dev, dtype=bf, requires_grad=True) for _ in range(3))
flops_fwd = 4 * B * H * T * T * D / 2  # causal: half the scores
ms = timed(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True))
out("attention fwd (causal)", f"B{B} H{H} T{T} D{D}", "bfloat16", ms, tflops=flops_fwd / ms / 1e9)
go = torch.randn(B, H, T, D, device=dev, dtype=bf)
def fb():
    y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.autograd.grad(y, (q, k, v), go)
ms = timed(fb)
out("attention fwd+bwd (causal)", f"B{B} H{H} T{T} D{D}", "bfloat16", ms, tflops=3.5 * flops_fwd / ms / 1e9)

xl = torch.randn(4096, 2048, device=dev, dtype=bf)
lw, lb = torch.ones(2048, device=dev, dtype=bf), torch.zeros(2048, device=dev, dtype=bf)
ms = timed(lambda: F.layer_norm(xl, (2048,), lw, lb))
out("layer_norm fwd", "4096x2048", "bfloat16", ms, gbps=2 * xl.numel() * 2 / ms / 1e6)

logits = torch.randn(4096, 32000, device=dev, dtype=bf, requires_grad=True)
tg = torch.randint(0, 32000, (4096,), device=dev)
def ce():
    loss = F.cross_entropy(logits.float(), tg)
    torch.autograd.grad(loss, logits)
ms = timed(ce)
out("cross_entropy fwd+bwd", "4096x32000", "bfloat16", ms, gbps=3 * logits.numel() * 2 / ms / 1e6)

n = 100_000_000
params = [torch.randn(n, device=dev, requires_grad=True)]
params[0].grad = torch.randn(n, device=dev)
opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
ms = timed(opt.step)
out("adamw", f"{n} params", "float32", ms, gbps=n * 4 * 7 / ms / 1e6)
