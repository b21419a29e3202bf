// Which weight files a checkpoint directory holds. safetensors wins over pytorch_model.bin: it is
// read in place without a pickle.

export const CONFIG_FILE = "config.json";
export const SAFETENSORS_FILE = "model.safetensors";
export const SAFETENSORS_INDEX_FILE = "model.safetensors.index.json";
export const PYTORCH_FILE = "pytorch_model.bin";

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

/** Shard file names listed by a model.safetensors.index.json, or undefined when it is unreadable. */
export async function shardNames(indexPath: string): Promise<string[] | undefined> {
  try {
    const weightMap = JSON.parse(await Deno.readTextFile(indexPath))?.weight_map;
    if (typeof weightMap !== "object" || weightMap === null) return undefined;
    return [...new Set(Object.values(weightMap as Record<string, string>))].map(String);
  } catch {
    return undefined;
  }
}

export async function findWeightFiles(dir: string): Promise<WeightFiles | undefined> {
  const single = `${dir}/${SAFETENSORS_FILE}`;
  if (await isFile(single)) return { kind: "safetensors", path: single, needed: [single] };
  const index = `${dir}/${SAFETENSORS_INDEX_FILE}`;
  if (await isFile(index)) {
    const shards = (await shardNames(index)) ?? [];
    return { kind: "safetensors-sharded", path: index, needed: [index, ...shards.map((s) => `${dir}/${s}`)] };
  }
  const bin = `${dir}/${PYTORCH_FILE}`;
  if (await isFile(bin)) return { kind: "pytorch", path: bin, needed: [bin] };
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
