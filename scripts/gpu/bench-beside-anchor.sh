#!/usr/bin/env bash
# On the GPU machine: the 1b GPT under Fulgur strategies, each beside its PyTorch anchor mode in
# the same command, alternating, appending JSON lines to one results file whose first line says
# the date, the device and the command. Usage:
#   scripts/gpu/bench-beside-anchor.sh OUT.jsonl ANCHOR.py "anchorMode:fulgurStrategy" ...
# anchorMode "single" runs `python3 ANCHOR single`; others run `torchrun --nproc_per_node 1 ANCHOR MODE`.
set -uo pipefail
cd "$(dirname "$0")/../.."
out=$1 anchor=$2
shift 2
gpu=$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | head -1)
echo "{\"date\":\"$(date -u +%F)\",\"device\":\"$gpu\",\"command\":\"scripts/gpu/bench-beside-anchor.sh $* (1b, bf16-mixed)\"}" >> "$out"
for pair in "$@"; do
  mode=${pair%%:*} strategy=${pair#*:}
  if [ "$mode" = single ]; then python3 "$anchor" single; else torchrun --nproc_per_node 1 "$anchor" "$mode"; fi 2>&1 | grep '^RESULT' | sed "s/^RESULT /{\"anchor\":\"$mode\",\"result\":/; s/\$/}/" | tee -a "$out"
  node packages/cli/dist/bin.js bench --config 1b --devices 1 --strategy "$strategy" 2>&1 | grep '^{' | sed "s/^/{\"fulgur\":\"$strategy\",\"result\":/; s/\$/}/" | tee -a "$out"
done
