// What a Transformer family supplies (engine/<family>/mod.ts): how to recognise and parse its
// config.json, which tensors it needs with their shapes, and how to read them into the engine's
// layout. Everything else (kernels, forward, knockouts, fast path) is shared (engine/transformer/).
import type { TransformerConfig, TransformerFamilyName } from "./config.ts";
import type { Elements } from "./layout.ts";

/** Reads a checkpoint's tensors: matrices in the storage dtype the model asked for, vectors as f32. */
export interface TensorReader {
  matrix(name: string): Promise<Elements>;
  vector(name: string): Promise<Float32Array>;
  has(name: string): boolean;
}

export interface HostNorm {
  weight: Float32Array;
  bias: Float32Array | null; // null for RMSNorm
}

/** One layer in the engine's layout; every matrix row-major (out, in). */
export interface HostLayer {
  norm1: HostNorm; // before attention
  norm2: HostNorm; // before the MLP
  qkv: Elements; // ((n_head + 2 n_kv_head) head_dim, d_model): [q heads | k heads | v heads]
  qkvBias: Float32Array | null;
  out: Elements; // (d_model, n_head head_dim)
  outBias: Float32Array | null;
  up: Elements; // (d_ff, d_model), or (2 d_ff, d_model) = [gate | up] for SwiGLU
  upBias: Float32Array | null;
  down: Elements; // (d_model, d_ff)
  downBias: Float32Array | null;
}

export interface TransformerFamily {
  name: TransformerFamilyName;
  /** whether a config.json (parsed JSON) is this family's */
  detect(raw: Record<string, unknown>): boolean;
  /** the config, or a ConfigError of one line */
  parse(raw: Record<string, unknown>): TransformerConfig;
  /** every tensor the model reads, with the shape the config implies */
  tensors(cfg: TransformerConfig, has: (name: string) => boolean): Map<string, number[]>;
  embedding(r: TensorReader, cfg: TransformerConfig): Promise<Elements>; // (vocab rows, d_model)
  /** the learned position table (n_positions, d_model), for families that have one */
  positions?(r: TensorReader, cfg: TransformerConfig): Promise<Float32Array>;
  /** the LM head (vocab rows, d_model); null when tied to the embedding */
  head(r: TensorReader, cfg: TransformerConfig): Promise<Elements | null>;
  finalNorm(r: TensorReader, cfg: TransformerConfig): Promise<HostNorm>;
  layer(r: TensorReader, cfg: TransformerConfig, layer: number): Promise<HostLayer>;
}
