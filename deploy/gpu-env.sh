# shellcheck shell=bash
# Source this in a job (`. deploy/gpu-env.sh`) before running the pipeline: it makes the process's
# WebGPU adapter the GPU that the scheduler gave the job.
#
# Deno's WebGPU (wgpu) offers no adapter choice: requestAdapter() takes a power preference only,
# and DENO_WEBGPU_BACKEND picks backends, not devices. CUDA_VISIBLE_DEVICES, which Slurm (--gres=gpu)
# and Kubernetes set, is read by CUDA alone; Vulkan ignores it. So:
#   1. DENO_WEBGPU_BACKEND=vulkan: otherwise, where Vulkan has no device at all, wgpu quietly takes
#      its GL backend and runs on llvmpipe, on the CPU. (Mesa's lavapipe is a Vulkan device on the CPU
#      too; the device-select layer ranks it after every GPU. A shard's log names its adapter.)
#   2. With device isolation (Slurm ConstrainDevices=yes in cgroup.conf; Kubernetes' device plugin,
#      which puts only the allocated /dev/nvidiaN in the container) the job sees only its GPU and
#      nothing more is needed.
#   3. Otherwise the first GPU of CUDA_VISIBLE_DEVICES (an index or a UUID) is looked up with
#      nvidia-smi, and its PCI address given to Mesa's device-select layer (VK_LAYER_MESA_device_select,
#      an implicit Vulkan layer in mesa-vulkan-drivers that applies to every Vulkan driver, NVIDIA's
#      included): DRI_PRIME=pci-DDDD_BB_DD_F selects the device, and
#      MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1 makes it the only one the process sees.
#      `MESA_VK_DEVICE_SELECT=list deno task infer ...` prints the devices with their PCI addresses.
# Set MAMBA_EXPLAIN_GPU_SELECT=off to leave the device choice alone, or DRI_PRIME yourself to pick one.

export DENO_WEBGPU_BACKEND="${DENO_WEBGPU_BACKEND:-vulkan}"

# nvidia-smi's bus id (00000000:41:00.0) -> the device-select layer's tag (pci-0000_41_00_0)
mamba_explain_pci_tag() {
  local id="${1,,}"
  if [[ ! "$id" =~ ^([0-9a-f]{4,8}):([0-9a-f]{2}):([0-9a-f]{2})\.([0-7])$ ]]; then
    echo "gpu-env: '$1' is not a PCI bus id like 00000000:41:00.0" >&2
    return 1
  fi
  local dom="${BASH_REMATCH[1]}"
  printf 'pci-%s_%s_%s_%s\n' "${dom: -4}" "${BASH_REMATCH[2]}" "${BASH_REMATCH[3]}" "${BASH_REMATCH[4]}"
}

if [ "${MAMBA_EXPLAIN_GPU_SELECT:-on}" != off ] && [ -z "${DRI_PRIME:-}" ] && [ -n "${CUDA_VISIBLE_DEVICES:-}" ] &&
  command -v nvidia-smi >/dev/null 2>&1; then
  _me_gpu="${CUDA_VISIBLE_DEVICES%%,*}"
  if _me_bus="$(nvidia-smi --query-gpu=pci.bus_id --format=csv,noheader -i "$_me_gpu" 2>/dev/null | head -n 1)" &&
    _me_tag="$(mamba_explain_pci_tag "$_me_bus")"; then
    export DRI_PRIME="$_me_tag" MESA_VK_DEVICE_SELECT_FORCE_DEFAULT_DEVICE=1
    echo "gpu-env: GPU $_me_gpu of CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES is $_me_bus: DRI_PRIME=$DRI_PRIME" >&2
  else
    echo "gpu-env: nvidia-smi does not know GPU '$_me_gpu'; leaving the Vulkan device choice alone" >&2
  fi
  unset _me_gpu _me_bus _me_tag
fi
