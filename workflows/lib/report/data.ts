// The report's data: what 06_report reads from every model's stages and from 05_compare_models,
// shaped for the report's pages (lib/report/assets/report.js draws them). Tables travel as columns
// (`{row: [...], p: [...]}`), numbers rounded to 6 significant digits, so that the data files of a
// large study stay small. Nothing here draws or writes.

import { subjectTokens } from "../subject.ts";
import { AGGREGATE_FIELDS } from "../info_flow_stats.ts";
import { readParquet } from "../parquet.ts";
import type { ModelOutputs, UpstreamOutputs } from "../stage.ts";
import type { Curve, Lowest, ModelSummary } from "../../05_compare_models.ts";

/** A table as columns of equal length. */
export type Columns = Record<string, unknown[]>;

/** Round to 6 significant digits (NaN and ±Inf become null: JSON has no such numbers). */
export function round6(x: unknown): number | null {
  if (typeof x !== "number" || !Number.isFinite(x)) return null;
  return x === 0 ? 0 : Number(x.toPrecision(6));
}

/** Rows as columns, with the given fields (numbers rounded unless listed as exact). */
export function toColumns(rows: Record<string, unknown>[], fields: string[], exact: string[] = []): Columns {
  const out: Columns = {};
  for (const f of fields) {
    out[f] = rows.map((r) => {
      const v = r[f];
      return typeof v === "number" && !exact.includes(f) && !Number.isInteger(v) ? round6(v) : typeof v === "number" && !Number.isFinite(v) ? null : v;
    });
  }
  return out;
}

/** A model of the study as the report shows it. */
export interface ReportModel extends ModelSummary {
  /** index in the study (the data files' names) */
  index: number;
  modes: string[];
  /** each stage's parameters and what ran it */
  stages: { name: string; title: string; params: Record<string, unknown>; finishedAt: string; wallTimeS: number; counts: Record<string, number> }[];
  engine: Record<string, unknown>;
  dtype: string;
  heatmapPrompts: number;
  hasDecay: boolean;
}

/** 01_construct's modes of a model: the construct tables its manifest lists. */
export function constructModes(up: UpstreamOutputs): string[] {
  return Object.keys(up.manifest.outputs).map((f) => /^construct_(\w+)\.parquet$/.exec(f)?.[1]).filter((m): m is string => !!m)
    .sort((a, b) => (a === "scan" ? -1 : b === "scan" ? 1 : a.localeCompare(b)));
}

/** Scan vs attention per row (02's page): each mode's p(true), top p, prediction and hit, with the prompt. */
export function modeRows(tables: [mode: string, rows: Record<string, unknown>[]][]): Columns {
  const out: Columns = {};
  for (const [i, [mode, rows]] of tables.entries()) {
    if (i === 0) {
      out.row = rows.map((r) => r.row);
      out.prompt = rows.map((r) => r.prompt ?? null);
      out.target = rows.map((r) => r.target_true ?? null);
    }
    out[`true_prob_${mode}`] = rows.map((r) => round6(r.true_prob));
    out[`max_prob_${mode}`] = rows.map((r) => round6(r.max_prob));
    out[`pred_${mode}`] = rows.map((r) => r.pred ?? null);
    out[`hit_${mode}`] = rows.map((r) => r.hit);
  }
  return out;
}

/** One prompt of a model's 04_heatmap: its tokens (subject and last marked by the page) and cells. */
export interface HeatmapPromptData {
  row: number;
  prompt: string;
  subject: string;
  target: string;
  tokens: string[];
  subjectTokens: number[];
  baseProb: number | null;
  cells: Columns;
}

/** 04_heatmap of a model: its settings and every prompt's cells. */
export async function heatmapData(
  up: UpstreamOutputs,
  construct: Map<number, Record<string, unknown>>,
): Promise<{ k: number; heads: string; conv: boolean; prompts: HeatmapPromptData[] }> {
  const t = await readParquet(up.file("heatmap.parquet"));
  const byRow = new Map<number, Record<string, unknown>[]>();
  for (const r of t.rows) {
    const row = r.row as number;
    const list = byRow.get(row);
    if (list) list.push(r);
    else byRow.set(row, [r]);
  }
  const prompts: HeatmapPromptData[] = [];
  for (const [row, cells] of byRow) {
    const c = construct.get(row) ?? {};
    const tokens: string[] = [];
    for (const cell of cells) tokens[cell.position as number] = String(cell.token);
    const subject = String(c.subject ?? "");
    prompts.push({
      row,
      prompt: String(c.prompt ?? ""),
      subject,
      target: String(c.target_true ?? ""),
      tokens,
      subjectTokens: subjectTokens(tokens, subject) ?? [],
      baseProb: round6(cells[0].base_prob),
      cells: toColumns(cells, ["position", "window_start", "window_end", "true_prob", "relative_change", "hit"]),
    });
  }
  const p = up.manifest.params;
  return { k: Number(p.k), heads: String(p.heads ?? "all"), conv: Boolean(p.conv), prompts };
}

/** A model's 03 prompts (tokens, subject tokens, target, p_base) by row. */
export async function infoFlowPrompts(up: UpstreamOutputs): Promise<Map<number, Record<string, unknown>>> {
  const t = await readParquet(up.file("prompts.parquet"));
  return new Map(t.rows.map((r) => [r.row as number, r]));
}

/** The configurations of a model's 03 (one per distinct label) and, per prompt, p and hit per configuration. */
export interface PromptCurves {
  configs: Columns;
  /** row → [config index, p(target), hit][] */
  byRow: Map<number, { c: number[]; p: (number | null)[]; h: number[] }>;
}

export async function promptCurves(up: UpstreamOutputs, rows: Set<number>): Promise<PromptCurves> {
  const t = await readParquet(up.file("info_flow.parquet"), {
    columns: ["row", "k", "flow", "heads", "conv", "window", "depth", "window_start", "window_end", "true_prob", "hit"],
  });
  const index = new Map<string, number>();
  const configs: Record<string, unknown>[] = [];
  const byRow = new Map<number, { c: number[]; p: (number | null)[]; h: number[] }>();
  for (const r of t.rows) {
    const row = r.row as number;
    if (!rows.has(row)) continue;
    const key = `${r.k}|${r.flow}|${r.heads}|${r.conv}|${r.window}`;
    let ci = index.get(key);
    if (ci === undefined) {
      index.set(key, ci = configs.length);
      configs.push(r);
    }
    let e = byRow.get(row);
    if (!e) byRow.set(row, e = { c: [], p: [], h: [] });
    e.c.push(ci);
    e.p.push(round6(r.true_prob));
    e.h.push(r.hit ? 1 : 0);
  }
  return { configs: toColumns(configs, ["k", "flow", "heads", "conv", "window", "depth", "window_start", "window_end"]), byRow };
}

/** 05's tables: the models, every curve, the lowest points. */
export async function compareData(up: UpstreamOutputs): Promise<{ models: ModelSummary[]; curves: Curve[]; lowest: Lowest[] }> {
  const read = async (f: string) => (await readParquet(up.file(f))).rows;
  return {
    models: await read("models.parquet") as unknown as ModelSummary[],
    curves: await read("curves.parquet") as unknown as Curve[],
    lowest: await read("lowest.parquet") as unknown as Lowest[],
  };
}

/** The fields of a curve the pages use: every column of 03's aggregates. */
export const CURVE_COLUMNS = AGGREGATE_FIELDS.map((f) => f.name);

/** Stage facts for the overview: parameters, timing, counts. */
export function stageFacts(m: ModelOutputs, names: string[]): ReportModel["stages"] {
  return names.map((name) => {
    const man = m.upstream(name).manifest;
    return { name, title: man.title, params: man.params, finishedAt: man.finishedAt, wallTimeS: man.wallTimeS, counts: man.counts };
  });
}
