// Qwen2 (Qwen2ForCausalLM): the Llama layout and forward (engine/llama/) with biases on q, k and v (not
// on o_proj nor the MLP). Sliding-window attention only when use_sliding_window is true, in the layers
// that layer_types marks "sliding_attention" (default: from max_window_layers up), as in transformers.
import { bool, ConfigError, positiveInt } from "../transformer/config.ts";
import { llamaLikeFamily, parseLlamaLike, slidingWindowKey } from "../llama/family.ts";

function windows(raw: Record<string, unknown>, L: number): number[] {
  const w = bool(raw, "use_sliding_window", false) ? slidingWindowKey(raw, 4096) : 0;
  const types = raw.layer_types;
  if (Array.isArray(types)) {
    if (types.length !== L) throw new ConfigError(`config.json: "layer_types" has ${types.length} entries for ${L} layers`);
    return types.map((t) => (t === "sliding_attention" ? w : 0));
  }
  const from = positiveInt(raw, "max_window_layers", 28);
  return Array.from({ length: L }, (_, l) => (l >= from ? w : 0));
}

export const QWEN2 = llamaLikeFamily("qwen2", (raw) =>
  parseLlamaLike(raw, "qwen2", {
    qkvBias: true,
    outBias: false,
    mlpBias: false,
    epsDefault: 1e-6,
    windows: (L) => windows(raw, L),
  }));
