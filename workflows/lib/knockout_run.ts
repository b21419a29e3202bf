// Shared machinery of the knockout stages (03_info_flow, 04_heatmap): running the knockouts of
// many prompts through the exact fast path (model.knockouts) in fixed groups, with progress
// saved per group of prompts so that an interrupted run resumes to the same result (a shard,
// --shard i/n, runs only its share of the groups: lib/shard.ts).

import { join } from "node:path";
import { checkSelectorApplies, type KnockoutConfig, type KnockoutUnits, type UnitSelector } from "../../engine/arch.ts";
import type { PromptKnockout } from "./knockout_configs.ts";
import { withDevice } from "./engine.ts";
import { aboutRows, errorLine, UserError } from "./errors.ts";
import { fixedGroups } from "./groups.ts";
import { RowLog } from "./resume.ts";
import type { StageContext } from "./stage.ts";

/**
 * Refuse head selectors that cannot apply to the model (a unit it does not have, a decay ranking on a
 * family without decays, a fraction that picks no unit) and a conv knockout on a family without a
 * conv path: from config.json before anything runs (StageDef.checkModel), and from the loaded model's
 * info again before its knockouts (a stage run alone).
 */
export function checkKnockoutsApply(model: KnockoutUnits & { family: string }, opts: { heads: UnitSelector[]; conv: boolean[] }, stage: string): void {
  for (const sel of opts.heads) {
    try {
      checkSelectorApplies(sel, model, `a ${model.family} layer`);
    } catch (e) {
      throw new UserError(`${stage}.heads: ${errorLine(e)}`);
    }
  }
  if (opts.conv.includes(true) && model.convWidth === 0) {
    throw new UserError(`${stage}.conv: ${model.family} models have no conv path to cut; use conv=false`);
  }
}

/** A window check (layerWindows) whose error names the parameter: `03_info_flow.k: window size k=9 is larger …`. */
export function checkWindow(check: () => unknown, what: string): void {
  try {
    check();
  } catch (e) {
    throw new UserError(`${what}: ${errorLine(e)}`);
  }
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
    // every group, or this shard's (--shard i/n)
    const { share, todo } = ctx.part(fixedGroups(jobs, opts.groupPrompts), (g) => g.every((j) => log.has(j.row)));
    const mine = share.flat();
    if (log.done.size > 0 && !ctx.merged) ctx.log(`resuming, ${log.done.size} of ${mine.length} prompts already done`);
    ctx.info.resumedPrompts = ctx.merged ? 0 : log.done.size;
    const knockoutsDone = () => mine.reduce((s, j) => s + (log.has(j.row) ? j.configs.length : 0), 0);
    const total = mine.reduce((s, j) => s + j.configs.length, 0);
    const label = ctx.shard ? `${opts.label} shard ${ctx.shard.index}/${ctx.shard.count}` : opts.label;
    const bar = ctx.progress(label, total, knockoutsDone(), "knockouts");
    for (const group of todo) {
      ctx.checkInterrupted(`${log.done.size}/${mine.length} prompts`);
      const configs: KnockoutConfig[] = [];
      group.forEach((j, pi) => {
        for (const c of j.configs) configs.push({ prompt: pi, target: j.target, start: c.start, end: c.end, edges: c.edges, units: c.units, conv: c.conv });
      });
      const run = await withDevice(() => ctx.model(), async (loaded) => {
        let ticked = 0;
        try {
          return await loaded.model.knockouts(group.map((j) => j.ids), group.map((j) => j.target), configs, (n) => {
            bar.tick(n - ticked);
            ticked = n;
          });
        } catch (e) {
          bar.tick(-ticked); // the group is redone or the stage ends: its knockouts are not done
          throw aboutRows(e, group, opts.label);
        }
      });
      const records: KnockoutRecord[] = [];
      let c0 = 0;
      group.forEach((j, pi) => {
        const res = run.results.slice(c0, c0 + j.configs.length);
        c0 += j.configs.length;
        if (log.has(j.row)) return;
        records.push({
          row: j.row,
          base_prob: run.base[pi].trueProb,
          base_pred: run.base[pi].predId,
          p: res.map((s) => s.trueProb),
          pred: res.map((s) => s.predId),
        });
      });
      await log.append(records);
      bar.set(knockoutsDone());
    }
    bar.finish();
    return new Map(log.done);
  } finally {
    log.close();
  }
}
