// 01_construct: every dataset row through the model in each of its modes: scan and attention for
// Mamba, attention only for a Transformer (its ordinary forward; model.info.modes says which).
// For each row: the prompt's token ids, the true id (first token of target_true), and from the
// last position's logits (softmax over the real vocabulary) the true token's probability, the
// top probability, the argmax id and its text, and whether the argmax is the true token.
// Outputs construct_<mode>.parquet per mode that ran (construct_attention.parquet always; the
// manifest lists the tables and says the modes in info.modes): the dataset's columns + those.
// Work is saved per batch (.work/<mode>.jsonl) and resumed after an interruption; with --shard i/n
// only every n-th batch is run, into the shard's folder (lib/shard.ts).

import { join } from "node:path";
import type { TextTokenizer } from "../engine/tokenizer.ts";
import { exists } from "./lib/atomic.ts";
import { withDevice } from "./lib/engine.ts";
import { aboutRows, UserError } from "./lib/errors.ts";
import { type Column, type Field, tableColumns, writeParquet } from "./lib/parquet.ts";
import { fixedGroups } from "./lib/groups.ts";
import { RowLog } from "./lib/resume.ts";
import { defineStage, type StageContext } from "./lib/stage.ts";

import { MODES, type Mode, type PromptItem, type RowResult, runBatch } from "./lib/construct_run.ts";
export { MODES, type Mode, type PromptItem, type RowResult, runBatch };

/** Token ids of every selected row; the true id is the first token of target_true. */
export function tokenizeRows(tok: TextTokenizer, rows: number[], data: Record<string, unknown>[]): PromptItem[] {
  return data.map((r, i) => {
    const row = rows[i];
    const prompt = r.prompt, target = r.target_true;
    if (typeof prompt !== "string" || prompt === "") throw new UserError(`dataset row ${row} has no prompt; fix the dataset or leave the row out with --rows`);
    if (typeof target !== "string" || target === "") throw new UserError(`dataset row ${row} has no target_true; fix the dataset or leave the row out with --rows`);
    const ids = tok.encode(prompt);
    const t = tok.encode(target);
    if (ids.length === 0 || t.length === 0) throw new UserError(`dataset row ${row}: the prompt or target_true encodes to no tokens`);
    return { row, ids, trueId: t[0] };
  });
}

/** One output row: the prompt, its result, and the text of the prediction. */
interface ConstructRecord {
  it: PromptItem;
  r: RowResult;
  pred: string;
  data: Record<string, unknown>;
}

/** The columns 01_construct adds after the dataset's own. */
export const ADDED_FIELDS: readonly Field<ConstructRecord>[] = [
  { name: "row", type: "INT32", value: (x) => x.it.row },
  { name: "ids", type: "INT32_LIST", value: (x) => x.it.ids },
  { name: "true_id", type: "INT32", value: (x) => x.it.trueId },
  { name: "true_prob", type: "DOUBLE", value: (x) => x.r.true_prob },
  { name: "max_prob", type: "DOUBLE", value: (x) => x.r.max_prob },
  { name: "pred_id", type: "INT32", value: (x) => x.r.pred_id },
  { name: "pred", type: "STRING" },
  { name: "hit", type: "BOOLEAN", value: (x) => x.r.pred_id === x.it.trueId },
];

/** The output table of one mode, rows in dataset order: the dataset's columns (nullable), then ADDED_FIELDS. */
export function buildColumns(
  datasetColumns: { name: string; type: Column["type"] }[],
  datasetRows: Record<string, unknown>[],
  items: PromptItem[],
  results: Map<number, RowResult>,
  tok: TextTokenizer,
): Column[] {
  const predText = new Map<number, string>();
  const decode = (id: number) => {
    let s = predText.get(id);
    if (s === undefined) predText.set(id, s = tok.decode([id]));
    return s;
  };
  const records: ConstructRecord[] = items.map((it, i) => {
    const r = results.get(it.row);
    if (!r) throw new Error(`no result for row ${it.row}`);
    return { it, r, pred: decode(r.pred_id), data: datasetRows[i] };
  });
  const fields: Field<ConstructRecord>[] = [
    ...datasetColumns.map((c) => ({ name: c.name, type: c.type, nullable: true, value: (x: ConstructRecord) => x.data[c.name] ?? null })),
    ...ADDED_FIELDS,
  ];
  return tableColumns(fields, records);
}

export default defineStage({
  name: "01_construct",
  title: "Prompts through the model in each of its modes (scan and attention for Mamba): true-token and top probabilities, prediction, hit",
  version: "1",
  module: import.meta.url,
  inputs: { dataset: true, tokenizer: true, model: true },
  shardable: true,
  params: {
    batchSize: { type: "int", default: 16, min: 1, max: 4096, throughput: true, doc: "prompts per forward pass (and per saved step of progress); throughput only, not in the cache key" },
  },
  // every family runs attention mode; construct_scan.parquet is added when the model has scan mode
  outputs: ["construct_attention.parquet"],

  async run(ctx: StageContext<{ batchSize: number }>) {
    const ds = await ctx.dataset();
    for (const { name: c } of ADDED_FIELDS) {
      if (ds.columns.some((d) => d.name === c)) throw new UserError(`the dataset already has a column "${c}", which 01_construct adds; rename it`);
    }
    const tok = await ctx.tokenizer();
    const items = tokenizeRows(tok, ctx.rows, ds.rows);
    const batches = fixedGroups(items, ctx.params.batchSize);
    const results = new Map<Mode, Map<number, RowResult>>();
    let resumed = 0;
    ctx.counts.rows = items.length;
    // the model's modes (attention: every family); a merge computes nothing and loads no model: its
    // work logs, filled from the shards, are those of the modes the shards ran
    const logged = await Promise.all(MODES.map((m) => exists(join(ctx.workDir, `${m}.jsonl`))));
    const modelModes = ctx.merged ? MODES.filter((_, i) => logged[i]) : (await ctx.model()).model.info.modes;
    const modes = MODES.filter((m) => modelModes.includes(m));

    for (const mode of modes) {
      const log = await RowLog.open<RowResult>(join(ctx.workDir, `${mode}.jsonl`), ctx.cacheKey);
      try {
        const known = new Set(ctx.rows);
        for (const r of [...log.done.keys()]) if (!known.has(r)) log.done.delete(r);
        // all batches, or this shard's (--shard i/n)
        const { share, todo } = ctx.part(batches, (b) => b.every((it) => log.has(it.row)));
        const n = share.reduce((s, b) => s + b.length, 0);
        if (log.done.size > 0 && !ctx.merged) {
          ctx.log(`${mode} mode: resuming, ${log.done.size} of ${n} prompts already done`);
          resumed += log.done.size;
        }
        const bar = ctx.progress(`01_construct ${mode}${ctx.shard ? ` shard ${ctx.shard.index}/${ctx.shard.count}` : ""}`, n, log.done.size);
        for (const batch of todo) {
          ctx.checkInterrupted(`${log.done.size}/${items.length} ${mode}-mode prompts`);
          const out = await withDevice(() => ctx.model(), (loaded) =>
            runBatch(loaded.model, batch, mode).catch((e) => {
              throw aboutRows(e, batch, `01_construct, ${mode} mode`); // the rows, not "prompt 3 of the batch"
            }));
          const fresh = out.filter((r) => !log.has(r.row));
          await log.append(fresh);
          bar.tick(fresh.length);
        }
        bar.finish();
        results.set(mode, new Map(log.done));
      } finally {
        log.close();
      }
    }

    if (ctx.shard) return; // a shard's records are saved in its folder; the merge writes the tables

    for (const mode of modes) {
      const cols = buildColumns(ds.columns, ds.rows, items, results.get(mode)!, tok);
      await writeParquet(join(ctx.dir, `construct_${mode}.parquet`), cols, {
        "mamba_explain.stage": "01_construct",
        "mamba_explain.mode": mode,
        "mamba_explain.cache_key": ctx.cacheKey,
      });
      let hits = 0;
      for (const it of items) if (results.get(mode)!.get(it.row)!.pred_id === it.trueId) hits++;
      ctx.counts[`hits_${mode}`] = hits;
      if (mode !== "attention") ctx.extraOutputs?.push(`construct_${mode}.parquet`);
    }
    ctx.info.modes = modes;
    ctx.info.batchSize = ctx.params.batchSize;
    ctx.info.batches = batches.length;
    ctx.info.resumedPrompts = resumed;
    ctx.info.maxPromptTokens = Math.max(...items.map((i) => i.ids.length));
  },
});
