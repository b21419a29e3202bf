// The architecture interface of /work/CONTRACT.md (engine/arch.ts, written by the engine refactor),
// copied type for type so that the Transformer families can implement it before that file is on
// this branch. At merge this file is deleted and its importers import engine/arch.ts instead.
import type { Gpu } from "../gpu.ts";
import type { TokenStats } from "../probs.ts";

export type Mode = "scan" | "attention";
export type Edge = [row: number, col: number]; // col <= row

/** Which units a knockout acts on: heads (Mamba-2, Transformers) or channels (Mamba-1). */
export type UnitSelector =
  | { kind: "all" }
  | { kind: "fast" | "slow" | "not-fast" | "not-slow"; a: number; b: number } // ranked by decay, per layer
  | { kind: "only"; units: number[] }; // explicit list, text form `only:0-3+7`

/** Edges blocked in layers [start, end), in the selected units; with `conv`, also the conv1d taps
 *  s -> t of every blocked (t, s) with 0 < t - s < d_conv (all conv channels, before the SiLU). */
export interface KnockoutSpec {
  start: number;
  end: number;
  edges: Edge[];
  units?: UnitSelector; // default all
  conv?: boolean; // default false; refused (InputError) when info.convWidth === 0
}

/** One configuration of the exact fast path. */
export interface KnockoutConfig extends KnockoutSpec {
  prompt: number; // index into the prompts of the call
  target: number; // token whose probability is reported
}

export interface ModelInfo {
  family: string; // "mamba2", "mamba1", "falcon_mamba", "gpt_neox", "gpt2", "llama", "qwen2", "mistral"
  nLayer: number;
  dModel: number;
  vocabSize: number; // real tokens (softmax and ids are over these)
  vocabPadded: number; // rows of the LM head
  modes: Mode[]; // ["scan", "attention"] for Mamba, ["attention"] for Transformers
  unitName: "head" | "channel";
  unitsPerLayer: number;
  convWidth: number; // d_conv of the family's conv path that knockouts may cut; 0 = none
  config: Record<string, unknown>; // the family's parsed config, for manifests
}

export interface ForwardOptions {
  mode: Mode;
  knockouts?: (KnockoutSpec[] | undefined)[]; // per prompt; attention mode only
  allPositions?: boolean;
  captureResiduals?: boolean;
  targets?: number[]; // per prompt: only p(target), p(max), argmax come back
}
export interface ForwardResult {
  logits: Float32Array[];
  stats?: TokenStats[];
  residuals?: Float32Array[][];
}

export interface LanguageModel {
  readonly info: ModelInfo;
  readonly gpu: Gpu;
  /** per layer, per unit: the decay used by selectors; null for families without one (Transformers). */
  decay(layer: number): Float64Array | null;
  /** the units a selector picks in a layer (sorted ascending); InputError when it cannot apply */
  selectUnits(layer: number, sel: UnitSelector): number[];
  checkInput(prompts: number[][], opts: ForwardOptions): void; // InputError, one line
  forwardDetailed(prompts: number[][], opts: ForwardOptions): Promise<ForwardResult>;
  forward(prompts: number[][], opts: ForwardOptions): Promise<Float32Array[]>;
  forwardStats(prompts: number[][], targets: number[], opts: ForwardOptions): Promise<TokenStats[]>;
  /** The exact knockout fast path: one base run per prompt (attention mode), then for every config
   *  only rows t0..T-1 (t0 = the smallest blocked row) from layer `start` up; batched. Equal to a full
   *  attention-mode forward with the same KnockoutSpec. */
  knockouts(
    prompts: number[][],
    baseTargets: number[],
    configs: KnockoutConfig[],
    onProgress?: (configsDone: number) => void,
  ): Promise<{ base: TokenStats[]; results: TokenStats[] }>;
  destroy(): void;
  releaseWorkspace(): void;
}
