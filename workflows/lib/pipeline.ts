// The pipeline: plans which stages must run (lib/plan.ts: cache keys against the manifests on
// disk), says why in one line per stage, and runs them in order (lib/run_stage.ts) with the
// run's shared, lazily loaded inputs (lib/inputs.ts), one run folder at a time (lib/lock.ts).
// Sharded (lib/shard.ts): `--shard i/n` computes shard i of every shardable stage whose inputs
// are ready and writes no output; `--merge` (and a plain run) merges complete shard sets.

import { join, resolve } from "node:path";
import { writeJsonAtomic } from "./atomic.ts";
import { type ConfigOverrides, loadConfig, relOrAbs, type StudyConfig } from "./config.ts";
import { InterruptedError, UserError } from "./errors.ts";
import { RunInputs } from "./inputs.ts";
import { checkRunFolder, lockRunDir, RUN_CONFIG } from "./lock.ts";
import { checkParamsAgainstModel, type Plan, planLines, planStages, type RunTarget, runName, type Selection, selectStages } from "./plan.ts";
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
  return await runModel(sel, cfg, flags, io);
}

/** The inputs that the keys are made of, the row selection and the run folder of one model. */
async function prepareTarget(sel: Selection, cfg: StudyConfig, inputs: RunInputs, out: string | undefined): Promise<RunTarget> {
  // the dataset is always read: its row selection names the run folder
  const table = await inputs.readDataset();
  const rows = selectRows(table.numRows, { rows: cfg.rows, limit: cfg.limit });
  if (rows.length === 0) throw new UserError("the row selection is empty; check --rows / --limit");
  if (sel.stages.some((s) => s.inputs.tokenizer)) await inputs.tokenizerHash();
  if (sel.stages.some((s) => s.inputs.model)) {
    const ckpt = await inputs.checkpoint();
    checkParamsAgainstModel(sel, cfg, ckpt && { family: ckpt.config.family, nLayer: ckpt.config.nLayer });
  }
  const runDir = out ? resolve(Deno.cwd(), out) : join(cfg.outputs, runName(cfg.model, rows, table.numRows));
  await checkRunFolder(runDir); // never a model's folder or another folder's files (a dry run too)
  return { cfg, inputs, runDir, rows };
}

/** One model's run folder: plan every stage, say what runs and why, run those that must. */
async function runModel(sel: Selection, cfg: StudyConfig, flags: PipelineFlags, io: PipelineIO): Promise<number> {
  const dry = flags.dryRun ?? false;
  const shard = flags.shard !== undefined ? parseShard(flags.shard) : undefined;
  if (shard && flags.merge) throw new UserError("use either --shard or --merge, not both");
  const inputs = new RunInputs(cfg, dry, flags.verify ?? false);
  try {
    const target = await prepareTarget(sel, cfg, inputs, flags.out);
    const plans = await planStages(sel, target);
    const toRun = [...plans.values()].filter((p) => p.run);
    io.say(`run folder: ${relOrAbs(target.runDir)} (model ${cfg.model}${cfg.dtype === "f32" ? "" : ` ${cfg.dtype}`}, ${target.rows.length} rows)`);
    for (const line of planLines(plans, dry)) io.say(line);
    for (const p of toRun) for (const set of p.shards) io.say(`${p.def.name}: ${shardSetLine(set)}`);
    if (toRun.length === 0) {
      io.say("nothing to do: every selected stage is up to date");
      return 0;
    }
    if (dry) return 0;
    const commands = new Commands(flags);
    if (shard) await runShards(toRun, plans, target, io, shard, flags.force ?? false, commands);
    else {
      await runPlans(toRun, target, io, flags.merge ? "merge" : flags.force ? "force" : "plain", commands);
      io.say(`outputs in ${relOrAbs(target.runDir)}`);
    }
    return 0;
  } finally {
    inputs.close();
  }
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
 * --shard i/n: shard i of every planned shardable stage whose upstream stages are up to date (one
 * that reads a stage still to be computed or merged waits, and says so); no run-folder lock (each
 * shard has its own), no output, no config.json. Stages that are not shardable are left to the merge.
 */
async function runShards(
  toRun: Plan[],
  plans: Map<string, Plan>,
  target: RunTarget,
  io: PipelineIO,
  shard: ShardSpec,
  force: boolean,
  commands: Commands,
): Promise<void> {
  const label = shardLabel(shard);
  await Deno.mkdir(target.runDir, { recursive: true });
  let computed = 0;
  await withStopSignals(io, async (signal) => {
    const session: RunSession = { signal, say: io.say };
    for (const p of toRun) {
      const name = p.def.name;
      if (signal.aborted) throw new InterruptedError(`interrupted before shard ${label} of ${name}; run the same command again to go on`);
      if (!p.def.shardable) {
        io.say(`${name}: not sharded; the merge runs it`);
        continue;
      }
      const waits = (p.def.inputs.stages ?? []).filter((u) => plans.get(u)!.run);
      if (waits.length) {
        io.say(`${name}: waits for ${waits.join(", ")} to be merged; run this command again after the merge`);
        continue;
      }
      const r = await runShard(p, target, session, shard, force);
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

/**
 * Run the planned stages in order, the run folder locked, Ctrl-C / SIGTERM stopping after the
 * current batch. A shardable stage with a complete shard set is merged from it ("force": computed
 * anew instead); with shards missing, they are listed with the commands that make them and the run
 * stops. "merge" never computes a shardable stage: one without shards (the next step of a sharded
 * run) is said, with its commands, and the stages that read it are left for later.
 */
async function runPlans(toRun: Plan[], target: RunTarget, io: PipelineIO, mode: "plain" | "force" | "merge", commands: Commands): Promise<void> {
  const { cfg, runDir, rows } = target;
  const effectiveConfig = {
    $comment: "effective configuration of the last pipeline run in this folder (each stage's manifest.json has its own)",
    config: relOrAbs(cfg.configPath),
    model: cfg.model,
    dtype: cfg.dtype,
    dataset: relOrAbs(cfg.dataset),
    tokenizer: target.inputs.tokenizerPath ? relOrAbs(target.inputs.tokenizerPath) : undefined,
    rows: formatRows(rows),
    rowCount: rows.length,
    stages: cfg.stages,
    stagesRun: [] as string[],
  };

  await Deno.mkdir(runDir, { recursive: true });
  const unlock = await lockRunDir(runDir);
  try {
    await withStopSignals(io, async (signal) => {
      const session: RunSession = { signal, say: io.say };
      const notDone = new Set<string>();
      let shardCount: number | undefined; // of the last set merged: the count to suggest next
      for (const p of toRun) {
        const name = p.def.name;
        if (signal.aborted) throw new InterruptedError(`interrupted before ${name}; run the same command again to go on`);
        const waits = (p.def.inputs.stages ?? []).filter((u) => notDone.has(u));
        if (waits.length) {
          io.say(`${name}: waits for ${waits.join(", ")}`);
          notDone.add(name);
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
            notDone.add(name);
            continue;
          }
          if (merge) {
            io.say(`${name}: merging shards 0..${merge.count - 1} of ${merge.count} (cache key ${p.key.slice(0, 12)})`);
            shardCount = merge.count;
          }
        } else if (p.def.shardable && p.shards.length) io.say(`${name}: its shards are not used (--force computes it in this process)`);
        const { ctx, manifest, wallS } = await runStage(p, target, session, merge);
        effectiveConfig.stagesRun.push(name);
        await writeJsonAtomic(join(runDir, RUN_CONFIG), effectiveConfig);
        const counts = Object.entries(ctx.counts).map(([k, v]) => `${k} ${v}`).join(", ");
        io.say(`${name}: ${merge ? "merged" : "done"} in ${wallS.toFixed(1)} s${counts ? ` (${counts})` : ""}`);
        io.say(`${name}: time ${profileLine(manifest.profile ?? {})}`);
      }
    });
  } finally {
    unlock();
  }
}

/** Say which shards are missing, with the command that makes each; the error ends the run. */
function incompleteShards(p: Plan, io: PipelineIO, commands: Commands): UserError {
  const name = p.def.name;
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
