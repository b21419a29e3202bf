// Which weight files a checkpoint directory holds. safetensors wins over pytorch_model.bin: it is
// read in place without a pickle.

import { readBoundedJson } from "./file.ts";
import { CheckpointError } from "./types.ts";

export const CONFIG_FILE = "config.json";
export const SAFETENSORS_FILE = "model.safetensors";
export const SAFETENSORS_INDEX_FILE = "model.safetensors.index.json";
export const PYTORCH_FILE = "pytorch_model.bin";
/** A model's own tokenizer, beside its config.json (optional; engine/tokenizer.ts). */
export const TOKENIZER_FILE = "tokenizer.json";

export interface WeightFiles {
  kind: "safetensors" | "safetensors-sharded" | "pytorch";
  /** The file to open: model.safetensors, the shard index, or pytorch_model.bin. */
  path: string;
  /** Every file the weights need (the shards for a sharded checkpoint). */
  needed: string[];
}

export async function isFile(path: string): Promise<boolean> {
  try {
    return (await Deno.stat(path)).isFile; // follows symlinks: a dangling one is no file
  } catch {
    return false;
  }
}

/** A shard index lists one line per tensor: 16 MiB is ample for any model. */
export const MAX_INDEX_BYTES = 16 << 20;

/**
 * A shard named by an index must be a plain file name beside it ("model-00001-of-00002.safetensors"):
 * no folder part, no "..", nothing hidden, and a .safetensors name (so it cannot replace config.json or
 * the index in a snapshot).
 */
export function isShardFileName(name: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]*\.safetensors$/.test(name) && name.length <= 255;
}

/** A model.safetensors.index.json as shard file -> the tensors in it; CheckpointError naming what is wrong. */
export async function readShardIndex(indexPath: string): Promise<Map<string, Set<string>>> {
  const index = await readBoundedJson(indexPath, MAX_INDEX_BYTES, "shard index");
  const weightMap = (index as { weight_map?: unknown })?.weight_map;
  if (typeof weightMap !== "object" || weightMap === null || Array.isArray(weightMap)) {
    throw new CheckpointError(`${indexPath}: no "weight_map" object; the shard index is corrupt`);
  }
  const byShard = new Map<string, Set<string>>();
  for (const [tensor, shard] of Object.entries(weightMap as Record<string, unknown>)) {
    if (typeof shard !== "string" || !isShardFileName(shard)) {
      throw new CheckpointError(
        `${indexPath}: weight_map entry for '${tensor}' is ${
          JSON.stringify(shard)
        }, not a plain *.safetensors file name in this folder; the shard index is corrupt or hostile`,
      );
    }
    if (!byShard.has(shard)) byShard.set(shard, new Set());
    byShard.get(shard)!.add(tensor);
  }
  return byShard;
}

/** Shard file names listed by a model.safetensors.index.json, or undefined when it is unreadable or invalid. */
export async function shardNames(indexPath: string): Promise<string[] | undefined> {
  try {
    return [...(await readShardIndex(indexPath)).keys()];
  } catch {
    return undefined;
  }
}

/** Something is there (a FIFO or device counts: the reader then refuses it with a clear line). */
async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

export async function findWeightFiles(dir: string): Promise<WeightFiles | undefined> {
  const single = `${dir}/${SAFETENSORS_FILE}`;
  if (await exists(single)) return { kind: "safetensors", path: single, needed: [single] };
  const index = `${dir}/${SAFETENSORS_INDEX_FILE}`;
  if (await exists(index)) {
    const shards = (await shardNames(index)) ?? [];
    return { kind: "safetensors-sharded", path: index, needed: [index, ...shards.map((s) => `${dir}/${s}`)] };
  }
  const bin = `${dir}/${PYTORCH_FILE}`;
  if (await exists(bin)) return { kind: "pytorch", path: bin, needed: [bin] };
  return undefined;
}

/** config.json and every weight file present. */
export async function isCompleteCheckpoint(dir: string): Promise<boolean> {
  if (!(await isFile(`${dir}/${CONFIG_FILE}`))) return false;
  const weights = await findWeightFiles(dir);
  if (!weights) return false;
  for (const path of weights.needed) if (!(await isFile(path))) return false;
  return true;
}
