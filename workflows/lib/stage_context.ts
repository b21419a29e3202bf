// The context a stage runs in (StageContext): its parameters, folders, the selected rows, the
// run's shared inputs, upstream stages' outputs, progress, logging and the stop signal.

import { join } from "node:path";
import { Progress } from "../../engine/progress.ts";
import { relOrAbs } from "./config.ts";
import { InterruptedError, UserError } from "./errors.ts";
import { isStudyStage, modelIdForKey, type Plan, type RunTarget, stageFolder } from "./plan.ts";
import { shareOf, type ShardSpec } from "./shard.ts";
import type { DatasetSlice, ModelOutputs, StageContext, UpstreamOutputs } from "./stage.ts";

/** What every stage of one run shares besides the run's target. */
export interface RunSession {
  signal: AbortSignal;
  say(line: string): void;
  /** the dataset slice of the selected rows, made once per run folder */
  dataset?: DatasetSlice;
  /** the run folder the dataset slice was made for */
  runDir?: string;
}

/** How this process takes part in the stage's work: one shard of it, or the merge of a complete set. */
export interface ShardRole {
  /** where the stage's work logs go (default: `<stage>/.work`) */
  workDir?: string;
  shard?: ShardSpec;
  merged?: boolean;
}

export function makeStageContext(plan: Plan, target: RunTarget, session: RunSession, role: ShardRole = {}): StageContext {
  const def = plan.def;
  const { cfg, inputs, runDir, rows } = target;
  const dir = plan.dir;
  const log = (m: string) => session.say(`${def.name}: ${m}`);
  return {
    stage: def,
    params: cfg.stages[def.name],
    cacheKey: plan.key,
    dir,
    workDir: role.workDir ?? join(dir, ".work"),
    shard: role.shard,
    merged: role.merged ?? false,
    part: (groups, done) => {
      const share = shareOf(groups, role.shard);
      const todo = share.filter((g) => !done(g));
      if (role.merged && todo.length) {
        throw new UserError(`${def.name}: ${todo.length} group(s) of prompts are in no shard of the merged set; remove ${relOrAbs(join(plan.dir, "shards"))} and run the shards again`);
      }
      return { share, todo };
    },
    rows,
    dataset: async () => {
      if (session.dataset) return session.dataset;
      const t = await inputs.readDataset();
      const columns = t.columns.map((name) => {
        const type = t.types[name];
        if (!type) throw new UserError(`dataset column ${name} has a type the workflows cannot carry; drop it from the dataset`);
        return { name, type };
      });
      session.dataset = { path: cfg.dataset, columns, rows: rows.map((r) => t.rows[r]), totalRows: t.numRows };
      return session.dataset;
    },
    tokenizer: () => inputs.tokenizer(),
    model: () => inputs.model(log),
    upstream: (name: string): UpstreamOutputs => {
      if (!(def.inputs.stages ?? []).includes(name)) throw new Error(`${def.name} does not declare ${name} as an input`);
      const up = plan.upstream.find((u) => u.label === name);
      if (!up) throw new Error(`${def.name} reads ${name} from each model: use ctx.models`);
      return upstreamOutputs(name, runDir, stageFolder(up.plan.def));
    },
    models: target.models.map((m): ModelOutputs => ({
      model: modelIdForKey(m.cfg.model),
      name: m.name,
      dir: m.runDir,
      self: m === target,
      upstream: (name: string) => {
        const mine = m === target || isStudyStage(def);
        const allowed = mine ? (def.inputs.stages ?? []) : (def.studyInputs?.(cfg.stages[def.name]) ?? []);
        if (!allowed.includes(name)) throw new Error(`${def.name} does not declare ${name} of ${mine ? "its model" : "the other models"} as an input`);
        return upstreamOutputs(name, m.runDir, name);
      },
    })),
    progress: (label, total, initial = 0, unit = "prompts") => new Progress(label, total, initial, { unit }),
    log,
    counts: {},
    info: {},
    extraOutputs: [],
    signal: session.signal,
    checkInterrupted: (done?: string) => {
      if (session.signal.aborted) {
        throw new InterruptedError(`interrupted during ${def.name}${done ? ` (${done} saved)` : ""}; run the same command again to resume`);
      }
    },
  };
}

/** A finished stage's folder, manifest and files. */
function upstreamOutputs(name: string, runDir: string, folder: string): UpstreamOutputs {
  const udir = join(runDir, folder);
  const text = Deno.readTextFileSync(join(udir, "manifest.json"));
  return { name, dir: udir, manifest: JSON.parse(text), file: (f) => join(udir, f) };
}
