# Per-kernel GPU time of one PyTorch anchor step (the 1b GPT of shared/bench/gpt_torch.py, bf16
# autocast, fused AdamW), grouped by kernel name: the reference for Fulgur's own per-kernel table.
# Run: python3 bench/torch_profile.py [path to gpt_torch.py's directory]
import sys, json, importlib.util, os
import torch, torch.nn.functional as F
from torch.profiler import profile, ProfilerActivity

here = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "..", "shared", "bench")
spec = importlib.util.spec_from_file_location("gpt_torch", os.path.join(here, "gpt_torch.py"))
g = importlib.util.module_from_spec(spec); spec.loader.exec_module(g)
torch.manual_seed(0)
model = g.GPT().cuda()
opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
x = torch.randint(0, g.V, (4, 1025), device="cuda")
def step():
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits = model(x[:, :-1])
        loss = F.cross_entropy(logits.float().view(-1, g.V), x[:, 1:].reshape(-1))
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
for _ in range(3): step()
torch.cuda.synchronize()
with profile(activities=[ProfilerActivity.CUDA]) as prof:
    step(); torch.cuda.synchronize()
rows = []
for e in prof.key_averages():
    if e.device_type == torch.autograd.DeviceType.CUDA or getattr(e, "self_device_time_total", 0) > 0:
        t = getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0)
        if t > 0: rows.append((t / 1e3, e.count, e.key))
rows.sort(reverse=True)
total = sum(r[0] for r in rows)
print(f"TORCH_PROFILE total_kernel_ms={total:.2f}")
for ms, n, k in rows[:45]:
    print(f"{ms:8.3f} ms {n:5d}x  {k[:110]}")
