// Checkpoint loading: a directory (or a Hugging Face model id) with config.json and the weights as
// model.safetensors (single or sharded) or pytorch_model.bin, read tensor by tensor on demand.

import { resolve } from "node:path";
import { ConfigError, type ModelConfig, parseConfig, parsePythonJson } from "../config.ts";
import { bytesToFloat32, bytesToFloat32Into, bytesToHalf, bytesToHalfInto, countNonFinite } from "./dtype.ts";
import { readBoundedText } from "./file.ts";
import { hfCacheDir, looksLikeHubId, resolveHubModel } from "./hub.ts";
import { checkpointIdentity } from "./identity.ts";
import { CONFIG_FILE, findWeightFiles, PYTORCH_FILE, SAFETENSORS_FILE } from "./layout.ts";
import { openPytorch } from "./pytorch.ts";
import { openSafetensors, openShardedSafetensors } from "./safetensors.ts";
import { bytesPerElement, CheckpointError, type DType, fmtShape, numelOf, type TensorInfo, type TensorSource } from "./types.ts";
import { expectedTensors } from "../families.ts";
import { checkTensors } from "../tensors.ts";

export { CheckpointError, fmtShape, hfCacheDir };
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
  /** The dtype of a tensor present in a dtype this engine cannot read (undefined otherwise). */
  unsupportedDtype?(name: string): string | undefined;
  /** Contiguous row-major float32 (exact for F16/BF16 sources). */
  readF32(name: string): Promise<Float32Array>;
  /** Contiguous row-major IEEE half bits (F32/BF16 sources rounded to nearest even). */
  readF16(name: string): Promise<Uint16Array>;
  /**
   * Rows [first, first + count) of the tensor (a row = its first dimension's slice), as readF32 /
   * readF16 give them; safetensors read only those bytes from the file, so a large tensor streams.
   * With `into` (long enough), the values are written there and its start comes back: a loader
   * that reuses one buffer leaves no garbage per piece.
   */
  readF32Rows(name: string, first: number, count: number, into?: Float32Array): Promise<Float32Array>;
  readF16Rows(name: string, first: number, count: number, into?: Uint16Array): Promise<Uint16Array>;
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

  /** The last tensor read whole for its rows (formats without ranged reads): one at a time. */
  private whole?: { name: string; bytes: Uint8Array };
  /** The bytes of ranged reads, reused from one to the next (grown when a piece needs more). */
  private scratch = new Uint8Array(0);

  /** Bytes of rows [first, first + count); a piece holding NaN or ±Inf is refused as the whole tensor would be. */
  private async rowBytes(name: string, first: number, count: number): Promise<{ bytes: Uint8Array; dtype: DType }> {
    if (this.closed) throw new CheckpointError(`${this.dir}: checkpoint read after close()`);
    const { dtype, shape } = this.info(name);
    const rows = shape[0] ?? 1;
    if (!(Number.isInteger(first) && Number.isInteger(count) && first >= 0 && count >= 0 && first + count <= rows)) {
      throw new CheckpointError(`${this.where()}: tensor '${name}' ${fmtShape(shape)} has no rows ${first}..${first + count}`);
    }
    const rowBytes = (numelOf(shape) / rows) * bytesPerElement(dtype);
    if (!this.source.readBytesRange) {
      if (this.whole?.name !== name) this.whole = { name, bytes: (await this.bytes(name)).bytes };
      const bytes = this.whole.bytes.slice(first * rowBytes, (first + count) * rowBytes);
      if (first + count === rows) this.whole = undefined;
      return { bytes, dtype };
    }
    if (this.scratch.length < count * rowBytes) this.scratch = new Uint8Array(count * rowBytes);
    const bytes = await this.source.readBytesRange(name, first * rowBytes, count * rowBytes, this.scratch);
    if (countNonFinite(bytes, dtype).count > 0) await this.bytes(name); // throws, counting over the whole tensor
    return { bytes, dtype };
  }

  async readF32Rows(name: string, first: number, count: number, into?: Float32Array): Promise<Float32Array> {
    const { bytes, dtype } = await this.rowBytes(name, first, count);
    const n = bytes.byteLength / bytesPerElement(dtype);
    return bytesToFloat32Into(bytes, dtype, into && into.length >= n ? into : new Float32Array(n));
  }

  async readF16Rows(name: string, first: number, count: number, into?: Uint16Array): Promise<Uint16Array> {
    const { bytes, dtype } = await this.rowBytes(name, first, count);
    const n = bytes.byteLength / bytesPerElement(dtype);
    return bytesToHalfInto(bytes, dtype, into && into.length >= n ? into : new Uint16Array(n));
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
    this.whole = undefined;
    this.scratch = new Uint8Array(0);
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
  // Python writes configs: `Infinity` (a float limit) is read as the number it means
  const text = await readBoundedText(path, MAX_CONFIG_BYTES, "model config");
  let raw: unknown;
  try {
    raw = parsePythonJson(text);
  } catch (e) {
    throw new CheckpointError(`${path} is not valid JSON (${(e as Error).message}); it is not a model config`);
  }
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

/**
 * Check that every tensor the model needs is present with the shape its config implies (a tied
 * lm_head.weight only if present), and that no other tensor is; throws CheckpointError naming the
 * first mismatch.
 */
export function expectModelTensors(ckpt: Checkpoint): void {
  // the checkpoint's names probed as loadModel does (GPT-2's optional "transformer." prefix)
  checkTensors(ckpt, expectedTensors(ckpt.config, (name) => ckpt.has(name)));
}
