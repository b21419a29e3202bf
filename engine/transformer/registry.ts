// The Transformer families, for the model registry (engine/families.ts) to splice in: each detects
// its config.json by model_type.
import { gpt2 } from "../gpt2/mod.ts";
import { gptNeox } from "../gpt_neox/mod.ts";
import { llama } from "../llama/mod.ts";
import { mistral } from "../mistral/mod.ts";
import { qwen2 } from "../qwen2/mod.ts";
import { CheckpointError } from "../checkpoint/mod.ts";
import type { Gpu } from "../gpu.ts";
import type { TensorCheckpoint } from "./checkpoint.ts";
import type { TransformerFamily } from "./family.ts";
import { type TransformerLoadOptions, TransformerModel } from "./model.ts";

export const TRANSFORMER_FAMILIES: readonly TransformerFamily[] = [gptNeox, gpt2, llama, qwen2, mistral];

/** The Transformer family of a config.json, or undefined when it is none of them. */
export function transformerFamilyOf(raw: Record<string, unknown>): TransformerFamily | undefined {
  return TRANSFORMER_FAMILIES.find((f) => f.detect(raw));
}

/** Load a Transformer checkpoint; a config of another kind is refused with the supported ones listed. */
export async function loadTransformer(gpu: Gpu, ckpt: TensorCheckpoint, opts: TransformerLoadOptions = {}): Promise<TransformerModel> {
  const family = transformerFamilyOf(ckpt.rawConfig);
  if (!family) {
    throw new CheckpointError(
      `${ckpt.dir}/config.json: model_type ${JSON.stringify(ckpt.rawConfig.model_type)} is not a supported Transformer (${TRANSFORMER_FAMILIES.map((f) => f.name).join(", ")})`,
    );
  }
  return await TransformerModel.load(gpu, ckpt, family, opts);
}
