// The tensors a model reads from its checkpoint, as each family lists them (once, in
// engine/<family>/tensors.ts): names and shapes for the checkpoint's shape check and for loading,
// and how a synthetic checkpoint (engine/synthetic.ts, benchmarks) fills each one.
import { CheckpointError, fmtShape as fmt } from "./checkpoint/types.ts";

/** How a synthetic checkpoint fills a tensor: values that keep a random model's activations O(1). */
export type SyntheticInit =
  | { kind: "ones" }
  | { kind: "uniform"; lo: number; hi: number }
  /** log(1 + 15 u), u uniform in [0, 1): A_log of decays spread like a trained model's */
  | { kind: "log_decay" }
  /** the inverse softplus of dt drawn log-uniformly in [1e-3, 1e-1], as Mamba initialises dt_bias */
  | { kind: "dt_bias" };

export interface TensorSpec {
  name: string;
  shape: number[];
  init: SyntheticInit;
  /** may be absent from the checkpoint (a tied lm_head); checked when present */
  optional?: boolean;
}

export const numel = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);

/** What the check reads of a checkpoint (engine/checkpoint/mod.ts Checkpoint). */
export interface TensorSource {
  readonly dir: string;
  list(): { name: string; shape: number[] }[];
  has(name: string): boolean;
  info(name: string): { shape: number[] };
  /** the dtype of a tensor present in a dtype the engine cannot read */
  unsupportedDtype?(name: string): string | undefined;
}

/**
 * Check a checkpoint against a family's tensor list: every tensor present (optional ones may be
 * absent) with the shape the config implies, and no tensor the list does not name (more layers in
 * the weights than in config.json, another architecture's weights). Throws CheckpointError naming
 * the first tensor that disagrees.
 */
export function checkTensors(ckpt: TensorSource, specs: TensorSpec[]): void {
  for (const t of specs) {
    if (!ckpt.has(t.name)) {
      if (t.optional) continue;
      const dtype = ckpt.unsupportedDtype?.(t.name);
      const why = dtype === undefined ? "is missing" : `is ${dtype}, which cannot be loaded (only F32, F16, BF16)`;
      throw new CheckpointError(`${ckpt.dir}: tensor '${t.name}' (expected shape ${fmt(t.shape)}) ${why}; the weights and config.json do not belong together`);
    }
    const { shape } = ckpt.info(t.name);
    if (shape.length !== t.shape.length || shape.some((d, i) => d !== t.shape[i])) {
      throw new CheckpointError(
        `${ckpt.dir}: tensor '${t.name}' has shape ${fmt(shape)} but config.json implies ${fmt(t.shape)}; the weights and the config do not belong together`,
      );
    }
  }
  const known = new Set(specs.map((t) => t.name));
  const extra = ckpt.list().find((t) => !known.has(t.name));
  if (extra) {
    throw new CheckpointError(`${ckpt.dir}: tensor '${extra.name}' ${fmt(extra.shape)} is not part of the model config.json describes (more layers in the weights, or another architecture); the weights and config.json do not belong together`);
  }
}
