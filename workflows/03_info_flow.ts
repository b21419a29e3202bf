// 03_info_flow: the attention-knockout experiment of Geva et al. (2023) on Mamba-2 (the seed's
// info_flow notebooks). For a sample of prompts, windows of k consecutive layers, and three
// blocks of edges into the last position (last → last, last → subject tokens, last → every
// non-subject position), the true token's probability after the knockout, whether it is still
// the top prediction, and its change relative to the unblocked run; then per (k, block, window,
// split) the accuracy and the mean relative change with 95 % bootstrap intervals, and the
// paper's figures. Every knockout goes through the exact fast path (engine/knockout.ts): one
// base run per prompt, then only the last position recomputed from the window's first layer.
// Work is saved per group of prompts (.work/knockouts.jsonl) and resumed after an interruption.
// The statistics are in lib/info_flow_stats.ts, the figures and summary in lib/info_flow_figure.ts.

import { join } from "node:path";
import { writeFileAtomic } from "./lib/atomic.ts";
import { deterministicSample } from "./lib/bootstrap.ts";
import { UserError } from "./lib/errors.ts";
import { infoFlowConfigs, layerWindows, parseWindowSizes, WINDOW_CONVENTIONS, type WindowConvention } from "./lib/knockout_configs.ts";
import { type KnockoutJob, runKnockoutJobs } from "./lib/knockout_run.ts";
import { figureBase, infoFlowFigure, summaryMarkdown } from "./lib/info_flow_figure.ts";
import { AGGREGATE_FIELDS, aggregate, type InfoFlowPrompt, perPromptResults, RESULT_FIELDS, SPLITS } from "./lib/info_flow_stats.ts";
import { type Field, writeTable } from "./lib/parquet.ts";
import { writeFigure } from "./lib/plot.ts";
import {
  applyFilter,
  type ConstructRow,
  constructedRows,
  PROMPT_FILTER_DOC,
  PROMPT_FILTERS,
  type PromptFilter,
  readConstruct,
} from "./lib/prompt_choice.ts";
import { defineStage, type StageContext } from "./lib/stage.ts";
import { subjectTokens } from "./lib/subject.ts";

export const TARGETS = ["true", "predicted"] as const;

export interface InfoFlowParams {
  filter: string;
  n_prompts: number;
  seed: number;
  k: string;
  window: string;
  relation_last: boolean;
  target: string;
  bootstrap: number;
  group_prompts: number;
  [key: string]: number | string | boolean;
}

/** prompts.parquet: a prompt of the experiment, with the fast path's own base probability as a check. */
const PROMPT_FIELDS: readonly Field<InfoFlowPrompt & { baseProbFastPath: number }>[] = [
  { name: "row", type: "INT32" },
  { name: "prompt", type: "STRING", nullable: true },
  { name: "subject", type: "STRING", nullable: true },
  { name: "ids", type: "INT32_LIST" },
  { name: "subject_tokens", type: "INT32_LIST", value: (p) => p.subjectTokens },
  { name: "first_in_subject", type: "BOOLEAN", value: (p) => p.firstInSubject },
  { name: "target_id", type: "INT32", value: (p) => p.target },
  { name: "base_prob", type: "DOUBLE", value: (p) => p.baseProb },
  { name: "base_prob_fast_path", type: "DOUBLE", value: (p) => p.baseProbFastPath },
  { name: "base_hit", type: "BOOLEAN", value: (p) => p.baseHit },
];

export function outputsFor(params: InfoFlowParams): string[] {
  const out = ["prompts.parquet", "info_flow.parquet", "info_flow_aggregates.parquet", "summary.md"];
  let ks: number[];
  try {
    ks = parseWindowSizes(params.k);
  } catch {
    ks = [];
  }
  for (const k of ks) {
    for (const s of SPLITS) out.push(...["vl.json", "svg", "png"].map((x) => `${figureBase(k, s)}.${x}`));
  }
  return out;
}

export default defineStage<InfoFlowParams>({
  name: "03_info_flow",
  title: "Attention knockout into the last position: last / subject / relation blocks over windows of layers",
  version: "1",
  module: import.meta.url,
  inputs: { dataset: true, tokenizer: true, model: true, stages: ["01_construct"] },
  params: {
    filter: { type: "string", default: "both-correct", choices: PROMPT_FILTERS, doc: PROMPT_FILTER_DOC },
    n_prompts: { type: "int", default: 1000, min: 1, doc: "a deterministic sample of this many prompts (fewer if fewer qualify)" },
    seed: { type: "int", default: 0, min: 0, doc: "seed of the prompt sample and of the bootstrap" },
    k: { type: "string", default: "9,15", doc: "window sizes (layers), comma-separated" },
    window: { type: "string", default: "start", choices: WINDOW_CONVENTIONS, doc: "windows [l, l+k) by start (seed) or centred on layer l (Geva et al.)" },
    relation_last: { type: "boolean", default: true, doc: "the relation block includes the last position (seed) or not (Geva et al.)" },
    target: { type: "string", default: "true", choices: TARGETS, doc: "token whose probability is tracked: the dataset's true token or the model's own top prediction" },
    bootstrap: { type: "int", default: 1000, min: 0, max: 100000, doc: "bootstrap resamples for the 95 % intervals (0: none)" },
    group_prompts: { type: "int", default: 16, min: 1, max: 4096, doc: "prompts per fast-path call (and per saved step of progress)" },
  },
  outputs: outputsFor,
  check(P) {
    parseWindowSizes(P.k, "03_info_flow.k");
  },

  async run(ctx: StageContext<InfoFlowParams>) {
    const P = ctx.params;
    const ks = parseWindowSizes(P.k, "03_info_flow.k");
    const convention = P.window as WindowConvention;
    const up = ctx.upstream("01_construct");
    const construct = await readConstruct(up);
    const attention = construct.attention;
    const ds = await ctx.dataset();
    const tok = await ctx.tokenizer();

    // 1. the prompts that qualify, their subject tokens, the sample
    const candidates = constructedRows(ctx.rows, construct);
    const qualifying = applyFilter(P.filter as PromptFilter, candidates, { construct }).kept;
    if (qualifying.length === 0) {
      throw new UserError(
        `03_info_flow: no prompt to run: none of the ${candidates.length} selected rows was predicted correctly in both modes; ` +
          `select more rows or pass --set 03_info_flow.filter=all`,
      );
    }
    const rowIndex = new Map(ctx.rows.map((r, i) => [r, i]));
    const pieceCache = new Map<number, string>();
    const piece = (id: number) => {
      let s = pieceCache.get(id);
      if (s === undefined) pieceCache.set(id, s = tok.decodeEach([id])[0]);
      return s;
    };
    const skipped: number[] = [];
    const zeroBase: number[] = [];
    const valid = new Map<number, InfoFlowPrompt>();
    for (const row of qualifying) {
      const data = ds.rows[rowIndex.get(row)!];
      const a: ConstructRow = attention.get(row)!;
      const subject = typeof data.subject === "string" ? data.subject : "";
      const st = subjectTokens(a.ids.map(piece), subject);
      if (!st) {
        skipped.push(row);
        continue;
      }
      const baseProb = P.target === "true" ? a.true_prob : a.max_prob;
      if (!(baseProb > 0)) {
        zeroBase.push(row); // p_base underflowed to 0 (filter all): the relative change is undefined
        continue;
      }
      valid.set(row, {
        row,
        prompt: String(data.prompt ?? ""),
        subject,
        ids: a.ids,
        subjectTokens: st,
        firstInSubject: st.includes(0),
        target: P.target === "true" ? a.true_id : a.pred_id,
        baseProb,
        baseHit: P.target === "true" ? a.hit : true,
      });
    }
    if (skipped.length) {
      ctx.log(
        `skipped ${skipped.length} row(s) whose subject is not in the prompt: ${skipped.slice(0, 10).join(", ")}${skipped.length > 10 ? ", …" : ""}`,
      );
    }
    if (zeroBase.length) ctx.log(`skipped ${zeroBase.length} row(s) whose p_base is 0 (no relative change): ${zeroBase.slice(0, 10).join(", ")}${zeroBase.length > 10 ? ", …" : ""}`);
    if (valid.size === 0) {
      throw new UserError(
        `03_info_flow: no prompt to run: every one of the ${qualifying.length} qualifying rows was skipped ` +
          `(${skipped.length} subject not in the prompt, ${zeroBase.length} p_base = 0); check the dataset's subject column or select other rows`,
      );
    }
    const sample = deterministicSample([...valid.keys()], P.n_prompts, P.seed);
    const prompts = sample.map((r) => valid.get(r)!);
    if (sample.length < P.n_prompts) ctx.log(`${sample.length} prompts qualify, fewer than n_prompts = ${P.n_prompts}: running all of them`);

    // 2. the configurations (k is checked against the model's layers before anything runs)
    const loaded = await ctx.model();
    const nLayer = loaded.model.config.nLayer;
    for (const k of ks) layerWindows(nLayer, k, convention);
    const configs = new Map(prompts.map((p) => [
      p.row,
      infoFlowConfigs(nLayer, p.ids.length, p.subjectTokens, { ks, convention, relationLast: P.relation_last }),
    ]));
    const jobs: KnockoutJob[] = prompts.map((p) => ({ row: p.row, ids: p.ids, target: p.target, configs: configs.get(p.row)! }));

    // 3. the knockouts
    const records = await runKnockoutJobs(ctx as unknown as StageContext, jobs, {
      logName: "knockouts",
      groupPrompts: P.group_prompts,
      label: "03_info_flow",
    });

    // 4. tables
    const results = perPromptResults(prompts, configs, records);
    const aggs = aggregate(prompts, results, P.bootstrap, P.seed);
    let baseDiff = 0;
    for (const p of prompts) baseDiff = Math.max(baseDiff, Math.abs(records.get(p.row)!.base_prob - p.baseProb));
    const meta = { "mamba_explain.stage": "03_info_flow", "mamba_explain.cache_key": ctx.cacheKey };
    const fastBase = prompts.map((p) => ({ ...p, baseProbFastPath: records.get(p.row)!.base_prob }));
    await writeTable(join(ctx.dir, "prompts.parquet"), PROMPT_FIELDS, fastBase, meta);
    await writeTable(join(ctx.dir, "info_flow.parquet"), RESULT_FIELDS, results, meta);
    await writeTable(join(ctx.dir, "info_flow_aggregates.parquet"), AGGREGATE_FIELDS, aggs, { ...meta, "mamba_explain.bootstrap": String(P.bootstrap) });

    // 5. figures
    const model = up.manifest.inputs.model?.id ?? "?";
    for (const k of ks) {
      for (const split of SPLITS) {
        await writeFigure(ctx.dir, figureBase(k, split), infoFlowFigure(aggs, { k, split, model, convention, target: P.target, nLayer }));
      }
    }
    await writeFileAtomic(
      join(ctx.dir, "summary.md"),
      summaryMarkdown(aggs, ks, model, {
        prompts: prompts.length,
        qualifying: qualifying.length,
        requested: P.n_prompts,
        filter: P.filter,
        skipped,
        convention,
        target: P.target,
      }),
    );

    ctx.counts.prompts = prompts.length;
    ctx.counts.qualifying = qualifying.length;
    ctx.counts.skipped_subject_not_found = skipped.length;
    ctx.counts.knockouts = results.length;
    ctx.counts.first_in_subject = prompts.filter((p) => p.firstInSubject).length;
    ctx.info.prompts = {
      filter: P.filter,
      selectedRows: candidates.length,
      qualifying: qualifying.length,
      requested: P.n_prompts,
      sampled: prompts.length,
      note: prompts.length < P.n_prompts ? `only ${prompts.length} prompts qualify; all of them were run` : `a sample of ${P.n_prompts} (seed ${P.seed})`,
    };
    ctx.info.skippedSubjectNotFound = skipped;
    if (zeroBase.length) {
      ctx.counts.skipped_zero_base_prob = zeroBase.length;
      ctx.info.skippedZeroBaseProb = zeroBase;
    }
    ctx.info.nLayer = nLayer;
    ctx.info.windows = Object.fromEntries(ks.map((k) => [k, layerWindows(nLayer, k, convention).length]));
    ctx.info.maxAbsBaseProbDiffFastPathVs01 = baseDiff;
  },
});
