#!/usr/bin/env bash
# On the GPU machine: issue 11's "same placement, same size" run, the 6.71B GPT (d4096 L32, micro-batch
# 1 × 1024) with parameters and optimizer state offloaded, PyTorch FSDP2's CPU offload beside
# Fulgur's deepspeed_stage_3_offload in four settings: as it was (fp32 uploads, the CPU step),
# units in bf16 (bf16 uploads from the host copies), bf16 with a share of the step streamed
# through the GPU, and that with the CPU's share updated beside backward (offloadStepInBackward);
# last, as a separate figure, that with every unit kept gathered from its forward to its backward
# (stage3_max_reuse_distance and stage3_max_live_parameters 1e10: no second upload in backward,
# bf16 copies of the whole model on the GPU within a step; not FSDP2's placement).
# First the share alone (scripts/gpu/streamed-step-speed.mjs), to pick SHARE.
# Appends JSON lines to OUT (first line: date, device, commands); step traces to OUT.steptrace.
# Usage: scripts/gpu/zero-offload-6b.sh OUT.jsonl ANCHOR.py [SHARE = 0.6]
# RUNS (default "sweep anchor base bf16 share beside reuse") picks the parts, to split them over calls.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=$1 anchor=$2 share=${3:-0.6}
runs=" ${RUNS:-sweep anchor base bf16 share beside reuse} "
has() { [[ "$runs" == *" $1 "* ]]; }
gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)
B="node packages/cli/dist/bin.js bench --config 1b --size 4096,32,32,1024,1 --strategy deepspeed_stage_3_offload --steps 2 --warmup 1"
bf16='"mixedPrecision":{"paramDtype":"bfloat16","reduceDtype":"float32"}'
echo "{\"date\":\"$(date -u +%F)\",\"device\":\"$gpu\",\"command\":\"node scripts/gpu/streamed-step-speed.mjs 1600 0,0.375,0.5,0.625,0.75; STEPS=1 torchrun --nproc_per_node 1 $anchor fsdp_offload 4096 32 32 1024 1; FULGUR_TRACE_STEP=1 $B --strategy-options with no options, then mixedPrecision bf16 over fp32 reductions, then that and offloadStepShare $share, then that and offloadStepInBackward, then that with units kept from forward to backward (each line's options field); parts: $runs\"}" >> "$out"
has sweep && timeout 170 node scripts/gpu/streamed-step-speed.mjs 1600 0,0.375,0.5,0.625,0.75 2>&1 | grep '^{' | sed 's/^/{"streamed_step":/; s/$/}/' | tee -a "$out"
has anchor && STEPS=1 timeout 240 torchrun --nproc_per_node 1 "$anchor" fsdp_offload 4096 32 32 1024 1 2>&1 | grep '^RESULT' | sed 's/^RESULT /{"anchor":"fsdp_offload","result":/; s/$/}/' | tee -a "$out"
declare -A settings=(
  [base]="{}"
  [bf16]="{$bf16}"
  [share]="{$bf16,\"offloadStepShare\":$share}"
  [beside]="{$bf16,\"offloadStepShare\":$share,\"offloadStepInBackward\":true}"
  [reuse]="{$bf16,\"offloadStepShare\":$share,\"offloadStepInBackward\":true,\"config\":{\"zero_optimization\":{\"stage3_max_reuse_distance\":1e10,\"stage3_max_live_parameters\":1e10}}}"
)
for part in base bf16 share beside reuse; do
  has "$part" || continue
  opts=${settings[$part]}
  FULGUR_TRACE_STEP=1 timeout 240 $B --strategy-options "$opts" 2>>"$out.steptrace" | grep '^{' | sed "s/^/{\"fulgur\":\"deepspeed_stage_3_offload\",\"options\":$opts,\"result\":/; s/\$/}/" | tee -a "$out"
done
grep steptrace "$out.steptrace" | tail -8
