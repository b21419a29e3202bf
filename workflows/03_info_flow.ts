// 03_info_flow: the attention-knockout experiment of Geva et al. (2023), as the reference study on
// Mamba (Endy et al., 2025) extends it. For a sample of prompts, every combination of window size
// k, flow `target<-source` between token sets (edges (t, s), t in target, s in source, s <= t),
// head selector and conv setting, and every window of k layers: the target token's probability
// after the knockout, whether it is still the top prediction, and its change relative to the
// unblocked run; then per (k, flow, heads, conv, window, split) the accuracy and the mean relative
// change with 95 % bootstrap intervals, and the figures. A flow that blocks no edge of a prompt
// gives no row for it (counted in the manifest). Every knockout goes through the exact fast path
// (model.knockouts): one base run per prompt, then only the rows from the first blocked one on,
// from the window's first layer up. Work is saved per group of prompts (.work/knockouts.jsonl) and
// resumed after an interruption. The statistics are in lib/info_flow_stats.ts, the figures and
// summary in lib/info_flow_figure.ts, the configurations in lib/knockout_configs.ts.

import { join } from "node:path";
import { formatUnitSelector, type LanguageModel } from "../engine/arch.ts";
import type { Flow } from "../engine/flows.ts";
import { writeFileAtomic } from "./lib/atomic.ts";
import { deterministicSample } from "./lib/bootstrap.ts";
import { UserError } from "./lib/errors.ts";
import { type FigureContext, type FigureSpec, figureSpecs, infoFlowFigure, summaryMarkdown, X_AXES, type XAxis } from "./lib/info_flow_figure.ts";
import { AGGREGATE_FIELDS, aggregate, type InfoFlowPrompt, perPromptResults, RESULT_FIELDS } from "./lib/info_flow_stats.ts";
import {
  DEFAULT_FLOWS,
  type InfoFlowAxes,
  type InfoFlowConfig,
  infoFlowConfigs,
  layerWindows,
  parseFlows,
  parseSelectors,
  parseWindowSizes,
  WINDOW_CONVENTIONS,
  type WindowConvention,
} from "./lib/knockout_configs.ts";
import { checkKnockoutsApply, checkWindow, type KnockoutJob, runKnockoutJobs } from "./lib/knockout_run.ts";
import { type Field, writeTable } from "./lib/parquet.ts";
import { parseBooleanList } from "./lib/params.ts";
import { removeStaleFigures, writeFigure } from "./lib/plot.ts";
import {
  applyFilter,
  constructedRows,
  filterFacts,
  filterStudyInputs,
  filterWords,
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
  flows: string;
  heads: string;
  conv: string;
  window: string;
  x_axis: string;
  target: string;
  bootstrap: number;
  group_prompts: number;
  [key: string]: number | string | boolean;
}

/** The parameters' lists, parsed (UserError of one line naming a bad value). */
export function infoFlowAxes(P: InfoFlowParams): InfoFlowAxes & { headsText: string[] } {
  const heads = parseSelectors(P.heads, "03_info_flow.heads");
  return {
    ks: parseWindowSizes(P.k, "03_info_flow.k"),
    flows: parseFlows(P.flows, "03_info_flow.flows"),
    heads,
    headsText: heads.map(formatUnitSelector),
    conv: parseBooleanList(P.conv, "03_info_flow.conv"),
    convention: P.window as WindowConvention,
  };
}

function figuresOf(axes: { ks: number[]; flows: Flow[]; headsText: string[]; conv: boolean[] }): FigureSpec[] {
  return figureSpecs({ ks: axes.ks, flows: axes.flows.map((f) => f.text), heads: axes.headsText, conv: axes.conv });
}

/** prompts.parquet: a prompt of the experiment, with the fast path's own base probability as a check. */
const PROMPT_FIELDS: readonly Field<InfoFlowPrompt & { baseProbFastPath: number; tokens: string[] }>[] = [
  { name: "row", type: "INT32" },
  { name: "prompt", type: "STRING", nullable: true },
  { name: "subject", type: "STRING", nullable: true },
  { name: "ids", type: "INT32_LIST" },
  { name: "tokens", type: "STRING", value: (p) => JSON.stringify(p.tokens) },
  { name: "subject_tokens", type: "INT32_LIST", value: (p) => p.subjectTokens },
  { name: "first_in_subject", type: "BOOLEAN", value: (p) => p.firstInSubject },
  { name: "target_id", type: "INT32", value: (p) => p.target },
  { name: "base_prob", type: "DOUBLE", value: (p) => p.baseProb },
  { name: "base_prob_fast_path", type: "DOUBLE", value: (p) => p.baseProbFastPath },
  { name: "base_hit", type: "BOOLEAN", value: (p) => p.baseHit },
];

/** decay.parquet: per layer and unit, the decay the head selectors rank by (none for a family without one). */
export interface DecayRow {
  layer: number;
  unit: number;
  decay: number;
}
export const DECAY_FIELDS: readonly Field<DecayRow>[] = [
  { name: "layer", type: "INT32" },
  { name: "unit", type: "INT32" },
  { name: "decay", type: "DOUBLE" },
];

/** Every layer's decays of a model, one row per unit (empty when the family has none). */
export function decayRows(model: LanguageModel): DecayRow[] {
  const out: DecayRow[] = [];
  for (let layer = 0; layer < model.info.nLayer; layer++) {
    const d = model.decay(layer);
    if (d) d.forEach((decay, unit) => out.push({ layer, unit, decay }));
  }
  return out;
}

export function outputsFor(params: InfoFlowParams): string[] {
  const out = ["prompts.parquet", "info_flow.parquet", "info_flow_aggregates.parquet", "decay.parquet", "summary.md"];
  let figures: FigureSpec[];
  try {
    figures = figuresOf(infoFlowAxes(params));
  } catch {
    figures = []; // bad parameters are reported by check()
  }
  for (const f of figures) out.push(...["vl.json", "svg", "png"].map((x) => `${f.base}.${x}`));
  return out;
}

/** The prompts that qualify, with their subject tokens, target and base probability; those skipped and why. */
async function choosePrompts(ctx: StageContext<InfoFlowParams>) {
  const P = ctx.params;
  const construct = await readConstruct(ctx.upstream("01_construct"));
  const ds = await ctx.dataset();
  const tok = await ctx.tokenizer();
  const candidates = constructedRows(ctx.rows, construct);
  const qualifying = applyFilter(P.filter as PromptFilter, candidates, await filterFacts(P.filter, construct, ctx.models)).kept;
  if (qualifying.length === 0) {
    throw new UserError(
      `03_info_flow: no prompt to run: none of the ${candidates.length} selected rows was ${filterWords(P.filter as PromptFilter, construct.scan !== null)}; ` +
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
    const a = construct.attention.get(row)!;
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
  const some = (rows: number[]) => `${rows.slice(0, 10).join(", ")}${rows.length > 10 ? ", …" : ""}`;
  if (skipped.length) ctx.log(`skipped ${skipped.length} row(s) whose subject is not in the prompt: ${some(skipped)}`);
  if (zeroBase.length) ctx.log(`skipped ${zeroBase.length} row(s) whose p_base is 0 (no relative change): ${some(zeroBase)}`);
  if (valid.size === 0) {
    throw new UserError(
      `03_info_flow: no prompt to run: every one of the ${qualifying.length} qualifying rows was skipped ` +
        `(${skipped.length} subject not in the prompt, ${zeroBase.length} p_base = 0); check the dataset's subject column or select other rows`,
    );
  }
  const sample = deterministicSample([...valid.keys()], P.n_prompts, P.seed);
  if (sample.length < P.n_prompts) ctx.log(`${sample.length} prompts qualify, fewer than n_prompts = ${P.n_prompts}: running all of them`);
  return { prompts: sample.map((r) => valid.get(r)!), candidates, qualifying, skipped, zeroBase };
}

export default defineStage<InfoFlowParams>({
  name: "03_info_flow",
  title: "Attention knockout: flows between token sets (last/subject/relation/...) over windows of layers, by head selector and conv path",
  version: "2",
  module: import.meta.url,
  inputs: { dataset: true, tokenizer: true, model: true, stages: ["01_construct"] },
  shardable: true,
  params: {
    filter: { type: "string", default: "both-correct", choices: PROMPT_FILTERS, doc: PROMPT_FILTER_DOC },
    n_prompts: { type: "int", default: 1000, min: 1, doc: "a deterministic sample of this many prompts (fewer if fewer qualify)" },
    seed: { type: "int", default: 0, min: 0, doc: "seed of the prompt sample and of the bootstrap" },
    k: { type: "string", default: "9,15", doc: "window sizes (layers), comma-separated" },
    flows: {
      type: "string",
      default: DEFAULT_FLOWS,
      doc: "flows target<-source, comma-separated; sets first, last, subject, relation, relation_minus_last, context, all",
    },
    heads: { type: "string", default: "all", doc: "head selectors, comma-separated: all, fast:a/b, slow:a/b, not-fast:a/b, not-slow:a/b, only:i+j-k" },
    conv: { type: "string", default: "false", doc: "cut the conv1d path too: false, true, or false,true for both" },
    window: { type: "string", default: "start", choices: WINDOW_CONVENTIONS, doc: "windows [l, l+k) by start (seed) or centred on layer l (Geva et al.)" },
    x_axis: { type: "string", default: "layer", choices: X_AXES, doc: "figures' x axis: the window's layer, or its depth as % of the model's layers" },
    target: { type: "string", default: "true", choices: TARGETS, doc: "token whose probability is tracked: the dataset's true token or the model's own top prediction" },
    bootstrap: { type: "int", default: 1000, min: 0, max: 100000, doc: "bootstrap resamples for the 95 % intervals (0: none)" },
    group_prompts: { type: "int", default: 16, min: 1, max: 4096, throughput: true, doc: "prompts per fast-path call (and per saved step of progress); throughput only, not in the cache key" },
  },
  outputs: outputsFor,
  check(P) {
    infoFlowAxes(P);
  },
  checkModel(P, model) {
    const axes = infoFlowAxes(P);
    for (const k of axes.ks) checkWindow(() => layerWindows(model.nLayer, k, axes.convention), "03_info_flow.k");
    checkKnockoutsApply(model, { heads: axes.heads, conv: axes.conv }, "03_info_flow");
  },
  studyInputs: (P) => filterStudyInputs(P.filter),

  async run(ctx: StageContext<InfoFlowParams>) {
    const P = ctx.params;
    const axes = infoFlowAxes(P);
    const { ks, convention } = axes;

    // 1. the prompts
    const { prompts, candidates, qualifying, skipped, zeroBase } = await choosePrompts(ctx);

    // 2. the configurations (checked against the model before anything runs)
    const loaded = await ctx.model();
    const model: LanguageModel = loaded.model;
    const nLayer = model.info.nLayer;
    for (const k of ks) layerWindows(nLayer, k, convention);
    checkKnockoutsApply(model.info, { heads: axes.heads, conv: axes.conv }, "03_info_flow");
    const configs = new Map<number, InfoFlowConfig[]>();
    const noEdges: Record<string, number> = Object.fromEntries(axes.flows.map((f) => [f.text, 0]));
    for (const p of prompts) {
      const c = infoFlowConfigs(nLayer, p.ids.length, p.subjectTokens, axes);
      configs.set(p.row, c.configs);
      for (const f of c.skipped) noEdges[f.text]++;
    }
    const noEdgeTotal = Object.values(noEdges).reduce((a, b) => a + b, 0);
    if (noEdgeTotal) {
      ctx.log(`flows that block no edge of a prompt give no row for it: ${Object.entries(noEdges).filter(([, n]) => n).map(([f, n]) => `${f} in ${n} prompt(s)`).join(", ")}`);
    }
    const jobs: KnockoutJob[] = prompts.map((p) => ({ row: p.row, ids: p.ids, target: p.target, configs: configs.get(p.row)! }));

    // 3. the knockouts
    const records = await runKnockoutJobs(ctx as unknown as StageContext, jobs, {
      logName: "knockouts",
      groupPrompts: P.group_prompts,
      label: "03_info_flow",
    });

    if (ctx.shard) return; // a shard's records are saved in its folder; the merge writes the outputs

    // 4. tables
    const flowsText = axes.flows.map((f) => f.text);
    const results = perPromptResults(prompts, configs, records);
    const aggs = aggregate(prompts, results, P.bootstrap, P.seed, { flows: flowsText, heads: axes.headsText, conv: axes.conv });
    let baseDiff = 0;
    for (const p of prompts) baseDiff = Math.max(baseDiff, Math.abs(records.get(p.row)!.base_prob - p.baseProb));
    const meta = { "mamba_explain.stage": "03_info_flow", "mamba_explain.cache_key": ctx.cacheKey };
    const tok = await ctx.tokenizer();
    const fastBase = prompts.map((p) => ({ ...p, baseProbFastPath: records.get(p.row)!.base_prob, tokens: tok.decodeEach(p.ids) }));
    await writeTable(join(ctx.dir, "prompts.parquet"), PROMPT_FIELDS, fastBase, meta);
    await writeTable(join(ctx.dir, "info_flow.parquet"), RESULT_FIELDS, results, meta);
    await writeTable(join(ctx.dir, "info_flow_aggregates.parquet"), AGGREGATE_FIELDS, aggs, { ...meta, "mamba_explain.bootstrap": String(P.bootstrap) });
    await writeTable(join(ctx.dir, "decay.parquet"), DECAY_FIELDS, decayRows(model), meta);

    // 5. figures (those of earlier parameters are removed: they would be taken for this run's)
    const figures = figuresOf(axes);
    await removeStaleFigures(ctx.dir, /^info_flow_.*\.(png|svg|vl\.json)$/, outputsFor(P));
    const fc: FigureContext = {
      model: ctx.upstream("01_construct").manifest.inputs.model?.id ?? "?",
      convention,
      xAxis: P.x_axis as XAxis,
      target: P.target,
      nLayer,
      unitName: model.info.unitName,
      flows: flowsText,
      heads: axes.heads,
      headsText: axes.headsText,
      conv: axes.conv,
    };
    for (const f of figures) await writeFigure(ctx.dir, f.base, infoFlowFigure(f, aggs, fc));
    await writeFileAtomic(
      join(ctx.dir, "summary.md"),
      summaryMarkdown(aggs, figures, fc, ks, {
        prompts: prompts.length,
        qualifying: qualifying.length,
        requested: P.n_prompts,
        filter: P.filter,
        skipped,
        noEdges,
      }),
    );

    ctx.counts.prompts = prompts.length;
    ctx.counts.qualifying = qualifying.length;
    ctx.counts.skipped_subject_not_found = skipped.length;
    ctx.counts.knockouts = results.length;
    ctx.counts.first_in_subject = prompts.filter((p) => p.firstInSubject).length;
    ctx.counts.no_edge_prompt_flows = noEdgeTotal;
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
    ctx.info.noEdgePrompts = noEdges;
    ctx.info.nLayer = nLayer;
    ctx.info.family = model.info.family;
    ctx.info.unitName = model.info.unitName;
    ctx.info.unitsPerLayer = model.info.unitsPerLayer;
    ctx.info.windows = Object.fromEntries(ks.map((k) => [k, layerWindows(nLayer, k, convention).length]));
    ctx.info.maxAbsBaseProbDiffFastPathVs01 = baseDiff;
  },
});
