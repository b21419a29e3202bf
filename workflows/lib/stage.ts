// The contract between the pipeline and a stage. A stage is a file `workflows/NN_name.ts` whose
// default export is `defineStage({...})`: it declares what it reads (the dataset, the tokenizer,
// the model, earlier stages' outputs), its parameters with their defaults, the files it writes,
// a code version, and `run(ctx)`. The pipeline finds it by its file name (workflows/registry.ts),
// computes its cache key from all of these, and calls `run` only when that key has changed.

import type { KnockoutUnits } from "../../engine/arch.ts";
import type { TextTokenizer } from "../../engine/tokenizer.ts";
import type { Progress } from "../../engine/progress.ts";
import type { LoadedModel } from "./engine.ts";
import type { ColumnType } from "./parquet.ts";

export type ParamType = "int" | "number" | "string" | "boolean";

export interface ParamSpec {
  type: ParamType;
  default: number | string | boolean;
  doc: string;
  min?: number;
  max?: number;
  choices?: readonly string[];
  /**
   * Throughput only (batch sizes, prompts per call): the outputs are byte-identical whatever its
   * value (tests prove it), so it is left out of the cache key: changing it reruns nothing. It is
   * recorded in the manifest (`throughputParams`).
   */
  throughput?: boolean;
}

export interface StageInputs {
  dataset?: boolean; // the CounterFact table (the selected rows)
  tokenizer?: boolean;
  model?: boolean; // the checkpoint (model id and content identity) and the engine
  stages?: string[]; // earlier stages whose outputs this one reads
}

export type Params = Record<string, number | string | boolean>;

export interface StageDef<P extends Params = Params> {
  /** `NN_name`, the same as the file name without `.ts`. */
  name: string;
  title: string;
  /** Bump when a change to the code changes the results (the file's own hash is in the key too). */
  version: string;
  /** `import.meta.url` of the stage file: its text is hashed into the cache key. */
  module: string;
  inputs: StageInputs;
  params: { [K in keyof P]: ParamSpec };
  /** Files the stage writes into its folder (relative names); a finished run has all of them. */
  outputs: string[] | ((params: P) => string[]);
  /**
   * Checks the parameters' values beyond their declared types (lists, selectors, ...) when the
   * configuration is loaded, before anything runs: throws a UserError of one line naming the value.
   */
  check?(params: P): void;
  /**
   * Its work can be cut into shards (`--shard i/n`): it takes its fixed groups of prompts through
   * `ctx.part`, keeps its records in work logs (`RowLog` in `ctx.workDir`), and returns before
   * writing its outputs when `ctx.shard` is set (lib/shard.ts).
   */
  shardable?: boolean;
  /**
   * Checks the parameters against the model's shape (config.json, read without loading weights),
   * before anything runs, dry runs too (e.g. a window of 9 layers on a 6-layer model): throws a
   * UserError of one line naming the parameter. Skipped while a hub model is not downloaded yet.
   */
  checkModel?(params: P, model: ModelShape): void;
  /**
   * `model` (default): runs once per model of the study, in that model's run folder. `study`: runs
   * once, after every model's stages, in the study's folder, reading every model's outputs
   * (`ctx.models`); it may read only earlier stages, not the dataset, tokenizer or model.
   */
  scope?: "model" | "study";
  /** the stage's folder in its run or study folder (default: its name) */
  folder?: string;
  /** the file of its folder a person opens (the report's index.html): the pipeline says where it is */
  entry?: string;
  /**
   * The earlier stages whose outputs this model stage reads from every *other* model of the study too,
   * for these parameters (e.g. 01_construct for the filter all-models-correct): their keys go into its
   * key, and they run for every model before it runs for any.
   */
  studyInputs?(params: P): string[];
  run(ctx: StageContext<P>): Promise<void>;
}

/**
 * What a stage may check its parameters against before the model is loaded (its config.json): its
 * layers and what knockouts act on (units per layer, conv width, decays; engine Family.units).
 */
export interface ModelShape extends KnockoutUnits {
  family: string;
  nLayer: number;
}

export function defineStage<P extends Params>(def: StageDef<P>): StageDef<P> {
  return def;
}

export interface DatasetSlice {
  path: string;
  /** the dataset's own columns, in file order, with their parquet types */
  columns: { name: string; type: ColumnType }[];
  /** one object per selected row, in the order of ctx.rows */
  rows: Record<string, unknown>[];
  /** rows in the whole dataset */
  totalRows: number;
}

export interface UpstreamOutputs {
  name: string;
  dir: string;
  manifest: Manifest;
  /** absolute path of one of its output files */
  file(name: string): string;
}

/** One model of the study as a stage sees it: its id, its run folder, and its stages' outputs. */
export interface ModelOutputs {
  /** the model as the keys name it (hub id, or a path relative to the repository) */
  model: string;
  /** its run folder's name */
  name: string;
  dir: string;
  /** whether it is the model the (model) stage runs for */
  self: boolean;
  /** a stage's outputs in this model's run folder (a stage the reader declares in `inputs.stages` or `studyInputs`) */
  upstream(name: string): UpstreamOutputs;
}

export interface StageContext<P extends Params = Params> {
  stage: StageDef<P>;
  params: P;
  cacheKey: string;
  /** the stage's output folder, `outputs/<run>/<NN_name>/` */
  dir: string;
  /** a folder for resumable progress: kept across interrupted runs with the same cache key, removed after success */
  workDir: string;
  /** --shard i/n: this process computes one share of the work (see `part`); the stage then returns without writing its outputs */
  shard?: { index: number; count: number };
  /** the work logs were filled from a complete set of shards (--merge): every group is done */
  merged: boolean;
  /**
   * Of the stage's fixed groups of prompts (lib/groups.ts), the share this process computes (all of
   * them, or shard i's: the groups g with g mod n = i) and, of that share, those not done yet.
   */
  part<T>(groups: readonly T[], done: (group: T) => boolean): { share: T[]; todo: T[] };
  /** the selected dataset rows (indices into the dataset), ascending */
  rows: number[];
  dataset(): Promise<DatasetSlice>;
  tokenizer(): Promise<TextTokenizer>;
  model(): Promise<LoadedModel>;
  upstream(name: string): UpstreamOutputs;
  /** every model of the study, in study order (in a model stage, its own model included) */
  models: ModelOutputs[];
  progress(label: string, total: number, initial?: number, unit?: string): Progress;
  log(message: string): void;
  /** numbers for the manifest (rows done, hits, ...) */
  counts: Record<string, number>;
  /** free-form facts for the manifest (resumed rows, batch sizes, ...) */
  info: Record<string, unknown>;
  /**
   * output files known only after the run (e.g. one figure per prompt): relative names pushed here
   * are recorded in the manifest and checked like the declared `outputs`
   */
  extraOutputs?: string[];
  /** aborted on Ctrl-C / SIGTERM: stop after saving what is finished */
  signal: AbortSignal;
  /** throws InterruptedError when the run has been asked to stop */
  checkInterrupted(done?: string): void;
}

export interface OutputRecord {
  bytes: number;
  sha256: string;
}

/** What the cache key is made of. */
export interface KeyMaterial {
  stage: string;
  version: string;
  codeSha256: string;
  /** the parameters that can change the outputs (in the key) */
  params: Params;
  /** the throughput-only parameters (ParamSpec.throughput): recorded, not in the key */
  throughputParams?: Params;
  inputs: {
    dataset?: { path: string; sha256: string; rows: string; rowCount: number };
    tokenizer?: { path: string; sha256: string };
    model?: { id: string; identity: string; dtype: string };
    upstream?: Record<string, string>; // stage -> cache key
  };
}

export interface Manifest extends KeyMaterial {
  cacheKey: string;
  title: string;
  finishedAt: string;
  wallTimeS: number;
  /** seconds of wallTimeS by part (engine/profile.ts): load, forward, gpu, readback, write, other */
  profile?: Record<string, number>;
  engine: Record<string, unknown>;
  counts: Record<string, number>;
  info: Record<string, unknown>;
  /** the run's row selection (also for stages that do not read the dataset themselves) */
  selection?: { rows: string; rowCount: number };
  outputs: Record<string, OutputRecord>;
}
