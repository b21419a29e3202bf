// Opening a Hugging Face Transformer checkpoint: config.json kept as parsed JSON (the families parse
// it, engine/<family>/mod.ts), weights read through the shared checkpoint readers
// (engine/checkpoint/: safetensors single or sharded, or pytorch_model.bin without executing its
// pickle; F32, F16 and BF16). engine/checkpoint/mod.ts's openCheckpoint parses every config as a
// Mamba-2 one today; once the generic checkpoint carries the raw config, this file goes.
import { resolve } from "node:path";
import { CheckpointError, type DType, type TensorInfo } from "../checkpoint/mod.ts";
import { bytesToFloat32, bytesToHalf } from "../checkpoint/dtype.ts";
import { looksLikeHubId, resolveHubModel } from "../checkpoint/hub.ts";
import { checkpointIdentity } from "../checkpoint/identity.ts";
import { CONFIG_FILE, findWeightFiles, isFile, PYTORCH_FILE, SAFETENSORS_FILE } from "../checkpoint/layout.ts";
import { openPytorch } from "../checkpoint/pytorch.ts";
import { openSafetensors, openShardedSafetensors } from "../checkpoint/safetensors.ts";
import { fmtShape, type TensorSource } from "../checkpoint/types.ts";

export const TOKENIZER_FILE = "tokenizer.json";

/** A checkpoint as the Transformer families read it (the shared Checkpoint's reading side, with the raw config). */
export interface TensorCheckpoint {
  readonly dir: string;
  readonly rawConfig: Record<string, unknown>;
  readonly format: "safetensors" | "pytorch";
  /** Content identity of config.json + weights (64 hex digits). */
  readonly identity: string;
  list(): TensorInfo[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  readF32(name: string): Promise<Float32Array>;
  readF16(name: string): Promise<Uint16Array>;
  close(): void;
}

async function readRawConfig(dir: string): Promise<Record<string, unknown>> {
  const path = `${dir}/${CONFIG_FILE}`;
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch {
    throw new CheckpointError(`${dir} has no ${CONFIG_FILE}; put the model's ${CONFIG_FILE} next to its weights`);
  }
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(`${path} is not valid JSON (${(e as Error).message})`);
  }
  if (typeof raw !== "object" || raw === null || Array.isArray(raw)) throw new CheckpointError(`${path}: not a JSON object`);
  return raw as Record<string, unknown>;
}

function reader(dir: string, rawConfig: Record<string, unknown>, identity: string, source: TensorSource): TensorCheckpoint {
  let closed = false;
  const info = (name: string): TensorInfo => {
    const t = source.tensors.get(name);
    if (t) return { ...t, shape: [...t.shape] };
    const dtype = source.unsupported.get(name);
    if (dtype !== undefined) throw new CheckpointError(`${dir}: tensor '${name}' is ${dtype}; only F32, F16 and BF16 weights can be loaded`);
    throw new CheckpointError(`${dir}: no tensor '${name}'; the checkpoint does not match this model`);
  };
  const bytes = async (name: string): Promise<{ bytes: Uint8Array; dtype: DType }> => {
    if (closed) throw new CheckpointError(`${dir}: checkpoint read after close()`);
    return { dtype: info(name).dtype, bytes: await source.readBytes(name) };
  };
  return {
    dir,
    rawConfig,
    identity,
    format: source.format,
    list: () => [...source.tensors.values()].map((t) => ({ ...t, shape: [...t.shape] })),
    has: (name) => source.tensors.has(name),
    info,
    readF32: async (name) => {
      const b = await bytes(name);
      return bytesToFloat32(b.bytes, b.dtype);
    },
    readF16: async (name) => {
      const b = await bytes(name);
      return bytesToHalf(b.bytes, b.dtype);
    },
    close: () => {
      if (!closed) source.close();
      closed = true;
    },
  };
}

/** Open a Transformer checkpoint directory, or a Hugging Face id (from the cache, else downloaded). */
export async function openTransformerCheckpoint(modelIdOrPath: string, opts: { offline?: boolean } = {}): Promise<TensorCheckpoint> {
  let dir: string;
  const stat = await Deno.stat(modelIdOrPath).catch(() => undefined);
  if (stat) {
    if (!stat.isDirectory) throw new CheckpointError(`${modelIdOrPath} is a file; pass the directory that holds ${CONFIG_FILE} and the weights`);
    dir = await Deno.realPath(modelIdOrPath);
  } else if (looksLikeHubId(modelIdOrPath)) {
    dir = resolve(await resolveHubModel(modelIdOrPath, opts));
  } else {
    throw new CheckpointError(`${modelIdOrPath}: no such directory, and not a Hugging Face model id (org/name)`);
  }
  const rawConfig = await readRawConfig(dir);
  const weights = await findWeightFiles(dir);
  if (!weights) throw new CheckpointError(`${dir} has no weights: put ${SAFETENSORS_FILE} or ${PYTORCH_FILE} next to ${CONFIG_FILE}`);
  const source = weights.kind === "safetensors"
    ? await openSafetensors(weights.path)
    : weights.kind === "safetensors-sharded"
    ? await openShardedSafetensors(weights.path)
    : await openPytorch(weights.path);
  try {
    return reader(dir, rawConfig, await checkpointIdentity(`${dir}/${CONFIG_FILE}`, source.files), source);
  } catch (e) {
    source.close();
    throw e;
  }
}

/** Check every tensor the model reads against the shape its config implies; one line naming the first mismatch. */
export function checkTensors(ckpt: Pick<TensorCheckpoint, "dir" | "has" | "info">, shapes: Map<string, number[]>): void {
  for (const [name, expected] of shapes) {
    if (!ckpt.has(name)) {
      throw new CheckpointError(`${ckpt.dir}: tensor '${name}' (expected shape ${fmtShape(expected)}) is missing or unreadable; the weights and ${CONFIG_FILE} do not belong together`);
    }
    const { shape } = ckpt.info(name);
    if (shape.length !== expected.length || shape.some((d, i) => d !== expected[i])) {
      throw new CheckpointError(`${ckpt.dir}: tensor '${name}' has shape ${fmtShape(shape)} but ${CONFIG_FILE} implies ${fmtShape(expected)}`);
    }
  }
}

/**
 * Ids a tokenizer.json can produce: 1 + the largest id of its model vocabulary (BPE/WordPiece/
 * WordLevel: a name → id map; Unigram: a list) and of its added tokens.
 */
export async function tokenizerVocabSize(path: string): Promise<number> {
  let t: { model?: { vocab?: unknown }; added_tokens?: { id?: unknown }[] };
  try {
    t = JSON.parse(await Deno.readTextFile(path));
  } catch (e) {
    throw new CheckpointError(`cannot read the tokenizer ${path}: ${(e as Error).message}`);
  }
  const vocab = t.model?.vocab;
  let maxId = -1;
  if (Array.isArray(vocab)) maxId = vocab.length - 1;
  else if (vocab && typeof vocab === "object") for (const id of Object.values(vocab)) if (typeof id === "number") maxId = Math.max(maxId, id);
  for (const a of t.added_tokens ?? []) if (typeof a.id === "number") maxId = Math.max(maxId, a.id);
  if (maxId < 0) throw new CheckpointError(`${path}: no vocabulary found in this tokenizer`);
  return maxId + 1;
}

/** tokenizer.json beside a checkpoint's config, when there is one. */
export async function tokenizerBeside(dir: string): Promise<string | undefined> {
  const path = `${dir}/${TOKENIZER_FILE}`;
  return (await isFile(path)) ? path : undefined;
}
