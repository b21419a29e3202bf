#!/bin/bash
# Submit a sharded pipeline run to Slurm: deploy/slurm/submit.sh N [PIPELINE-ARGS...]
#   1. N shards of 01_construct (an array job, one GPU per task)
#   2. the merge (afterok 1): 01_construct's outputs, 02_compare
#   3. N shards of 03_info_flow and 04_heatmap (afterok 2): they read 01_construct's merged outputs
#   4. the merge (afterok 3): 03_info_flow's and 04_heatmap's outputs, and any later stage
# Steps 3 and 4 are the same scripts as 1 and 2: a shard computes what is ready, a merge merges
# what is complete (see deploy/slurm/README.md). Before submitting, the npm packages and the model
# are fetched here, once, into the shared caches (HF_HUB_CACHE, DENO_DIR) that the jobs read.
# Extra sbatch options: the SBATCH_* variables (SBATCH_PARTITION, SBATCH_ACCOUNT, SBATCH_GRES, ...).
set -euo pipefail
if [ $# -lt 1 ] || ! [[ "$1" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: deploy/slurm/submit.sh N [PIPELINE-ARGS...]  (N shards, one GPU each)" >&2
  exit 2
fi
n="$1"
shift
home="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$home"
export MAMBA_EXPLAIN_HOME="$home" MAMBA_EXPLAIN_SHARDS="$n" DENO="${DENO:-npx -y deno@2.9.6}"
if [ -z "${HF_HUB_CACHE:-}" ] && [ -z "${HF_HOME:-}" ]; then
  echo "submit: HF_HUB_CACHE is not set: the jobs will use ~/.cache/huggingface/hub, which must be on shared storage" >&2
fi
# shellcheck disable=SC2086 # DENO may be a command with arguments
$DENO run -A deploy/fetch_model.ts "$@"
submit() { sbatch --parsable --export=ALL --chdir="$home" "$@" | cut -d ';' -f 1; }
s1="$(submit --array="0-$((n - 1))" deploy/slurm/shard.sbatch "$@")"
m1="$(submit --dependency="afterok:$s1" deploy/slurm/merge.sbatch "$@")"
s2="$(submit --dependency="afterok:$m1" --array="0-$((n - 1))" deploy/slurm/shard.sbatch "$@")"
m2="$(submit --dependency="afterok:$s2" deploy/slurm/merge.sbatch "$@")"
echo "submitted: shards $s1, merge $m1, shards $s2, merge $m2"
