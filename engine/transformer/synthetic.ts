// Synthetic GPT-NeoX (Pythia) checkpoints for benchmarks: the config.json of a published Pythia
// size; its random weights come from engine/synthetic.ts (the family's tensor list and inits,
// nothing downloaded or stored, deterministic in (shape, seed)).
import type { ModelConfig } from "../config.ts";
import { parseConfig } from "../config.ts";

/** hidden size, layers, heads and MLP width of Pythia models (EleutherAI's configs), and a tiny one for smoke tests. */
export const PYTHIA_SHAPES: Record<string, { hidden_size: number; num_hidden_layers: number; num_attention_heads: number; intermediate_size: number }> = {
  "pythia-tiny": { hidden_size: 128, num_hidden_layers: 12, num_attention_heads: 4, intermediate_size: 512 },
  "pythia-160m": { hidden_size: 768, num_hidden_layers: 12, num_attention_heads: 12, intermediate_size: 3072 },
  "pythia-410m": { hidden_size: 1024, num_hidden_layers: 24, num_attention_heads: 16, intermediate_size: 4096 },
  "pythia-1.4b": { hidden_size: 2048, num_hidden_layers: 24, num_attention_heads: 16, intermediate_size: 8192 },
};

/** A Pythia config.json as the Hub has it (rotary_pct 0.25, parallel residual, 50304 head rows, untied). */
export function syntheticPythiaRaw(shape: string): Record<string, unknown> {
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

/** The parsed config of a Pythia size, for engine/synthetic.ts syntheticCheckpoint. */
export function syntheticPythiaConfig(shape: string): ModelConfig {
  return parseConfig(syntheticPythiaRaw(shape));
}
