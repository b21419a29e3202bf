// Mamba-2 configuration, from a `state-spaces` style config.json (ssm_cfg.layer "Mamba2").
// Real checkpoints omit most of ssm_cfg, so the Mamba2 layer's defaults fill the gaps.
import { ConfigError, type ModelConfig, positiveInt, positiveNumber } from "../config.ts";

export interface Mamba2Config extends ModelConfig {
  family: "mamba2";
  dState: number;
  headdim: number;
  expand: number;
  dConv: number;
  ngroups: number;
  chunkSize: number;
  normEps: number; // the layer norms and norm_f (norm_epsilon)
  // derived
  dInner: number; // expand * d_model
  nheads: number; // d_inner / headdim
  convDim: number; // d_inner + 2 * ngroups * d_state (channels that go through conv1d: x, B, C)
  dInProj: number; // 2 * d_inner + 2 * ngroups * d_state + nheads (z, xBC, dt)
}

/** The gated RMSNorm's epsilon (mamba_ssm's RMSNormGated default; not in config.json). */
export const GATED_NORM_EPS = 1e-5;

export function parseMamba2Config(c: Record<string, unknown>): Mamba2Config {
  const ssm = (c.ssm_cfg ?? {}) as Record<string, unknown>;
  if (typeof ssm !== "object" || ssm === null || Array.isArray(ssm)) throw new ConfigError("config.json: ssm_cfg must be an object");
  const attnIdx = c.attn_layer_idx;
  if (Array.isArray(attnIdx) && attnIdx.length > 0) {
    throw new ConfigError("config.json: hybrid models with attention layers (attn_layer_idx) are not supported");
  }
  if (typeof c.d_intermediate === "number" && c.d_intermediate !== 0) {
    throw new ConfigError("config.json: models with an MLP (d_intermediate > 0) are not supported");
  }
  const dModel = positiveInt(c, "d_model");
  const nLayer = positiveInt(c, "n_layer");
  const vocabSize = positiveInt(c, "vocab_size");
  const padMultiple = positiveInt(c, "pad_vocab_size_multiple", 8);
  const where = "config.json ssm_cfg";
  const dState = positiveInt(ssm, "d_state", 128, where);
  const headdim = positiveInt(ssm, "headdim", 64, where);
  const expand = positiveInt(ssm, "expand", 2, where);
  const dConv = positiveInt(ssm, "d_conv", 4, where);
  const ngroups = positiveInt(ssm, "ngroups", 1, where);
  const chunkSize = positiveInt(ssm, "chunk_size", 256, where);
  if (dConv > 32) throw new ConfigError(`config.json: ssm_cfg.d_conv ${dConv} is above the 32 taps the conv kernels support`);
  const dInner = expand * dModel;
  if (dInner % headdim !== 0) throw new ConfigError(`config.json: d_inner ${dInner} is not a multiple of headdim ${headdim}`);
  const nheads = dInner / headdim;
  if (nheads % ngroups !== 0) throw new ConfigError(`config.json: nheads ${nheads} is not a multiple of ngroups ${ngroups}`);
  return {
    family: "mamba2",
    dModel,
    nLayer,
    vocabSize,
    vocabPadded: Math.ceil(vocabSize / padMultiple) * padMultiple,
    tieEmbeddings: c.tie_embeddings === undefined ? true : Boolean(c.tie_embeddings),
    raw: c,
    dState,
    headdim,
    expand,
    dConv,
    ngroups,
    chunkSize,
    normEps: positiveNumber(c, "norm_epsilon", 1e-5),
    dInner,
    nheads,
    convDim: dInner + 2 * ngroups * dState,
    dInProj: 2 * dInner + 2 * ngroups * dState + nheads,
  };
}
