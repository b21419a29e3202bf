// Mamba-2 model configuration, read from a `state-spaces` style config.json.
// Real checkpoints omit most of ssm_cfg, so the Mamba2 layer defaults fill the gaps.

export interface ModelConfig {
  dModel: number;
  nLayer: number;
  vocabSize: number; // real tokens (50277 for gpt-neox-20b)
  vocabPadded: number; // rows of the embedding / lm_head (multiple of pad_vocab_size_multiple)
  tieEmbeddings: boolean;
  dState: number;
  headdim: number;
  expand: number;
  dConv: number;
  ngroups: number;
  chunkSize: number;
  // derived
  dInner: number; // expand * d_model
  nheads: number; // d_inner / headdim
  convDim: number; // d_inner + 2 * ngroups * d_state (channels that go through conv1d: x, B, C)
  dInProj: number; // 2 * d_inner + 2 * ngroups * d_state + nheads (z, xBC, dt)
}

export class ConfigError extends Error {
  override name = "ConfigError";
}

function num(obj: Record<string, unknown>, key: string, fallback?: number): number {
  const v = obj[key];
  if (v === undefined || v === null) {
    if (fallback === undefined) throw new ConfigError(`config.json: missing "${key}"`);
    return fallback;
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new ConfigError(`config.json: "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

export function parseConfig(raw: unknown): ModelConfig {
  if (typeof raw !== "object" || raw === null) throw new ConfigError("config.json: not a JSON object");
  const c = raw as Record<string, unknown>;
  const ssm = (c.ssm_cfg ?? {}) as Record<string, unknown>;
  if (ssm.layer !== undefined && ssm.layer !== "Mamba2") {
    throw new ConfigError(`config.json: ssm_cfg.layer is ${JSON.stringify(ssm.layer)}; only Mamba2 models are supported`);
  }
  const attnIdx = c.attn_layer_idx;
  if (Array.isArray(attnIdx) && attnIdx.length > 0) {
    throw new ConfigError("config.json: hybrid models with attention layers (attn_layer_idx) are not supported");
  }
  if (typeof c.d_intermediate === "number" && c.d_intermediate !== 0) {
    throw new ConfigError("config.json: models with an MLP (d_intermediate > 0) are not supported");
  }
  const dModel = num(c, "d_model");
  const nLayer = num(c, "n_layer");
  const vocabSize = num(c, "vocab_size");
  const padMultiple = num(c, "pad_vocab_size_multiple", 8);
  const vocabPadded = Math.ceil(vocabSize / padMultiple) * padMultiple;
  const dState = num(ssm, "d_state", 128);
  const headdim = num(ssm, "headdim", 64);
  const expand = num(ssm, "expand", 2);
  const dConv = num(ssm, "d_conv", 4);
  const ngroups = num(ssm, "ngroups", 1);
  const chunkSize = num(ssm, "chunk_size", 256);
  const dInner = expand * dModel;
  if (dInner % headdim !== 0) throw new ConfigError(`config.json: d_inner ${dInner} is not a multiple of headdim ${headdim}`);
  const nheads = dInner / headdim;
  if (nheads % ngroups !== 0) throw new ConfigError(`config.json: nheads ${nheads} is not a multiple of ngroups ${ngroups}`);
  const tie = c.tie_embeddings === undefined ? true : Boolean(c.tie_embeddings);
  return {
    dModel,
    nLayer,
    vocabSize,
    vocabPadded,
    tieEmbeddings: tie,
    dState,
    headdim,
    expand,
    dConv,
    ngroups,
    chunkSize,
    dInner,
    nheads,
    convDim: dInner + 2 * ngroups * dState,
    dInProj: 2 * dInner + 2 * ngroups * dState + nheads,
  };
}
