// Model configuration shared by every family: what the backbone and the checkpoint need to know,
// read from config.json by the family that config.json names (engine/families.ts), and the readers
// the families' parsers share. Every problem is a ConfigError of one line naming the key.

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** What every family's parsed config holds (a family's config extends it). */
export interface ModelConfig {
  family: string; // the family that parsed it (engine/families.ts)
  nLayer: number;
  dModel: number;
  vocabSize: number; // real tokens (softmax and ids are over these)
  vocabPadded: number; // rows of the embedding / lm_head
  tieEmbeddings: boolean; // lm_head is the embedding
  /** config.json as read */
  raw: Record<string, unknown>;
}

/** A positive integer `key` of `obj` (`where` names the object in errors); `fallback` when absent or null. */
export function positiveInt(obj: Record<string, unknown>, key: string, fallback?: number, where = "config.json"): number {
  const v = obj[key];
  if (v === undefined || v === null) {
    if (fallback === undefined) throw new ConfigError(`${where}: missing "${key}"`);
    return fallback;
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new ConfigError(`${where}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** A positive finite number `key` of `obj`; `fallback` when absent or null. */
export function positiveNumber(obj: Record<string, unknown>, key: string, fallback?: number, where = "config.json"): number {
  const v = obj[key];
  if (v === undefined || v === null) {
    if (fallback === undefined) throw new ConfigError(`${where}: missing "${key}"`);
    return fallback;
  }
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    throw new ConfigError(`${where}: "${key}" must be a positive number, got ${JSON.stringify(v)}`);
  }
  return v;
}

/** Parse config.json (as JSON) with the family it names; ConfigError listing the supported ones otherwise. */
export { parseModelConfig as parseConfig } from "./families.ts";
