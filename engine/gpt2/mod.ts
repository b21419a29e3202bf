// GPT-2, Hugging Face GPT2LMHeadModel layout: transformer.{wte, wpe, h.{i}.{ln_1, attn.c_attn, attn.c_proj,
// ln_2, mlp.c_fc, mlp.c_proj}, ln_f} (OpenAI's own checkpoints omit the "transformer." prefix; both are read).
// Conv1D weights are stored (in, out) and transposed here to the engine's (out, in); c_attn's outputs
// are [q | k | v] of d_model each, heads contiguous. Learned absolute positions, LayerNorm with bias,
// GELU of activation_function (gelu_new = tanh form), LM head tied to wte unless tie_word_embeddings is false.
import { boolKey, checkShapes, ConfigError, geluKind, intKey, numKey, type TransformerConfig } from "../transformer/config.ts";
import type { TensorReader, TransformerFamily } from "../transformer/family.ts";
import { transpose } from "../transformer/layout.ts";

function parse(raw: Record<string, unknown>): TransformerConfig {
  const D = intKey(raw, "n_embd"), H = intKey(raw, "n_head"), L = intKey(raw, "n_layer");
  if (D % H !== 0) throw new ConfigError(`config.json: n_embd ${D} is not a multiple of n_head ${H}`);
  if (raw.scale_attn_weights === false) throw new ConfigError(`config.json: scale_attn_weights false (unscaled attention) is not supported`);
  if (raw.scale_attn_by_inverse_layer_idx === true) throw new ConfigError(`config.json: scale_attn_by_inverse_layer_idx is not supported`);
  return checkShapes({
    family: "gpt2",
    dModel: D,
    nLayer: L,
    nHead: H,
    nKvHead: H,
    headDim: D / H,
    dFF: intKey(raw, "n_inner", 4 * D),
    vocabRows: intKey(raw, "vocab_size"),
    norm: "layernorm",
    normEps: numKey(raw, "layer_norm_epsilon", 1e-5),
    mlp: geluKind(raw, "activation_function", "gelu_new"),
    parallelResidual: false,
    rotaryDims: 0,
    ropeTheta: 0,
    ropeScaling: "none",
    invFreq: [],
    learnedPositions: intKey(raw, "n_positions", 1024),
    qkvBias: true,
    outBias: true,
    mlpBias: true,
    tieEmbeddings: boolKey(raw, "tie_word_embeddings", true),
    slidingWindow: new Array(L).fill(0),
  });
}

/** "transformer." for GPT2LMHeadModel checkpoints, "" for the bare GPT2Model ones (OpenAI's gpt2). */
function prefix(has: (n: string) => boolean): string {
  return has("transformer.wte.weight") || !has("wte.weight") ? "transformer." : "";
}

async function conv1d(r: TensorReader, name: string, inDim: number, outDim: number) {
  return transpose(await r.matrix(name), inDim, outDim);
}

export const gpt2: TransformerFamily = {
  name: "gpt2",
  detect: (raw) => raw.model_type === "gpt2",
  parse,
  tensors(cfg, has) {
    const p = prefix(has), D = cfg.dModel, F = cfg.dFF, m = new Map<string, number[]>();
    m.set(`${p}wte.weight`, [cfg.vocabRows, D]);
    m.set(`${p}wpe.weight`, [cfg.learnedPositions, D]);
    if (!cfg.tieEmbeddings) m.set("lm_head.weight", [cfg.vocabRows, D]);
    m.set(`${p}ln_f.weight`, [D]);
    m.set(`${p}ln_f.bias`, [D]);
    for (let l = 0; l < cfg.nLayer; l++) {
      const h = `${p}h.${l}`;
      for (const n of ["ln_1", "ln_2"]) {
        m.set(`${h}.${n}.weight`, [D]);
        m.set(`${h}.${n}.bias`, [D]);
      }
      m.set(`${h}.attn.c_attn.weight`, [D, 3 * D]);
      m.set(`${h}.attn.c_attn.bias`, [3 * D]);
      m.set(`${h}.attn.c_proj.weight`, [D, D]);
      m.set(`${h}.attn.c_proj.bias`, [D]);
      m.set(`${h}.mlp.c_fc.weight`, [D, F]);
      m.set(`${h}.mlp.c_fc.bias`, [F]);
      m.set(`${h}.mlp.c_proj.weight`, [F, D]);
      m.set(`${h}.mlp.c_proj.bias`, [D]);
    }
    return m;
  },
  embedding: (r) => r.matrix(`${prefix(r.has)}wte.weight`),
  positions: (r) => r.vector(`${prefix(r.has)}wpe.weight`),
  head: async (r, cfg) => cfg.tieEmbeddings ? null : await r.matrix("lm_head.weight"),
  finalNorm: async (r) => ({ weight: await r.vector(`${prefix(r.has)}ln_f.weight`), bias: await r.vector(`${prefix(r.has)}ln_f.bias`) }),
  async layer(r, cfg, l) {
    const h = `${prefix(r.has)}h.${l}`, D = cfg.dModel, F = cfg.dFF;
    const norm = async (n: string) => ({ weight: await r.vector(`${h}.${n}.weight`), bias: await r.vector(`${h}.${n}.bias`) });
    return {
      norm1: await norm("ln_1"),
      norm2: await norm("ln_2"),
      qkv: await conv1d(r, `${h}.attn.c_attn.weight`, D, 3 * D),
      qkvBias: await r.vector(`${h}.attn.c_attn.bias`),
      out: await conv1d(r, `${h}.attn.c_proj.weight`, D, D),
      outBias: await r.vector(`${h}.attn.c_proj.bias`),
      up: await conv1d(r, `${h}.mlp.c_fc.weight`, D, F),
      upBias: await r.vector(`${h}.mlp.c_fc.bias`),
      down: await conv1d(r, `${h}.mlp.c_proj.weight`, F, D),
      downBias: await r.vector(`${h}.mlp.c_proj.bias`),
    };
  },
};
