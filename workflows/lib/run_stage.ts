// Running one planned stage: the model loaded before anything is written, the stage's folder
// prepared, `run(ctx)`, then every output checked and hashed and the manifest written last (it
// is what marks the outputs as finished), and the stage's resumable work removed. Merging a
// complete shard set (lib/shard.ts) is this same run with the work logs filled from the shards.

import { join } from "node:path";
import { exists, removeStaleTemps, writeJsonAtomic } from "./atomic.ts";
import { engineSha256, outputRecord } from "./manifest.ts";
import { profile, profileSpan } from "../../engine/profile.ts";
import { outputsOf, type Plan, type RunTarget } from "./plan.ts";
import { fillFromShards, type ShardSet, shardsRoot } from "./shard.ts";
import { formatRows } from "./rows.ts";
import { makeStageContext, type RunSession } from "./stage_context.ts";
import type { Manifest, OutputRecord, StageContext } from "./stage.ts";

export interface StageRun {
  ctx: StageContext;
  manifest: Manifest;
  wallS: number;
}

/** Run a planned stage; with `merge`, from that complete shard set (nothing is computed, the model is loaded only if the stage asks). */
export async function runStage(plan: Plan, target: RunTarget, session: RunSession, merge?: ShardSet): Promise<StageRun> {
  const def = plan.def;
  const dir = plan.dir;
  const t0 = performance.now();
  const counters = profile.snapshot();
  // load the model before anything is written: a model that cannot be loaded leaves earlier outputs as they were
  if (def.inputs.model && !merge) await target.inputs.model((m) => session.say(`${def.name}: ${m}`));
  await Deno.mkdir(dir, { recursive: true });
  await removeStaleTemps(dir);
  const ctx = makeStageContext(plan, target, session, { merged: merge !== undefined });
  if (plan.fresh) await Deno.remove(ctx.workDir, { recursive: true }).catch(() => {}); // --force starts over
  const shards = merge ? await fillFromShards(plan, merge, ctx.workDir) : undefined;
  await def.run(ctx);
  // a stage that finished is recorded as finished, even when a stop was asked for meanwhile
  const outputs: Record<string, OutputRecord> = {};
  for (const f of new Set([...outputsOf(def, ctx.params), ...(ctx.extraOutputs ?? [])])) {
    const path = join(dir, f);
    if (!(await exists(path))) throw new Error(`stage ${def.name} finished without writing ${f}`);
    outputs[f] = await outputRecord(path);
  }
  const wallMs = performance.now() - t0;
  const wallS = wallMs / 1000;
  // where the stage's time went: the parts add up to wallTimeS (engine/profile.ts)
  const spent = Object.fromEntries(Object.entries(profileSpan(counters, profile.snapshot(), wallMs)).map(([k, v]) => [k, Math.round(v * 1000) / 1000]));
  const engine: Record<string, unknown> = { deno: Deno.version.deno };
  if (def.inputs.model) {
    // merged: the shards' adapters computed the numbers
    engine.adapter = shards ? [...new Set(shards.shards.map((s) => s.adapter))].join("; ") : target.inputs.adapterInfo() ?? "(model not loaded)";
    engine.engineSha256 = shards ? [...new Set(shards.shards.map((s) => s.engineSha256))].join("; ") : await engineSha256();
  }
  const manifest: Manifest = {
    ...plan.material,
    cacheKey: plan.key,
    title: def.title,
    finishedAt: new Date().toISOString(),
    wallTimeS: Math.round(wallS * 1000) / 1000,
    profile: spent,
    engine,
    counts: ctx.counts,
    info: shards ? { ...ctx.info, shards } : ctx.info,
    selection: { rows: formatRows(target.rows), rowCount: target.rows.length }, // the run's rows, whatever the stage reads
    outputs,
  };
  // the manifest comes last: it is what marks the outputs as finished
  await writeJsonAtomic(join(dir, "manifest.json"), manifest);
  await Deno.remove(ctx.workDir, { recursive: true }).catch(() => {});
  if (merge) {
    await Deno.remove(shardsRoot(dir, plan.key), { recursive: true }).catch(() => {});
    await Deno.remove(join(dir, "shards")).catch(() => {}); // only when no other key's shards are left
  }
  return { ctx, manifest, wallS };
}

/** "load 9.1 s, gpu 3.2 s, ..." (parts that took at least 0.05 s, largest first) for the run's log. */
export function profileLine(parts: Record<string, number>): string {
  const shown = Object.entries(parts).filter(([, s]) => s >= 0.05).sort((x, y) => y[1] - x[1]);
  return shown.length ? shown.map(([k, s]) => `${k} ${s.toFixed(1)} s`).join(", ") : "under 0.1 s";
}
