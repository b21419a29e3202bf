// 03_info_flow's statistics: per prompt and configuration the probability after the knockout,
// the hit and the relative change; per configuration and split of the prompts the accuracy and
// the mean relative change with percentile-bootstrap 95 % intervals. The record types double as
// the tables' schemas (info_flow.parquet, info_flow_aggregates.parquet).

import { MeanBootstrap, mean } from "./bootstrap.ts";
import { BLOCKS, type Block, type InfoFlowConfig } from "./knockout_configs.ts";
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

/** One knockout of one prompt, as it goes into info_flow.parquet. */
export interface InfoFlowResult {
  row: number;
  k: number;
  block: Block;
  window: number;
  window_start: number;
  window_end: number;
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
  { name: "k", type: "INT32" },
  { name: "block", type: "STRING" },
  { name: "window", type: "INT32" },
  { name: "window_start", type: "INT32" },
  { name: "window_end", type: "INT32" },
  { name: "target_id", type: "INT32" },
  { name: "base_prob", type: "DOUBLE" },
  { name: "true_prob", type: "DOUBLE" },
  { name: "pred_id", type: "INT32" },
  { name: "hit", type: "BOOLEAN" },
  { name: "relative_change", type: "DOUBLE" },
  { name: "first_in_subject", type: "BOOLEAN" },
];

export interface Aggregate {
  k: number;
  block: Block;
  window: number;
  window_start: number;
  window_end: number;
  split: Split;
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
  { name: "k", type: "INT32" },
  { name: "block", type: "STRING" },
  { name: "window", type: "INT32" },
  { name: "window_start", type: "INT32" },
  { name: "window_end", type: "INT32" },
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

/** Per-prompt results of every configuration, in the order prompts × configurations. */
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
        k: c.k,
        block: c.block,
        window: c.window.at,
        window_start: c.start,
        window_end: c.end,
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

/**
 * Accuracy and mean relative change per (k, block, window, split), with percentile-bootstrap 95 %
 * intervals (`resamples` resamples of the split's prompts, the same resamples for every
 * configuration of a split). `results` holds every prompt's configurations in one common order.
 */
export function aggregate(prompts: InfoFlowPrompt[], results: InfoFlowResult[], resamples: number, seed: number): Aggregate[] {
  const nConf = prompts.length ? results.length / prompts.length : 0;
  const out: Aggregate[] = [];
  const members: Record<Split, number[]> = { all: [], first_in_subject: [], first_not_in_subject: [] };
  prompts.forEach((p, i) => {
    members.all.push(i);
    members[p.firstInSubject ? "first_in_subject" : "first_not_in_subject"].push(i);
  });
  const perSplit = SPLITS.map((split, si) => {
    const idx = members[split];
    return {
      split,
      idx,
      boot: resamples > 0 ? new MeanBootstrap(idx.length, resamples, (seed * 7919 + si * 104729 + 1) >>> 0) : undefined,
      baseAcc: mean(idx.map((i) => (prompts[i].baseHit ? 1 : 0))),
    };
  });
  for (let c = 0; c < nConf; c++) {
    const ref = results[c];
    for (const s of perSplit) {
      const acc = Float64Array.from(s.idx, (i) => (results[i * nConf + c].hit ? 1 : 0));
      const rel = Float64Array.from(s.idx, (i) => results[i * nConf + c].relative_change);
      const [alo, ahi] = s.boot ? s.boot.ci(acc) : [NaN, NaN];
      const [rlo, rhi] = s.boot ? s.boot.ci(rel) : [NaN, NaN];
      out.push({
        k: ref.k,
        block: ref.block,
        window: ref.window,
        window_start: ref.window_start,
        window_end: ref.window_end,
        split: s.split,
        n: s.idx.length,
        base_accuracy: s.baseAcc,
        accuracy: mean(acc),
        accuracy_lo: alo,
        accuracy_hi: ahi,
        relative_change: mean(rel),
        relative_change_lo: rlo,
        relative_change_hi: rhi,
      });
    }
  }
  // sorted by k, split, block, window: the order of the figures
  const bi = (b: Block) => BLOCKS.indexOf(b);
  out.sort((a, b) => a.k - b.k || SPLITS.indexOf(a.split) - SPLITS.indexOf(b.split) || bi(a.block) - bi(b.block) || a.window - b.window);
  return out;
}

