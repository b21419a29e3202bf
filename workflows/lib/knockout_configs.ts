// Knockout configurations of the two experiments: windows of layers, blocks of edges into the
// last position, and the lists of (window, columns) that the fast path (engine/knockout.ts) runs.

import { UserError } from "./errors.ts";
import { parseList } from "./params.ts";

export const BLOCKS = ["last", "subject", "relation"] as const;
export type Block = typeof BLOCKS[number];

export const WINDOW_CONVENTIONS = ["start", "centred"] as const;
export type WindowConvention = typeof WINDOW_CONVENTIONS[number];

/** One window of layers [start, end); `at` is its position on the figures' x axis. */
export interface LayerWindow {
  /** the window's start layer (convention `start`) or its centre layer (convention `centred`) */
  at: number;
  start: number;
  end: number;
}

/**
 * The windows of k layers of an n-layer model.
 * - `start` (the seed's): [l, l+k) for l = 0 … n − k.
 * - `centred` (Geva et al.): for every layer l, [l − ⌊k/2⌋, l + ⌈k/2⌉) clipped to the model's layers.
 */
export function layerWindows(nLayer: number, k: number, convention: WindowConvention = "start"): LayerWindow[] {
  if (!Number.isInteger(k) || k < 1) throw new UserError(`window size ${k} must be a positive integer`);
  if (k > nLayer) throw new UserError(`window size k=${k} is larger than the model's ${nLayer} layers; use k <= ${nLayer}`);
  if (convention === "start") return Array.from({ length: nLayer - k + 1 }, (_, l) => ({ at: l, start: l, end: l + k }));
  const half = Math.floor(k / 2);
  return Array.from({ length: nLayer }, (_, l) => ({ at: l, start: Math.max(0, l - half), end: Math.min(nLayer, l - half + k) }));
}

/** Parse a list of window sizes such as "9,15" (in the order given; each once). */
export function parseWindowSizes(spec: string, what = "k"): number[] {
  return parseList(spec, what, "9,15", (p) => {
    if (!/^\d+$/.test(p) || Number(p) < 1) throw new Error(`"${p}" is not a positive integer; give window sizes like 9,15`);
    return { value: Number(p), text: String(Number(p)) };
  });
}

/**
 * The columns s of the last row (edges last → s) that a block removes.
 * - `last`: the last position itself;
 * - `subject`: every subject token;
 * - `relation`: every position not in the subject (the last included, as in the seed, unless
 *   `relationLast` is false).
 */
export function blockColumns(block: Block, nTokens: number, subject: number[], relationLast = true): number[] {
  const last = nTokens - 1;
  switch (block) {
    case "last":
      return [last];
    case "subject":
      return [...subject];
    case "relation": {
      const inSubject = new Set(subject);
      const cols: number[] = [];
      for (let s = 0; s < nTokens; s++) if (!inSubject.has(s) && (relationLast || s !== last)) cols.push(s);
      return cols;
    }
  }
}

/** One knockout of a prompt, with the labels that go into the tables. */
export interface PromptKnockout {
  start: number;
  end: number;
  cols: number[];
}

export interface InfoFlowConfig extends PromptKnockout {
  k: number;
  block: Block;
  window: LayerWindow;
}

/** Every (k, block, window) of the info-flow experiment for one prompt, in a fixed order. */
export function infoFlowConfigs(
  nLayer: number,
  nTokens: number,
  subject: number[],
  opts: { ks: number[]; convention: WindowConvention; relationLast: boolean },
): InfoFlowConfig[] {
  const out: InfoFlowConfig[] = [];
  for (const k of opts.ks) {
    const windows = layerWindows(nLayer, k, opts.convention);
    for (const block of BLOCKS) {
      const cols = blockColumns(block, nTokens, subject, opts.relationLast);
      for (const w of windows) out.push({ k, block, window: w, start: w.start, end: w.end, cols });
    }
  }
  return out;
}

export interface HeatmapConfig extends PromptKnockout {
  position: number;
  window: LayerWindow;
}

/** Every (position, window start) of the heatmap experiment for one prompt: last → position blocked. */
export function heatmapConfigs(nLayer: number, nTokens: number, k: number): HeatmapConfig[] {
  const windows = layerWindows(nLayer, k, "start");
  const out: HeatmapConfig[] = [];
  for (let position = 0; position < nTokens; position++) {
    for (const w of windows) out.push({ position, window: w, start: w.start, end: w.end, cols: [position] });
  }
  return out;
}
