// Mamba-1 and Falcon-Mamba configuration, from config.json in either layout:
//   state-spaces (mamba_ssm, `state-spaces/mamba-*`): d_model, n_layer, vocab_size (the real tokens,
//     padded to a multiple of pad_vocab_size_multiple), ssm_cfg without `layer` (or "Mamba1") with
//     d_state (16), d_conv (4), expand (2), dt_rank ("auto" = ceil(d_model / 16)); norm_epsilon;
//   Hugging Face transformers (model_type "mamba", MambaForCausalLM, `state-spaces/mamba-*-hf`; and
//     "falcon_mamba", FalconMambaForCausalLM): hidden_size, num_hidden_layers, vocab_size (the LM
//     head's rows), state_size, expand (or intermediate_size), conv_kernel, time_step_rank,
//     tie_word_embeddings, layer_norm_epsilon, and for Falcon-Mamba mixer_rms_eps (B, C and the
//     dt-rank input RMS-normalised without weights right after x_proj).
import type { KnockoutUnits } from "../arch.ts";
import { bool, ConfigError, type ModelConfig, positiveInt, positiveNumber, requireValue, stateSpacesSsmCfg } from "../config.ts";
import type { Layout } from "../mamba2/config.ts";

export interface Mamba1Config extends ModelConfig {
  family: "mamba1" | "falcon_mamba";
  layout: Layout;
  dState: number;
  dConv: number;
  dtRank: number;
  normEps: number; // the layer norms and norm_f
  /** Falcon-Mamba: eps of the weightless RMSNorm of B, C and the dt-rank input; null for Mamba-1 */
  mixerRmsEps: number | null;
  // derived
  dInner: number; // expand * d_model (or intermediate_size)
}

/** The selective-scan kernel keeps a channel's state in registers: at most this many (real models: 16). */
export const MAX_D_STATE = 64;

/**
 * Knockouts act on the channels of d_inner, ranked by Σ_n exp(A[c, n]); the width-d_conv causal conv
 * on x has its taps s -> t cut as Mamba-2's (before the SiLU).
 */
export function mamba1Units(c: Mamba1Config): KnockoutUnits {
  return { modes: ["scan", "attention"], unitName: "channel", unitsPerLayer: c.dInner, convWidth: c.dConv, rankedByDecay: true };
}

export function parseMamba1Config(c: Record<string, unknown>): Mamba1Config {
  return typeof c.model_type === "string" ? parseHf(c) : parseStateSpaces(c);
}

/** dt_rank: an integer, or "auto" = ceil(d_model / 16) (as both implementations read it). */
function dtRankOf(obj: Record<string, unknown>, key: string, dModel: number, where: string): number {
  return obj[key] === "auto" ? Math.ceil(dModel / 16) : positiveInt(obj, key, Math.ceil(dModel / 16), where);
}

function parseStateSpaces(c: Record<string, unknown>): Mamba1Config {
  const ssm = stateSpacesSsmCfg(c);
  requireValue(c, "rms_norm", true, "RMSNorm layers; LayerNorm models are not supported");
  const where = "config.json ssm_cfg";
  requireValue(ssm, "bias", false, "in_proj/out_proj without bias", where);
  requireValue(ssm, "conv_bias", true, "conv1d with bias", where);
  const dModel = positiveInt(c, "d_model");
  const vocabSize = positiveInt(c, "vocab_size");
  const padMultiple = positiveInt(c, "pad_vocab_size_multiple", 8);
  return check({
    family: "mamba1",
    layout: "state-spaces",
    raw: c,
    dModel,
    nLayer: positiveInt(c, "n_layer"),
    vocabSize,
    vocabPadded: Math.ceil(vocabSize / padMultiple) * padMultiple,
    tieEmbeddings: bool(c, "tie_embeddings", true),
    dState: positiveInt(ssm, "d_state", 16, where),
    dConv: positiveInt(ssm, "d_conv", 4, where),
    dtRank: dtRankOf(ssm, "dt_rank", dModel, where),
    normEps: positiveNumber(c, "norm_epsilon", 1e-5),
    mixerRmsEps: null,
    dInner: positiveInt(ssm, "expand", 2, where) * dModel,
  });
}

function parseHf(c: Record<string, unknown>): Mamba1Config {
  const falcon = c.model_type === "falcon_mamba";
  requireValue(c, "use_bias", false, "in_proj/out_proj without bias");
  requireValue(c, "use_conv_bias", true, "conv1d with bias");
  requireValue(c, "hidden_act", "silu", "SiLU activations");
  const dModel = positiveInt(c, "hidden_size");
  // transformers derives intermediate_size from expand; a config that states it is taken at its word
  const dInner = c.intermediate_size === undefined || c.intermediate_size === null
    ? positiveInt(c, "expand", 2) * dModel
    : positiveInt(c, "intermediate_size");
  const vocab = positiveInt(c, "vocab_size");
  return check({
    family: falcon ? "falcon_mamba" : "mamba1",
    layout: "hf",
    raw: c,
    dModel,
    nLayer: positiveInt(c, "num_hidden_layers"),
    // the HF vocab_size counts the LM head's rows (padded); the real tokens are the tokenizer's (engine/families.ts)
    vocabSize: vocab,
    vocabPadded: vocab,
    tieEmbeddings: bool(c, "tie_word_embeddings", true),
    dState: positiveInt(c, "state_size", 16),
    dConv: positiveInt(c, "conv_kernel", 4),
    dtRank: dtRankOf(c, "time_step_rank", dModel, "config.json"),
    normEps: positiveNumber(c, "layer_norm_epsilon", 1e-5),
    mixerRmsEps: falcon ? positiveNumber(c, "mixer_rms_eps", 1e-6) : null,
    dInner,
  });
}

function check(c: Mamba1Config): Mamba1Config {
  if (c.dConv > 32) throw new ConfigError(`config.json: d_conv ${c.dConv} is above the 32 taps the conv kernels support`);
  if (c.dState > MAX_D_STATE) throw new ConfigError(`config.json: d_state ${c.dState} is above the ${MAX_D_STATE} the Mamba-1 scan kernel supports`);
  return c;
}
