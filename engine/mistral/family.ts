// Mistral (MistralForCausalLM): the Llama layout and forward (engine/llama/) without biases, with
// sliding-window attention in every layer when sliding_window is set (MistralConfig's default 4096
// when the key is absent; null = full causal attention, as Mistral 7B v0.2+ configs say). A query at
// position t reads keys s with t − s < sliding_window, transformers' mask (kv_idx > q_idx − window).
import { llamaLikeFamily, parseLlamaLike, slidingWindowKey } from "../llama/family.ts";

export const MISTRAL = llamaLikeFamily("mistral", (raw) =>
  parseLlamaLike(raw, "mistral", {
    qkvBias: false,
    outBias: false,
    mlpBias: false,
    epsDefault: 1e-6,
    windows: (L) => new Array(L).fill(slidingWindowKey(raw, 4096)),
  }));
