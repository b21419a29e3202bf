#!/bin/bash
# The GPU check of issue 8 on a machine with a GPU (bench/gpu_check.ts says what it measures). On an
# H100 its matmul half took 130 s; making the random mamba2-1.3b weights on the host for the second
# half takes minutes more (one run did not finish it within 330 s), so give it up to 10 minutes. Runs where the npm packages are not installed (nothing it imports needs them).
# Output: the table on stdout, progress on stderr; a copy of both in $OUT/gpu_check.log when $OUT is set.
#   bench/gpu_check.sh [--quick]
# Deno: $DENO, else .deno-bin/deno (a binary carried in), else deno on PATH, else npx -y deno@2.9.6.
# Vulkan: loader packages carried in .gl/*.deb are unpacked first (the device machines of this project
# have the NVIDIA driver but may lack libvulkan1); the NVIDIA ICD is named when it is there.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
if compgen -G ".gl/*.deb" >/dev/null; then
  for f in .gl/*.deb; do dpkg -x "$f" /; done
  ldconfig
fi
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$icd" ]; then export VK_DRIVER_FILES="$icd"; fi
if [ -z "${DENO:-}" ]; then
  if [ -x .deno-bin/deno ]; then DENO=.deno-bin/deno
  elif command -v deno >/dev/null; then DENO=deno
  else DENO="npx -y deno@2.9.6"; fi
fi
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" NO_COLOR=1
# plans are tuned once per adapter and cached: a fresh cache, so that this run measures them
export MAMBA_EXPLAIN_CACHE="${MAMBA_EXPLAIN_CACHE:-$(mktemp -d)}"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
log="${OUT:-$(mktemp -d)}/gpu_check.log"
# shellcheck disable=SC2086
timeout "${GPU_CHECK_LIMIT_S:-590}" $DENO run --cached-only -A bench/gpu_check.ts "$@" 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
echo "tuned plans: $MAMBA_EXPLAIN_CACHE/matmul-plans.json"
[ -f "$MAMBA_EXPLAIN_CACHE/matmul-plans.json" ] && cp "$MAMBA_EXPLAIN_CACHE/matmul-plans.json" "$(dirname "$log")/" 2>/dev/null
exit "$status"
