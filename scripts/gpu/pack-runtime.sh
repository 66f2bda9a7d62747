#!/usr/bin/env bash
# Builds every package and packs, xz-compressed, what the GPU machine needs to run them and their
# GPU tests (it has Node from pack-node.sh but no registry): .carry/rt.tar.xz. On the machine,
# from the repository root: tar -xJf .carry/rt.tar.xz
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .carry
grep -qxF "/.carry/" .git/info/exclude 2>/dev/null || echo "/.carry/" >> .git/info/exclude
NX_DAEMON=false npx nx run-many -t build --parallel=2 >/dev/null
node scripts/gpu/runtime-files.mjs > .carry/rt-files.txt
tar -cJf .carry/rt.tar.xz.tmp -T .carry/rt-files.txt && mv .carry/rt.tar.xz.tmp .carry/rt.tar.xz
echo "packed $(wc -l < .carry/rt-files.txt) paths into .carry/rt.tar.xz ($(du -h .carry/rt.tar.xz | cut -f1))"
