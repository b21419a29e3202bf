// Planning a pipeline run: which stages are selected (--only, --from) and which others they read,
// each stage's key material and cache key, and whether it runs, with the reasons in words.
// Nothing here runs a stage or writes a file.

import { basename, join, relative } from "node:path";
import { paramSpec, REPO_ROOT, relOrAbs, type StudyConfig } from "./config.ts";
import { UsageError, UserError } from "./errors.ts";
import { hashModuleTree, hashValue, sha256 } from "./hash.ts";
import type { RunInputs } from "./inputs.ts";
import { engineSha256, outputProblems, readManifest } from "./manifest.ts";
import { hasSavedWork } from "./resume.ts";
import { formatRows } from "./rows.ts";
import { findShardSets, type ShardSet } from "./shard.ts";
import type { KeyMaterial, Manifest, ModelShape, Params, StageDef } from "./stage.ts";

export function outputsOf(def: StageDef, params: Params): string[] {
  // deno-lint-ignore no-explicit-any
  return typeof def.outputs === "function" ? (def.outputs as any)(params) : def.outputs;
}

/** Check the registry: names match NN_name, upstream stages exist and come earlier. */
export function checkStages(stages: StageDef[]): void {
  const seen = new Map<string, StageDef>();
  for (const s of stages) {
    if (!/^\d\d_[a-z0-9_]+$/.test(s.name)) throw new Error(`stage name ${s.name} is not of the form NN_name`);
    for (const up of s.inputs.stages ?? []) {
      const u = seen.get(up);
      if (!u) throw new Error(`stage ${s.name} reads ${up}, which is not an earlier stage`);
      if (isStudyStage(u) && !isStudyStage(s)) throw new Error(`stage ${s.name} runs per model but reads the study stage ${up}`);
    }
    if (isStudyStage(s) && (s.inputs.model || s.inputs.dataset || s.inputs.tokenizer)) {
      throw new Error(`study stage ${s.name} may read only earlier stages' outputs, not the model, dataset or tokenizer`);
    }
    seen.set(s.name, s);
  }
}

/** A stage that runs once per study, over every model's outputs (05_compare_models, 06_report). */
export function isStudyStage(def: StageDef): boolean {
  return def.scope === "study";
}

/** The stage's folder in its run or study folder. */
export function stageFolder(def: StageDef): string {
  return def.folder ?? def.name;
}

/** Which stages the flags select, and every stage whose key is needed (the selected ones and what they read). */
export interface Selection {
  selected: Set<string>;
  /** the stages to plan, in registry order */
  stages: StageDef[];
  /** --from STAGE */
  from?: string;
  force: boolean;
}

export function selectStages(all: StageDef[], flags: { only?: string[]; from?: string; force?: boolean }): Selection {
  checkStages(all);
  const names = all.map((s) => s.name);
  const known = names.join(", ");
  for (const n of flags.only ?? []) {
    if (!names.includes(n)) throw new UsageError(`unknown stage "${n}"; stages are ${known}`);
  }
  if (flags.from !== undefined && !names.includes(flags.from)) throw new UsageError(`unknown stage "${flags.from}"; stages are ${known}`);
  if (flags.from !== undefined && flags.only?.length) throw new UsageError("use either --only or --from, not both");
  const fromIdx = flags.from !== undefined ? names.indexOf(flags.from) : -1;
  const selected = new Set(flags.only?.length ? flags.only : fromIdx >= 0 ? names.slice(fromIdx) : names);
  const needed = new Set<string>();
  const addNeeded = (n: string) => {
    if (needed.has(n)) return;
    needed.add(n);
    for (const up of all.find((s) => s.name === n)!.inputs.stages ?? []) addNeeded(up);
  };
  for (const n of selected) addNeeded(n);
  return { selected, stages: all.filter((s) => needed.has(s.name)), from: flags.from, force: flags.force ?? false };
}

/**
 * Every selected stage's parameters against the model's shape (StageDef.checkModel), before
 * anything runs; nothing to check against while a hub model is not downloaded (a dry run).
 */
export function checkParamsAgainstModel(sel: Selection, cfg: StudyConfig, model: ModelShape | undefined): void {
  if (!model) return;
  for (const def of sel.stages) {
    if (!sel.selected.has(def.name) || !def.checkModel) continue;
    try {
      def.checkModel(cfg.stages[def.name], model);
    } catch (e) {
      if (e instanceof UserError && !(e instanceof UsageError)) throw new UsageError(e.message);
      throw e;
    }
  }
}

function modelBase(model: string): string {
  return basename(model.replace(/[\\/]+$/, "")).replace(/[^A-Za-z0-9._-]/g, "_") || "model";
}

/**
 * The row selection's part of a folder name, empty when every row is selected, in characters no
 * shell treats specially: `_rows-0-99+4342` (`+` between parts); a selection too long to spell says
 * its first and last row and how many, with 6 hex digits of its hash so that two such selections
 * never share a folder: `_rows-3-147_50-rows_3f2a9c`. Every stage's manifest records the rows themselves.
 */
function rowsPart(rows: number[], totalRows: number): string {
  if (rows.length === totalRows) return "";
  const spec = formatRows(rows);
  if (spec.length <= 40) return `_rows-${spec.replaceAll(",", "+")}`;
  return `_rows-${rows[0]}-${rows[rows.length - 1]}_${rows.length}-rows_${sha256(spec).slice(0, 6)}`;
}

/**
 * The run folder's name: `state-spaces/mamba2-1.3b` → `mamba2-1.3b`, a folder → its name, plus the
 * row selection when partial (rowsPart): `mamba2-1.3b_rows-0-99+4342`.
 */
export function runName(model: string, rows: number[], totalRows: number): string {
  return modelBase(model) + rowsPart(rows, totalRows);
}

/**
 * The study's folder name: with one model its run folder's name (the study's stages write beside the
 * model's); with several `study` from the config, else `study_<model>+<model>…` (a hash when long), plus
 * the row selection when partial.
 */
export function studyName(models: string[], rows: number[], totalRows: number, study?: string): string {
  if (study) return study + rowsPart(rows, totalRows);
  if (models.length === 1) return runName(models[0], rows, totalRows);
  const names = models.map(modelBase).join("+");
  return `study_${names.length <= 80 ? names : sha256(names).slice(0, 12)}` + rowsPart(rows, totalRows);
}

export function modelIdForKey(model: string): string {
  if (model.startsWith("/")) {
    const rel = relative(REPO_ROOT, model);
    return rel.startsWith("..") ? model : rel;
  }
  return model;
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
export function cacheKeyOf(m: KeyMaterial): string {
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

/** What one stage of a run is made from, and whether it runs. */
export interface Plan {
  def: StageDef;
  material: KeyMaterial;
  key: string;
  /** the stage's folder in the run (or study) folder */
  dir: string;
  selected: boolean;
  run: boolean;
  reasons: string[];
  upToDate: boolean;
  /** engine/ or kernels/ changed since the kept output was computed (not in the key: said, not rerun) */
  engineChanged: boolean;
  /** shardable stages: the shard sets found for this key (lib/shard.ts) */
  shards: ShardSet[];
  /** forced (--force, --from): the saved work of an interrupted run is discarded, the stage starts over */
  fresh: boolean;
  /** the run (one model's, or the study's) it belongs to */
  target: RunTarget;
  /** the plans it reads: its own run's, other models' (a study filter), every model's (a study stage) */
  upstream: UpstreamRef[];
}

/** One model's run: where it writes and which rows it reads; or, for the study's stages, the study's. */
export interface RunTarget {
  cfg: StudyConfig;
  inputs: RunInputs;
  runDir: string;
  rows: number[];
  /** the folder's name: it labels a model's stages in the keys of the stages that read other models */
  name: string;
  /** every model's run of the study, in study order (this one included when it is a model's) */
  models: RunTarget[];
}

/** An upstream plan and the label it has in the reader's key (`03_info_flow`, or `<run>/03_info_flow` for another run's). */
export interface UpstreamRef {
  label: string;
  plan: Plan;
}

/** A stage's parameters: those that can change its outputs (the key's) and the throughput-only ones. */
export function splitParams(def: StageDef, all: Params): { params: Params; throughputParams: Params } {
  const params: Params = {}, throughputParams: Params = {};
  for (const [k, v] of Object.entries(all)) {
    if (paramSpec(def, k)?.throughput) throughputParams[k] = v;
    else params[k] = v;
  }
  return { params, throughputParams };
}

/** A stage's code in its key: its file and every workflow module it imports (the same for every model of a study). */
function stageCodeHash(def: StageDef): Promise<string> {
  return hashModuleTree(new URL(def.module).pathname, join(REPO_ROOT, "workflows") + "/");
}

/** A stage's key material: its code, parameters, inputs and upstream stages' keys. */
function keyMaterial(def: StageDef, codeSha256: string, t: RunTarget, upstream: UpstreamRef[]): KeyMaterial {
  const { cfg, inputs } = t;
  const { params, throughputParams } = splitParams(def, cfg.stages[def.name]);
  const material: KeyMaterial = { stage: def.name, version: def.version, codeSha256, params, inputs: {} };
  if (Object.keys(throughputParams).length) material.throughputParams = throughputParams;
  if (def.inputs.dataset) {
    material.inputs.dataset = { path: relOrAbs(cfg.dataset), sha256: inputs.datasetSha!, rows: formatRows(t.rows), rowCount: t.rows.length };
  }
  if (def.inputs.tokenizer) material.inputs.tokenizer = { path: relOrAbs(inputs.tokenizerPath!), sha256: inputs.tokenizerSha! };
  if (def.inputs.model) {
    material.inputs.model = { id: modelIdForKey(cfg.model), identity: inputs.ckpt?.identity ?? "(not downloaded)", dtype: cfg.dtype };
  }
  if (upstream.length) material.inputs.upstream = Object.fromEntries(upstream.map((u) => [u.label, u.plan.key]));
  return material;
}

/** Why a stage's kept output cannot be used (empty when it is up to date). */
async function staleness(dir: string, def: StageDef, material: KeyMaterial, key: string): Promise<{ reasons: string[]; old: Manifest | null | "unreadable" }> {
  const old = await readManifest(dir);
  let reasons: string[];
  if (old === null) reasons = ["no earlier output"];
  else if (old === "unreadable") reasons = ["its manifest.json is unreadable"];
  else if (old.cacheKey !== key) {
    reasons = keyDiff(old, material);
    if (reasons.length === 0) reasons = ["cache key changed"];
  } else reasons = await outputProblems(dir, old, [...new Set([...outputsOf(def, { ...material.params, ...material.throughputParams }), ...Object.keys(old.outputs)])]);
  return { reasons, old };
}

/** Plan one stage of one run, given the plans it reads. */
async function planOne(def: StageDef, codeSha256: string, t: RunTarget, sel: Selection, upstream: UpstreamRef[]): Promise<Plan> {
  const names = sel.stages.map((s) => s.name);
  const material = keyMaterial(def, codeSha256, t, upstream);
  const key = cacheKeyOf(material);
  const dir = join(t.runDir, stageFolder(def));
  const { reasons, old } = await staleness(dir, def, material, key);
  const fresh = sel.force || def.name === sel.from;
  const saved = await hasSavedWork(join(dir, ".work"), key);
  if (saved && !fresh) {
    // an interrupted run of this very work: say that it goes on, not that nothing was done
    if (old === null) reasons.splice(0, reasons.length, "resumes an interrupted run (its saved work is kept)");
    else if (reasons.length) reasons.push("an interrupted run's saved work is resumed"); // an up-to-date output stays so
  }
  if (def.inputs.model && !t.inputs.ckpt) reasons.push(`model not downloaded yet (${t.inputs.ckptError})`);
  const upToDate = reasons.length === 0;
  const isSel = sel.selected.has(def.name);
  let run = false;
  const why: string[] = [];
  if (isSel) {
    const over = saved ? ", starts over (the saved work of an interrupted run is discarded)" : "";
    if (sel.force) why.push(`forced (--force)${over}`);
    else if (def.name === sel.from) why.push(`forced (--from ${sel.from})${over}`);
    why.push(...reasons);
    for (const u of upstream) {
      if (u.plan.run && !why.some((w) => w.startsWith(`upstream ${u.label}`))) why.push(`upstream ${u.label} reruns`);
    }
    if (sel.from !== undefined && names.indexOf(def.name) > names.indexOf(sel.from) && why.length === 0) why.push(`after ${sel.from} (--from)`);
    run = why.length > 0;
  }
  const engineChanged = upToDate && !!def.inputs.model && typeof old === "object" && old !== null &&
    old.engine?.engineSha256 !== undefined && old.engine.engineSha256 !== await engineSha256();
  const shards = def.shardable && run ? await findShardSets(dir, key) : [];
  return { def, material, key, dir, selected: isSel, run, reasons: isSel ? why : reasons, upToDate, engineChanged, shards, fresh, target: t, upstream };
}

/** Every stage of a study planned: each model's stages per run folder, then the study's stages. */
export interface StudyPlan {
  /** per model (in study order): its stages by name, in registry order */
  models: Map<string, Plan>[];
  /** the study's stages by name (empty when none is selected or needed) */
  study: Map<string, Plan>;
}

/**
 * Plan a study: stage by stage in registry order, each model's run of a model stage (reading its own
 * run's upstream stages, and for `studyInputs` the other models' too), then each study stage once
 * (reading every model's runs). A stage that is not selected but is read by one that runs must be up to date.
 */
export async function planStudy(sel: Selection, targets: RunTarget[], study?: RunTarget): Promise<StudyPlan> {
  const models = targets.map(() => new Map<string, Plan>());
  const studyPlans = new Map<string, Plan>();
  for (const def of sel.stages) {
    if (isStudyStage(def)) {
      if (!study) continue;
      const ups: UpstreamRef[] = [];
      for (const u of def.inputs.stages ?? []) {
        const own = studyPlans.get(u);
        if (own) ups.push({ label: u, plan: own });
        else targets.forEach((o, j) => ups.push({ label: `${o.name}/${u}`, plan: models[j].get(u)! }));
      }
      studyPlans.set(def.name, await planOne(def, await stageCodeHash(def), study, sel, ups));
      continue;
    }
    const code = await stageCodeHash(def); // once for every model's run
    for (const [i, t] of targets.entries()) {
      const ups: UpstreamRef[] = (def.inputs.stages ?? []).map((u) => ({ label: u, plan: models[i].get(u)! }));
      for (const u of def.studyInputs?.(t.cfg.stages[def.name]) ?? []) {
        targets.forEach((o, j) => {
          if (j !== i) ups.push({ label: `${o.name}/${u}`, plan: models[j].get(u)! });
        });
      }
      models[i].set(def.name, await planOne(def, code, t, sel, ups));
    }
  }
  // a stage that is not selected but is read by one that runs must be up to date
  for (const p of [...models.flatMap((m) => [...m.values()]), ...studyPlans.values()]) {
    if (!p.run) continue;
    for (const { label, plan: u } of p.upstream) {
      if (!u.selected && !u.upToDate) {
        const where = label.includes("/") ? ` of ${relOrAbs(u.target.runDir)}` : "";
        throw new UserError(
          `${p.def.name} needs ${u.def.name}${where}, which is not up to date (${u.reasons[0]}); run ${u.def.name} first (deno task stage ${u.def.name}) or the whole pipeline`,
        );
      }
    }
  }
  return { models, study: studyPlans };
}

/** One line per selected stage: runs (and why) or skipped. */
export function planLines(plans: Map<string, Plan>, dryRun: boolean): string[] {
  const out: string[] = [];
  for (const p of plans.values()) {
    if (!p.selected) continue;
    if (p.run) out.push(`${p.def.name}: ${dryRun ? "would run" : "runs"}: ${p.reasons.join("; ")}`);
    else {
      out.push(`${p.def.name}: up to date, skipped (cache key ${p.key.slice(0, 12)})` +
        (p.engineChanged ? "; note: the engine code changed since it ran (--force recomputes it)" : ""));
    }
  }
  return out;
}
