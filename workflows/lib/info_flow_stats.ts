// 03_info_flow's statistics: per prompt and configuration (k, flow, heads, conv, window) the
// probability after the knockout, the hit and the relative change; per configuration and split of
// the prompts the accuracy and the mean relative change with percentile-bootstrap 95 % intervals.
// A flow that blocks no edge of a prompt has no result for it, so configurations may be over
// fewer prompts than their split. The record types double as the tables' schemas
// (info_flow.parquet, info_flow_aggregates.parquet).

import { MeanBootstrap, mean } from "./bootstrap.ts";
import type { InfoFlowConfig } from "./knockout_configs.ts";
import type { KnockoutRecord } from "./knockout_run.ts";
import type { Field } from "./parquet.ts";

export const SPLITS = ["all", "first_in_subject", "first_not_in_subject"] as const;
export type Split = typeof SPLITS[number];

/** A prompt of the experiment: its row, tokens, subject tokens, target and unblocked probability. */
export interface InfoFlowPrompt {
  row: number;
  prompt: string;
  subject: string;
  ids: number[];
  subjectTokens: number[];
  firstInSubject: boolean;
  target: number;
  /** p(target) of the unblocked attention-mode run, from 01_construct */
  baseProb: number;
  baseHit: boolean;
}

/** What a configuration is, as the tables label it. */
export interface ConfigLabel {
  k: number;
  /** `target<-source` */
  flow: string;
  /** the flow's token sets */
  target: string;
  source: string;
  /** the head (unit) selector, canonical text */
  heads: string;
  conv: boolean;
  /** the window's position on the x axis: its start layer or its centre layer */
  window: number;
  /** that position as % of the model's layers */
  depth: number;
  window_start: number;
  window_end: number;
}

const LABEL_FIELDS: readonly Field<ConfigLabel>[] = [
  { name: "k", type: "INT32" },
  { name: "flow", type: "STRING" },
  { name: "target", type: "STRING" },
  { name: "source", type: "STRING" },
  { name: "heads", type: "STRING" },
  { name: "conv", type: "BOOLEAN" },
  { name: "window", type: "INT32" },
  { name: "depth", type: "DOUBLE" },
  { name: "window_start", type: "INT32" },
  { name: "window_end", type: "INT32" },
];

/** One knockout of one prompt, as it goes into info_flow.parquet. */
export interface InfoFlowResult extends ConfigLabel {
  row: number;
  /** blocked (t, s) pairs */
  edges: number;
  target_id: number;
  base_prob: number;
  true_prob: number;
  pred_id: number;
  hit: boolean;
  relative_change: number;
  first_in_subject: boolean;
}

export const RESULT_FIELDS: readonly Field<InfoFlowResult>[] = [
  { name: "row", type: "INT32" },
  ...LABEL_FIELDS,
  { name: "edges", type: "INT32" },
  { name: "target_id", type: "INT32" },
  { name: "base_prob", type: "DOUBLE" },
  { name: "true_prob", type: "DOUBLE" },
  { name: "pred_id", type: "INT32" },
  { name: "hit", type: "BOOLEAN" },
  { name: "relative_change", type: "DOUBLE" },
  { name: "first_in_subject", type: "BOOLEAN" },
];

/** One configuration over one split of the prompts, as it goes into info_flow_aggregates.parquet. */
export interface Aggregate extends ConfigLabel {
  split: Split;
  /** prompts of the split that have this configuration (a flow without edges in a prompt leaves it out) */
  n: number;
  base_accuracy: number;
  accuracy: number;
  accuracy_lo: number;
  accuracy_hi: number;
  relative_change: number;
  relative_change_lo: number;
  relative_change_hi: number;
}

export const AGGREGATE_FIELDS: readonly Field<Aggregate>[] = [
  ...LABEL_FIELDS,
  { name: "split", type: "STRING" },
  { name: "n", type: "INT32" },
  { name: "base_accuracy", type: "DOUBLE" },
  { name: "accuracy", type: "DOUBLE" },
  { name: "accuracy_lo", type: "DOUBLE" },
  { name: "accuracy_hi", type: "DOUBLE" },
  { name: "relative_change", type: "DOUBLE" },
  { name: "relative_change_lo", type: "DOUBLE" },
  { name: "relative_change_hi", type: "DOUBLE" },
];

/** % change of p relative to p_base: (p − p_base) · 100 / p_base. */
export function relativeChange(p: number, pBase: number): number {
  return ((p - pBase) * 100) / pBase;
}

/** The label of a configuration. */
export function configLabel(c: InfoFlowConfig): ConfigLabel {
  return {
    k: c.k,
    flow: c.flow.text,
    target: c.flow.target,
    source: c.flow.source,
    heads: c.heads,
    conv: c.conv,
    window: c.window.at,
    depth: c.window.depth,
    window_start: c.start,
    window_end: c.end,
  };
}

/** Per-prompt results of every configuration, in the order prompts × their configurations. */
export function perPromptResults(
  prompts: InfoFlowPrompt[],
  configs: Map<number, InfoFlowConfig[]>,
  records: Map<number, KnockoutRecord>,
): InfoFlowResult[] {
  const out: InfoFlowResult[] = [];
  for (const pr of prompts) {
    const cfg = configs.get(pr.row)!, rec = records.get(pr.row);
    if (!rec) throw new Error(`no knockout results for row ${pr.row}`);
    cfg.forEach((c, i) => {
      out.push({
        row: pr.row,
        ...configLabel(c),
        edges: c.edges.length,
        target_id: pr.target,
        base_prob: pr.baseProb,
        true_prob: rec.p[i],
        pred_id: rec.pred[i],
        hit: rec.pred[i] === pr.target,
        relative_change: relativeChange(rec.p[i], pr.baseProb),
        first_in_subject: pr.firstInSubject,
      });
    });
  }
  return out;
}

/** The order of the aggregates and figures: k ascending, then split, heads, conv and flow in the order of the parameters, then window. */
export interface AggregateOrder {
  flows: string[];
  heads: string[];
  conv: boolean[];
}

function configKey(r: ConfigLabel): string {
  return `${r.k}|${r.flow}|${r.heads}|${r.conv}|${r.window}`;
}

/** A 32-bit FNV-1a hash of a list of rows: the seed of the resamples over that set of prompts. */
function rowsHash(rows: number[]): number {
  let h = 0x811c9dc5;
  for (const r of rows) {
    h ^= r + 1;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h;
}

/**
 * Accuracy and mean relative change per (k, flow, heads, conv, window, split), with
 * percentile-bootstrap 95 % intervals (`resamples` resamples of the prompts). Every configuration
 * over the same prompts of a split uses the same resamples: those of the whole split, or, for a
 * flow that some prompts lack, resamples seeded by the set of prompts it has.
 */
export function aggregate(prompts: InfoFlowPrompt[], results: InfoFlowResult[], resamples: number, seed: number, order: AggregateOrder): Aggregate[] {
  const prompt = new Map(prompts.map((p) => [p.row, p]));
  const inSplit = (split: Split, firstInSubject: boolean) => split === "all" || firstInSubject === (split === "first_in_subject");
  const splitSize = SPLITS.map((split) => prompts.filter((p) => inSplit(split, p.firstInSubject)).length);
  const byConfig = new Map<string, InfoFlowResult[]>();
  for (const r of results) {
    const key = configKey(r);
    const list = byConfig.get(key);
    if (list) list.push(r);
    else byConfig.set(key, [r]);
  }
  const boots = new Map<string, MeanBootstrap>();
  const bootstrapFor = (si: number, rows: number[]): MeanBootstrap | undefined => {
    if (resamples <= 0) return undefined;
    const whole = rows.length === splitSize[si];
    const id = whole ? `${si}` : `${si}:${rows.join(",")}`;
    let b = boots.get(id);
    if (!b) {
      const base = seed * 7919 + si * 104729 + 1;
      boots.set(id, b = new MeanBootstrap(rows.length, resamples, (whole ? base : base + rowsHash(rows)) >>> 0));
    }
    return b;
  };
  const out: Aggregate[] = [];
  for (const rs of byConfig.values()) {
    const label = Object.fromEntries(LABEL_FIELDS.map((f) => [f.name, rs[0][f.name as keyof ConfigLabel]])) as unknown as ConfigLabel;
    SPLITS.forEach((split, si) => {
      const mine = rs.filter((r) => inSplit(split, r.first_in_subject));
      const boot = bootstrapFor(si, mine.map((r) => r.row));
      const acc = Float64Array.from(mine, (r) => (r.hit ? 1 : 0));
      const rel = Float64Array.from(mine, (r) => r.relative_change);
      const [alo, ahi] = boot ? boot.ci(acc) : [NaN, NaN];
      const [rlo, rhi] = boot ? boot.ci(rel) : [NaN, NaN];
      out.push({
        ...label,
        split,
        n: mine.length,
        base_accuracy: mean(mine.map((r) => (prompt.get(r.row)!.baseHit ? 1 : 0))),
        accuracy: mean(acc),
        accuracy_lo: alo,
        accuracy_hi: ahi,
        relative_change: mean(rel),
        relative_change_lo: rlo,
        relative_change_hi: rhi,
      });
    });
  }
  const rank = <T>(list: T[], x: T) => list.indexOf(x);
  out.sort((a, b) =>
    a.k - b.k || SPLITS.indexOf(a.split) - SPLITS.indexOf(b.split) || rank(order.heads, a.heads) - rank(order.heads, b.heads) ||
    rank(order.conv, a.conv) - rank(order.conv, b.conv) || rank(order.flows, a.flow) - rank(order.flows, b.flow) || a.window - b.window
  );
  return out;
}
