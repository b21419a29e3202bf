// Synthetic checkpoints: random weights in the shapes of the real models, made on the fly
// (nothing is downloaded or stored), for benchmarks and shape tests. The tensors are the family's
// own list (engine/<family>/tensors.ts), each filled as its SyntheticInit says; the values are
// deterministic in (shape, seed) and keep activations O(1).
import type { ModelConfig } from "./config.ts";
import { parseConfig } from "./config.ts";
import type { Checkpoint, TensorInfo } from "./checkpoint/mod.ts";
import { float32ToHalf } from "./checkpoint/dtype.ts";
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

// splitmix32: a small, fast, well-mixed generator; one stream per tensor
function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
}

function hashName(name: string, seed: number): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

/** The config of a published Mamba-2 size, as its state-spaces config.json would give it (with overrides). */
export function syntheticConfig(shape: string, overrides: Record<string, unknown> = {}): ModelConfig {
  const s = MAMBA2_SHAPES[shape];
  if (!s) throw new Error(`unknown synthetic shape ${shape}: use one of ${Object.keys(MAMBA2_SHAPES).join(", ")}`);
  return parseConfig({ ...s, vocab_size: 50277, pad_vocab_size_multiple: 16, tie_embeddings: true, ssm_cfg: { layer: "Mamba2" }, ...overrides });
}

/** A tensor's values as its init says, from the stream of (name, seed). */
function values(t: TensorSpec, seed: number): Float32Array {
  const r = rng(hashName(t.name, seed));
  const n = numel(t.shape);
  const out = new Float32Array(n);
  const init = t.init;
  switch (init.kind) {
    case "ones":
      return out.fill(1);
    case "uniform":
      for (let i = 0; i < n; i++) out[i] = init.lo + (init.hi - init.lo) * r();
      return out;
    case "log_decay":
      for (let i = 0; i < n; i++) out[i] = Math.log(1 + 15 * r());
      return out;
    case "dt_bias":
      for (let i = 0; i < n; i++) {
        const dt = Math.exp(Math.log(1e-3) + r() * (Math.log(1e-1) - Math.log(1e-3)));
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
    close: () => {},
  };
}
