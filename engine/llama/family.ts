// Llama (and the Llama-style families Qwen2 and Mistral, engine/qwen2/ and engine/mistral/), Hugging
// Face LlamaForCausalLM layout: model.embed_tokens, model.layers.{i}.{input_layernorm,
// post_attention_layernorm} (RMSNorm), self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj, model.norm,
// lm_head (absent when tied). RoPE over the head (rotate-half; partial_rotary_factor if set) with
// rope_scaling none/linear/llama3, grouped-query attention (query head h reads key/value head
// h / (n_head / n_kv_head)), SwiGLU MLP.
// The three families share these tensor names and this forward; they differ only in their configs
// (which biases exist, defaults, sliding windows), so each has its own parser and this one builder.
// Older exports also hold self_attn.rotary_emb.inv_freq: optional, checked when present, never read.
import {
  bool,
  checkShapes,
  ConfigError,
  fractionKey,
  positiveInt,
  positiveNumber,
  ropeFrequencies,
  type TransformerConfig,
  type TransformerFamilyName,
} from "../transformer/config.ts";
import { INIT, tensor, transformerFamily } from "../transformer/family.ts";
import { concatRows } from "../transformer/layout.ts";

type Raw = Record<string, unknown>;

export interface LlamaLikeOptions {
  qkvBias: boolean;
  outBias: boolean;
  mlpBias: boolean;
  /** rms_norm_eps when the config omits it (the family's config class default) */
  epsDefault: number;
  /** per layer: keys s with t − s < window, 0 = none */
  windows: (nLayer: number) => number[];
}

export function parseLlamaLike(raw: Raw, family: TransformerFamilyName, o: LlamaLikeOptions): TransformerConfig {
  const D = positiveInt(raw, "hidden_size"), H = positiveInt(raw, "num_attention_heads"), L = positiveInt(raw, "num_hidden_layers");
  const Hkv = positiveInt(raw, "num_key_value_heads", H);
  if (raw.head_dim === undefined || raw.head_dim === null) {
    if (D % H !== 0) throw new ConfigError(`config.json: hidden_size ${D} is not a multiple of num_attention_heads ${H}; give head_dim`);
  }
  const hd = positiveInt(raw, "head_dim", D / H);
  const act = raw.hidden_act ?? "silu";
  if (act !== "silu" && act !== "swish") throw new ConfigError(`config.json: "hidden_act" ${JSON.stringify(act)} is not supported (silu)`);
  const rotaryDims = 2 * Math.floor((hd * fractionKey(raw, "partial_rotary_factor", 1)) / 2);
  const theta = positiveNumber(raw, "rope_theta", 10000);
  const rope = ropeFrequencies(raw, rotaryDims, theta);
  const windows = o.windows(L);
  const vocab = positiveInt(raw, "vocab_size");
  return checkShapes({
    family,
    dModel: D,
    nLayer: L,
    vocabSize: vocab,
    vocabPadded: vocab,
    raw,
    nHead: H,
    nKvHead: Hkv,
    headDim: hd,
    dFF: positiveInt(raw, "intermediate_size"),
    norm: "rmsnorm",
    normEps: positiveNumber(raw, "rms_norm_eps", o.epsDefault),
    mlp: "swiglu",
    parallelResidual: false,
    rotaryDims,
    ropeTheta: theta,
    ropeScaling: rope.scaling,
    invFreq: rope.invFreq,
    learnedPositions: 0,
    qkvBias: o.qkvBias,
    outBias: o.outBias,
    mlpBias: o.mlpBias,
    tieEmbeddings: bool(raw, "tie_word_embeddings", false),
    slidingWindow: windows,
  });
}

/** A config's sliding_window: a positive integer, or 0 when null; `fallback` when absent. */
export function slidingWindowKey(raw: Raw, fallback: number): number {
  if (raw.sliding_window === null) return 0;
  return positiveInt(raw, "sliding_window", fallback || undefined);
}

const layerName = (l: number, n: string) => `model.layers.${l}.${n}`;

/** A Llama-style family: these tensors and this layout, with its own config parser. */
export function llamaLikeFamily(name: TransformerFamilyName, parse: (raw: Raw) => TransformerConfig) {
  return transformerFamily({
    name,
    parse,
    tensors(cfg) {
      const D = cfg.dModel, F = cfg.dFF, q = cfg.nHead * cfg.headDim, kv = cfg.nKvHead * cfg.headDim;
      const bias = (on: boolean, name: string, n: number) => on ? [tensor(name, [n], INIT.bias)] : [];
      return [
        tensor("model.embed_tokens.weight", [cfg.vocabPadded, D], INIT.embedding),
        ...Array.from({ length: cfg.nLayer }, (_, l) => {
          const n = (s: string) => layerName(l, s);
          return [
            tensor(n("input_layernorm.weight"), [D], INIT.ones),
            tensor(n("self_attn.q_proj.weight"), [q, D], INIT.matrix(D)),
            tensor(n("self_attn.k_proj.weight"), [kv, D], INIT.matrix(D)),
            tensor(n("self_attn.v_proj.weight"), [kv, D], INIT.matrix(D)),
            ...bias(cfg.qkvBias, n("self_attn.q_proj.bias"), q),
            ...bias(cfg.qkvBias, n("self_attn.k_proj.bias"), kv),
            ...bias(cfg.qkvBias, n("self_attn.v_proj.bias"), kv),
            tensor(n("self_attn.o_proj.weight"), [D, q], INIT.matrix(q)),
            ...bias(cfg.outBias, n("self_attn.o_proj.bias"), D),
            tensor(n("self_attn.rotary_emb.inv_freq"), [cfg.rotaryDims / 2], INIT.ones, true),
            tensor(n("post_attention_layernorm.weight"), [D], INIT.ones),
            tensor(n("mlp.gate_proj.weight"), [F, D], INIT.matrix(D)),
            tensor(n("mlp.up_proj.weight"), [F, D], INIT.matrix(D)),
            tensor(n("mlp.down_proj.weight"), [D, F], INIT.matrix(F)),
            ...bias(cfg.mlpBias, n("mlp.gate_proj.bias"), F),
            ...bias(cfg.mlpBias, n("mlp.up_proj.bias"), F),
            ...bias(cfg.mlpBias, n("mlp.down_proj.bias"), D),
          ];
        }).flat(),
        tensor("model.norm.weight", [D], INIT.ones),
        tensor("lm_head.weight", [cfg.vocabPadded, D], INIT.matrix(D), cfg.tieEmbeddings),
      ];
    },
    embedding: (r) => Promise.resolve(r.stored("model.embed_tokens.weight")),
    head: (r, cfg) => Promise.resolve(cfg.tieEmbeddings ? null : r.stored("lm_head.weight")),
    finalNorm: async (r) => ({ weight: await r.vector("model.norm.weight"), bias: null }),
    async layer(r, cfg, l) {
      const n = (s: string) => layerName(l, s);
      const mats = (names: string[]) => Promise.all(names.map((s) => r.matrix(n(s))));
      const vecs = (names: string[]) => Promise.all(names.map((s) => r.vector(n(s))));
      return {
        norm1: { weight: await r.vector(n("input_layernorm.weight")), bias: null },
        norm2: { weight: await r.vector(n("post_attention_layernorm.weight")), bias: null },
        qkv: concatRows(await mats(["self_attn.q_proj.weight", "self_attn.k_proj.weight", "self_attn.v_proj.weight"])),
        qkvBias: cfg.qkvBias ? concatRows(await vecs(["self_attn.q_proj.bias", "self_attn.k_proj.bias", "self_attn.v_proj.bias"])) : null,
        out: r.stored(n("self_attn.o_proj.weight")),
        outBias: cfg.outBias ? await r.vector(n("self_attn.o_proj.bias")) : null,
        up: concatRows(await mats(["mlp.gate_proj.weight", "mlp.up_proj.weight"])),
        upBias: cfg.mlpBias ? concatRows(await vecs(["mlp.gate_proj.bias", "mlp.up_proj.bias"])) : null,
        down: r.stored(n("mlp.down_proj.weight")),
        downBias: cfg.mlpBias ? await r.vector(n("mlp.down_proj.bias")) : null,
      };
    },
  });
}

/** Llama (LlamaConfig): biases on q/k/v/o with attention_bias, on the MLP with mlp_bias; no sliding window. */
export const LLAMA = llamaLikeFamily("llama", (raw) => {
  const attn = bool(raw, "attention_bias", false);
  return parseLlamaLike(raw, "llama", {
    qkvBias: attn,
    outBias: attn,
    mlpBias: bool(raw, "mlp_bias", false),
    epsDefault: 1e-6,
    windows: (L) => new Array(L).fill(0),
  });
});
