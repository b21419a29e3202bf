// Model configuration shared by every family: what the backbone and the checkpoint need to know,
// read from config.json by the family that config.json names (engine/families.ts), and the readers
// the families' parsers share. Every problem is a ConfigError of one line naming the key.

import { expectedTensors, parseModelConfig } from "./families.ts";

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

/**
 * Sizes no real model reaches (the largest published language models have about 130 layers, a
 * d_model of 25,600, vocabularies of 256k tokens and 10^12 parameters): a config.json beyond them is
 * damaged or hostile, and is refused before its tensor list is built or anything is allocated
 * (`n_layer: 1e9` would otherwise spend minutes and gigabytes listing tensors).
 */
export const MODEL_LIMITS = { nLayer: 1024, dModel: 65536, vocabPadded: 1 << 22, parameters: 2 ** 40 } as const;

/** ConfigError (one line, naming the key and the bound) when a parsed config exceeds MODEL_LIMITS. */
export function checkModelSize(c: ModelConfig): ModelConfig {
  const bound = (key: string, v: number, max: number) => {
    if (v > max) throw new ConfigError(`config.json: "${key}" is ${v}, beyond any real model (at most ${max}); the file is damaged or not this model's`);
  };
  bound("n_layer", c.nLayer, MODEL_LIMITS.nLayer);
  bound("d_model", c.dModel, MODEL_LIMITS.dModel);
  bound("vocab_size", c.vocabPadded, MODEL_LIMITS.vocabPadded);
  let params = 0;
  for (const t of expectedTensors(c)) params += t.shape.reduce((a, b) => a * b, 1);
  if (params > MODEL_LIMITS.parameters) {
    throw new ConfigError(
      `config.json: its sizes imply ${params.toExponential(2)} parameters, beyond any real model (at most ${MODEL_LIMITS.parameters.toExponential(2)}); the file is damaged or not this model's`,
    );
  }
  return c;
}

/**
 * Parse config.json (as JSON) with the family it names (ConfigError listing the supported ones
 * otherwise), its sizes bounded by MODEL_LIMITS.
 */
export function parseConfig(raw: unknown): ModelConfig {
  return checkModelSize(parseModelConfig(raw));
}
