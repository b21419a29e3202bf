// Knockout configurations of the two experiments: windows of layers, flows of edges between token
// sets (engine/flows.ts), head selectors (engine/arch.ts), the conv path, and the list of knockouts
// per prompt that the exact fast path (model.knockouts) runs.

import { formatUnitSelector, type KnockoutSpec, parseUnitSelector, type UnitSelector } from "../../engine/arch.ts";
import { type Flow, flowEdges, parseFlow } from "../../engine/flows.ts";
import { UserError } from "./errors.ts";
import { parseList } from "./params.ts";

export const WINDOW_CONVENTIONS = ["start", "centred"] as const;
export type WindowConvention = typeof WINDOW_CONVENTIONS[number];

/** One window of layers [start, end); `at` is its position on the figures' x axis. */
export interface LayerWindow {
  /** the window's start layer (convention `start`) or its centre layer (convention `centred`) */
  at: number;
  /** `at` as % of the model's layers (100 · at / n_layer), to draw models of different depths together */
  depth: number;
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
  const depth = (l: number) => (100 * l) / nLayer;
  if (convention === "start") return Array.from({ length: nLayer - k + 1 }, (_, l) => ({ at: l, depth: depth(l), start: l, end: l + k }));
  const half = Math.floor(k / 2);
  return Array.from({ length: nLayer }, (_, l) => ({ at: l, depth: depth(l), start: Math.max(0, l - half), end: Math.min(nLayer, l - half + k) }));
}

/** Parse a list of window sizes such as "9,15" (in the order given; each once). */
export function parseWindowSizes(spec: string, what = "k"): number[] {
  return parseList(spec, what, "9,15", (p) => {
    if (!/^\d+$/.test(p) || Number(p) < 1) throw new Error(`"${p}" is not a positive integer; give window sizes like 9,15`);
    return { value: Number(p), text: String(Number(p)) };
  });
}

/** A knockout of one prompt: edges blocked in layers [start, end), in the selected units, with or without the conv path. */
export type PromptKnockout = KnockoutSpec;

/** The flows of a list parameter such as `last<-subject,last<-relation` (each once, canonical text). */
export function parseFlows(spec: string, what = "flows"): Flow[] {
  return parseList(spec, what, DEFAULT_FLOWS, (t) => {
    const f = parseFlow(t);
    return { value: f, text: f.text };
  });
}

/** The head (unit) selectors of a list parameter such as `all,not-fast:1/3` (each once). */
export function parseSelectors(spec: string, what = "heads"): UnitSelector[] {
  return parseList(spec, what, "all,not-fast:1/3,not-slow:1/3", (t) => {
    const sel = parseUnitSelector(t);
    return { value: sel, text: formatUnitSelector(sel) };
  });
}

/** One selector (04_heatmap's `heads`). */
export function parseSelector(text: string, what = "heads"): UnitSelector {
  try {
    return parseUnitSelector(text);
  } catch (e) {
    throw new UserError(`${what}: ${(e as Error).message}`);
  }
}

/** The seed's three flows into the last position (today's default of 03_info_flow). */
export const DEFAULT_FLOWS = "last<-last,last<-subject,last<-relation";

/** What 03_info_flow sweeps: every combination of these. */
export interface InfoFlowAxes {
  ks: number[];
  flows: Flow[];
  heads: UnitSelector[];
  conv: boolean[];
  convention: WindowConvention;
}

export interface InfoFlowConfig extends PromptKnockout {
  k: number;
  flow: Flow;
  /** the selector's canonical text */
  heads: string;
  conv: boolean;
  window: LayerWindow;
}

/**
 * Every (k, flow, heads, conv, window) of the info-flow experiment for one prompt, in that order;
 * a flow that blocks no edge of this prompt has no configuration (`skipped` lists it).
 */
export function infoFlowConfigs(
  nLayer: number,
  nTokens: number,
  subject: number[],
  axes: InfoFlowAxes,
): { configs: InfoFlowConfig[]; skipped: Flow[] } {
  const configs: InfoFlowConfig[] = [];
  const skipped: Flow[] = [];
  const edges = axes.flows.map((f) => flowEdges(f, nTokens, subject));
  const headsText = axes.heads.map(formatUnitSelector);
  axes.flows.forEach((f, i) => {
    if (edges[i].length === 0) skipped.push(f);
  });
  for (const k of axes.ks) {
    const windows = layerWindows(nLayer, k, axes.convention);
    axes.flows.forEach((flow, i) => {
      if (edges[i].length === 0) return;
      axes.heads.forEach((units, h) => {
        for (const conv of axes.conv) {
          for (const w of windows) configs.push({ k, flow, heads: headsText[h], conv, window: w, start: w.start, end: w.end, edges: edges[i], units });
        }
      });
    });
  }
  return { configs, skipped };
}

export interface HeatmapConfig extends PromptKnockout {
  position: number;
  window: LayerWindow;
}

/** Every (position, window start) of the heatmap experiment for one prompt: the edge position → last blocked. */
export function heatmapConfigs(nLayer: number, nTokens: number, k: number, opts: { units: UnitSelector; conv: boolean }): HeatmapConfig[] {
  const windows = layerWindows(nLayer, k, "start");
  const out: HeatmapConfig[] = [];
  for (let position = 0; position < nTokens; position++) {
    for (const w of windows) out.push({ position, window: w, start: w.start, end: w.end, edges: [[nTokens - 1, position]], units: opts.units, conv: opts.conv });
  }
  return out;
}
