// GPT-2, Hugging Face GPT2LMHeadModel layout: transformer.{wte, wpe, h.{i}.{ln_1, attn.c_attn, attn.c_proj,
// ln_2, mlp.c_fc, mlp.c_proj}, ln_f} (OpenAI's own checkpoints omit the "transformer." prefix; both are read).
// Conv1D weights are stored (in, out) and transposed here to the engine's (out, in); c_attn's outputs
// are [q | k | v] of d_model each, heads contiguous. Learned absolute positions, LayerNorm with bias,
// GELU of activation_function (gelu_new = tanh form), LM head tied to wte unless tie_word_embeddings is false.
// Older exports also hold each attention's causal mask (attn.bias, (1, 1, n_positions, n_positions))
// and attn.masked_bias: optional, checked when present, never read.
import { bool, checkShapes, ConfigError, geluKind, positiveInt, positiveNumber, type TransformerConfig } from "../transformer/config.ts";
import { INIT, type TensorReader, tensor, transformerFamily } from "../transformer/family.ts";
import { transpose } from "../transformer/layout.ts";

function parse(raw: Record<string, unknown>): TransformerConfig {
  const D = positiveInt(raw, "n_embd"), H = positiveInt(raw, "n_head"), L = positiveInt(raw, "n_layer");
  if (D % H !== 0) throw new ConfigError(`config.json: n_embd ${D} is not a multiple of n_head ${H}`);
  if (raw.scale_attn_weights === false) throw new ConfigError(`config.json: scale_attn_weights false (unscaled attention) is not supported`);
  if (raw.scale_attn_by_inverse_layer_idx === true) throw new ConfigError(`config.json: scale_attn_by_inverse_layer_idx is not supported`);
  const vocab = positiveInt(raw, "vocab_size");
  return checkShapes({
    family: "gpt2",
    dModel: D,
    nLayer: L,
    vocabSize: vocab,
    vocabPadded: vocab,
    raw,
    nHead: H,
    nKvHead: H,
    headDim: D / H,
    dFF: positiveInt(raw, "n_inner", 4 * D),
    norm: "layernorm",
    normEps: positiveNumber(raw, "layer_norm_epsilon", 1e-5),
    mlp: geluKind(raw, "activation_function", "gelu_new"),
    parallelResidual: false,
    rotaryDims: 0,
    ropeTheta: 0,
    ropeScaling: "none",
    invFreq: [],
    learnedPositions: positiveInt(raw, "n_positions", 1024),
    qkvBias: true,
    outBias: true,
    mlpBias: true,
    tieEmbeddings: bool(raw, "tie_word_embeddings", true),
    slidingWindow: new Array(L).fill(0),
  });
}

/** "transformer." for GPT2LMHeadModel checkpoints, "" for the bare GPT2Model ones (OpenAI's gpt2); "transformer." without a checkpoint. */
function prefix(has?: (n: string) => boolean): string {
  return !has || has("transformer.wte.weight") || !has("wte.weight") ? "transformer." : "";
}

async function conv1d(r: TensorReader, name: string, inDim: number, outDim: number) {
  return transpose(await r.matrix(name), inDim, outDim);
}

export const GPT2 = transformerFamily({
  name: "gpt2",
  parse,
  tensors(cfg, has) {
    const p = prefix(has), D = cfg.dModel, F = cfg.dFF, P = cfg.learnedPositions;
    const ln = (n: string) => [tensor(`${n}.weight`, [D], INIT.ones), tensor(`${n}.bias`, [D], INIT.zeros)];
    return [
      tensor(`${p}wte.weight`, [cfg.vocabPadded, D], INIT.embedding),
      tensor(`${p}wpe.weight`, [P, D], INIT.bias),
      ...Array.from({ length: cfg.nLayer }, (_, l) => {
        const h = `${p}h.${l}`;
        // Conv1D weights are (in, out)
        return [
          ...ln(`${h}.ln_1`),
          tensor(`${h}.attn.c_attn.weight`, [D, 3 * D], INIT.matrix(D)),
          tensor(`${h}.attn.c_attn.bias`, [3 * D], INIT.bias),
          tensor(`${h}.attn.c_proj.weight`, [D, D], INIT.matrix(D)),
          tensor(`${h}.attn.c_proj.bias`, [D], INIT.bias),
          tensor(`${h}.attn.bias`, [1, 1, P, P], INIT.ones, true),
          tensor(`${h}.attn.masked_bias`, [], INIT.zeros, true),
          ...ln(`${h}.ln_2`),
          tensor(`${h}.mlp.c_fc.weight`, [D, F], INIT.matrix(D)),
          tensor(`${h}.mlp.c_fc.bias`, [F], INIT.bias),
          tensor(`${h}.mlp.c_proj.weight`, [F, D], INIT.matrix(F)),
          tensor(`${h}.mlp.c_proj.bias`, [D], INIT.bias),
        ];
      }).flat(),
      ...ln(`${p}ln_f`),
      tensor("lm_head.weight", [cfg.vocabPadded, D], INIT.matrix(D), cfg.tieEmbeddings),
    ];
  },
  embedding: (r) => Promise.resolve(r.stored(`${prefix(r.has)}wte.weight`)),
  positions: (r) => r.vector(`${prefix(r.has)}wpe.weight`),
  head: (r, cfg) => Promise.resolve(cfg.tieEmbeddings ? null : r.stored("lm_head.weight")),
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
});
