// Mamba-2 configuration, from config.json in either layout:
//   state-spaces (mamba_ssm): d_model, n_layer, vocab_size (the real tokens, padded to a multiple of
//     pad_vocab_size_multiple), ssm_cfg {layer "Mamba2", d_state, headdim, expand, d_conv, ngroups,
//     chunk_size, dt_limit}; real checkpoints omit most of ssm_cfg, so the Mamba2 layer's defaults
//     fill the gaps;
//   Hugging Face transformers (model_type "mamba2", Mamba2ForCausalLM): hidden_size,
//     num_hidden_layers, vocab_size (the LM head's rows), state_size, head_dim, num_heads, expand,
//     n_groups, conv_kernel, chunk_size, time_step_limit, tie_word_embeddings, layer_norm_epsilon;
//     absent keys take transformers' Mamba2Config defaults.
import type { KnockoutUnits } from "../arch.ts";
import { bool, ConfigError, dtLimit, type ModelConfig, positiveInt, positiveNumber, requireValue, stateSpacesSsmCfg } from "../config.ts";

export type Layout = "state-spaces" | "hf";

export interface Mamba2Config extends ModelConfig {
  family: "mamba2";
  layout: Layout;
  dtLimit: [number, number]; // dt = clamp(softplus(·), lo, hi); [0, Infinity] = no clamp
  dState: number;
  headdim: number;
  expand: number;
  dConv: number;
  ngroups: number;
  chunkSize: number;
  normEps: number; // the layer norms and norm_f (norm_epsilon)
  gatedNormEps: number; // the gated RMSNorm's (mamba_ssm: 1e-5 always; transformers: layer_norm_epsilon)
  // derived
  dInner: number; // expand * d_model
  nheads: number; // d_inner / headdim
  convDim: number; // d_inner + 2 * ngroups * d_state (channels that go through conv1d: x, B, C)
  dInProj: number; // 2 * d_inner + 2 * ngroups * d_state + nheads (z, xBC, dt)
}

/** The gated RMSNorm's epsilon in mamba_ssm (RMSNormGated's default; not in config.json). */
export const GATED_NORM_EPS = 1e-5;

/** Knockouts act on the heads, ranked by their decay exp(A); the conv1d taps can be cut. */
export function mamba2Units(c: Mamba2Config): KnockoutUnits {
  return { modes: ["scan", "attention"], unitName: "head", unitsPerLayer: c.nheads, convWidth: c.dConv, rankedByDecay: true };
}

export function parseMamba2Config(c: Record<string, unknown>): Mamba2Config {
  return typeof c.model_type === "string" ? parseHf(c) : parseStateSpaces(c);
}

function parseStateSpaces(c: Record<string, unknown>): Mamba2Config {
  const ssm = stateSpacesSsmCfg(c);
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
  const dInner = expand * dModel;
  if (dInner % headdim !== 0) throw new ConfigError(`config.json: d_inner ${dInner} is not a multiple of headdim ${headdim}`);
  return derive(c, {
    layout: "state-spaces",
    dModel,
    nLayer,
    vocabSize,
    vocabPadded: Math.ceil(vocabSize / padMultiple) * padMultiple,
    tieEmbeddings: bool(c, "tie_embeddings", true),
    dtLimit: dtLimit(ssm, "dt_limit", where),
    dState,
    headdim,
    expand,
    dConv,
    ngroups,
    chunkSize,
    normEps: positiveNumber(c, "norm_epsilon", 1e-5),
    gatedNormEps: GATED_NORM_EPS,
    nheads: dInner / headdim,
  });
}

function parseHf(c: Record<string, unknown>): Mamba2Config {
  requireValue(c, "use_bias", false, "in_proj/out_proj without bias");
  requireValue(c, "use_conv_bias", true, "conv1d with bias");
  requireValue(c, "rms_norm", true, "RMSNorm layers");
  const dModel = positiveInt(c, "hidden_size");
  const expand = positiveInt(c, "expand", 2);
  const headdim = positiveInt(c, "head_dim", 64);
  const nheads = positiveInt(c, "num_heads", 128);
  if (nheads * headdim !== expand * dModel) {
    throw new ConfigError(`config.json: num_heads ${nheads} x head_dim ${headdim} is not expand ${expand} x hidden_size ${dModel}`);
  }
  const vocab = positiveInt(c, "vocab_size");
  return derive(c, {
    layout: "hf",
    dModel,
    nLayer: positiveInt(c, "num_hidden_layers"),
    // the HF vocab_size counts the LM head's rows (padded); the real tokens are the tokenizer's (engine/families.ts)
    vocabSize: vocab,
    vocabPadded: vocab,
    tieEmbeddings: bool(c, "tie_word_embeddings", false),
    dtLimit: dtLimit(c, "time_step_limit"),
    dState: positiveInt(c, "state_size", 128),
    headdim,
    expand,
    dConv: positiveInt(c, "conv_kernel", 4),
    ngroups: positiveInt(c, "n_groups", 8),
    chunkSize: positiveInt(c, "chunk_size", 256),
    normEps: positiveNumber(c, "layer_norm_epsilon", 1e-5),
    gatedNormEps: positiveNumber(c, "layer_norm_epsilon", 1e-5),
    nheads,
  });
}

/** The checks and derived sizes of both layouts. */
function derive(raw: Record<string, unknown>, c: Omit<Mamba2Config, "family" | "raw" | "dInner" | "convDim" | "dInProj">): Mamba2Config {
  if (c.dConv > 32) throw new ConfigError(`config.json: d_conv ${c.dConv} is above the 32 taps the conv kernels support`);
  if (c.nheads % c.ngroups !== 0) throw new ConfigError(`config.json: nheads ${c.nheads} is not a multiple of ngroups ${c.ngroups}`);
  const dInner = c.nheads * c.headdim;
  return {
    family: "mamba2",
    raw,
    ...c,
    dInner,
    convDim: dInner + 2 * c.ngroups * c.dState,
    dInProj: 2 * dInner + 2 * c.ngroups * c.dState + c.nheads,
  };
}
