// The registry of model families. A family is one folder engine/<family>/ whose family.ts exports a
// Family: how config.json names it, its config parser, its tensor list and its loader; adding a
// family is that folder and one line in families() below.
//
// config.json comes in two layouts: the Hugging Face transformers one names the architecture in
// `model_type`; the state-spaces (mamba_ssm) one has `d_model` and `ssm_cfg`, whose `layer` is
// "Mamba2" for Mamba-2 and absent or "Mamba1" for Mamba-1. The Transformer families (GPT-NeoX,
// GPT-2, Llama, Qwen2, Mistral; engine/transformer/) are Hugging Face ones, named by model_type,
// and come after the Mamba ones.
import { InputError, type KnockoutUnits, type LanguageModel } from "./arch.ts";
import type { Checkpoint } from "./checkpoint/mod.ts";
import { CheckpointError } from "./checkpoint/types.ts";
import { ConfigError, type ModelConfig } from "./config.ts";
import type { Gpu } from "./gpu.ts";
import type { F16Kernel, WeightDtype } from "./matmul.ts";
import { checkTensors, type TensorSpec } from "./tensors.ts";
import { MAMBA2 } from "./mamba2/family.ts";
import { FALCON_MAMBA, MAMBA1 } from "./mamba1/family.ts";
import { GPT_NEOX } from "./gpt_neox/family.ts";
import { GPT2 } from "./gpt2/family.ts";
import { LLAMA } from "./llama/family.ts";
import { QWEN2 } from "./qwen2/family.ts";
import { MISTRAL } from "./mistral/family.ts";

export interface LoadOptions {
  /**
   * How the matrices (projections, embedding / lm_head) are stored: "f32" (default) or "f16" (half
   * the memory and the bytes each matmul reads; activations and accumulation stay f32).
   */
  dtype?: WeightDtype;
  /** How kernels read f16 weights (engine/matmul.ts F16Kernel); "packed" works on every adapter. */
  f16Kernel?: F16Kernel;
  /**
   * The tokenizer's vocabulary size (TextTokenizer.vocabSize). loadModel turns it into the model's
   * real vocabulary by realVocabSize, and a family hands that on to its Backbone (its last
   * constructor argument), which checks ids and softmaxes over it.
   */
  vocabSize?: number;
}

export interface Family {
  name: string; // ModelInfo.family
  /** the config.json names that mean this family */
  names: { stateSpacesLayer?: string[]; modelType?: string[] };
  /** how to say which config.json it reads (the unknown-family error lists these) */
  describe: string;
  parseConfig(raw: Record<string, unknown>): ModelConfig;
  /**
   * every tensor the model reads, with the shape its config implies; `has` probes the checkpoint
   * where the names depend on it (GPT-2's optional "transformer." prefix), absent for synthetic ones
   */
  tensors(config: ModelConfig, has?: (name: string) => boolean): TensorSpec[];
  /** what knockouts act on (the loaded model's info says the same), for checks before it is loaded */
  units(config: ModelConfig): KnockoutUnits;
  /** load the checkpoint (its tensors already checked against `tensors`) onto the GPU */
  load(gpu: Gpu, ckpt: Checkpoint, opts: LoadOptions): Promise<LanguageModel>;
}

/** Every family, in the order the errors list them (a function: read at call time, never during module loading). */
export function families(): Family[] {
  return [MAMBA2, MAMBA1, FALCON_MAMBA, GPT_NEOX, GPT2, LLAMA, QWEN2, MISTRAL];
}

/** What config.json says the architecture is. */
function named(raw: Record<string, unknown>): { layout: "hf"; modelType: string } | { layout: "state-spaces"; layer: string } | null {
  if (typeof raw.model_type === "string") return { layout: "hf", modelType: raw.model_type };
  if ("ssm_cfg" in raw || "d_model" in raw) {
    const ssm = raw.ssm_cfg;
    const layer = typeof ssm === "object" && ssm !== null && typeof (ssm as Record<string, unknown>).layer === "string"
      ? (ssm as Record<string, string>).layer
      : "Mamba1";
    return { layout: "state-spaces", layer };
  }
  return null;
}

/** The family config.json names; ConfigError (one line, listing the supported families) when none. */
export function detectFamily(raw: unknown): Family {
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new ConfigError("config.json: not a JSON object");
  const n = named(raw as Record<string, unknown>);
  const fam = n && families().find((f) => n.layout === "hf" ? f.names.modelType?.includes(n.modelType) : f.names.stateSpacesLayer?.includes(n.layer));
  if (fam) return fam;
  const supported = `supported: ${families().map((f) => `${f.name} (${f.describe})`).join("; ")}`;
  if (!n) throw new ConfigError(`config.json names no architecture (no model_type, no d_model/ssm_cfg); ${supported}`);
  if (n.layout === "hf") throw new ConfigError(`config.json: model_type ${JSON.stringify(n.modelType)} is not a supported model family; ${supported}`);
  throw new ConfigError(`config.json: ssm_cfg.layer ${JSON.stringify(n.layer)} (state-spaces layout; absent means Mamba1) is not a supported model family; ${supported}`);
}

/** config.json (parsed JSON) as its family's config. */
export function parseModelConfig(raw: unknown): ModelConfig {
  return detectFamily(raw).parseConfig(raw as Record<string, unknown>);
}

export function familyOf(config: ModelConfig): Family {
  const f = families().find((x) => x.name === config.family);
  if (!f) throw new ConfigError(`no model family ${config.family}; ${families().map((x) => x.name).join(", ")} are known`);
  return f;
}

/** Every tensor a model of this config reads (`has`: the checkpoint's, where names depend on it). */
export function expectedTensors(config: ModelConfig, has?: (name: string) => boolean): TensorSpec[] {
  return familyOf(config).tensors(config, has);
}

/**
 * The real-vocabulary rule, one for every family: the softmax and the token ids run over the
 * tokenizer's tokens when the tokenizer is known (a model's LM head may have padding rows that are
 * no token: state-spaces pads to a multiple of 8 or 16, the Hugging Face layouts store the padded
 * count as vocab_size, Pythia's head has 50304 rows for 50277 tokens), else over the config's
 * vocabulary (state-spaces: the real one; Hugging Face: every row). A tokenizer with more tokens than
 * the head has rows is not this model's, nor is one that leaves a tenth of the rows unused (padding
 * is a few rows, ~2 % at most in published models; GPT-NeoX-20B's 50277 tokens against Falcon-Mamba's
 * 65024 rows is a Hugging Face snapshot without its tokenizer.json): CheckpointError, one line.
 */
export function realVocabSize(config: ModelConfig, tokenizerVocab?: number): number {
  if (tokenizerVocab === undefined) return config.vocabSize;
  if (!Number.isInteger(tokenizerVocab) || tokenizerVocab < 1) throw new InputError(`vocabulary size ${tokenizerVocab} is not a positive integer`);
  if (tokenizerVocab > config.vocabPadded) {
    throw new CheckpointError(`the tokenizer has ${tokenizerVocab} tokens but the model's LM head only ${config.vocabPadded} rows: it is not this model's tokenizer (put the model's tokenizer.json beside its config.json, or pass --tokenizer)`);
  }
  if (tokenizerVocab < 0.9 * config.vocabPadded) {
    throw new CheckpointError(`the tokenizer has ${tokenizerVocab} tokens but the model's LM head ${config.vocabPadded} rows: it is not this model's tokenizer (put the model's tokenizer.json beside its config.json, or pass --tokenizer)`);
  }
  return tokenizerVocab;
}

/**
 * Load a checkpoint as the LanguageModel of its family; its tensors are checked against the
 * family's list first (a missing, misshapen or unexpected tensor is named before anything is
 * uploaded).
 */
export async function loadModel(gpu: Gpu, ckpt: Checkpoint, opts: LoadOptions = {}): Promise<LanguageModel> {
  const dtype = opts.dtype ?? "f32";
  if (dtype !== "f32" && dtype !== "f16") throw new InputError(`unknown dtype ${dtype}: use f32 or f16`);
  const vocabSize = realVocabSize(ckpt.config, opts.vocabSize);
  checkTensors(ckpt, expectedTensors(ckpt.config, (name) => ckpt.has(name)));
  return await familyOf(ckpt.config).load(gpu, ckpt, { ...opts, dtype, vocabSize });
}
