// The inputs shared by the stages of one pipeline run, each read or loaded once, when first needed:
// the dataset table and its hash, the tokenizer and its hash, the checkpoint (its content identity
// goes into the cache keys) and the model on the GPU (reloaded after a lost device).

import { loadTokenizer, type TextTokenizer, tokenizerPathFor } from "../../engine/tokenizer.ts";
import { exists } from "./atomic.ts";
import { relOrAbs, type StudyConfig } from "./config.ts";
import { type Checkpoint, type LoadedModel, loadModel, openModel, unloadModel } from "./engine.ts";
import { errorLine, UserError } from "./errors.ts";
import { hashFile } from "./hash.ts";
import { readParquet, type Table } from "./parquet.ts";

/** The dataset table and its hash, read once for every model of a study (they share one dataset). */
export class DatasetSource {
  private read?: Promise<{ table: Table; sha256: string }>;

  constructor(readonly path: string) {}

  load(): Promise<{ table: Table; sha256: string }> {
    this.read ??= (async () => {
      if (!(await exists(this.path))) {
        throw new UserError(`dataset ${relOrAbs(this.path)} does not exist; pass --dataset FILE or fix "dataset" in the config`);
      }
      return { table: await readParquet(this.path), sha256: await hashFile(this.path) };
    })();
    return this.read;
  }
}

/** Shared inputs of one pipeline invocation, each read or loaded once, when first needed. */
export class RunInputs {
  table?: Table;
  datasetSha?: string;
  tokenizerSha?: string;
  /** the tokenizer this run uses (resolveTokenizer): the config's, the model's own, or data/'s GPT-NeoX-20B */
  tokenizerPath?: string;
  ckpt?: Checkpoint;
  ckptError?: string;
  private tok?: Promise<TextTokenizer>;
  private loaded?: LoadedModel;
  private loading?: Promise<LoadedModel>;

  constructor(readonly cfg: StudyConfig, readonly dryRun: boolean, readonly verify = false, readonly dataset = new DatasetSource(cfg.dataset)) {}

  async readDataset(): Promise<Table> {
    if (this.table) return this.table;
    const { table, sha256 } = await this.dataset.load();
    this.datasetSha = sha256;
    this.table = table;
    return table;
  }

  /**
   * Which tokenizer the run uses: --tokenizer / the config's `tokenizer` when given, else the
   * tokenizer.json beside the model's config.json (its folder, its Hugging Face snapshot), else
   * data/gpt-neox-20b-tokenizer.json (engine/tokenizer.ts tokenizerPathFor).
   */
  async resolveTokenizer(): Promise<string> {
    if (this.tokenizerPath) return this.tokenizerPath;
    const ckpt = this.cfg.tokenizer === undefined ? await this.checkpoint() : undefined;
    this.tokenizerPath = (await tokenizerPathFor(ckpt?.dir, this.cfg.tokenizer)).path;
    return this.tokenizerPath;
  }

  async tokenizerHash(): Promise<string> {
    if (this.tokenizerSha) return this.tokenizerSha;
    const p = await this.resolveTokenizer();
    if (!(await exists(p))) throw new UserError(`tokenizer ${relOrAbs(p)} does not exist; pass --tokenizer FILE or fix "tokenizer" in the config`);
    // a FIFO or device would block the hash below: only a regular file can be a tokenizer
    if (!(await Deno.stat(p)).isFile) throw new UserError(`tokenizer ${relOrAbs(p)} is not a regular file; point --tokenizer at the file itself`);
    this.tokenizerSha = await hashFile(p);
    return this.tokenizerSha;
  }

  tokenizer(): Promise<TextTokenizer> {
    this.tok ??= this.resolveTokenizer().then((p) => loadTokenizer(p));
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
    // the softmax runs over the tokenizer's tokens (engine/families.ts realVocabSize)
    const vocabSize = (await this.tokenizer()).vocabSize;
    this.loading ??= loadModel(ckpt, { dtype: this.cfg.dtype, vocabSize }).catch((e) => {
      this.loading = undefined;
      throw new UserError(aboutModel("cannot load model", this.cfg.model, errorLine(e)));
    });
    this.loaded = await this.loading;
    return this.loaded;
  }

  /** Take the model off the GPU (another model of the study runs next); it is loaded again when asked for. */
  unload(): void {
    if (this.loaded) unloadModel(this.loaded);
    this.loaded = undefined;
    this.loading = undefined;
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

/** "cannot open model X: why", without naming X twice when the reason already does. */
export function aboutModel(what: string, model: string, why: string): string {
  return why.includes(model) ? `${what}: ${why}` : `${what} ${model}: ${why}`;
}

