#!/bin/bash
# Check a GPU node before a sharded run (run it there: `srun --gres=gpu:1 deploy/check_node.sh`, or in a
# pod): which Vulkan devices the process sees, which one deploy/gpu-env.sh picks, and a sharded run of
# the test model (2 shards and the merge) against a one-process run, byte for byte. Ends non-zero if a
# check fails. DENO as in the recipes (default: npx -y deno@2.9.6).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DENO="${DENO:-npx -y deno@2.9.6}"
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}" NO_COLOR=1
fail=0
echo "== Vulkan devices this process can see (Mesa's device-select layer)"
# shellcheck disable=SC2086
MESA_VK_DEVICE_SELECT=list $DENO run -A engine/infer.ts --model tests/fixtures/mamba2-tiny --ids 1,2 || true
echo "== the device picked for CUDA_VISIBLE_DEVICES=${CUDA_VISIBLE_DEVICES:-<unset>}"
. deploy/gpu-env.sh
echo "DENO_WEBGPU_BACKEND=$DENO_WEBGPU_BACKEND DRI_PRIME=${DRI_PRIME:-<unset>}"
# shellcheck disable=SC2086
adapter="$($DENO run -A engine/infer.ts --model tests/fixtures/mamba2-tiny --ids 1,2 | head -n 1)"
echo "$adapter"
case "$adapter" in *llvmpipe*) echo "check: the process runs on the CPU (llvmpipe), not on a GPU"; fail=1 ;; esac
echo "== 2 shards and the merge against one process (test model)"
tmp="$(mktemp -d)"
args=(--model tests/fixtures/mamba2-tiny --rows 0-11 --only 01_construct --only 03_info_flow --set 01_construct.batchSize=2
  --set 03_info_flow.filter=all --set 03_info_flow.k=3 --set 03_info_flow.group_prompts=2 --set 03_info_flow.bootstrap=50)
t0=$SECONDS
for round in 1 2; do
  for i in 0 1; do
    # shellcheck disable=SC2086
    $DENO run -A workflows/pipeline.ts "${args[@]}" --out "$tmp/sharded" --shard "$i/2" >"$tmp/shard-$round-$i.log" 2>&1 || { echo "shard $i/2 failed:"; cat "$tmp/shard-$round-$i.log"; fail=1; }
  done
  # shellcheck disable=SC2086
  $DENO run -A workflows/pipeline.ts "${args[@]}" --out "$tmp/sharded" --merge >"$tmp/merge-$round.log" 2>&1 || { echo "merge failed:"; cat "$tmp/merge-$round.log"; fail=1; }
done
# shellcheck disable=SC2086
$DENO run -A workflows/pipeline.ts "${args[@]}" --out "$tmp/whole" >"$tmp/whole.log" 2>&1 || { echo "one-process run failed:"; cat "$tmp/whole.log"; fail=1; }
echo "sharded run and one-process run: $((SECONDS - t0)) s"
for stage in 01_construct 03_info_flow; do
  for f in "$tmp/whole/$stage"/*; do
    b="$(basename "$f")"
    [ "$b" = manifest.json ] && continue
    cmp -s "$f" "$tmp/sharded/$stage/$b" || { echo "check: $stage/$b differs between the sharded and the one-process run"; fail=1; }
  done
done
grep -h "done in\|merged in" "$tmp"/*.log
rm -rf "$tmp"
[ "$fail" -eq 0 ] && echo "check_node: all checks passed" || echo "check_node: FAILED"
exit "$fail"
