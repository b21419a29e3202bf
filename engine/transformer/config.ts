// The shared configuration of the Transformer families, parsed by each family from its Hugging Face
// config.json (engine/<family>/family.ts), and the config readers those parsers share beside
// engine/config.ts's positiveInt / positiveNumber. Every problem is a ConfigError of one line naming
// the key; opening the checkpoint prefixes its folder.
import type { KnockoutUnits } from "../arch.ts";
import { bool, ConfigError, type ModelConfig, positiveInt, positiveNumber } from "../config.ts";

export { bool, ConfigError, positiveInt, positiveNumber };

export type TransformerFamilyName = "gpt_neox" | "gpt2" | "llama" | "qwen2" | "mistral";

/**
 * What a Transformer family's config.json gives. vocabSize and vocabPadded are both the config's
 * vocab_size (the rows of the embedding and the LM head); the real vocabulary, which ids and the
 * softmax range over, is set when the model is loaded (engine/transformer/model.ts).
 */
/** One mode (the ordinary forward); knockouts act on the attention heads, which have no decay; no conv path. */
export function transformerUnits(c: TransformerConfig): KnockoutUnits {
  return { modes: ["attention"], unitName: "head", unitsPerLayer: c.nHead, convWidth: 0, rankedByDecay: false };
}

export interface TransformerConfig extends ModelConfig {
  family: TransformerFamilyName;
  nHead: number;
  nKvHead: number; // key/value heads (grouped-query attention); = nHead without GQA
  headDim: number;
  dFF: number; // the MLP's inner width
  norm: "layernorm" | "rmsnorm";
  normEps: number;
  mlp: "gelu" | "gelu_tanh" | "swiglu";
  parallelResidual: boolean; // x + attn(ln1 x) + mlp(ln2 x) (GPT-NeoX) instead of two residual steps
  rotaryDims: number; // dims of each q/k head that RoPE rotates (rotate-half); 0 = no RoPE
  ropeTheta: number;
  ropeScaling: string; // "none", "linear" or "llama3", for the manifest
  invFreq: number[]; // RoPE inverse frequencies (rotaryDims / 2), float64, scaling applied
  learnedPositions: number; // rows of the learned position table (GPT-2); 0 = none
  qkvBias: boolean;
  outBias: boolean;
  mlpBias: boolean;
  slidingWindow: number[]; // per layer: keys s with t − s < window; 0 = the whole causal prefix
}

type Raw = Record<string, unknown>;

/** A fraction in (0, 1]. */
export function fractionKey(c: Raw, key: string, fallback: number): number {
  const v = c[key] ?? fallback;
  if (typeof v !== "number" || !(v > 0 && v <= 1)) throw new ConfigError(`config.json: "${key}" must be in (0, 1], got ${JSON.stringify(v)}`);
  return v;
}

/** The family's hidden_act (or GPT-2's activation_function) as one of ours, refusing the rest. */
export function geluKind(c: Raw, key: string, fallback: string): "gelu" | "gelu_tanh" {
  const v = c[key] ?? fallback;
  if (v === "gelu") return "gelu";
  if (v === "gelu_new" || v === "gelu_fast" || v === "gelu_pytorch_tanh") return "gelu_tanh";
  throw new ConfigError(`config.json: "${key}" ${JSON.stringify(v)} is not supported (use gelu, gelu_new, gelu_fast or gelu_pytorch_tanh)`);
}

/** Inverse frequencies 1 / theta^(2i / dims), i < dims/2, in float64. */
export function defaultInvFreq(dims: number, theta: number): number[] {
  return Array.from({ length: dims / 2 }, (_, i) => 1 / theta ** ((2 * i) / dims));
}

/**
 * RoPE inverse frequencies with the config's rope_scaling: none/"default", "linear" (all divided
 * by factor) or "llama3" (Llama 3.1+: wavelengths above original_max_position_embeddings /
 * low_freq_factor divided by factor, below / high_freq_factor kept, a linear blend in between).
 * Other kinds (dynamic, yarn, longrope) change attention beyond the frequencies and are refused.
 */
export function ropeFrequencies(c: Raw, dims: number, theta: number): { invFreq: number[]; scaling: string } {
  const inv = defaultInvFreq(dims, theta);
  const s = c.rope_scaling;
  if (s === undefined || s === null) return { invFreq: inv, scaling: "none" };
  if (typeof s !== "object" || Array.isArray(s)) throw new ConfigError(`config.json: "rope_scaling" must be an object or null`);
  const r = s as Raw;
  const kind = r.rope_type ?? r.type ?? "default";
  if (kind === "default") return { invFreq: inv, scaling: "none" };
  if (kind === "linear") {
    const factor = positiveNumber(r, "factor", undefined, "config.json rope_scaling");
    return { invFreq: inv.map((f) => f / factor), scaling: "linear" };
  }
  if (kind === "llama3") {
    const where = "config.json rope_scaling";
    const factor = positiveNumber(r, "factor", undefined, where), low = positiveNumber(r, "low_freq_factor", undefined, where);
    const high = positiveNumber(r, "high_freq_factor", undefined, where), old = positiveNumber(r, "original_max_position_embeddings", undefined, where);
    if (!(high > low)) throw new ConfigError(`config.json: rope_scaling high_freq_factor must exceed low_freq_factor`);
    const lowWavelen = old / low, highWavelen = old / high;
    const out = inv.map((f) => {
      const wavelen = (2 * Math.PI) / f;
      if (wavelen < highWavelen) return f;
      if (wavelen > lowWavelen) return f / factor;
      const smooth = (old / wavelen - low) / (high - low);
      return (1 - smooth) * (f / factor) + smooth * f;
    });
    return { invFreq: out, scaling: "llama3" };
  }
  throw new ConfigError(`config.json: rope_scaling type ${JSON.stringify(kind)} is not supported (none, linear or llama3)`);
}

/** Shape checks shared by the parsers: heads divide the width, GQA groups are whole, RoPE dims even. */
export function checkShapes(cfg: TransformerConfig): TransformerConfig {
  if (cfg.nHead % cfg.nKvHead !== 0) {
    throw new ConfigError(`config.json: ${cfg.nHead} attention heads are not a multiple of ${cfg.nKvHead} key/value heads`);
  }
  if (cfg.rotaryDims % 2 !== 0 || cfg.rotaryDims > cfg.headDim) {
    throw new ConfigError(`config.json: RoPE would rotate ${cfg.rotaryDims} of ${cfg.headDim} head dims; it needs an even number up to head_dim`);
  }
  return cfg;
}

/** The config as a plain record (for manifests): every field but config.json itself and the frequency table. */
export function configRecord(cfg: TransformerConfig): Record<string, unknown> {
  const { invFreq: _inv, raw: _raw, ...rest } = cfg;
  return { ...rest };
}
