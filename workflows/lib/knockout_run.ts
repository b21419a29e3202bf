// Shared machinery of the knockout stages (03_info_flow, 04_heatmap): reading 01_construct's
// tables, and running the knockouts of many prompts through the exact fast path
// (engine/knockout.ts) in fixed groups, with progress saved per group of prompts so that an
// interrupted run resumes to the same result.

import { join } from "node:path";
import type { KnockoutConfig, LanguageModel } from "../../engine/arch.ts";
import type { PromptKnockout } from "./knockout_configs.ts";
import { readParquet } from "./parquet.ts";
import { RowLog } from "./resume.ts";
import type { StageContext, UpstreamOutputs } from "./stage.ts";

/** What 01_construct says about one row in one mode. */
export interface ConstructRow {
  row: number;
  ids: number[];
  true_id: number;
  true_prob: number;
  max_prob: number;
  pred_id: number;
  hit: boolean;
}

/** Both modes of 01_construct, by row. */
export async function readConstruct(up: UpstreamOutputs): Promise<{ scan: Map<number, ConstructRow>; attention: Map<number, ConstructRow> }> {
  const read = async (mode: string) => {
    const t = await readParquet(up.file(`construct_${mode}.parquet`), {
      columns: ["row", "ids", "true_id", "true_prob", "max_prob", "pred_id", "hit"],
    });
    return new Map(t.rows.map((r) => {
      const x = r as unknown as ConstructRow;
      return [x.row, { ...x, ids: Array.from(x.ids as ArrayLike<number>, Number) }];
    }));
  };
  return { scan: await read("scan"), attention: await read("attention") };
}

/** One prompt's knockouts. */
export interface KnockoutJob {
  row: number;
  ids: number[];
  target: number;
  configs: PromptKnockout[];
}

/** What is saved per prompt: the unblocked run and every configuration, in the job's order. */
export interface KnockoutRecord {
  row: number;
  base_prob: number;
  base_pred: number;
  p: number[]; // p(target) per configuration
  pred: number[]; // argmax per configuration
}

/**
 * Fixed groups of prompts: sorted by length (then row) and cut every `size`. They depend only on
 * the jobs and the size, so a resumed run recomputes exactly the groups a whole run would have.
 */
export function fixedGroups<T extends { row: number; ids: number[] }>(jobs: T[], size: number): T[][] {
  const sorted = [...jobs].sort((a, b) => a.ids.length - b.ids.length || a.row - b.row);
  const out: T[][] = [];
  for (let i = 0; i < sorted.length; i += size) out.push(sorted.slice(i, i + size));
  return out;
}

const MAX_DEVICE_RETRIES = 3;

/**
 * Run every job's knockouts (all configurations of a group of prompts in one fast-path call),
 * resuming from and saving to `<workDir>/<logName>.jsonl`. Returns the records by row.
 */
export async function runKnockoutJobs(
  ctx: StageContext,
  jobs: KnockoutJob[],
  opts: { logName: string; groupPrompts: number; label: string },
): Promise<Map<number, KnockoutRecord>> {
  const log = await RowLog.open<KnockoutRecord>(join(ctx.workDir, `${opts.logName}.jsonl`), ctx.cacheKey);
  try {
    const byRow = new Map(jobs.map((j) => [j.row, j]));
    // a record is trusted only if it belongs to a job of this run and has its shape
    for (const [row, rec] of [...log.done]) {
      const j = byRow.get(row);
      if (!j || rec.p?.length !== j.configs.length || rec.pred?.length !== j.configs.length) log.done.delete(row);
    }
    if (log.done.size > 0) ctx.log(`resuming, ${log.done.size} of ${jobs.length} prompts already done`);
    ctx.info.resumedPrompts = log.done.size;
    const total = jobs.reduce((s, j) => s + j.configs.length, 0);
    const initial = jobs.reduce((s, j) => s + (log.has(j.row) ? j.configs.length : 0), 0);
    const bar = ctx.progress(opts.label, total, initial, "knockouts");
    for (const group of fixedGroups(jobs, opts.groupPrompts)) {
      if (group.every((j) => log.has(j.row))) continue;
      ctx.checkInterrupted(`${log.done.size}/${jobs.length} prompts`);
      const configs: KnockoutConfig[] = [];
      group.forEach((j, pi) => {
        const last = j.ids.length - 1;
        for (const c of j.configs) configs.push({ prompt: pi, start: c.start, end: c.end, edges: c.cols.map((s) => [last, s]), target: j.target });
      });
      let run: Awaited<ReturnType<LanguageModel["knockouts"]>> | undefined;
      for (let attempt = 0; !run; attempt++) {
        const loaded = await ctx.model();
        let ticked = 0;
        try {
          run = await loaded.model.knockouts(group.map((j) => j.ids), group.map((j) => j.target), configs, (n) => {
            bar.tick(n - ticked);
            ticked = n;
          });
        } catch (e) {
          bar.tick(-ticked);
          // a lost device (driver reset, GPU fell off the bus): new device, same group
          if (!loaded.lost() || attempt >= MAX_DEVICE_RETRIES) throw e;
        }
      }
      const records: KnockoutRecord[] = [];
      let c0 = 0;
      group.forEach((j, pi) => {
        const res = run!.results.slice(c0, c0 + j.configs.length);
        c0 += j.configs.length;
        if (log.has(j.row)) return;
        records.push({
          row: j.row,
          base_prob: run!.base[pi].trueProb,
          base_pred: run!.base[pi].predId,
          p: res.map((s) => s.trueProb),
          pred: res.map((s) => s.predId),
        });
      });
      await log.append(records);
      bar.set(jobs.reduce((s, j) => s + (log.has(j.row) ? j.configs.length : 0), 0));
    }
    bar.finish();
    return new Map(log.done);
  } finally {
    log.close();
  }
}
