// The registry of model families: loadModel() detects the family of a checkpoint and loads it as a
// LanguageModel (engine/arch.ts).
import type { Checkpoint } from "./checkpoint/mod.ts";
import type { Gpu } from "./gpu.ts";
import type { LanguageModel } from "./arch.ts";
import { Mamba2Model } from "./model.ts";

export async function loadModel(gpu: Gpu, ckpt: Checkpoint, opts: { dtype?: "f32" | "f16" } = {}): Promise<LanguageModel> {
  return await Mamba2Model.load(gpu, ckpt, opts);
}
