// The pipeline: plans which stages must run (lib/plan.ts: cache keys against the manifests on
// disk), says why in one line per stage, and runs them in order (lib/run_stage.ts) with the
// run's shared, lazily loaded inputs (lib/inputs.ts), each run folder locked (lib/lock.ts).
// A study of several models (`models`) runs the model stages once per model, each in that model's
// run folder (cached as for one model), then the study stages (05_compare_models, 06_report) once in
// the study's folder. A model stage that reads the other models (the filter all-models-correct) runs
// after the stages it reads have run for every model; only one model is on the GPU at a time.

import { basename, join, resolve } from "node:path";
import { writeJsonAtomic } from "./atomic.ts";
import { type ConfigOverrides, loadConfig, relOrAbs, type StudyConfig } from "./config.ts";
import { InterruptedError, UserError } from "./errors.ts";
import { RunInputs } from "./inputs.ts";
import { lockRunDir } from "./lock.ts";
import { isStudyStage, type Plan, planLines, planStudy, type RunTarget, runName, type Selection, selectStages, studyName } from "./plan.ts";
import { formatRows, selectRows } from "./rows.ts";
import { runStage } from "./run_stage.ts";
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
  return await runStudy(sel, cfg, flags, io);
}

/** Where a study writes: each model's run folder and the study's folder (one model: the same). */
export interface StudyFolders {
  rows: number[];
  runDirs: string[];
  studyDir: string;
}

/**
 * The folders of a study: default `outputs/<model>[_rows-…]` per model and, with several models,
 * `outputs/study_<a>+<b>[_rows-…]` (or the config's `study`); with `--out DIR`, one model's run folder
 * is DIR, and several models' run folders are inside the study folder DIR.
 */
export async function studyFolders(cfg: StudyConfig, inputs: RunInputs, out: string | undefined): Promise<StudyFolders> {
  // the dataset is always read: its row selection names the run folders
  const table = await inputs.readDataset();
  const rows = selectRows(table.numRows, { rows: cfg.rows, limit: cfg.limit });
  if (rows.length === 0) throw new UserError("the row selection is empty; check --rows / --limit");
  const names = cfg.models.map((m) => runName(m, rows, table.numRows));
  names.forEach((n, i) => {
    const j = names.indexOf(n);
    if (j !== i) throw new UserError(`the models ${relOrAbs(cfg.models[j])} and ${relOrAbs(cfg.models[i])} would share the run folder ${n}; give their folders different names`);
  });
  const study = studyName(cfg.models, rows, table.numRows, cfg.study);
  if (out !== undefined) {
    const dir = resolve(Deno.cwd(), out);
    return { rows, studyDir: dir, runDirs: names.length === 1 && !cfg.study ? [dir] : names.map((n) => join(dir, n)) };
  }
  return { rows, studyDir: join(cfg.outputs, study), runDirs: names.map((n) => join(cfg.outputs, n)) };
}

/** Plan every model's stages and the study's, say what runs and why, run those that must. */
async function runStudy(sel: Selection, cfg: StudyConfig, flags: PipelineFlags, io: PipelineIO): Promise<number> {
  const dry = flags.dryRun ?? false;
  const inputs = cfg.models.map((model) => new RunInputs({ ...cfg, model }, dry, flags.verify ?? false));
  try {
    const folders = await studyFolders(cfg, inputs[0], flags.out);
    const models: RunTarget[] = [];
    for (const [i, model] of cfg.models.entries()) {
      const inp = inputs[i];
      await inp.readDataset();
      if (sel.stages.some((s) => s.inputs.tokenizer)) await inp.tokenizerHash();
      if (sel.stages.some((s) => s.inputs.model)) await inp.checkpoint();
      const dir = folders.runDirs[i];
      models.push({ cfg: { ...cfg, model }, inputs: inp, runDir: dir, rows: folders.rows, name: basename(dir), models });
    }
    const hasStudyStages = sel.stages.some(isStudyStage);
    const study: RunTarget | undefined = hasStudyStages
      ? { cfg, inputs: inputs[0], runDir: folders.studyDir, rows: folders.rows, name: basename(folders.studyDir), models }
      : undefined;
    const plan = await planStudy(sel, models, study);
    const several = models.length > 1;
    for (const [i, t] of models.entries()) {
      io.say(`run folder: ${relOrAbs(t.runDir)} (model ${t.cfg.model}${cfg.dtype === "f32" ? "" : ` ${cfg.dtype}`}, ${t.rows.length} rows)`);
      for (const line of planLines(plan.models[i], dry)) io.say(several ? `  ${line}` : line);
    }
    if (study && plan.study.size) {
      if (several) io.say(`study folder: ${relOrAbs(study.runDir)} (${models.length} models)`);
      for (const line of planLines(plan.study, dry)) io.say(several ? `  ${line}` : line);
    }
    const order = runOrder(plan.models, [...plan.study.values()]);
    const entries = [...plan.study.values()].filter((p) => p.selected && p.def.entry).map((p) => `${p.def.title.split(":")[0]}: ${relOrAbs(join(p.dir, p.def.entry!))}`);
    if (order.length === 0) {
      io.say("nothing to do: every selected stage is up to date");
      for (const e of entries) io.say(e);
      return 0;
    }
    if (dry) return 0;
    await runPlans(order, cfg, io);
    io.say(`outputs in ${relOrAbs(several && study ? study.runDir : models[0].runDir)}`);
    for (const e of entries) io.say(e);
    return 0;
  } finally {
    for (const i of inputs) i.close();
  }
}

/**
 * The order the planned stages run in: a model's stages one model after the other while they read
 * only their own model; a stage that reads every model's (and what reads it) waits until the stages it
 * reads have run for every model; the study's stages last.
 */
export function runOrder(models: Map<string, Plan>[], study: Plan[]): Plan[] {
  const waveOf = new Map<string, number>();
  for (const p of models[0]?.values() ?? []) {
    let w = 0;
    for (const u of p.upstream) {
      const uw = waveOf.get(u.plan.def.name) ?? 0;
      w = Math.max(w, u.label.includes("/") ? uw + 1 : uw); // another model's: after it ran for every model
    }
    waveOf.set(p.def.name, w);
  }
  const waves = Math.max(0, ...waveOf.values()) + 1;
  const out: Plan[] = [];
  for (let w = 0; w < waves; w++) {
    for (const m of models) for (const p of m.values()) if (p.run && waveOf.get(p.def.name) === w) out.push(p);
  }
  return [...out, ...study.filter((p) => p.run)];
}

/** Run the planned stages in order, the run folders locked, Ctrl-C / SIGTERM stopping after the current batch. */
async function runPlans(order: Plan[], cfg: StudyConfig, io: PipelineIO): Promise<void> {
  const targets = [...new Set(order.map((p) => p.target))];
  const effective = new Map(targets.map((t): [string, Record<string, unknown> & { stagesRun: string[] }] => [t.runDir, {
    $comment: "effective configuration of the last pipeline run in this folder (each stage's manifest.json has its own)",
    config: relOrAbs(cfg.configPath),
    model: t.cfg.model,
    ...(cfg.models.length > 1 ? { models: cfg.models } : {}),
    dtype: cfg.dtype,
    dataset: relOrAbs(cfg.dataset),
    tokenizer: relOrAbs(cfg.tokenizer),
    rows: formatRows(t.rows),
    rowCount: t.rows.length,
    stages: cfg.stages,
    stagesRun: [] as string[],
  }]).reverse()); // a study folder that is a model's run folder keeps the model's entry

  const unlocks: (() => void)[] = [];
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
    for (const dir of new Set(targets.map((t) => t.runDir))) {
      await Deno.mkdir(dir, { recursive: true });
      unlocks.push(await lockRunDir(dir));
    }
    const session: RunSession = { signal: controller.signal, say: io.say };
    const several = cfg.models.length > 1;
    let onGpu: RunTarget | undefined;
    for (const p of order) {
      if (controller.signal.aborted) throw new InterruptedError(`interrupted before ${p.def.name}; run the same command again to go on`);
      // one model on the GPU at a time
      if (p.def.inputs.model && onGpu && onGpu !== p.target) onGpu.inputs.unload();
      if (p.def.inputs.model) onGpu = p.target;
      if (p.target.runDir !== session.runDir) session.dataset = undefined; // the slice is per run
      session.runDir = p.target.runDir;
      const { ctx, wallS } = await runStage(p, p.target, session);
      const eff = effective.get(p.target.runDir)!;
      eff.stagesRun.push(p.def.name);
      await writeJsonAtomic(join(p.target.runDir, "config.json"), eff);
      const counts = Object.entries(ctx.counts).map(([k, v]) => `${k} ${v}`).join(", ");
      const where = several ? ` [${isStudyStage(p.def) ? "study" : p.target.name}]` : "";
      io.say(`${p.def.name}${where}: done in ${wallS.toFixed(1)} s${counts ? ` (${counts})` : ""}`);
    }
  } finally {
    for (const s of sigs) Deno.removeSignalListener(s, onSignal);
    for (const u of unlocks) u();
  }
}
