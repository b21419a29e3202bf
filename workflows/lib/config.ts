// The study's configuration: defaults in study.config.json (repo root), overridden by flags.
// Paths in the file are relative to the file; paths given as flags are relative to the
// working directory. Every key is checked: a misspelt key is an error, never silently ignored.

import { dirname, isAbsolute, relative, resolve } from "node:path";
import { UsageError, UserError } from "./errors.ts";
import type { Params, ParamSpec, StageDef } from "./stage.ts";

export const REPO_ROOT = resolve(dirname(new URL(import.meta.url).pathname), "../..");
export const DEFAULT_CONFIG_PATH = resolve(REPO_ROOT, "study.config.json");

const TOP_KEYS = ["$comment", "model", "models", "study", "dtype", "dataset", "tokenizer", "outputs", "rows", "limit", "stages"] as const;
export const DTYPES = ["f32", "f16"] as const;
/** The largest study configuration file read. */
const MAX_CONFIG_BYTES = 1 << 20;
export type Dtype = typeof DTYPES[number];

export interface StudyConfig {
  configPath: string;
  model: string; // hub id, or an absolute path when it names a local folder (in a study of several: the one being run)
  /** every model of the study, in order (`models`, or `[model]`); model === models[0] until the pipeline picks one */
  models: string[];
  /** the study's folder name under `outputs` (`study`, else derived from the models: lib/plan.ts studyName) */
  study?: string;
  dtype: Dtype; // weights on the GPU
  dataset: string; // absolute
  tokenizer?: string; // absolute; absent: the model's own tokenizer.json, else data/'s GPT-NeoX-20B (engine/tokenizer.ts)
  outputs: string; // absolute folder holding the runs
  rows?: string;
  limit?: number;
  stages: Record<string, Params>; // every stage, every parameter (defaults filled in)
}

export interface ConfigOverrides {
  /** one model (`--model`) */
  model?: string;
  /** several models, a study (`--models A,B`, or a list) */
  models?: string | string[];
  dtype?: string;
  dataset?: string;
  tokenizer?: string;
  rows?: string;
  limit?: string | number;
  /** `stage.param=value` */
  set?: string[];
}

function describeSpec(s: ParamSpec): string {
  if (s.choices) return `one of ${s.choices.join(", ")}`;
  const range = s.min !== undefined && s.max !== undefined
    ? ` in ${s.min}..${s.max}`
    : s.min !== undefined
    ? ` >= ${s.min}`
    : s.max !== undefined
    ? ` <= ${s.max}`
    : "";
  const kind = s.type === "int" ? "an integer" : s.type === "number" ? "a number" : s.type === "boolean" ? "true or false" : "a string";
  return kind + range;
}

export function checkParam(where: string, name: string, spec: ParamSpec, v: unknown): number | string | boolean {
  const bad = () => new UsageError(`${where}: parameter ${name} must be ${describeSpec(spec)}, got ${JSON.stringify(v)}`);
  switch (spec.type) {
    case "int":
    case "number":
      if (typeof v !== "number" || !Number.isFinite(v) || (spec.type === "int" && !Number.isInteger(v))) throw bad();
      if ((spec.min !== undefined && v < spec.min) || (spec.max !== undefined && v > spec.max)) throw bad();
      return v;
    case "boolean":
      if (typeof v !== "boolean") throw bad();
      return v;
    case "string":
      if (typeof v !== "string" || (spec.choices && !spec.choices.includes(v))) throw bad();
      return v;
  }
}

/** A flag's text as a parameter value of the declared type. */
function parseFlagValue(spec: ParamSpec, text: string): unknown {
  if (spec.type === "string") return text;
  if (spec.type === "boolean") return text === "true" ? true : text === "false" ? false : text;
  const n = Number(text);
  return text.trim() !== "" && Number.isFinite(n) ? n : text;
}

/** A local folder or file → absolute path; anything else (a hub id like org/name) stays as it is. */
export function resolveModel(model: string, base: string): string {
  if (isAbsolute(model)) return model;
  const p = resolve(base, model);
  try {
    Deno.statSync(p);
    return p;
  } catch {
    return model.startsWith(".") ? p : model;
  }
}

/** A path as the user would write it: relative to the working directory when under it, else absolute. */
export function relOrAbs(p: string): string {
  const r = relative(Deno.cwd(), p);
  return r.startsWith("..") ? p : r;
}

function knownList(xs: Iterable<string>): string {
  return [...xs].join(", ");
}

/**
 * A stage's declaration of parameter `k`, or undefined: only the declared parameters themselves,
 * never what every object inherits (`constructor`, `toString`, `__proto__`, ...).
 */
export function paramSpec(def: StageDef, k: string): ParamSpec | undefined {
  return Object.hasOwn(def.params, k) ? (def.params as Record<string, ParamSpec>)[k] : undefined;
}

/**
 * The study's models: `--models` (a list) or `--model` (one) over the file's `models` (a list) or `model` (one);
 * local folders resolved. Both `model` and `models`, an empty list or a model named twice: one-line errors.
 */
function studyModels(c: Record<string, unknown>, shown: string, base: string, over: ConfigOverrides, cwd: string): string[] {
  if (over.model !== undefined && over.models !== undefined) throw new UsageError("give --model (one) or --models (a list), not both");
  const list = typeof over.models === "string" ? over.models.split(",").map((m) => m.trim()) : over.models;
  if (list && (list.length === 0 || list.some((m) => m === ""))) throw new UsageError(`--models ${JSON.stringify(over.models)}: give model ids or folders separated by commas`);
  const given = list ?? (over.model !== undefined ? [over.model] : []);
  let models: string[];
  if (given.length) models = given.map((m) => resolveModel(m, cwd));
  else {
    if (c.model !== undefined && c.models !== undefined) throw new UsageError(`${shown}: give "model" (one) or "models" (a list), not both`);
    if (c.models !== undefined) {
      const ms = c.models;
      if (!Array.isArray(ms) || ms.length === 0 || ms.some((m) => typeof m !== "string" || m === "")) {
        throw new UsageError(`${shown}: "models" must be a non-empty list of model ids or folders`);
      }
      models = (ms as string[]).map((m) => resolveModel(m, base));
    } else if (c.model !== undefined) {
      if (typeof c.model !== "string" || c.model === "") throw new UsageError(`${shown}: "model" must be a non-empty string`);
      models = [resolveModel(c.model, base)];
    } else throw new UsageError(`no model: set "model" or "models" in ${shown} or pass --model`);
  }
  const seen = new Set<string>();
  for (const m of models) {
    if (seen.has(m)) throw new UsageError(`the model ${relOrAbs(m)} is named twice in the study; name each model once`);
    seen.add(m);
  }
  return models;
}

export async function loadConfig(
  stages: StageDef[],
  configPath: string | undefined,
  over: ConfigOverrides,
  cwd = Deno.cwd(),
): Promise<StudyConfig> {
  const path = resolve(cwd, configPath ?? DEFAULT_CONFIG_PATH);
  const shown = configPath ?? "study.config.json";
  let raw: unknown;
  let text: string;
  try {
    // a FIFO or a device would block or never end, and no study configuration needs megabytes
    const st = await Deno.stat(path);
    if (!st.isFile) throw new UserError(`config file ${shown} is not a regular file; point --config at the file itself`);
    if (st.size > MAX_CONFIG_BYTES) throw new UserError(`config file ${shown} is larger than ${MAX_CONFIG_BYTES >> 20} MiB, more than any study configuration needs`);
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof UserError) throw e;
    if (e instanceof Deno.errors.NotFound) throw new UsageError(`config file ${shown} does not exist; pass --config FILE or create it`);
    throw new UserError(`cannot read config file ${shown}: ${(e as Error).message}`);
  }
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new UserError(`config file ${shown} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new UserError(`config file ${shown} must hold a JSON object`);
  const c = raw as Record<string, unknown>;
  for (const k of Object.keys(c)) {
    if (!(TOP_KEYS as readonly string[]).includes(k)) {
      throw new UsageError(`${shown}: unknown key "${k}"; known keys are ${knownList(TOP_KEYS.filter((x) => x !== "$comment"))}`);
    }
  }
  const base = dirname(path);
  const str = (k: string): string | undefined => {
    const v = c[k];
    if (v === undefined) return undefined;
    if (typeof v !== "string" || v === "") throw new UsageError(`${shown}: "${k}" must be a non-empty string`);
    return v;
  };

  const byName = new Map(stages.map((s) => [s.name, s]));
  const stageParams: Record<string, Params> = {};
  for (const s of stages) {
    const p: Params = {};
    for (const [k, spec] of Object.entries(s.params)) p[k] = spec.default;
    stageParams[s.name] = p;
  }
  const fileStages = c.stages ?? {};
  if (typeof fileStages !== "object" || fileStages === null || Array.isArray(fileStages)) {
    throw new UsageError(`${shown}: "stages" must be an object of stage name -> parameters`);
  }
  for (const [name, params] of Object.entries(fileStages as Record<string, unknown>)) {
    const def = byName.get(name);
    if (!def) throw new UsageError(`${shown}: unknown stage "${name}" under "stages"; stages are ${knownList(byName.keys())}`);
    if (typeof params !== "object" || params === null || Array.isArray(params)) {
      throw new UsageError(`${shown}: stages.${name} must be an object of parameter -> value`);
    }
    for (const [k, v] of Object.entries(params as Record<string, unknown>)) {
      const spec = paramSpec(def, k);
      if (!spec) {
        throw new UsageError(
          `${shown}: stage ${name} has no parameter "${k}"; its parameters are ${knownList(Object.keys(def.params)) || "(none)"}`,
        );
      }
      stageParams[name][k] = checkParam(`${shown}: stages.${name}`, k, spec, v);
    }
  }
  for (const item of over.set ?? []) {
    const m = /^([^.=]+)\.([^=]+)=(.*)$/s.exec(item);
    if (!m) throw new UsageError(`--set ${item}: write it as STAGE.PARAM=VALUE, e.g. --set 01_construct.batchSize=8`);
    const [, name, k, v] = m;
    const def = byName.get(name);
    if (!def) throw new UsageError(`--set ${item}: unknown stage "${name}"; stages are ${knownList(byName.keys())}`);
    const spec = paramSpec(def, k);
    if (!spec) throw new UsageError(`--set ${item}: stage ${name} has no parameter "${k}"; its parameters are ${knownList(Object.keys(def.params)) || "(none)"}`);
    stageParams[name][k] = checkParam(`--set`, `${name}.${k}`, spec, parseFlagValue(spec, v));
  }

  // a value a stage cannot use is a usage error, whether it came from the file or from --set
  for (const s of stages) {
    try {
      s.check?.(stageParams[s.name]);
    } catch (e) {
      if (e instanceof UserError && !(e instanceof UsageError)) throw new UsageError(e.message);
      throw e;
    }
  }

  const models = studyModels(c, shown, base, over, cwd);
  const study = str("study");
  if (study !== undefined && !/^[A-Za-z0-9][A-Za-z0-9._+-]*$/.test(study)) {
    throw new UsageError(`${shown}: "study" ${JSON.stringify(study)} must be a folder name (letters, digits, . _ + -)`);
  }
  const dataset = over.dataset ? resolve(cwd, over.dataset) : str("dataset") ? resolve(base, str("dataset")!) : undefined;
  if (!dataset) throw new UsageError(`no dataset: set "dataset" in ${shown} or pass --dataset`);
  const tokenizer = over.tokenizer ? resolve(cwd, over.tokenizer) : str("tokenizer") ? resolve(base, str("tokenizer")!) : undefined;
  const outputs = resolve(base, str("outputs") ?? "outputs");
  const dtype = over.dtype ?? str("dtype") ?? "f32";
  if (!(DTYPES as readonly string[]).includes(dtype)) {
    throw new UsageError(`${over.dtype ? "--dtype" : `${shown}: "dtype"`} ${JSON.stringify(dtype)}: use ${DTYPES.join(" or ")}`);
  }

  const rows = over.rows ?? str("rows");
  let limit: number | undefined;
  const limRaw = over.limit ?? c.limit;
  if (limRaw !== undefined) {
    const n = typeof limRaw === "number" ? limRaw : Number(limRaw);
    if (!Number.isInteger(n) || n < 1 || (typeof limRaw === "string" && !/^\s*\d+\s*$/.test(limRaw))) {
      throw new UsageError(`--limit ${limRaw}: give a positive integer`);
    }
    limit = n;
  }
  return { configPath: path, model: models[0], models, study, dtype: dtype as Dtype, dataset, tokenizer, outputs, rows, limit, stages: stageParams };
}
