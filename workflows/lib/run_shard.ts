// Computing one shard of a planned stage (`--shard i/n`; lib/shard.ts says what a shard is).

import { join } from "node:path";
import { removeStaleTemps, writeJsonAtomic } from "./atomic.ts";
import { relOrAbs } from "./config.ts";
import { sha256 } from "./hash.ts";
import { lockPath } from "./lock.ts";
import { engineSha256 } from "./manifest.ts";
import type { Plan, RunTarget } from "./plan.ts";
import { MARKER, readMarker, RECORDED_ENV, shardDir, shardLabel, type ShardMarker, type ShardSpec } from "./shard.ts";
import { makeStageContext, type RunSession } from "./stage_context.ts";

/**
 * Compute shard `s` of a planned stage into its folder: the stage runs with its work logs there and
 * only its share of the groups, and writes no output; shard.json is written last. A complete
 * shard is kept (`force` recomputes it).
 */
export async function runShard(
  plan: Plan,
  target: RunTarget,
  session: RunSession,
  s: ShardSpec,
  force: boolean,
): Promise<{ skipped: boolean; marker: ShardMarker }> {
  const def = plan.def;
  const dir = shardDir(plan.dir, plan.key, s);
  await Deno.mkdir(dir, { recursive: true });
  const unlock = await lockPath(
    join(dir, ".lock"),
    (holder) => `shard ${shardLabel(s)} of ${def.name} is being computed by ${holder} in ${relOrAbs(dir)}; wait for it (remove its .lock if no such process runs)`,
  );
  try {
    const done = await readMarker(dir, plan.key, s);
    if (done && !force) return { skipped: true, marker: done };
    await Deno.remove(join(dir, MARKER)).catch(() => {});
    if (force) {
      for await (const e of Deno.readDir(dir)) if (e.name.endsWith(".jsonl")) await Deno.remove(join(dir, e.name));
    }
    await removeStaleTemps(dir);
    const t0 = performance.now();
    if (def.inputs.model) await target.inputs.model((m) => session.say(`${def.name}: ${m}`));
    const ctx = makeStageContext(plan, target, session, { workDir: dir, shard: s });
    await def.run(ctx);
    const logs: ShardMarker["logs"] = {};
    const names: string[] = [];
    for await (const e of Deno.readDir(dir)) if (e.isFile && e.name.endsWith(".jsonl")) names.push(e.name);
    for (const name of names.sort()) {
      const bytes = await Deno.readFile(join(dir, name));
      const lines = new TextDecoder().decode(bytes).split("\n").filter((l) => l !== "");
      logs[name] = { records: Math.max(0, lines.length - 1), bytes: bytes.length, sha256: sha256(bytes) };
    }
    const env: Record<string, string> = {};
    for (const k of RECORDED_ENV) {
      const v = Deno.env.get(k);
      if (v !== undefined) env[k] = v;
    }
    const marker: ShardMarker = {
      stage: def.name,
      cacheKey: plan.key,
      shard: shardLabel(s),
      index: s.index,
      count: s.count,
      logs,
      host: Deno.hostname(),
      adapter: target.inputs.adapterInfo() ?? "(model not loaded)",
      env,
      engineSha256: await engineSha256(),
      finishedAt: new Date().toISOString(),
      wallTimeS: Math.round(performance.now() - t0) / 1000,
    };
    await writeJsonAtomic(join(dir, MARKER), marker);
    return { skipped: false, marker };
  } finally {
    unlock();
  }
}
