// Synthetic checkpoints: random weights in the shapes of the real state-spaces models, made
// on the fly (nothing is downloaded or stored), for benchmarks and shape tests.
// The values are deterministic in (shape, seed) and scaled so activations stay O(1).
import { type ModelConfig, parseConfig } from "./config.ts";
import type { Checkpoint, TensorInfo } from "./checkpoint/mod.ts";
import { float32ToHalf } from "./checkpoint/dtype.ts";

/** d_model and n_layer of the published Mamba-2 sizes (the other fields are the defaults). */
export const MAMBA2_SHAPES: Record<string, { d_model: number; n_layer: number }> = {
  "mamba2-130m": { d_model: 768, n_layer: 24 },
  "mamba2-370m": { d_model: 1024, n_layer: 48 },
  "mamba2-780m": { d_model: 1536, n_layer: 48 },
  "mamba2-1.3b": { d_model: 2048, n_layer: 48 },
  "mamba2-2.7b": { d_model: 2560, n_layer: 64 },
};

// splitmix32: a small, fast, well-mixed generator; one stream per tensor
export function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x9e3779b9) >>> 0;
    let z = s;
    z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
    z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
    return ((z ^ (z >>> 16)) >>> 0) / 4294967296;
  };
}

export function hashName(name: string, seed: number): number {
  let h = 2166136261 ^ seed;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 16777619);
  return h >>> 0;
}

export function syntheticConfig(shape: string, overrides: Record<string, unknown> = {}): ModelConfig {
  const s = MAMBA2_SHAPES[shape];
  if (!s) throw new Error(`unknown synthetic shape ${shape}: use one of ${Object.keys(MAMBA2_SHAPES).join(", ")}`);
  return parseConfig({ ...s, vocab_size: 50277, pad_vocab_size_multiple: 16, tie_embeddings: true, ssm_cfg: {}, ...overrides });
}

export function syntheticCheckpoint(config: ModelConfig, seed = 0): Checkpoint {
  const c = config;
  const tensors = new Map<string, TensorInfo>();
  const add = (name: string, shape: number[]) => tensors.set(name, { name, dtype: "F32", shape });
  add("backbone.embedding.weight", [c.vocabPadded, c.dModel]);
  for (let i = 0; i < c.nLayer; i++) {
    const p = `backbone.layers.${i}`;
    add(`${p}.norm.weight`, [c.dModel]);
    add(`${p}.mixer.in_proj.weight`, [c.dInProj, c.dModel]);
    add(`${p}.mixer.conv1d.weight`, [c.convDim, 1, c.dConv]);
    add(`${p}.mixer.conv1d.bias`, [c.convDim]);
    add(`${p}.mixer.dt_bias`, [c.nheads]);
    add(`${p}.mixer.A_log`, [c.nheads]);
    add(`${p}.mixer.D`, [c.nheads]);
    add(`${p}.mixer.norm.weight`, [c.dInner]);
    add(`${p}.mixer.out_proj.weight`, [c.dModel, c.dInner]);
  }
  add("backbone.norm_f.weight", [c.dModel]);

  const values = (name: string, n: number): Float32Array => {
    const r = rng(hashName(name, seed));
    const out = new Float32Array(n);
    const uniform = (lo: number, hi: number) => {
      for (let i = 0; i < n; i++) out[i] = lo + (hi - lo) * r();
    };
    const leaf = name.split(".").slice(-2).join(".");
    if (/(^|\.)(norm|norm_f)\.weight$/.test(leaf) || leaf === "mixer.D") out.fill(1);
    else if (leaf === "embedding.weight") uniform(-0.05, 0.05);
    else if (leaf === "in_proj.weight") uniform(-1 / Math.sqrt(c.dModel), 1 / Math.sqrt(c.dModel));
    else if (leaf === "out_proj.weight") uniform(-1 / Math.sqrt(c.dInner), 1 / Math.sqrt(c.dInner));
    else if (leaf === "conv1d.weight") uniform(-0.5, 0.5);
    else if (leaf === "conv1d.bias") uniform(-0.1, 0.1);
    else if (leaf === "mixer.A_log") for (let i = 0; i < n; i++) out[i] = Math.log(1 + 15 * r());
    else if (leaf === "mixer.dt_bias") {
      // inverse softplus of dt drawn log-uniformly in [1e-3, 1e-1], as Mamba-2 initialises it
      for (let i = 0; i < n; i++) {
        const dt = Math.exp(Math.log(1e-3) + r() * (Math.log(1e-1) - Math.log(1e-3)));
        out[i] = dt + Math.log(-Math.expm1(-dt));
      }
    } else throw new Error(`synthetic checkpoint: no recipe for ${name}`);
    return out;
  };

  const info = (name: string) => {
    const t = tensors.get(name);
    if (!t) throw new Error(`synthetic checkpoint has no tensor ${name}`);
    return t;
  };
  const numel = (name: string) => info(name).shape.reduce((a, b) => a * b, 1);
  return {
    dir: `synthetic:${seed}`,
    config: c,
    format: "safetensors",
    identity: `synthetic:d_model=${c.dModel},n_layer=${c.nLayer},seed=${seed}`,
    list: () => [...tensors.values()],
    has: (name) => tensors.has(name),
    info,
    readF32: (name) => Promise.resolve(values(name, numel(name))),
    readF16: (name) => Promise.resolve(float32ToHalf(values(name, numel(name)))),
    close: () => {},
  } as Checkpoint;
}
