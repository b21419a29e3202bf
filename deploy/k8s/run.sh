#!/bin/bash
# A sharded run on Kubernetes, start to end: deploy/k8s/run.sh [kubectl options, e.g. -n NAMESPACE]
#   the ConfigMap (the run's arguments) and the volume; the model into the shared cache; then twice:
#   the shards (01_construct; then 03_info_flow and 04_heatmap, which read 01's merged outputs) and
#   the merge. Each step waits for the previous one and stops the script if it fails.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
k() { kubectl "$@"; }

# wait until a Job has the condition Complete (return 0) or Failed (return 1)
wait_job() {
  local job="$1" state
  while true; do
    state="$(k "${opts[@]}" get "job/$job" -o jsonpath='{range .status.conditions[?(@.status=="True")]}{.type}{" "}{end}')"
    case " $state " in
      *" Complete "*) return 0 ;;
      *" Failed "*) echo "run.sh: job $job failed; kubectl ${opts[*]} logs job/$job" >&2; return 1 ;;
    esac
    sleep 20
  done
}

# run a Job from its manifest anew and wait for it
job() {
  local file="$1" name
  name="$(k "${opts[@]}" apply --dry-run=client -f "$here/$file" -o jsonpath='{.metadata.name}')"
  k "${opts[@]}" delete --ignore-not-found "job/$name"
  k "${opts[@]}" apply -f "$here/$file"
  wait_job "$name"
}

opts=("$@")
k "${opts[@]}" apply -f "$here/config.yaml" -f "$here/pvc.yaml"
job fetch-model.yaml
for step in 1 2; do
  echo "run.sh: step $step of 2: shards, then the merge"
  job shards.yaml
  job merge.yaml
done
echo "run.sh: done; the outputs are on the volume mamba-explain-data (see the merge's log)"
