// The pipeline: plans which stages must run (cache keys against the manifests on disk), says
// why in one line per stage, and runs them in order with shared, lazily loaded inputs.

import { basename, join, relative, resolve } from "node:path";
import { Progress } from "../../engine/progress.ts";
import { loadTokenizer, type TextTokenizer } from "../../engine/tokenizer.ts";
import { exists, removeStaleTemps, writeJsonAtomic } from "./atomic.ts";
import { type ConfigOverrides, loadConfig, REPO_ROOT, type StudyConfig } from "./config.ts";
import { type Checkpoint, type LoadedModel, loadModel, openModel, unloadModel } from "./engine.ts";
import { errorLine, InterruptedError, UserError } from "./errors.ts";
import { hashFile, hashModuleTree, hashValue, sha256 } from "./hash.ts";
import { readParquet, type Table } from "./parquet.ts";
import { formatRows, selectRows } from "./rows.ts";
import type { DatasetSlice, KeyMaterial, Manifest, OutputRecord, Params, StageContext, StageDef, UpstreamOutputs } from "./stage.ts";

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

export function outputsOf(def: StageDef, params: Params): string[] {
  // deno-lint-ignore no-explicit-any
  return typeof def.outputs === "function" ? (def.outputs as any)(params) : def.outputs;
}

/** Check the registry: names match NN_name, upstream stages exist and come earlier. */
export function checkStages(stages: StageDef[]): void {
  const seen = new Set<string>();
  for (const s of stages) {
    if (!/^\d\d_[a-z0-9_]+$/.test(s.name)) throw new Error(`stage name ${s.name} is not of the form NN_name`);
    for (const up of s.inputs.stages ?? []) {
      if (!seen.has(up)) throw new Error(`stage ${s.name} reads ${up}, which is not an earlier stage`);
    }
    seen.add(s.name);
  }
}

function short(key: string): string {
  return key.slice(0, 12);
}

function fmtValue(v: unknown): string {
  return typeof v === "string" ? JSON.stringify(v) : String(v);
}

/** Why `now` differs from what the manifest was made from (empty when the keys agree). */
function keyDiff(old: Manifest, now: KeyMaterial): string[] {
  const r: string[] = [];
  if (old.version !== now.version) r.push(`code version changed (${old.version} → ${now.version})`);
  else if (old.codeSha256 !== now.codeSha256) r.push(`code of ${now.stage}.ts or the workflow code it imports changed`);
  const keys = new Set([...Object.keys(old.params ?? {}), ...Object.keys(now.params)]);
  for (const k of [...keys].sort()) {
    const a = old.params?.[k], b = now.params[k];
    if (a !== b) r.push(`parameter ${k} changed (${a === undefined ? "unset" : fmtValue(a)} → ${b === undefined ? "unset" : fmtValue(b)})`);
  }
  const oi = old.inputs ?? {}, ni = now.inputs;
  if (ni.dataset) {
    if (oi.dataset?.sha256 !== ni.dataset.sha256) r.push("dataset changed");
    if (oi.dataset?.rows !== ni.dataset.rows) r.push(`row selection changed (${oi.dataset?.rows ?? "?"} → ${ni.dataset.rows})`);
  }
  if (ni.tokenizer && oi.tokenizer?.sha256 !== ni.tokenizer.sha256) r.push("tokenizer changed");
  if (ni.model) {
    if (oi.model?.id !== ni.model.id) r.push(`model changed (${oi.model?.id ?? "?"} → ${ni.model.id})`);
    else if (oi.model?.identity !== ni.model.identity) r.push("model weights changed");
    if (oi.model?.dtype !== ni.model.dtype) r.push(`dtype changed (${oi.model?.dtype ?? "?"} → ${ni.model.dtype})`);
  }
  for (const [up, key] of Object.entries(ni.upstream ?? {})) {
    if (oi.upstream?.[up] !== key) r.push(`upstream ${up} changed`);
  }
  return r;
}

/** The part of the key material that identifies the work (paths are left out: moving a file changes nothing). */
function cacheKeyOf(m: KeyMaterial): string {
  const i = m.inputs;
  return hashValue({
    stage: m.stage,
    version: m.version,
    codeSha256: m.codeSha256,
    params: m.params,
    dataset: i.dataset ? { sha256: i.dataset.sha256, rows: i.dataset.rows } : undefined,
    tokenizer: i.tokenizer ? { sha256: i.tokenizer.sha256 } : undefined,
    model: i.model,
    upstream: i.upstream,
  });
}

async function readManifest(dir: string): Promise<Manifest | null | "unreadable"> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(dir, "manifest.json"));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    return "unreadable";
  }
  try {
    const m = JSON.parse(text) as Manifest;
    return typeof m?.cacheKey === "string" && typeof m.outputs === "object" ? m : "unreadable";
  } catch {
    return "unreadable";
  }
}

async function outputRecord(path: string): Promise<OutputRecord> {
  const st = await Deno.stat(path);
  return { bytes: st.size, sha256: await hashFile(path) };
}

/** Problems with the outputs a manifest lists (missing, changed since). */
async function outputProblems(dir: string, m: Manifest, expected: string[]): Promise<string[]> {
  const r: string[] = [];
  for (const f of expected) {
    const rec = m.outputs[f];
    const p = join(dir, f);
    if (!rec) {
      r.push(`output ${f} is not in the manifest`);
      continue;
    }
    if (!(await exists(p))) {
      r.push(`output ${f} is missing`);
      continue;
    }
    const st = await Deno.stat(p);
    if (st.size !== rec.bytes || (await hashFile(p)) !== rec.sha256) r.push(`output ${f} was modified`);
  }
  return r;
}

/** `state-spaces/mamba2-1.3b` → `mamba2-1.3b`; a folder → its name; plus the row selection when partial. */
export function runName(model: string, rows: number[], totalRows: number): string {
  const base = basename(model.replace(/[\\/]+$/, "")).replace(/[^A-Za-z0-9._-]/g, "_") || "model";
  if (rows.length === totalRows) return base;
  const spec = formatRows(rows);
  return `${base}_rows-${spec.length <= 40 ? spec : sha256(spec).slice(0, 12)}`;
}

function modelIdForKey(model: string): string {
  if (model.startsWith("/")) {
    const rel = relative(REPO_ROOT, model);
    return rel.startsWith("..") ? model : rel;
  }
  return model;
}

let engineHashCache: string | undefined;
async function engineSha256(): Promise<string> {
  if (engineHashCache) return engineHashCache;
  const parts: string[] = [];
  for (const sub of ["engine", "kernels"]) {
    const walk = async (dir: string) => {
      const entries: Deno.DirEntry[] = [];
      try {
        for await (const e of Deno.readDir(dir)) entries.push(e);
      } catch {
        return;
      }
      entries.sort((a, b) => a.name < b.name ? -1 : 1);
      for (const e of entries) {
        const p = join(dir, e.name);
        if (e.isDirectory) await walk(p);
        else if (/\.(ts|wgsl)$/.test(e.name)) parts.push(`${relative(REPO_ROOT, p)}:${await hashFile(p)}`);
      }
    };
    await walk(join(REPO_ROOT, sub));
  }
  engineHashCache = sha256(parts.join("\n"));
  return engineHashCache;
}

interface Plan {
  def: StageDef;
  material: KeyMaterial;
  key: string;
  selected: boolean;
  run: boolean;
  reasons: string[];
  upToDate: boolean;
  /** engine/ or kernels/ changed since the kept output was computed (not in the key: said, not rerun) */
  engineChanged: boolean;
}

/** Shared inputs of one pipeline invocation, each read or loaded once, when first needed. */
class Inputs {
  table?: Table;
  datasetSha?: string;
  tokenizerSha?: string;
  ckpt?: Checkpoint;
  ckptError?: string;
  private tok?: Promise<TextTokenizer>;
  private loaded?: LoadedModel;
  private loading?: Promise<LoadedModel>;

  constructor(readonly cfg: StudyConfig, readonly dryRun: boolean, readonly verify = false) {}

  async readDataset(): Promise<Table> {
    if (this.table) return this.table;
    const p = this.cfg.dataset;
    if (!(await exists(p))) {
      throw new UserError(`dataset ${relOrAbs(p)} does not exist; pass --dataset FILE or fix "dataset" in the config`);
    }
    this.table = await readParquet(p);
    this.datasetSha = await hashFile(p);
    return this.table;
  }

  async tokenizerHash(): Promise<string> {
    if (this.tokenizerSha) return this.tokenizerSha;
    const p = this.cfg.tokenizer;
    if (!(await exists(p))) throw new UserError(`tokenizer ${relOrAbs(p)} does not exist; pass --tokenizer FILE or fix "tokenizer" in the config`);
    // a FIFO or device would block the hash below: only a regular file can be a tokenizer
    if (!(await Deno.stat(p)).isFile) throw new UserError(`tokenizer ${relOrAbs(p)} is not a regular file; point --tokenizer at the file itself`);
    this.tokenizerSha = await hashFile(p);
    return this.tokenizerSha;
  }

  tokenizer(): Promise<TextTokenizer> {
    this.tok ??= loadTokenizer(this.cfg.tokenizer);
    return this.tok;
  }

  /** Open the checkpoint (not the weights): its content identity goes into the cache keys. */
  async checkpoint(): Promise<Checkpoint | undefined> {
    if (this.ckpt || this.ckptError) return this.ckpt;
    const local = this.cfg.model.startsWith("/");
    try {
      this.ckpt = await openModel(this.cfg.model, { offline: this.dryRun, verify: this.verify });
    } catch (e) {
      // a dry run does not download: a hub model not cached yet is "would run", not an error
      if (this.dryRun && !local) {
        this.ckptError = errorLine(e);
        return undefined;
      }
      throw new UserError(aboutModel("cannot open model", this.cfg.model, errorLine(e)));
    }
    return this.ckpt;
  }

  async model(log: (m: string) => void): Promise<LoadedModel> {
    if (this.loaded && !this.loaded.lost()) return this.loaded;
    if (this.loaded) {
      log("the GPU device was lost; creating a new device and reloading the model");
      unloadModel(this.loaded);
      this.loaded = undefined;
      this.loading = undefined;
    }
    const ckpt = await this.checkpoint();
    if (!ckpt) throw new UserError(`model ${this.cfg.model} is not available: ${this.ckptError}`);
    this.loading ??= loadModel(ckpt, { dtype: this.cfg.dtype }).catch((e) => {
      this.loading = undefined;
      throw new UserError(aboutModel("cannot load model", this.cfg.model, errorLine(e)));
    });
    this.loaded = await this.loading;
    return this.loaded;
  }

  adapterInfo(): string | undefined {
    return this.loaded?.adapterInfo;
  }

  close(): void {
    if (this.loaded) unloadModel(this.loaded);
    try {
      this.ckpt?.close();
    } catch {
      // already closed
    }
  }
}

function processAlive(pid: number): boolean {
  if (Deno.build.os !== "linux") return true; // no cheap check elsewhere: the message says how to clear the lock
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** One pipeline at a time per run folder; a lock left by a process that is gone is taken over. */
async function lockRunDir(runDir: string): Promise<() => void> {
  const path = join(runDir, ".lock");
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const f = await Deno.open(path, { write: true, createNew: true });
      await f.write(new TextEncoder().encode(`${Deno.pid}\n`));
      f.close();
      return () => {
        try {
          Deno.removeSync(path);
        } catch {
          // already gone
        }
      };
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      const pid = Number((await Deno.readTextFile(path).catch(() => "")).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== Deno.pid && processAlive(pid)) {
        throw new UserError(
          `another pipeline run (pid ${pid}) is writing to ${relOrAbs(runDir)}; wait for it, or pass --out DIR for a separate run folder (remove ${relOrAbs(path)} if no run is going on)`,
        );
      }
      await Deno.remove(path).catch(() => {}); // its process is gone
    }
  }
  throw new UserError(`cannot lock ${relOrAbs(runDir)}; remove ${relOrAbs(path)} if no pipeline run is going on`);
}

/** "cannot open model X: why", without naming X twice when the reason already does. */
function aboutModel(what: string, model: string, why: string): string {
  return why.includes(model) ? `${what}: ${why}` : `${what} ${model}: ${why}`;
}

function relOrAbs(p: string): string {
  const r = relative(Deno.cwd(), p);
  return r.startsWith("..") ? p : r;
}

export async function runPipeline(all: StageDef[], flags: PipelineFlags, io: PipelineIO = defaultIO): Promise<number> {
  checkStages(all);
  const names = all.map((s) => s.name);
  const known = names.join(", ");
  for (const n of flags.only ?? []) {
    if (!names.includes(n)) throw new UserError(`unknown stage "${n}"; stages are ${known}`);
  }
  if (flags.from !== undefined && !names.includes(flags.from)) throw new UserError(`unknown stage "${flags.from}"; stages are ${known}`);
  if (flags.from !== undefined && flags.only?.length) throw new UserError("use either --only or --from, not both");

  const cfg = await loadConfig(all, flags.config, flags);
  const fromIdx = flags.from !== undefined ? names.indexOf(flags.from) : -1;
  const selected = new Set(
    flags.only?.length ? flags.only : fromIdx >= 0 ? names.slice(fromIdx) : names,
  );
  // every stage whose key is needed: the selected ones and everything upstream of them
  const needed = new Set<string>();
  const addNeeded = (n: string) => {
    if (needed.has(n)) return;
    needed.add(n);
    for (const up of all.find((s) => s.name === n)!.inputs.stages ?? []) addNeeded(up);
  };
  for (const n of selected) addNeeded(n);
  const stages = all.filter((s) => needed.has(s.name));

  const inputs = new Inputs(cfg, flags.dryRun ?? false, flags.verify ?? false);
  try {
    // the inputs that the keys are made of
    // the dataset is always read: its row selection names the run folder
    const table = await inputs.readDataset();
    const totalRows = table.numRows;
    const rows = selectRows(totalRows, { rows: cfg.rows, limit: cfg.limit });
    if (rows.length === 0) throw new UserError("the row selection is empty; check --rows / --limit");
    const rowsSpec = formatRows(rows);
    const needTok = stages.some((s) => s.inputs.tokenizer);
    if (needTok) await inputs.tokenizerHash();
    const needModel = stages.some((s) => s.inputs.model);
    if (needModel) await inputs.checkpoint();

    const runDir = flags.out ? resolve(Deno.cwd(), flags.out) : join(cfg.outputs, runName(cfg.model, rows, totalRows));

    // plan
    const plans = new Map<string, Plan>();
    for (const def of stages) {
      const codeSha256 = await hashModuleTree(new URL(def.module).pathname, join(REPO_ROOT, "workflows") + "/");
      const params = cfg.stages[def.name];
      const material: KeyMaterial = { stage: def.name, version: def.version, codeSha256, params, inputs: {} };
      if (def.inputs.dataset) {
        material.inputs.dataset = { path: relOrAbs(cfg.dataset), sha256: inputs.datasetSha!, rows: rowsSpec, rowCount: rows.length };
      }
      if (def.inputs.tokenizer) material.inputs.tokenizer = { path: relOrAbs(cfg.tokenizer), sha256: inputs.tokenizerSha! };
      if (def.inputs.model) {
        material.inputs.model = { id: modelIdForKey(cfg.model), identity: inputs.ckpt?.identity ?? "(not downloaded)", dtype: cfg.dtype };
      }
      if (def.inputs.stages?.length) {
        material.inputs.upstream = Object.fromEntries(def.inputs.stages.map((u) => [u, plans.get(u)!.key]));
      }
      const key = cacheKeyOf(material);
      const dir = join(runDir, def.name);
      const old = await readManifest(dir);
      let reasons: string[];
      if (old === null) reasons = ["no earlier output"];
      else if (old === "unreadable") reasons = ["its manifest.json is unreadable"];
      else if (old.cacheKey !== key) {
        reasons = keyDiff(old, material);
        if (reasons.length === 0) reasons = ["cache key changed"];
      } else reasons = await outputProblems(dir, old, [...new Set([...outputsOf(def, params), ...Object.keys(old.outputs)])]);
      if (def.inputs.model && !inputs.ckpt) reasons.push(`model not downloaded yet (${inputs.ckptError})`);
      const upToDate = reasons.length === 0;
      const isSel = selected.has(def.name);
      let run = false;
      const why: string[] = [];
      if (isSel) {
        if (flags.force) why.push("forced (--force)");
        else if (fromIdx >= 0 && def.name === flags.from) why.push(`forced (--from ${flags.from})`);
        why.push(...reasons);
        for (const up of def.inputs.stages ?? []) {
          const u = plans.get(up)!;
          if (u.run && !why.some((w) => w.startsWith(`upstream ${up}`))) why.push(`upstream ${up} reruns`);
        }
        if (fromIdx >= 0 && names.indexOf(def.name) > fromIdx && why.length === 0) why.push(`after ${flags.from} (--from)`);
        run = why.length > 0;
      }
      const engineChanged = upToDate && !!def.inputs.model && typeof old === "object" && old !== null &&
        old.engine?.engineSha256 !== undefined && old.engine.engineSha256 !== await engineSha256();
      plans.set(def.name, { def, material, key, selected: isSel, run, reasons: isSel ? why : reasons, upToDate, engineChanged });
    }
    // a stage that is not selected but is read by one that runs must be up to date
    for (const p of plans.values()) {
      if (!p.run) continue;
      for (const up of p.def.inputs.stages ?? []) {
        const u = plans.get(up)!;
        if (!u.selected && !u.upToDate) {
          throw new UserError(
            `${p.def.name} needs ${up}, which is not up to date (${u.reasons[0]}); run ${up} first (deno task stage ${up}) or the whole pipeline`,
          );
        }
      }
    }

    const dry = flags.dryRun ?? false;
    const toRun = [...plans.values()].filter((p) => p.run);
    io.say(`run folder: ${relOrAbs(runDir)} (model ${cfg.model}${cfg.dtype === "f32" ? "" : ` ${cfg.dtype}`}, ${rows.length} rows)`);
    for (const p of plans.values()) {
      if (!p.selected) continue;
      if (p.run) io.say(`${p.def.name}: ${dry ? "would run" : "runs"}: ${p.reasons.join("; ")}`);
      else {
        io.say(`${p.def.name}: up to date, skipped (cache key ${short(p.key)})` +
          (p.engineChanged ? "; note: the engine code changed since it ran (--force recomputes it)" : ""));
      }
    }
    if (toRun.length === 0) {
      io.say("nothing to do: every selected stage is up to date");
      return 0;
    }
    if (dry) return 0;

    // run
    const effectiveConfig = {
      $comment: "effective configuration of the last pipeline run in this folder (each stage's manifest.json has its own)",
      config: relOrAbs(cfg.configPath),
      model: cfg.model,
      dtype: cfg.dtype,
      dataset: relOrAbs(cfg.dataset),
      tokenizer: relOrAbs(cfg.tokenizer),
      rows: rowsSpec,
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
      let dataset: DatasetSlice | undefined;
      for (const p of toRun) {
        const def = p.def;
        if (controller.signal.aborted) throw new InterruptedError(`interrupted before ${def.name}; run the same command again to go on`);
        const dir = join(runDir, def.name);
        const t0 = performance.now();
        // load the model before anything is written: a model that cannot be loaded leaves earlier outputs as they were
        if (def.inputs.model) await inputs.model((m) => io.say(`${def.name}: ${m}`));
        await Deno.mkdir(dir, { recursive: true });
        await removeStaleTemps(dir);
        const workDir = join(dir, ".work");
        const ctx: StageContext = {
          stage: def,
          params: cfg.stages[def.name],
          cacheKey: p.key,
          dir,
          workDir,
          rows,
          dataset: async () => {
            if (dataset) return dataset;
            const t = await inputs.readDataset();
            const columns = t.columns.map((name) => {
              const type = t.types[name];
              if (!type) throw new UserError(`dataset column ${name} has a type the workflows cannot carry; drop it from the dataset`);
              return { name, type };
            });
            dataset = { path: cfg.dataset, columns, rows: rows.map((r) => t.rows[r]), totalRows: t.numRows };
            return dataset;
          },
          tokenizer: () => inputs.tokenizer(),
          model: () => inputs.model((m) => io.say(`${def.name}: ${m}`)),
          upstream: (name: string): UpstreamOutputs => {
            if (!(def.inputs.stages ?? []).includes(name)) throw new Error(`${def.name} does not declare ${name} as an input`);
            const udir = join(runDir, name);
            const text = Deno.readTextFileSync(join(udir, "manifest.json"));
            return { name, dir: udir, manifest: JSON.parse(text), file: (f) => join(udir, f) };
          },
          progress: (label, total, initial = 0, unit = "prompts") => new Progress(label, total, initial, { unit }),
          log: (m) => io.say(`${def.name}: ${m}`),
          counts: {},
          info: {},
          extraOutputs: [],
          signal: controller.signal,
          checkInterrupted: (done?: string) => {
            if (controller.signal.aborted) {
              throw new InterruptedError(
                `interrupted during ${def.name}${done ? ` (${done} saved)` : ""}; run the same command again to resume`,
              );
            }
          },
        };
        await def.run(ctx);
        // a stage that finished is recorded as finished, even when a stop was asked for meanwhile
        const outputs: Record<string, OutputRecord> = {};
        for (const f of new Set([...outputsOf(def, ctx.params), ...(ctx.extraOutputs ?? [])])) {
          const path = join(dir, f);
          if (!(await exists(path))) throw new Error(`stage ${def.name} finished without writing ${f}`);
          outputs[f] = await outputRecord(path);
        }
        const wall = (performance.now() - t0) / 1000;
        const engine: Record<string, unknown> = { deno: Deno.version.deno };
        if (def.inputs.model) {
          engine.adapter = inputs.adapterInfo() ?? "(model not loaded)";
          engine.engineSha256 = await engineSha256();
        }
        const manifest: Manifest = {
          ...p.material,
          cacheKey: p.key,
          title: def.title,
          finishedAt: new Date().toISOString(),
          wallTimeS: Math.round(wall * 1000) / 1000,
          engine,
          counts: ctx.counts,
          info: ctx.info,
          outputs,
        };
        // the manifest comes last: it is what marks the outputs as finished
        await writeJsonAtomic(join(dir, "manifest.json"), manifest);
        await Deno.remove(workDir, { recursive: true }).catch(() => {});
        effectiveConfig.stagesRun.push(def.name);
        await writeJsonAtomic(join(runDir, "config.json"), effectiveConfig);
        const counts = Object.entries(ctx.counts).map(([k, v]) => `${k} ${v}`).join(", ");
        io.say(`${def.name}: done in ${wall.toFixed(1)} s${counts ? ` (${counts})` : ""}`);
      }
    } finally {
      for (const s of sigs) Deno.removeSignalListener(s, onSignal);
      unlock();
    }
    io.say(`outputs in ${relOrAbs(runDir)}`);
    return 0;
  } finally {
    inputs.close();
  }
}
