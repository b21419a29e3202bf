// Synthetic GPT-NeoX (Pythia) checkpoints: random weights in the shapes of the published Pythia
// models, made on the fly (nothing downloaded or stored), for benchmarks. Deterministic in (shape,
// seed) (the generator of engine/synthetic.ts), scaled so that activations stay O(1).
import { float32ToHalf } from "../checkpoint/dtype.ts";
import type { TensorInfo } from "../checkpoint/mod.ts";
import { hashName, rng } from "../synthetic.ts";
import type { TensorCheckpoint } from "./checkpoint.ts";
import { gptNeox } from "../gpt_neox/mod.ts";

/** hidden size, layers, heads and MLP width of Pythia models (EleutherAI's configs), and a tiny one for smoke tests. */
export const PYTHIA_SHAPES: Record<string, { hidden_size: number; num_hidden_layers: number; num_attention_heads: number; intermediate_size: number }> = {
  "pythia-tiny": { hidden_size: 128, num_hidden_layers: 12, num_attention_heads: 4, intermediate_size: 512 },
  "pythia-160m": { hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072 },
  "pythia-410m": { hidden_size: 1024, num_hidden_layers: 24, num_attention_heads: 16, intermediate_size: 4096 },
  "pythia-1.4b": { hidden_size: 2048, num_hidden_layers: 24, num_attention_heads: 16, intermediate_size: 8192 },
};

/** A Pythia config.json (as the Hub has it: rotary_pct 0.25, parallel residual, 50304 head rows, untied). */
export function syntheticPythiaConfig(shape: string): Record<string, unknown> {
  const s = PYTHIA_SHAPES[shape];
  if (!s) throw new Error(`unknown synthetic shape ${shape}: use one of ${Object.keys(PYTHIA_SHAPES).join(", ")}`);
  return {
    architectures: ["GPTNeoXForCausalLM"],
    model_type: "gpt_neox",
    ...s,
    rotary_pct: 0.25,
    rotary_emb_base: 10000,
    layer_norm_eps: 1e-5,
    use_parallel_residual: true,
    vocab_size: 50304,
    tie_word_embeddings: false,
    hidden_act: "gelu",
    max_position_embeddings: 2048,
  };
}

export function syntheticPythiaCheckpoint(shape: string, seed = 0): TensorCheckpoint {
  const rawConfig = syntheticPythiaConfig(shape);
  const cfg = gptNeox.parse(rawConfig);
  const tensors = new Map<string, TensorInfo>();
  for (const [name, shp] of gptNeox.tensors(cfg, () => true)) tensors.set(name, { name, dtype: "F32", shape: shp });
  const D = cfg.dModel, F = cfg.dFF;
  const values = (name: string, n: number): Float32Array => {
    const r = rng(hashName(name, seed));
    const out = new Float32Array(n);
    const uniform = (a: number) => {
      for (let i = 0; i < n; i++) out[i] = a * (2 * r() - 1);
    };
    if (/norm\.weight$/.test(name)) out.fill(1);
    else if (/norm\.bias$/.test(name)) out.fill(0);
    else if (/\.bias$/.test(name)) uniform(0.02);
    else if (name.endsWith("embed_in.weight")) uniform(0.05);
    else if (/dense_4h_to_h\.weight$/.test(name)) uniform(1 / Math.sqrt(F));
    else if (/(query_key_value|attention\.dense|dense_h_to_4h)\.weight$/.test(name) || name === "embed_out.weight") uniform(1 / Math.sqrt(D));
    else throw new Error(`synthetic Pythia checkpoint: no recipe for ${name}`);
    return out;
  };
  const info = (name: string) => {
    const t = tensors.get(name);
    if (!t) throw new Error(`synthetic checkpoint has no tensor ${name}`);
    return { ...t, shape: [...t.shape] };
  };
  const numel = (name: string) => info(name).shape.reduce((a, b) => a * b, 1);
  return {
    dir: `synthetic:${shape}:${seed}`,
    rawConfig,
    format: "safetensors",
    identity: `synthetic:${shape},seed=${seed}`,
    list: () => [...tensors.values()],
    has: (name) => tensors.has(name),
    info,
    readF32: (name) => Promise.resolve(values(name, numel(name))),
    readF16: (name) => Promise.resolve(float32ToHalf(values(name, numel(name)))),
    close: () => {},
  };
}
