// Shared pieces of the Transformer tests: the four fixtures (tests/fixtures/<name>-tiny, copied from
// ../shared/fixtures: F16 weights, float64 goldens), their models and float64 reference tensors, and
// the token sets and edges of the knockout flows (E1's engine/flows.ts replaces flowEdges at merge).
import { openTransformerCheckpoint, type TensorCheckpoint, tokenizerVocabSize } from "../engine/transformer/checkpoint.ts";
import type { TransformerModel } from "../engine/transformer/model.ts";
import { loadTransformer } from "../engine/transformer/registry.ts";
import type { Edge } from "../engine/transformer/arch_types.ts";
import type { WeightDtype } from "../engine/ops.ts";
import { testGpu } from "./helpers.ts";

export const FIXTURES = ["pythia", "gpt2", "llama", "qwen2"] as const;
export type Fixture = typeof FIXTURES[number];

export const fixtureDir = (f: Fixture) => new URL(`./fixtures/${f}-tiny/`, import.meta.url).pathname;

/** The fixtures' prompts come from the GPT-NeoX-20B tokenizer: its ids are the real vocabulary. */
export const TOKENIZER = new URL("../data/gpt-neox-20b-tokenizer.json", import.meta.url).pathname;

export interface GoldenEngine {
  sequences: { ids: number[]; last_logits: number[]; argmax_per_position: number[] }[];
  knockouts: { ids: number[]; blocked_edges: Record<string, Edge[]>; last_logits: number[] }[];
}

export interface GoldenCase {
  flow: string;
  heads: string;
  window_start: number;
  edges: number;
  true_prob: number;
  hit: boolean;
  relative_change_pct: number;
}
export interface GoldenExperiments {
  window_size: number;
  windows: number[][];
  flows: string[];
  prompts: { row: number; ids: number[]; true_id: number; subject_tokens: number[]; base: { true_prob: number; hit: boolean }; cases: GoldenCase[] }[];
}

const jsonCache = new Map<string, Promise<unknown>>();
function json<T>(path: string): Promise<T> {
  if (!jsonCache.has(path)) jsonCache.set(path, Deno.readTextFile(path).then(JSON.parse));
  return jsonCache.get(path) as Promise<T>;
}
export const goldenEngine = (f: Fixture) => json<GoldenEngine>(fixtureDir(f) + "golden-engine.json");
export const goldenExperiments = (f: Fixture) => json<GoldenExperiments>(fixtureDir(f) + "golden-experiments.json");

let vocab: Promise<number> | undefined;
export const realVocab = () => vocab ??= tokenizerVocabSize(TOKENIZER);

const models = new Map<string, Promise<TransformerModel>>();
/** The fixture's model on the test GPU (one per fixture and dtype per test file). */
export function fixtureModel(f: Fixture, dtype: WeightDtype = "f32"): Promise<TransformerModel> {
  const key = `${f}:${dtype}`;
  if (!models.has(key)) {
    models.set(key, (async () => {
      const ckpt = await openTransformerCheckpoint(fixtureDir(f));
      try {
        return await loadTransformer(await testGpu(), ckpt, { dtype, vocabSize: await realVocab() });
      } finally {
        ckpt.close();
      }
    })());
  }
  return models.get(key)!;
}

/** A checkpoint's tensors as float32, for the float64 reference (tests/reference/transformer.ts). */
export function referenceTensors(ckpt: TensorCheckpoint) {
  const cache = new Map<string, Promise<Float32Array>>();
  return {
    get: (name: string) => {
      if (!cache.has(name)) cache.set(name, ckpt.readF32(name));
      return cache.get(name)!;
    },
    has: (name: string) => ckpt.has(name),
  };
}

// ------------------------------------------------------------------ flows

export const TOKEN_SETS = ["first", "last", "subject", "relation", "relation_minus_last", "context", "all"] as const;
export type TokenSet = typeof TOKEN_SETS[number];

/** The positions of a token set in a T-token prompt (the study's definitions). */
export function tokenSet(set: TokenSet, T: number, subject: number[]): number[] {
  const all = Array.from({ length: T }, (_, t) => t);
  const inSubject = new Set(subject);
  switch (set) {
    case "first":
      return [0];
    case "last":
      return [T - 1];
    case "subject":
      return [...subject];
    case "relation":
      return all.filter((t) => !inSubject.has(t));
    case "relation_minus_last":
      return all.filter((t) => !inSubject.has(t) && t !== T - 1);
    case "context":
      return all.filter((t) => t < Math.min(...subject));
    case "all":
      return all;
  }
}

/** `target<-source`: every (t, s) with t in target, s in source, s <= t. */
export function flowEdges(flow: string, T: number, subject: number[]): Edge[] {
  const [target, source] = flow.split("<-") as [TokenSet, TokenSet];
  if (!TOKEN_SETS.includes(target) || !TOKEN_SETS.includes(source)) throw new Error(`bad flow ${flow}`);
  const src = tokenSet(source, T, subject);
  const edges: Edge[] = [];
  for (const t of tokenSet(target, T, subject)) for (const s of src) if (s <= t) edges.push([t, s]);
  return edges;
}

/** max |a − b| / max |b| */
export function relErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let e = 0, m = 0;
  for (let i = 0; i < b.length; i++) {
    e = Math.max(e, Math.abs(a[i] - b[i]));
    m = Math.max(m, Math.abs(b[i]));
  }
  return e / m;
}
