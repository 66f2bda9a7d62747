#!/usr/bin/env bash
# On the GPU machine (Node from pack-node.sh, the runtime from pack-runtime.sh unpacked, no nx):
# runs every package's GPU tests with vitest directly, one package after another, and prints a
# line per package. Exit status: non-zero if any package failed.
set -uo pipefail
cd "$(dirname "$0")/../.."
status=0
for config in packages/*/vitest.gpu.config.ts; do
  dir=$(dirname "$config")
  [ -f "$dir/dist/index.js" ] || { echo "=== $dir: not built, skipped"; continue; }
  echo "=== $dir"
  (cd "$dir" && FULGUR_TEST_GPU=1 node ../../node_modules/vitest/vitest.mjs run --config vitest.gpu.config.ts 2>&1) | tee "/tmp/gpu-$(basename "$dir").log" | grep -E "✓|×|FAIL|Tests |Test Files|Error" | grep -v "^ *✓" | tail -15
  grep -q "Tests .*failed" "/tmp/gpu-$(basename "$dir").log" && status=1
done
exit $status
