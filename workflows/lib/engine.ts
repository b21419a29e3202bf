// The one place where the workflows meet the engine: opening a checkpoint, creating the GPU
// device and loading the model, and rebuilding both after a lost device.

import { createGpu, type Gpu } from "../../engine/gpu.ts";
import { type Checkpoint, openCheckpoint } from "../../engine/checkpoint/mod.ts";
import type { LanguageModel } from "../../engine/arch.ts";
import { loadModel as loadFamilyModel } from "../../engine/families.ts";
import { profile } from "../../engine/profile.ts";

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

/** `vocabSize`: the tokenizer's (the real vocabulary, engine/families.ts realVocabSize). */
export function loadModel(ckpt: Checkpoint, opts: { dtype?: "f32" | "f16"; vocabSize?: number } = {}): Promise<LoadedModel> {
  return profile.time("load", () => load(ckpt, opts));
}

async function load(ckpt: Checkpoint, opts: { dtype?: "f32" | "f16"; vocabSize?: number }): Promise<LoadedModel> {
  const gpu = await createGpu();
  let isLost = false;
  gpu.device.lost.then(() => {
    isLost = true;
  });
  const model = await loadFamilyModel(gpu, ckpt, { dtype: opts.dtype ?? "f32", vocabSize: opts.vocabSize });
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

/** Times a lost device is replaced for the same piece of work before the error is given up on. */
export const MAX_DEVICE_RETRIES = 3;

/**
 * Run `work` on the model; when it fails because the device was lost (driver reset, GPU fell off
 * the bus), get a new device and model from `model()` and run the same work again, up to
 * MAX_DEVICE_RETRIES times. Any other error is thrown at once.
 */
export async function withDevice<T>(model: () => Promise<LoadedModel>, work: (loaded: LoadedModel) => Promise<T>): Promise<T> {
  for (let attempt = 0;; attempt++) {
    const loaded = await model();
    try {
      return await work(loaded);
    } catch (e) {
      if (attempt >= MAX_DEVICE_RETRIES || !(await loaded.becameLost())) throw e;
    }
  }
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
