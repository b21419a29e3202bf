// What a Transformer family supplies (engine/<family>/family.ts): how to parse its config.json,
// which tensors it reads with their shapes, and how to read them into the engine's layout.
// `transformerFamily` makes it a Family of the registry (engine/families.ts); everything else
// (kernels, layers, the backbone's forward and fast path) is shared (engine/transformer/model.ts).
import type { Family } from "../families.ts";
import type { SyntheticInit, TensorSpec } from "../tensors.ts";
import { type TransformerConfig, type TransformerFamilyName, transformerUnits } from "./config.ts";
import type { Elements } from "./layout.ts";
import { loadTransformer } from "./model.ts";

/** Reads a checkpoint's tensors: matrices in the storage dtype the model asked for, vectors as f32. */
export interface TensorReader {
  /** a matrix's elements on the host, for a family to re-arrange */
  matrix(name: string): Promise<Elements>;
  /** a matrix used as stored: the loader streams it to the GPU without holding it on the host */
  stored(name: string): StoredMatrix;
  vector(name: string): Promise<Float32Array>;
  has(name: string): boolean;
}

/** A checkpoint tensor that is already in the engine's layout (row-major (out, in)). */
export interface StoredMatrix {
  tensor: string;
}

/** A matrix in the engine's layout: re-arranged on the host, or a checkpoint tensor as stored. */
export type HostMatrix = Elements | StoredMatrix;

export interface HostNorm {
  weight: Float32Array;
  bias: Float32Array | null; // null for RMSNorm
}

/** One layer in the engine's layout; every matrix row-major (out, in). */
export interface HostLayer {
  norm1: HostNorm; // before attention
  norm2: HostNorm; // before the MLP
  qkv: HostMatrix; // ((n_head + 2 n_kv_head) head_dim, d_model): [q heads | k heads | v heads]
  qkvBias: Float32Array | null;
  out: HostMatrix; // (d_model, n_head head_dim)
  outBias: Float32Array | null;
  up: HostMatrix; // (d_ff, d_model), or (2 d_ff, d_model) = [gate | up] for SwiGLU
  upBias: Float32Array | null;
  down: HostMatrix; // (d_model, d_ff)
  downBias: Float32Array | null;
}

export interface TransformerFamilyDef {
  name: TransformerFamilyName;
  /** the config, or a ConfigError of one line */
  parse(raw: Record<string, unknown>): TransformerConfig;
  /**
   * every tensor the model reads, with the shape the config implies; `has` probes the checkpoint
   * where a family's names depend on it (GPT-2's optional "transformer." prefix)
   */
  tensors(cfg: TransformerConfig, has?: (name: string) => boolean): TensorSpec[];
  embedding(r: TensorReader, cfg: TransformerConfig): Promise<HostMatrix>; // (vocab rows, d_model)
  /** the learned position table (n_positions, d_model), for families that have one */
  positions?(r: TensorReader, cfg: TransformerConfig): Promise<Float32Array>;
  /** the LM head (vocab rows, d_model); null when tied to the embedding */
  head(r: TensorReader, cfg: TransformerConfig): Promise<HostMatrix | null>;
  finalNorm(r: TensorReader, cfg: TransformerConfig): Promise<HostNorm>;
  layer(r: TensorReader, cfg: TransformerConfig, layer: number): Promise<HostLayer>;
}

/** A Transformer family of the registry: detected by config.json's model_type (= its name). */
export function transformerFamily(def: TransformerFamilyDef): Family & { def: TransformerFamilyDef } {
  return {
    def,
    name: def.name,
    names: { modelType: [def.name] },
    describe: `Hugging Face config.json with model_type "${def.name}"`,
    parseConfig: def.parse,
    tensors: (config, has) => def.tensors(config as TransformerConfig, has),
    units: (config) => transformerUnits(config as TransformerConfig),
    load: (gpu, ckpt, opts) => loadTransformer(gpu, ckpt, def, opts),
  };
}

// ------------------------------------------------------------------ tensor lists

/** How synthetic checkpoints (engine/synthetic.ts) fill each kind of tensor: activations stay O(1). */
export const INIT = {
  ones: { kind: "ones" },
  zeros: { kind: "uniform", lo: 0, hi: 0 },
  bias: { kind: "uniform", lo: -0.02, hi: 0.02 },
  embedding: { kind: "uniform", lo: -0.05, hi: 0.05 },
  /** a matrix applied to vectors of `fanIn` entries */
  matrix: (fanIn: number): SyntheticInit => ({ kind: "uniform", lo: -1 / Math.sqrt(fanIn), hi: 1 / Math.sqrt(fanIn) }),
} as const satisfies Record<string, SyntheticInit | ((n: number) => SyntheticInit)>;

/** A tensor of the list; `optional` ones may be absent (tied heads, buffers older exports saved) and are checked when present. */
export function tensor(name: string, shape: number[], init: SyntheticInit, optional = false): TensorSpec {
  return optional ? { name, shape, init, optional } : { name, shape, init };
}
