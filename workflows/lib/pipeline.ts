// The pipeline: plans which stages must run (lib/plan.ts: cache keys against the manifests on
// disk), says why in one line per stage, and runs them in order (lib/run_stage.ts) with the
// run's shared, lazily loaded inputs (lib/inputs.ts), one run folder at a time (lib/lock.ts).

import { join, resolve } from "node:path";
import { writeJsonAtomic } from "./atomic.ts";
import { type ConfigOverrides, loadConfig, relOrAbs, type StudyConfig } from "./config.ts";
import { InterruptedError, UserError } from "./errors.ts";
import { RunInputs } from "./inputs.ts";
import { lockRunDir } from "./lock.ts";
import { type Plan, planLines, planStages, type RunTarget, runName, type Selection, selectStages } from "./plan.ts";
import { formatRows, selectRows } from "./rows.ts";
import { profileLine, runStage } from "./run_stage.ts";
import type { RunSession } from "./stage_context.ts";
import type { StageDef } from "./stage.ts";

export interface PipelineFlags extends ConfigOverrides {
  config?: string;
  only?: string[];
  from?: string;
  force?: boolean;
  dryRun?: boolean;
  verify?: boolean; // hash the model files in full for their identity
  out?: string;
}

export interface PipelineIO {
  /** one line of the run's story (stdout) */
  say(line: string): void;
}

const defaultIO: PipelineIO = { say: (l) => console.log(l) };

export async function runPipeline(all: StageDef[], flags: PipelineFlags, io: PipelineIO = defaultIO): Promise<number> {
  const sel = selectStages(all, flags);
  const cfg = await loadConfig(all, flags.config, flags);
  return await runModel(sel, cfg, flags, io);
}

/** The inputs that the keys are made of, the row selection and the run folder of one model. */
async function prepareTarget(sel: Selection, cfg: StudyConfig, inputs: RunInputs, out: string | undefined): Promise<RunTarget> {
  // the dataset is always read: its row selection names the run folder
  const table = await inputs.readDataset();
  const rows = selectRows(table.numRows, { rows: cfg.rows, limit: cfg.limit });
  if (rows.length === 0) throw new UserError("the row selection is empty; check --rows / --limit");
  if (sel.stages.some((s) => s.inputs.tokenizer)) await inputs.tokenizerHash();
  if (sel.stages.some((s) => s.inputs.model)) await inputs.checkpoint();
  const runDir = out ? resolve(Deno.cwd(), out) : join(cfg.outputs, runName(cfg.model, rows, table.numRows));
  return { cfg, inputs, runDir, rows };
}

/** One model's run folder: plan every stage, say what runs and why, run those that must. */
async function runModel(sel: Selection, cfg: StudyConfig, flags: PipelineFlags, io: PipelineIO): Promise<number> {
  const dry = flags.dryRun ?? false;
  const inputs = new RunInputs(cfg, dry, flags.verify ?? false);
  try {
    const target = await prepareTarget(sel, cfg, inputs, flags.out);
    const plans = await planStages(sel, target);
    const toRun = [...plans.values()].filter((p) => p.run);
    io.say(`run folder: ${relOrAbs(target.runDir)} (model ${cfg.model}${cfg.dtype === "f32" ? "" : ` ${cfg.dtype}`}, ${target.rows.length} rows)`);
    for (const line of planLines(plans, dry)) io.say(line);
    if (toRun.length === 0) {
      io.say("nothing to do: every selected stage is up to date");
      return 0;
    }
    if (dry) return 0;
    await runPlans(toRun, target, io);
    io.say(`outputs in ${relOrAbs(target.runDir)}`);
    return 0;
  } finally {
    inputs.close();
  }
}

/** Run the planned stages in order, the run folder locked, Ctrl-C / SIGTERM stopping after the current batch. */
async function runPlans(toRun: Plan[], target: RunTarget, io: PipelineIO): Promise<void> {
  const { cfg, runDir, rows } = target;
  const effectiveConfig = {
    $comment: "effective configuration of the last pipeline run in this folder (each stage's manifest.json has its own)",
    config: relOrAbs(cfg.configPath),
    model: cfg.model,
    dtype: cfg.dtype,
    dataset: relOrAbs(cfg.dataset),
    tokenizer: relOrAbs(cfg.tokenizer),
    rows: formatRows(rows),
    rowCount: rows.length,
    stages: cfg.stages,
    stagesRun: [] as string[],
  };

  await Deno.mkdir(runDir, { recursive: true });
  const unlock = await lockRunDir(runDir);
  const controller = new AbortController();
  let signals = 0;
  const onSignal = () => {
    signals++;
    if (signals === 1) {
      io.say("stopping after the current batch (finished work is kept; press Ctrl-C again to quit at once)");
      controller.abort();
    } else {
      Deno.exit(130);
    }
  };
  const sigs: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
  for (const s of sigs) Deno.addSignalListener(s, onSignal);
  try {
    const session: RunSession = { signal: controller.signal, say: io.say };
    for (const p of toRun) {
      if (controller.signal.aborted) throw new InterruptedError(`interrupted before ${p.def.name}; run the same command again to go on`);
      const { ctx, manifest, wallS } = await runStage(p, target, session);
      effectiveConfig.stagesRun.push(p.def.name);
      await writeJsonAtomic(join(runDir, "config.json"), effectiveConfig);
      const counts = Object.entries(ctx.counts).map(([k, v]) => `${k} ${v}`).join(", ");
      io.say(`${p.def.name}: done in ${wallS.toFixed(1)} s${counts ? ` (${counts})` : ""}`);
      io.say(`${p.def.name}: time ${profileLine(manifest.profile ?? {})}`);
    }
  } finally {
    for (const s of sigs) Deno.removeSignalListener(s, onSignal);
    unlock();
  }
}
