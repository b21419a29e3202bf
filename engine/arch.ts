// The architecture interface: what every model family (engine/<family>/) implements and all that
// the workflows, `infer` and the benches use. Families are found through engine/families.ts.
//
// Knockouts are stated as edges (t, s) of a layer's token-to-token mixing (the SSD attention matrix
// of Mamba-2, the hidden attention of Mamba-1, the attention of a Transformer), blocked in a window
// of layers and in the units (heads, channels) a selector picks.
import type { Gpu } from "./gpu.ts";
import type { TokenStats } from "./probs.ts";

export type { Gpu, TokenStats };

/** Bad input to the engine (ids, knockouts, selectors, options): one line naming the value. */
export class InputError extends Error {
  override name = "InputError";
}

export type Mode = "scan" | "attention";
export type Edge = [row: number, col: number]; // col <= row

/** Which units a knockout acts on: heads (Mamba-2, Transformers) or channels (Mamba-1). */
export type UnitSelector =
  | { kind: "all" }
  | { kind: "fast" | "slow" | "not-fast" | "not-slow"; a: number; b: number } // ranked by decay, per layer
  | { kind: "only"; units: number[] }; // explicit list, text form `only:0-3+7`

const RANKED = ["fast", "slow", "not-fast", "not-slow"] as const;
const SELECTOR_HELP = "use all, fast:a/b, slow:a/b, not-fast:a/b, not-slow:a/b (0 < a/b <= 1) or only:i+j+k-l";

/**
 * Parses `all`, `fast:1/3`, `slow:a/b`, `not-fast:a/b`, `not-slow:a/b`, `only:0+2+5` (ranges a-b
 * allowed; the list comes back sorted, without repeats); a/b must be in (0, 1]; throws InputError
 * with one line naming the bad value.
 */
export function parseUnitSelector(text: string): UnitSelector {
  const t = text.trim();
  if (t === "all") return { kind: "all" };
  const colon = t.indexOf(":");
  const kind = colon < 0 ? t : t.slice(0, colon);
  const arg = colon < 0 ? "" : t.slice(colon + 1);
  if ((RANKED as readonly string[]).includes(kind)) {
    const m = /^(\d+)\/(\d+)$/.exec(arg);
    if (!m) throw new InputError(`unit selector "${text}": ${kind} needs a fraction a/b of whole numbers, e.g. ${kind}:1/3`);
    const a = Number(m[1]), b = Number(m[2]);
    if (!(b > 0 && a > 0 && a <= b)) throw new InputError(`unit selector "${text}": the fraction ${a}/${b} is not in (0, 1]`);
    return { kind: kind as typeof RANKED[number], a, b };
  }
  if (kind === "only") {
    if (arg === "") throw new InputError(`unit selector "${text}": only needs a list of units, e.g. only:0-3+7`);
    const units = new Set<number>();
    for (const part of arg.split("+")) {
      const m = /^(\d+)(?:-(\d+))?$/.exec(part);
      if (!m) throw new InputError(`unit selector "${text}": "${part}" is not a unit or a range a-b`);
      const lo = Number(m[1]), hi = m[2] === undefined ? lo : Number(m[2]);
      if (hi < lo) throw new InputError(`unit selector "${text}": the range ${part} runs backwards`);
      for (let u = lo; u <= hi; u++) units.add(u);
    }
    return { kind: "only", units: [...units].sort((x, y) => x - y) };
  }
  throw new InputError(`unknown unit selector "${text}": ${SELECTOR_HELP}`);
}

/** The canonical text of a selector; parseUnitSelector(formatUnitSelector(s)) equals s. */
export function formatUnitSelector(s: UnitSelector): string {
  if (s.kind === "all") return "all";
  if (s.kind === "only") {
    const units = [...new Set(s.units)].sort((x, y) => x - y);
    const parts: string[] = [];
    for (let i = 0; i < units.length;) {
      let j = i;
      while (j + 1 < units.length && units[j + 1] === units[j] + 1) j++;
      parts.push(j > i ? `${units[i]}-${units[j]}` : `${units[i]}`);
      i = j + 1;
    }
    return `only:${parts.join("+")}`;
  }
  return `${s.kind}:${s.a}/${s.b}`;
}

/**
 * The units a selector picks among n units with the given decays (sorted ascending). n units,
 * m = floor(n a / b): `fast` the m smallest decays, `slow` the m largest (ties: lower index first
 * in both), `not-…` their complements; `only` its list. InputError when it names a unit that does
 * not exist or picks none.
 */
export function selectByDecay(sel: UnitSelector, decay: ArrayLike<number> | null, n: number, where: string): number[] {
  const all = Array.from({ length: n }, (_, i) => i);
  let out: number[];
  if (sel.kind === "all") out = all;
  else if (sel.kind === "only") {
    const bad = sel.units.find((u) => !Number.isInteger(u) || u < 0 || u >= n);
    if (bad !== undefined) throw new InputError(`unit selector ${formatUnitSelector(sel)}: unit ${bad} does not exist (${where} has units 0..${n - 1})`);
    out = [...new Set(sel.units)].sort((x, y) => x - y);
  } else {
    if (!decay) throw new InputError(`unit selector ${formatUnitSelector(sel)} ranks units by decay, which ${where} does not have: use all or only:…`);
    const m = Math.floor((n * sel.a) / sel.b);
    const fastFirst = sel.kind === "fast" || sel.kind === "not-fast";
    const ranked = [...all].sort(fastFirst ? (x, y) => decay[x] - decay[y] || x - y : (x, y) => decay[y] - decay[x] || x - y);
    const picked = new Set(ranked.slice(0, m));
    out = all.filter((u) => picked.has(u) === (sel.kind === "fast" || sel.kind === "slow"));
  }
  if (out.length === 0) throw new InputError(`unit selector ${formatUnitSelector(sel)} picks no unit of ${where} (${n} units)`);
  return out;
}

/**
 * Whether a selector can apply to every layer of a family with these units, before the model (and
 * its decays) is loaded: which units a fast:/slow: selector picks depends on the decays, whether it
 * names a unit that does not exist or picks none does not. InputError as selectByDecay's.
 */
export function checkSelectorApplies(sel: UnitSelector, units: KnockoutUnits, where: string): void {
  const n = units.unitsPerLayer;
  selectByDecay(sel, units.rankedByDecay ? new Float64Array(n) : null, n, where);
}

/**
 * Edges blocked in layers [start, end), in the selected units; with `conv`, also the conv1d taps
 * s -> t of every blocked (t, s) with 0 < t - s < d_conv (all conv channels, before the SiLU).
 */
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

/** What a knockout can act on in a family's layers, known from config.json alone (Family.units). */
export interface KnockoutUnits {
  modes: Mode[]; // ["scan", "attention"] for Mamba, ["attention"] for Transformers
  unitName: "head" | "channel";
  unitsPerLayer: number;
  convWidth: number; // d_conv of the family's conv path that knockouts may cut; 0 = none
  rankedByDecay: boolean; // whether its units have a decay (LanguageModel.decay) for fast:/slow: selectors
}

export interface ModelInfo extends KnockoutUnits {
  family: string; // "mamba2", "mamba1", "falcon_mamba", "gpt_neox", "gpt2", "llama", "qwen2", "mistral"
  nLayer: number;
  dModel: number;
  vocabSize: number; // real tokens (softmax and ids are over these)
  vocabPadded: number; // rows of the LM head
  config: Record<string, unknown>; // the family's parsed config, for manifests
}

export interface ForwardOptions {
  mode: Mode;
  /** per prompt (same order as the prompts); attention mode only */
  knockouts?: (KnockoutSpec[] | undefined)[];
  /** logits at every position (T * vocabPadded per prompt) instead of the last one */
  allPositions?: boolean;
  /** also return the residual stream after every layer (tests, analysis) */
  captureResiduals?: boolean;
  /** per prompt, a target id: only p(target), p(max) and the argmax of the last position come back */
  targets?: number[];
}

export interface ForwardResult {
  /** per prompt: (vocabPadded) or (T, vocabPadded) f32; empty when targets were given */
  logits: Float32Array[];
  /** per prompt, with targets: softmax statistics over the real vocabulary */
  stats?: TokenStats[];
  /** per prompt, per layer: (T, d_model) residual stream after that layer */
  residuals?: Float32Array[][];
}

export interface LanguageModel {
  readonly info: ModelInfo;
  readonly gpu: Gpu;
  /**
   * per layer, per unit: the decay used by selectors (Mamba-2 exp(A) = exp(-exp(A_log)) per head;
   * Mamba-1 Σ_n exp(A[c, n]) per channel); null for families without one (Transformers).
   */
  decay(layer: number): Float64Array | null;
  /** the units a selector picks in a layer (sorted ascending); InputError when it cannot apply */
  selectUnits(layer: number, sel: UnitSelector): number[];
  checkInput(prompts: number[][], opts: ForwardOptions): void; // InputError, one line
  forwardDetailed(prompts: number[][], opts: ForwardOptions): Promise<ForwardResult>;
  forward(prompts: number[][], opts: ForwardOptions): Promise<Float32Array[]>;
  forwardStats(prompts: number[][], targets: number[], opts: ForwardOptions): Promise<TokenStats[]>;
  /**
   * The exact knockout fast path: one base run per prompt (attention mode), then for every config
   * only rows t0..T-1 (t0 = the smallest blocked row) from layer `start` up; batched. Equal to a
   * full attention-mode forward with the same KnockoutSpec (tests prove it).
   */
  knockouts(
    prompts: number[][],
    baseTargets: number[],
    configs: KnockoutConfig[],
    onProgress?: (configsDone: number) => void,
  ): Promise<{ base: TokenStats[]; results: TokenStats[] }>;
  destroy(): void;
  releaseWorkspace(): void;
}

/**
 * Throws InputError (one line) when a knockout spec cannot apply to a prompt of `length` tokens on
 * a model described by `info`: its window, its edges (0 <= col <= row < length), a conv knockout on
 * a family without a conv path. `what` names the spec in the message. Units are checked by the
 * model's selectUnits.
 */
export function checkKnockoutSpec(k: KnockoutSpec, length: number, info: ModelInfo, what: string): void {
  if (!(Number.isInteger(k.start) && Number.isInteger(k.end) && 0 <= k.start && k.start < k.end && k.end <= info.nLayer)) {
    throw new InputError(`${what}: window [${k.start}, ${k.end}) is not within the model's ${info.nLayer} layers (0 <= start < end <= ${info.nLayer})`);
  }
  if (!Array.isArray(k.edges)) throw new InputError(`${what}: edges must be a list of [row, col] pairs`);
  for (const e of k.edges) {
    const [row, col] = Array.isArray(e) ? e : [NaN, NaN];
    if (!Number.isInteger(row) || !Number.isInteger(col) || row < 0 || row >= length || col < 0 || col > row) {
      throw new InputError(`${what}: edge (${e}) is invalid for a ${length}-token prompt (need 0 <= col <= row < ${length})`);
    }
  }
  if (k.conv && info.convWidth === 0) throw new InputError(`${what}: conv knockouts need a conv path, which ${info.family} models do not have`);
}
