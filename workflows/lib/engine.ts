// The one place where the workflows meet the engine: opening a checkpoint, creating the GPU
// device and loading the model, and rebuilding both after a lost device.

import { createGpu, type Gpu } from "../../engine/gpu.ts";
import { type Checkpoint, openCheckpoint } from "../../engine/checkpoint/mod.ts";
import type { LanguageModel } from "../../engine/arch.ts";
import { loadModel as loadFamilyModel } from "../../engine/families.ts";

export type { Checkpoint, Gpu, LanguageModel };

export interface LoadedModel {
  model: LanguageModel;
  gpu: Gpu;
  adapterInfo: string;
  /** true once the device reported itself lost; the model must be reloaded */
  lost(): boolean;
  /** after an error: wait up to `ms` for the device to report itself lost */
  becameLost(ms?: number): Promise<boolean>;
}

export function openModel(id: string, opts: { offline?: boolean; verify?: boolean } = {}): Promise<Checkpoint> {
  return openCheckpoint(id, opts);
}

export async function loadModel(ckpt: Checkpoint, opts: { dtype?: "f32" | "f16" } = {}): Promise<LoadedModel> {
  const gpu = await createGpu();
  let isLost = false;
  gpu.device.lost.then(() => {
    isLost = true;
  });
  const model = await loadFamilyModel(gpu, ckpt, { dtype: opts.dtype ?? "f32" });
  const becameLost = async (ms = 200) => {
    if (isLost) return true;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<void>((r) => timer = setTimeout(r, ms));
    await Promise.race([gpu.device.lost, timeout]);
    clearTimeout(timer);
    return isLost;
  };
  return { model, gpu, adapterInfo: gpu.adapterInfo, lost: () => isLost, becameLost };
}

export function unloadModel(m: LoadedModel): void {
  try {
    m.model.destroy();
  } catch {
    // device already gone
  }
  try {
    m.gpu.device.destroy();
  } catch {
    // already destroyed
  }
}
