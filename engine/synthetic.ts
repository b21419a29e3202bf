// Synthetic checkpoints: random weights in the shapes of the real models, made on the fly
// (nothing is downloaded or stored), for benchmarks and shape tests. The tensors are the family's
// own list (engine/<family>/tensors.ts), each filled as its SyntheticInit says; the values are
// deterministic in (shape, seed) and keep activations O(1).
import type { ModelConfig } from "./config.ts";
import { parseConfig } from "./config.ts";
import type { Checkpoint, TensorInfo } from "./checkpoint/mod.ts";
import { float32ToHalf, float32ToHalfInto } from "./checkpoint/dtype.ts";
import { expectedTensors } from "./families.ts";
import { numel, type TensorSpec } from "./tensors.ts";

/** d_model and n_layer of the published Mamba-2 sizes (the other fields are the defaults). */
export const MAMBA2_SHAPES: Record<string, { d_model: number; n_layer: number }> = {
  "mamba2-130m": { d_model: 768, n_layer: 24 },
  "mamba2-370m": { d_model: 1024, n_layer: 48 },
  "mamba2-780m": { d_model: 1536, n_layer: 48 },
  "mamba2-1.3b": { d_model: 2048, n_layer: 48 },
  "mamba2-2.7b": { d_model: 2560, n_layer: 64 },
};

/**
 * The config.json of other published models (their real configs' shape fields; the rest are the
 * layouts' defaults): Mamba-1 (state-spaces/mamba-*), Falcon-Mamba, Codestral Mamba (Mamba-2 in the
 * Hugging Face layout with 8 groups).
 */
export const OTHER_SHAPES: Record<string, Record<string, unknown>> = {
  "mamba-130m": { d_model: 768, n_layer: 24, vocab_size: 50277, pad_vocab_size_multiple: 8, ssm_cfg: {} },
  "mamba-370m": { d_model: 1024, n_layer: 48, vocab_size: 50277, pad_vocab_size_multiple: 8, ssm_cfg: {} },
  "mamba-790m": { d_model: 1536, n_layer: 48, vocab_size: 50277, pad_vocab_size_multiple: 8, ssm_cfg: {} },
  "mamba-1.4b": { d_model: 2048, n_layer: 48, vocab_size: 50277, pad_vocab_size_multiple: 8, ssm_cfg: {} },
  "mamba-2.8b": { d_model: 2560, n_layer: 64, vocab_size: 50277, pad_vocab_size_multiple: 8, ssm_cfg: {} },
  "falcon-mamba-7b": {
    model_type: "falcon_mamba",
    hidden_size: 4096,
    num_hidden_layers: 64,
    vocab_size: 65024,
    state_size: 16,
    expand: 2,
    conv_kernel: 4,
    time_step_rank: 256,
    tie_word_embeddings: false,
    mixer_rms_eps: 1e-6,
  },
  "mamba-codestral-7b": {
    model_type: "mamba2",
    hidden_size: 4096,
    num_hidden_layers: 64,
    vocab_size: 32768,
    state_size: 128,
    head_dim: 64,
    num_heads: 128,
    n_groups: 8,
    expand: 2,
    conv_kernel: 4,
    tie_word_embeddings: false,
  },
};

/** Every shape syntheticConfig knows. */
export const SHAPES = [...Object.keys(MAMBA2_SHAPES), ...Object.keys(OTHER_SHAPES)];

// splitmix32 addressed by position: element i of a tensor's stream is a hash of (seed, i), so any
// range of rows is made without the rest
function at(seed: number, i: number): number {
  let z = (seed + Math.imul(i + 1, 0x9e3779b9)) >>> 0;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
}

function hashName(name: string, seed: number): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** The config of a published model's shape, as its config.json would give it (with overrides). */
export function syntheticConfig(shape: string, overrides: Record<string, unknown> = {}): ModelConfig {
  const m2 = MAMBA2_SHAPES[shape];
  if (m2) return parseConfig({ ...m2, vocab_size: 50277, pad_vocab_size_multiple: 16, tie_embeddings: true, ssm_cfg: { layer: "Mamba2" }, ...overrides });
  const other = OTHER_SHAPES[shape];
  if (!other) throw new Error(`unknown synthetic shape ${shape}: use one of ${SHAPES.join(", ")}`);
  return parseConfig({ ...other, ...overrides });
}

/** Elements [from, from + n) of a tensor's values as its init says, from the stream of (name, seed). */
function values(t: TensorSpec, seed: number, from = 0, n = numel(t.shape) - from, into?: Float32Array): Float32Array {
  const h = hashName(t.name, seed);
  const r = (i: number) => at(h, from + i);
  const out = into && into.length >= n ? into.subarray(0, n) : new Float32Array(n);
  const init = t.init;
  switch (init.kind) {
    case "ones":
      return out.fill(1);
    case "uniform":
      for (let i = 0; i < n; i++) out[i] = init.lo + (init.hi - init.lo) * r(i);
      return out;
    case "log_decay":
      for (let i = 0; i < n; i++) out[i] = Math.log(1 + 15 * r(i));
      return out;
    case "dt_bias":
      for (let i = 0; i < n; i++) {
        const dt = Math.exp(Math.log(1e-3) + r(i) * (Math.log(1e-1) - Math.log(1e-3)));
        out[i] = dt + Math.log(-Math.expm1(-dt));
      }
      return out;
  }
}

/** A checkpoint of random weights for a config: every tensor its family reads (optional ones left out). */
export function syntheticCheckpoint(config: ModelConfig, seed = 0): Checkpoint {
  const specs = new Map(expectedTensors(config).filter((t) => !t.optional).map((t) => [t.name, t]));
  const spec = (name: string) => {
    const t = specs.get(name);
    if (!t) throw new Error(`synthetic checkpoint has no tensor ${name}`);
    return t;
  };
  const rows = (t: TensorSpec, first: number, count: number, into?: Float32Array) => {
    const width = numel(t.shape) / t.shape[0];
    if (first < 0 || count < 0 || first + count > t.shape[0]) throw new Error(`synthetic ${t.name}: no rows ${first}..${first + count}`);
    return values(t, seed, first * width, count * width, into);
  };
  let scratch: Float32Array = new Float32Array(0); // f32 values of the f16 pieces, reused
  const info = (name: string): TensorInfo => ({ name, dtype: "F32", shape: [...spec(name).shape] });
  return {
    dir: `synthetic:${seed}`,
    config,
    format: "safetensors",
    identity: `synthetic:${config.family}:d_model=${config.dModel},n_layer=${config.nLayer},seed=${seed}`,
    list: () => [...specs.keys()].map(info),
    has: (name) => specs.has(name),
    info,
    readF32: (name) => Promise.resolve(values(spec(name), seed)),
    readF16: (name) => Promise.resolve(float32ToHalf(values(spec(name), seed))),
    readF32Rows: (name, first, count, into) => Promise.resolve(rows(spec(name), first, count, into)),
    readF16Rows: (name, first, count, into) => {
      const x = rows(spec(name), first, count, scratch);
      scratch = x.length > scratch.length ? x : scratch;
      return Promise.resolve(float32ToHalfInto(x, into && into.length >= x.length ? into : new Uint16Array(x.length)));
    },
    close: () => {},
  };
}
