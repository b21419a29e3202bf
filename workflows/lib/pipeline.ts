// The pipeline: plans which stages must run (lib/plan.ts: cache keys against the manifests on
// disk), says why in one line per stage, and runs them in order (lib/run_stage.ts) with the
// run's shared, lazily loaded inputs (lib/inputs.ts), each run folder locked (lib/lock.ts).
// A study of several models (`models`) runs the model stages once per model, each in that model's
// run folder (cached as for one model), then the study stages (05_compare_models, 06_report) once in
// the study's folder. A model stage that reads the other models (the filter all-models-correct) runs
// after the stages it reads have run for every model; only one model is on the GPU at a time.
// Sharded (lib/shard.ts): `--shard i/n` computes shard i of every shardable model stage of every
// model whose inputs are ready and writes no output; `--merge` (and a plain run) merges complete
// shard sets, runs the stages that are not sharded and, once every model's stages are done, the
// study stages (they are never sharded: they only read the models' outputs).

import { basename, join, resolve } from "node:path";
import { familyOf } from "../../engine/families.ts";
import { writeJsonAtomic } from "./atomic.ts";
import { type ConfigOverrides, loadConfig, relOrAbs, type StudyConfig } from "./config.ts";
import { InterruptedError, UserError } from "./errors.ts";
import { DatasetSource, RunInputs } from "./inputs.ts";
import { checkRunFolder, lockRunDir, RUN_CONFIG } from "./lock.ts";
import {
  checkParamsAgainstModel,
  isStudyStage,
  type Plan,
  planLines,
  planStudy,
  type RunTarget,
  runName,
  type Selection,
  selectStages,
  stageFolder,
  studyName,
} from "./plan.ts";
import { formatRows, selectRows } from "./rows.ts";
import { runShard } from "./run_shard.ts";
import { profileLine, runStage } from "./run_stage.ts";
import { completeSet, describeMissing, missingShards, parseShard, shardLabel, shardRecords, type ShardSet, type ShardSpec, shardsRoot } from "./shard.ts";
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
  /** `i/n`: compute shard i of n of the shardable stages (no outputs) */
  shard?: string;
  /** merge complete shard sets; never compute a shardable stage in this process */
  merge?: boolean;
  /** the command as typed (`deno task pipeline` + its arguments), for the commands that make missing shards */
  command?: { name: string; args: string[] };
}

export interface PipelineIO {
  /** one line of the run's story (stdout) */
  say(line: string): void;
}

const defaultIO: PipelineIO = { say: (l) => console.log(l) };

export async function runPipeline(all: StageDef[], flags: PipelineFlags, io: PipelineIO = defaultIO): Promise<number> {
  const sel = selectStages(all, flags);
  const cfg = await loadConfig(all, flags.config, flags);
  return await runStudy(sel, all, cfg, flags, io);
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

/** Plan every model's stages and the study's, say what runs and why, run those that must (or one shard of them). */
async function runStudy(sel: Selection, all: StageDef[], cfg: StudyConfig, flags: PipelineFlags, io: PipelineIO): Promise<number> {
  const dry = flags.dryRun ?? false;
  const shard = flags.shard !== undefined ? parseShard(flags.shard) : undefined;
  if (shard && flags.merge) throw new UserError("use either --shard or --merge, not both");
  const dataset = new DatasetSource(cfg.dataset); // one dataset for every model of the study
  const inputs = cfg.models.map((model) => new RunInputs({ ...cfg, model }, dry, flags.verify ?? false, dataset));
  try {
    const folders = await studyFolders(cfg, inputs[0], flags.out);
    // what a study folder holds besides stage folders: the study stages' own folders (report/) and,
    // with --out, the models' run folders
    const studyEntries = [...all.filter(isStudyStage).map(stageFolder), ...folders.runDirs.filter((d) => join(folders.studyDir, basename(d)) === d).map((d) => basename(d))];
    const models: RunTarget[] = [];
    for (const [i, model] of cfg.models.entries()) {
      const inp = inputs[i];
      await inp.readDataset();
      if (sel.stages.some((s) => s.inputs.tokenizer)) await inp.tokenizerHash(); // each model's own tokenizer
      if (sel.stages.some((s) => s.inputs.model)) {
        const ckpt = await inp.checkpoint();
        checkParamsAgainstModel(sel, cfg, ckpt && { family: ckpt.config.family, nLayer: ckpt.config.nLayer, ...familyOf(ckpt.config).units(ckpt.config) });
      }
      const dir = folders.runDirs[i];
      // never a model's folder or another folder's files (a dry run too)
      await checkRunFolder(dir, dir === folders.studyDir ? studyEntries : []);
      models.push({ cfg: { ...cfg, model }, inputs: inp, runDir: dir, rows: folders.rows, name: basename(dir), models });
    }
    const hasStudyStages = sel.stages.some(isStudyStage);
    const study: RunTarget | undefined = hasStudyStages
      ? { cfg, inputs: inputs[0], runDir: folders.studyDir, rows: folders.rows, name: basename(folders.studyDir), models }
      : undefined;
    if (study && !folders.runDirs.includes(study.runDir)) await checkRunFolder(study.runDir, studyEntries);
    const plan = await planStudy(sel, models, study);
    const several = models.length > 1;
    const indent = (line: string) => several ? `  ${line}` : line;
    for (const [i, t] of models.entries()) {
      io.say(`run folder: ${relOrAbs(t.runDir)} (model ${t.cfg.model}${cfg.dtype === "f32" ? "" : ` ${cfg.dtype}`}, ${t.rows.length} rows)`);
      for (const line of planLines(plan.models[i], dry)) io.say(indent(line));
      for (const p of plan.models[i].values()) {
        if (p.run) for (const set of p.shards) io.say(indent(`${p.def.name}: ${shardSetLine(set)}`));
      }
    }
    if (study && plan.study.size) {
      if (several) io.say(`study folder: ${relOrAbs(study.runDir)} (${models.length} models)`);
      for (const line of planLines(plan.study, dry)) io.say(indent(line));
    }
    const order = runOrder(plan.models, [...plan.study.values()]);
    const entries = (notDone: Set<Plan>) =>
      [...plan.study.values()].filter((p) => p.selected && p.def.entry && !notDone.has(p)).map((p) => `${p.def.title.split(":")[0]}: ${relOrAbs(join(p.dir, p.def.entry!))}`);
    if (order.length === 0) {
      io.say("nothing to do: every selected stage is up to date");
      for (const e of entries(new Set())) io.say(e);
      return 0;
    }
    if (dry) return 0;
    const commands = new Commands(flags);
    if (shard) await runShards(order, io, shard, flags.force ?? false, commands);
    else {
      const notDone = await runPlans(order, cfg, io, flags.merge ? "merge" : flags.force ? "force" : "plain", commands);
      io.say(`outputs in ${relOrAbs(several && study ? study.runDir : models[0].runDir)}`);
      for (const e of entries(notDone)) io.say(e);
    }
    return 0;
  } finally {
    for (const i of inputs) i.close();
  }
}

/** A stage's name in the run's story: with several models, whose run (or the study's) it is. */
function stageLabel(p: Plan): string {
  return p.target.models.length > 1 ? `${p.def.name} [${isStudyStage(p.def) ? "study" : p.target.name}]` : p.def.name;
}

function shardSetLine(set: ShardSet): string {
  const missing = missingShards(set);
  return `shards ${set.complete.size} of ${set.count} complete` + (missing.length ? ` (missing ${missing.join(", ")})` : "");
}

/** The commands to print: the one typed, with --shard i/n instead of --merge/--shard/--force/--dry-run. */
class Commands {
  private readonly name: string;
  private readonly args: string[];
  constructor(flags: PipelineFlags) {
    this.name = flags.command?.name ?? "deno task pipeline";
    const args: string[] = [];
    const given = flags.command?.args ?? [];
    for (let i = 0; i < given.length; i++) {
      const a = given[i];
      if (a === "--shard") i++;
      else if (!/^--(shard=.*|merge|force|dry-run)$/.test(a)) args.push(a);
    }
    this.args = args;
  }
  line(extra: string[]): string {
    return [this.name, ...[...this.args, ...extra].map(shellWord)].join(" ");
  }
  shard(s: ShardSpec): string {
    return this.line(["--shard", shardLabel(s)]);
  }
  merge(): string {
    return this.line(["--merge"]);
  }
}

function shellWord(w: string): string {
  return /^[A-Za-z0-9_.,:\/=+@%-]+$/.test(w) ? w : `'${w.replaceAll("'", `'\\''`)}'`;
}

/** Ctrl-C / SIGTERM stop the run after the current batch (a second one quits at once). */
async function withStopSignals<T>(io: PipelineIO, body: (signal: AbortSignal) => Promise<T>): Promise<T> {
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
    return await body(controller.signal);
  } finally {
    for (const s of sigs) Deno.removeSignalListener(s, onSignal);
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

/**
 * Before a stage of a model's run: one model on the GPU at a time (the one on it is unloaded when a
 * stage needs another), and the session's dataset slice is per run folder. Returns the run whose
 * model is on the GPU now.
 */
function enterRun(p: Plan, session: RunSession, onGpu: RunTarget | undefined): RunTarget | undefined {
  if (p.def.inputs.model && onGpu && onGpu !== p.target) onGpu.inputs.unload();
  if (p.target.runDir !== session.runDir) session.dataset = undefined;
  session.runDir = p.target.runDir;
  return p.def.inputs.model ? p.target : onGpu;
}

/**
 * --shard i/n: shard i of every planned shardable stage of every model whose upstream stages are up
 * to date (one that reads a stage still to be computed or merged, its own model's or another's,
 * waits, and says so); no run-folder lock (each shard has its own), no output, no run.config.json.
 * Stages that are not shardable, the study's among them, are left to the merge. One model on the
 * GPU at a time.
 */
async function runShards(order: Plan[], io: PipelineIO, shard: ShardSpec, force: boolean, commands: Commands): Promise<void> {
  const label = shardLabel(shard);
  let computed = 0;
  await withStopSignals(io, async (signal) => {
    const session: RunSession = { signal, say: io.say };
    let onGpu: RunTarget | undefined;
    for (const p of order) {
      const name = stageLabel(p);
      if (signal.aborted) throw new InterruptedError(`interrupted before shard ${label} of ${name}; run the same command again to go on`);
      if (!p.def.shardable) {
        io.say(`${name}: not sharded; the merge runs it`);
        continue;
      }
      const waits = [...new Set(p.upstream.filter((u) => u.plan.run).map((u) => u.label))];
      if (waits.length) {
        io.say(`${name}: waits for ${waits.join(", ")} to be merged; run this command again after the merge`);
        continue;
      }
      onGpu = enterRun(p, session, onGpu);
      await Deno.mkdir(p.target.runDir, { recursive: true });
      const r = await runShard(p, p.target, session, shard, force);
      computed++;
      io.say(
        r.skipped
          ? `${name}: shard ${label} is complete already, kept (--force recomputes it)`
          : `${name}: shard ${label} done in ${r.marker.wallTimeS.toFixed(1)} s (${shardRecords(r.marker)} prompts, on ${r.marker.adapter})`,
      );
    }
  });
  if (computed === 0) io.say(`no shard to compute here yet`);
  io.say(`next, once all ${shard.count} shards are complete: ${commands.merge()}`);
}

/** What run.config.json of a run (or study) folder says: the effective configuration of its last run. */
function effectiveConfig(t: RunTarget, cfg: StudyConfig): Record<string, unknown> & { stagesRun: string[] } {
  const isModel = t.models.includes(t);
  const several = cfg.models.length > 1;
  const tok = (r: RunTarget) => r.inputs.tokenizerPath ? relOrAbs(r.inputs.tokenizerPath) : undefined;
  return {
    $comment: "effective configuration of the last pipeline run in this folder (each stage's manifest.json has its own)",
    config: relOrAbs(cfg.configPath),
    model: isModel ? t.cfg.model : undefined,
    ...(several ? { models: cfg.models } : {}),
    dtype: cfg.dtype,
    dataset: relOrAbs(cfg.dataset),
    // each model's own tokenizer (lib/inputs.ts resolveTokenizer)
    ...(isModel ? { tokenizer: tok(t) } : { tokenizers: t.models.map(tok) }),
    rows: formatRows(t.rows),
    rowCount: t.rows.length,
    stages: cfg.stages,
    stagesRun: [] as string[],
  };
}

/**
 * Run the planned stages in order, every run folder they write locked, Ctrl-C / SIGTERM stopping
 * after the current batch; one model on the GPU at a time. A shardable stage with a complete shard
 * set is merged from it ("force": computed anew instead); with shards missing, they are listed with
 * the commands that make them and the run stops. "merge" never computes a shardable stage: one
 * without shards (the next step of a sharded run) is said, with its commands, and the stages that
 * read it (its own model's, other models' through a study filter, the study's) are left for later.
 * Returns the planned stages left for later.
 */
async function runPlans(order: Plan[], cfg: StudyConfig, io: PipelineIO, mode: "plain" | "force" | "merge", commands: Commands): Promise<Set<Plan>> {
  const targets = [...new Set(order.map((p) => p.target))];
  // a study folder that is a model's run folder keeps the model's entry
  const effective = new Map(targets.map((t): [string, ReturnType<typeof effectiveConfig>] => [t.runDir, effectiveConfig(t, cfg)]).reverse());
  const notDone = new Set<Plan>();
  const unlocks: (() => void)[] = [];
  try {
    for (const dir of new Set(targets.map((t) => t.runDir))) {
      await Deno.mkdir(dir, { recursive: true });
      unlocks.push(await lockRunDir(dir));
    }
    await withStopSignals(io, async (signal) => {
      const session: RunSession = { signal, say: io.say };
      let shardCount: number | undefined; // of the last set merged: the count to suggest next
      let onGpu: RunTarget | undefined;
      for (const p of order) {
        const name = stageLabel(p);
        if (signal.aborted) throw new InterruptedError(`interrupted before ${name}; run the same command again to go on`);
        const waits = [...new Set(p.upstream.filter((u) => notDone.has(u.plan)).map((u) => u.label))];
        if (waits.length) {
          io.say(`${name}: waits for ${waits.join(", ")}`);
          notDone.add(p);
          continue;
        }
        let merge: ShardSet | undefined;
        if (p.def.shardable && mode !== "force") {
          merge = completeSet(p.shards);
          if (!merge && p.shards.length) throw incompleteShards(p, io, commands);
          if (!merge && mode === "merge") {
            const n = shardCount;
            io.say(`${name}: no shards yet (nothing is computed by --merge); make them, one process (GPU) each, then merge again:`);
            io.say(`  ${commands.line(["--shard", `I/${n ?? "N"}`])}   for I = 0 … ${n !== undefined ? n - 1 : "N-1"}`);
            notDone.add(p);
            continue;
          }
          if (merge) {
            io.say(`${name}: merging shards 0..${merge.count - 1} of ${merge.count} (cache key ${p.key.slice(0, 12)})`);
            shardCount = merge.count;
          }
        } else if (p.def.shardable && p.shards.length) io.say(`${name}: its shards are not used (--force computes it in this process)`);
        onGpu = enterRun(p, session, onGpu);
        const { ctx, manifest, wallS } = await runStage(p, p.target, session, merge);
        const eff = effective.get(p.target.runDir)!;
        eff.stagesRun.push(p.def.name);
        await writeJsonAtomic(join(p.target.runDir, RUN_CONFIG), eff);
        const counts = Object.entries(ctx.counts).map(([k, v]) => `${k} ${v}`).join(", ");
        io.say(`${name}: ${merge ? "merged" : "done"} in ${wallS.toFixed(1)} s${counts ? ` (${counts})` : ""}`);
        io.say(`${name}: time ${profileLine(manifest.profile ?? {})}`);
      }
    });
  } finally {
    for (const u of unlocks) u();
  }
  return notDone;
}

/** Say which shards are missing, with the command that makes each; the error ends the run. */
function incompleteShards(p: Plan, io: PipelineIO, commands: Commands): UserError {
  const name = stageLabel(p);
  io.say(`${name}: no complete shard set for its cache key ${p.key.slice(0, 12)} (${relOrAbs(shardsRoot(p.dir, p.key))}):`);
  for (const set of p.shards) {
    for (const line of describeMissing(set)) io.say(`  ${line}`);
  }
  io.say(`make the missing shards (each command resumes its shard where it stopped):`);
  for (const set of p.shards) {
    for (const i of missingShards(set)) io.say(`  ${commands.shard({ index: i, count: set.count })}`);
  }
  const set = p.shards.reduce((a, b) => (b.complete.size / b.count > a.complete.size / a.count ? b : a));
  return new UserError(
    `${name}: shards ${missingShards(set).join(", ")} of ${set.count} are missing; make them (commands above) and merge again, ` +
      `or remove ${relOrAbs(join(p.dir, "shards"))} to compute the stage in one process`,
  );
}
