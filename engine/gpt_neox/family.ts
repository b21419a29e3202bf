// GPT-NeoX (EleutherAI's Pythia), Hugging Face GPTNeoXForCausalLM layout:
//   gpt_neox.embed_in, gpt_neox.layers.{i}.{input_layernorm, post_attention_layernorm} (LayerNorm with bias),
//   attention.query_key_value (fused, rows per head [q | k | v]), attention.dense, mlp.dense_h_to_4h / dense_4h_to_h,
//   gpt_neox.final_layer_norm, embed_out (untied unless tie_word_embeddings).
// Rotary on the first rotary_pct of each head's dims (rotate-half, base rotary_emb_base), the parallel
// residual x + attn(ln1 x) + mlp(ln2 x) unless use_parallel_residual is false, GELU of hidden_act.
// Older exports also hold the attention's buffers (attention.bias, the causal mask as BOOL, which is
// never listed; attention.masked_bias; attention.rotary_emb.inv_freq): optional, checked when present.
import {
  bool,
  checkShapes,
  ConfigError,
  fractionKey,
  geluKind,
  positiveInt,
  positiveNumber,
  ropeFrequencies,
  type TransformerConfig,
} from "../transformer/config.ts";
import { INIT, tensor, transformerFamily } from "../transformer/family.ts";
import { neoxQkvToBlocks } from "../transformer/layout.ts";

function parse(raw: Record<string, unknown>): TransformerConfig {
  const D = positiveInt(raw, "hidden_size"), H = positiveInt(raw, "num_attention_heads"), L = positiveInt(raw, "num_hidden_layers");
  if (D % H !== 0) throw new ConfigError(`config.json: hidden_size ${D} is not a multiple of num_attention_heads ${H}`);
  const hd = D / H;
  // newer configs name the rotary share partial_rotary_factor and the base rope_theta
  const pct = raw.rotary_pct !== undefined ? fractionKey(raw, "rotary_pct", 0.25) : fractionKey(raw, "partial_rotary_factor", 0.25);
  const rotaryDims = Math.floor(hd * pct);
  const theta = raw.rotary_emb_base !== undefined ? positiveNumber(raw, "rotary_emb_base") : positiveNumber(raw, "rope_theta", 10000);
  const rope = ropeFrequencies(raw, rotaryDims, theta);
  const bias = bool(raw, "attention_bias", true);
  const vocab = positiveInt(raw, "vocab_size");
  return checkShapes({
    family: "gpt_neox",
    dModel: D,
    nLayer: L,
    vocabSize: vocab,
    vocabPadded: vocab,
    raw,
    nHead: H,
    nKvHead: H,
    headDim: hd,
    dFF: positiveInt(raw, "intermediate_size"),
    norm: "layernorm",
    normEps: positiveNumber(raw, "layer_norm_eps", 1e-5),
    mlp: geluKind(raw, "hidden_act", "gelu"),
    parallelResidual: bool(raw, "use_parallel_residual", true),
    rotaryDims,
    ropeTheta: theta,
    ropeScaling: rope.scaling,
    invFreq: rope.invFreq,
    learnedPositions: 0,
    qkvBias: bias,
    outBias: bias,
    mlpBias: true,
    tieEmbeddings: bool(raw, "tie_word_embeddings", false),
    slidingWindow: new Array(L).fill(0),
  });
}

const layerName = (l: number, n: string) => `gpt_neox.layers.${l}.${n}`;

export const GPT_NEOX = transformerFamily({
  name: "gpt_neox",
  parse,
  tensors(cfg) {
    const D = cfg.dModel, F = cfg.dFF, V = cfg.vocabPadded;
    const ln = (n: string) => [tensor(`${n}.weight`, [D], INIT.ones), tensor(`${n}.bias`, [D], INIT.zeros)];
    return [
      tensor("gpt_neox.embed_in.weight", [V, D], INIT.embedding),
      ...Array.from({ length: cfg.nLayer }, (_, l) => {
        const n = (s: string) => layerName(l, s);
        return [
          ...ln(n("input_layernorm")),
          ...ln(n("post_attention_layernorm")),
          tensor(n("attention.query_key_value.weight"), [3 * D, D], INIT.matrix(D)),
          ...(cfg.qkvBias ? [tensor(n("attention.query_key_value.bias"), [3 * D], INIT.bias)] : []),
          tensor(n("attention.dense.weight"), [D, D], INIT.matrix(D)),
          ...(cfg.outBias ? [tensor(n("attention.dense.bias"), [D], INIT.bias)] : []),
          tensor(n("attention.masked_bias"), [], INIT.zeros, true),
          tensor(n("attention.rotary_emb.inv_freq"), [cfg.rotaryDims / 2], INIT.ones, true),
          tensor(n("mlp.dense_h_to_4h.weight"), [F, D], INIT.matrix(D)),
          tensor(n("mlp.dense_h_to_4h.bias"), [F], INIT.bias),
          tensor(n("mlp.dense_4h_to_h.weight"), [D, F], INIT.matrix(F)),
          tensor(n("mlp.dense_4h_to_h.bias"), [D], INIT.bias),
        ];
      }).flat(),
      ...ln("gpt_neox.final_layer_norm"),
      tensor("embed_out.weight", [V, D], INIT.matrix(D), cfg.tieEmbeddings),
    ];
  },
  embedding: (r) => Promise.resolve(r.stored("gpt_neox.embed_in.weight")),
  head: (r, cfg) => Promise.resolve(cfg.tieEmbeddings ? null : r.stored("embed_out.weight")),
  finalNorm: async (r) => ({ weight: await r.vector("gpt_neox.final_layer_norm.weight"), bias: await r.vector("gpt_neox.final_layer_norm.bias") }),
  async layer(r, cfg, l) {
    const n = (s: string) => layerName(l, s);
    const norm = async (s: string) => ({ weight: await r.vector(n(`${s}.weight`)), bias: await r.vector(n(`${s}.bias`)) });
    return {
      norm1: await norm("input_layernorm"),
      norm2: await norm("post_attention_layernorm"),
      qkv: neoxQkvToBlocks(await r.matrix(n("attention.query_key_value.weight")), cfg.nHead, cfg.headDim, cfg.dModel),
      qkvBias: cfg.qkvBias ? neoxQkvToBlocks(await r.vector(n("attention.query_key_value.bias")), cfg.nHead, cfg.headDim, 1) : null,
      out: r.stored(n("attention.dense.weight")),
      outBias: cfg.outBias ? await r.vector(n("attention.dense.bias")) : null,
      up: r.stored(n("mlp.dense_h_to_4h.weight")),
      upBias: await r.vector(n("mlp.dense_h_to_4h.bias")),
      down: r.stored(n("mlp.dense_4h_to_h.weight")),
      downBias: await r.vector(n("mlp.dense_4h_to_h.bias")),
    };
  },
});
