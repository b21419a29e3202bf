// Checkpoint loading: a directory (or a Hugging Face model id) with config.json and the weights as
// model.safetensors (single or sharded) or pytorch_model.bin, read tensor by tensor on demand.

import { resolve } from "node:path";
import { ConfigError, type ModelConfig, parseConfig } from "../config.ts";
import { bytesToFloat32, bytesToHalf, countNonFinite } from "./dtype.ts";
import { readBoundedJson } from "./file.ts";
import { hfCacheDir, looksLikeHubId, resolveHubModel } from "./hub.ts";
import { checkpointIdentity } from "./identity.ts";
import { CONFIG_FILE, findWeightFiles, PYTORCH_FILE, SAFETENSORS_FILE } from "./layout.ts";
import { openPytorch } from "./pytorch.ts";
import { openSafetensors, openShardedSafetensors } from "./safetensors.ts";
import { CheckpointError, type DType, fmtShape, type TensorInfo, type TensorSource } from "./types.ts";

export { CheckpointError, hfCacheDir };
export type { DType, TensorInfo };

export interface Checkpoint {
  readonly dir: string;
  readonly config: ModelConfig;
  readonly format: "safetensors" | "pytorch";
  /** Content identity of config.json + weights (64 hex digits); changes when the weights change. */
  readonly identity: string;
  list(): TensorInfo[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** Contiguous row-major float32 (exact for F16/BF16 sources). */
  readF32(name: string): Promise<Float32Array>;
  /** Contiguous row-major IEEE half bits (F32/BF16 sources rounded to nearest even). */
  readF16(name: string): Promise<Uint16Array>;
  close(): void;
}

class OpenCheckpoint implements Checkpoint {
  private closed = false;

  constructor(
    readonly dir: string,
    readonly config: ModelConfig,
    readonly identity: string,
    private readonly source: TensorSource,
  ) {}

  get format(): "safetensors" | "pytorch" {
    return this.source.format;
  }

  list(): TensorInfo[] {
    return [...this.source.tensors.values()].map((t) => ({ ...t, shape: [...t.shape] }));
  }

  has(name: string): boolean {
    return this.source.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.source.tensors.get(name);
    if (t) return { ...t, shape: [...t.shape] };
    const where = this.where();
    const dtype = this.source.unsupported.get(name);
    if (dtype !== undefined) {
      throw new CheckpointError(`${where}: tensor '${name}' is ${dtype}; only F32, F16 and BF16 weights can be loaded`);
    }
    throw new CheckpointError(`${where}: no tensor '${name}'; the checkpoint does not match this model`);
  }

  unsupportedDtype(name: string): string | undefined {
    return this.source.unsupported.get(name);
  }

  private where(): string {
    return this.source.files.length === 1 ? this.source.files[0] : this.dir;
  }

  /** The tensor's bytes; a tensor holding NaN or ±Inf is refused (every family loads through here). */
  private async bytes(name: string): Promise<{ bytes: Uint8Array; dtype: DType }> {
    if (this.closed) throw new CheckpointError(`${this.dir}: checkpoint read after close()`);
    const { dtype, shape } = this.info(name);
    const bytes = await this.source.readBytes(name);
    const bad = countNonFinite(bytes, dtype);
    if (bad.count > 0) {
      throw new CheckpointError(
        `${this.where()}: tensor '${name}' ${fmtShape(shape)} has ${bad.count} non-finite value${
          bad.count === 1 ? "" : "s"
        } (NaN or Inf; the first at element ${bad.first}); the weights are corrupt, download or export them again`,
      );
    }
    return { bytes, dtype };
  }

  async readF32(name: string): Promise<Float32Array> {
    const { bytes, dtype } = await this.bytes(name);
    return bytesToFloat32(bytes, dtype);
  }

  async readF16(name: string): Promise<Uint16Array> {
    const { bytes, dtype } = await this.bytes(name);
    return bytesToHalf(bytes, dtype);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.source.close();
  }
}

/** config.json holds a few hundred bytes of settings; a larger one is not a config. */
const MAX_CONFIG_BYTES = 1 << 20;

async function readConfig(dir: string): Promise<ModelConfig> {
  const path = `${dir}/${CONFIG_FILE}`;
  try {
    await Deno.stat(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) throw new CheckpointError(`${path}: cannot open (${(e as Error).message})`);
    throw new CheckpointError(`${dir} has no ${CONFIG_FILE}; put the model's ${CONFIG_FILE} next to its weights`);
  }
  const raw = await readBoundedJson(path, MAX_CONFIG_BYTES, "model config");
  try {
    return parseConfig(raw);
  } catch (e) {
    if (e instanceof ConfigError) throw new CheckpointError(`${dir}/${e.message}`);
    throw e;
  }
}

export interface OpenOptions {
  /** never download (also HF_HUB_OFFLINE=1) */
  offline?: boolean;
  /** hash every file in full for the identity instead of trusting path + size + mtime (slow, sure) */
  verify?: boolean;
}

async function openDirectory(dir: string, opts: OpenOptions): Promise<Checkpoint> {
  const config = await readConfig(dir);
  const weights = await findWeightFiles(dir);
  if (!weights) {
    throw new CheckpointError(
      `${dir} has no weights: put ${SAFETENSORS_FILE} or ${PYTORCH_FILE} next to ${CONFIG_FILE}`,
    );
  }
  const source = weights.kind === "safetensors"
    ? await openSafetensors(weights.path)
    : weights.kind === "safetensors-sharded"
    ? await openShardedSafetensors(weights.path)
    : await openPytorch(weights.path);
  try {
    const identity = await checkpointIdentity(`${dir}/${CONFIG_FILE}`, source.files, { verify: opts.verify });
    return new OpenCheckpoint(dir, config, identity, source);
  } catch (e) {
    source.close();
    throw e;
  }
}

/**
 * Open a checkpoint directory, or a Hugging Face model id ("state-spaces/mamba2-1.3b"): the Hugging
 * Face cache is used when it holds the model; otherwise it is downloaded into it (unless offline).
 */
export async function openCheckpoint(modelIdOrPath: string, opts: OpenOptions = {}): Promise<Checkpoint> {
  if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) {
    throw new CheckpointError(
      "this machine is big-endian; checkpoints store little-endian data and cannot be read here",
    );
  }
  let stat: Deno.FileInfo | undefined;
  try {
    stat = await Deno.stat(modelIdOrPath);
  } catch {
    stat = undefined;
  }
  if (stat) {
    if (!stat.isDirectory) {
      throw new CheckpointError(
        `${modelIdOrPath} is a file; pass the directory that holds ${CONFIG_FILE} and the weights`,
      );
    }
    return openDirectory(await Deno.realPath(modelIdOrPath), opts);
  }
  if (looksLikeHubId(modelIdOrPath)) {
    return openDirectory(resolve(await resolveHubModel(modelIdOrPath, opts)), opts);
  }
  throw new CheckpointError(
    `${modelIdOrPath}: no such directory, and not a Hugging Face model id (org/name); pass a checkpoint directory or a model id`,
  );
}

/** Shape every tensor of the Mamba-2 model must have, given its config. */
export function expectedModelShapes(config: ModelConfig): Map<string, number[]> {
  const shapes = new Map<string, number[]>();
  shapes.set("backbone.embedding.weight", [config.vocabPadded, config.dModel]);
  for (let i = 0; i < config.nLayer; i++) {
    const p = `backbone.layers.${i}`;
    shapes.set(`${p}.norm.weight`, [config.dModel]);
    shapes.set(`${p}.mixer.in_proj.weight`, [config.dInProj, config.dModel]);
    shapes.set(`${p}.mixer.conv1d.weight`, [config.convDim, 1, config.dConv]);
    shapes.set(`${p}.mixer.conv1d.bias`, [config.convDim]);
    shapes.set(`${p}.mixer.dt_bias`, [config.nheads]);
    shapes.set(`${p}.mixer.A_log`, [config.nheads]);
    shapes.set(`${p}.mixer.D`, [config.nheads]);
    shapes.set(`${p}.mixer.norm.weight`, [config.dInner]);
    shapes.set(`${p}.mixer.out_proj.weight`, [config.dModel, config.dInner]);
  }
  shapes.set("backbone.norm_f.weight", [config.dModel]);
  return shapes;
}

/**
 * Check that every tensor the model needs is present with the shape its config implies (lm_head.weight
 * only when the embeddings are not tied, though if present it must fit); throws CheckpointError naming
 * the first mismatch.
 */
export function expectModelTensors(ckpt: Checkpoint): void {
  const shapes = expectedModelShapes(ckpt.config);
  const lmHead = [ckpt.config.vocabPadded, ckpt.config.dModel];
  if (!ckpt.config.tieEmbeddings || ckpt.has("lm_head.weight")) shapes.set("lm_head.weight", lmHead);
  for (const [name, expected] of shapes) {
    if (!ckpt.has(name)) {
      const dtype = ckpt instanceof OpenCheckpoint ? ckpt.unsupportedDtype(name) : undefined;
      const why = dtype === undefined ? "is missing" : `is ${dtype}, which cannot be loaded (only F32, F16, BF16)`;
      throw new CheckpointError(
        `${ckpt.dir}: tensor '${name}' (expected shape ${
          fmtShape(expected)
        }) ${why}; the weights and ${CONFIG_FILE} do not belong together`,
      );
    }
    const { shape } = ckpt.info(name);
    if (shape.length !== expected.length || shape.some((d, i) => d !== expected[i])) {
      throw new CheckpointError(
        `${ckpt.dir}: tensor '${name}' has shape ${fmtShape(shape)} but ${CONFIG_FILE} implies ${
          fmtShape(expected)
        }; the weights and the config do not belong together`,
      );
    }
  }
}
