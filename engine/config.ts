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

/**
 * JSON as Python's `json` module writes it: besides standard JSON, the bare tokens `Infinity`,
 * `-Infinity` and `NaN` (json.dumps of a float inf / nan); objects {"__float__": "Infinity"} (another
 * writer's spelling) become the number. Strings are left alone ("Infinity" stays a string; the
 * readers of float fields accept it, see floatValue). Throws SyntaxError like JSON.parse.
 */
export function parsePythonJson(text: string): unknown {
  const MARK = "\u0000pyfloat:";
  let out = "", i = 0, changed = false;
  while (i < text.length) {
    const ch = text[i];
    if (ch === '"') {
      // copy a string literal as it is (escapes included)
      let j = i + 1;
      while (j < text.length && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      out += text.slice(i, j + 1);
      i = j + 1;
      continue;
    }
    const m = /^(-?Infinity|NaN)/.exec(text.slice(i, i + 9));
    if (m) {
      out += JSON.stringify(MARK + m[1]);
      i += m[1].length;
      changed = true;
      continue;
    }
    out += ch;
    i++;
  }
  const floats: Record<string, number> = { Infinity: Infinity, "-Infinity": -Infinity, NaN: NaN };
  return JSON.parse(out, (_k, v) => {
    if (changed && typeof v === "string" && v.startsWith(MARK)) return floats[v.slice(MARK.length)];
    if (typeof v === "object" && v !== null && !Array.isArray(v) && Object.keys(v).length === 1 && "__float__" in v) {
      const f = floatValue(v.__float__);
      if (f !== undefined) return f;
    }
    return v;
  });
}

/** A float as Python-written configs spell it: a number, "Infinity"/"-Infinity"/"inf"/"NaN", {"__float__": …}; undefined otherwise. */
export function floatValue(v: unknown): number | undefined {
  if (typeof v === "number") return v;
  if (typeof v === "string") {
    const t = v.trim().toLowerCase();
    if (t === "infinity" || t === "inf" || t === "+infinity" || t === "+inf") return Infinity;
    if (t === "-infinity" || t === "-inf") return -Infinity;
    if (t === "nan") return NaN;
    const n = Number(v);
    return v.trim() !== "" && Number.isFinite(n) ? n : undefined;
  }
  if (typeof v === "object" && v !== null && !Array.isArray(v) && "__float__" in v) return floatValue((v as { __float__: unknown }).__float__);
  return undefined;
}

/**
 * A dt clamp [lo, hi] (Mamba-2's `dt_limit` in ssm_cfg, `time_step_limit` in the Hugging Face
 * layout): two floats, lo >= 0, lo < hi; hi may be Infinity (no upper clamp). Absent: [0, Infinity].
 */
export function dtLimit(obj: Record<string, unknown>, key: string, where = "config.json"): [number, number] {
  const v = obj[key];
  if (v === undefined || v === null) return [0, Infinity];
  const pair = Array.isArray(v) && v.length === 2 ? v.map(floatValue) : undefined;
  if (!pair || pair.some((x) => x === undefined || Number.isNaN(x)) || !(pair[0]! >= 0 && pair[0]! < pair[1]!)) {
    throw new ConfigError(`${where}: "${key}" must be [min, max] with 0 <= min < max (max may be Infinity), got ${JSON.stringify(v)}`);
  }
  return [pair[0]!, pair[1]!];
}

/** A boolean `key` of `obj`; `fallback` when absent or null. */
export function bool(obj: Record<string, unknown>, key: string, fallback: boolean, where = "config.json"): boolean {
  const v = obj[key];
  if (v === undefined || v === null) return fallback;
  if (typeof v !== "boolean") throw new ConfigError(`${where}: "${key}" must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

/** ConfigError (one line) unless `key` is absent or has the one value this engine implements. */
export function requireValue(obj: Record<string, unknown>, key: string, wanted: unknown, why: string, where = "config.json"): void {
  const v = obj[key];
  if (v !== undefined && v !== null && v !== wanted) throw new ConfigError(`${where}: "${key}": ${JSON.stringify(v)} is not supported (${why})`);
}

/**
 * The state-spaces (mamba_ssm) layout's `ssm_cfg` (an object; {} when absent), after refusing the
 * MixerModel features this engine does not implement: attention layers (attn_layer_idx) and an MLP
 * (d_intermediate > 0). Shared by the Mamba-1 and Mamba-2 parsers.
 */
export function stateSpacesSsmCfg(c: Record<string, unknown>): Record<string, unknown> {
  const ssm = (c.ssm_cfg ?? {}) as Record<string, unknown>;
  if (typeof ssm !== "object" || ssm === null || Array.isArray(ssm)) throw new ConfigError("config.json: ssm_cfg must be an object");
  if (Array.isArray(c.attn_layer_idx) && c.attn_layer_idx.length > 0) {
    throw new ConfigError("config.json: hybrid models with attention layers (attn_layer_idx) are not supported");
  }
  if (typeof c.d_intermediate === "number" && c.d_intermediate !== 0) {
    throw new ConfigError("config.json: models with an MLP (d_intermediate > 0) are not supported");
  }
  return ssm;
}
