// Shared pieces of the Transformer tests: the four fixtures (tests/fixtures/<name>-tiny, copied from
// ../shared/fixtures: F16 weights, float64 goldens), their models on the backbone and float64
// reference tensors.
import type { Backbone } from "../engine/backbone.ts";
import type { Checkpoint } from "../engine/checkpoint/mod.ts";
import type { WeightDtype } from "../engine/matmul.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { type GoldenEngine, goldenEngine as readGoldenEngine, loadBackbone, maxAbs, maxAbsDiff } from "./helpers.ts";
import type { GoldenFlowCase, GoldenFlows } from "./pipeline_helpers.ts";

export const FIXTURES = ["pythia", "gpt2", "llama", "qwen2"] as const;
export type Fixture = typeof FIXTURES[number];

export const fixtureDir = (f: Fixture) => new URL(`./fixtures/${f}-tiny/`, import.meta.url).pathname;

/** The fixtures' prompts come from the GPT-NeoX-20B tokenizer: its ids are the real vocabulary. */
export const TOKENIZER = new URL("../data/gpt-neox-20b-tokenizer.json", import.meta.url).pathname;

/** A Transformer fixture's golden-experiments.json: flow cases on every head, no conv. */
export type GoldenExperiments = GoldenFlows<GoldenFlowCase & { true_prob: number; hit: boolean; relative_change_pct: number }>;

export const goldenEngine = (f: Fixture): Promise<GoldenEngine> => readGoldenEngine(fixtureDir(f));
const experiments = new Map<Fixture, Promise<GoldenExperiments>>();
export function goldenExperiments(f: Fixture): Promise<GoldenExperiments> {
  if (!experiments.has(f)) experiments.set(f, Deno.readTextFile(fixtureDir(f) + "golden-experiments.json").then(JSON.parse));
  return experiments.get(f)!;
}

let vocab: Promise<number> | undefined;
/** The GPT-NeoX-20B tokenizer's 50277 tokens (the fixtures' heads have up to 50304 rows). */
export const realVocab = () => vocab ??= loadTokenizer(TOKENIZER).then((t) => t.vocabSize);

const models = new Map<string, Promise<Backbone>>();
/** The fixture's model on the test GPU, through the registry (one per fixture and dtype per test file). */
export function fixtureModel(f: Fixture, dtype: WeightDtype = "f32"): Promise<Backbone> {
  const key = `${f}:${dtype}`;
  if (!models.has(key)) models.set(key, (async () => loadBackbone(fixtureDir(f), { dtype, vocabSize: await realVocab() }))());
  return models.get(key)!;
}

/** A checkpoint's tensors as float32, for the float64 reference (tests/reference/transformer.ts). */
export function referenceTensors(ckpt: Checkpoint) {
  const cache = new Map<string, Promise<Float32Array>>();
  return {
    get: (name: string) => {
      if (!cache.has(name)) cache.set(name, ckpt.readF32(name));
      return cache.get(name)!;
    },
    has: (name: string) => ckpt.has(name),
  };
}

/** max |a − b| / max |b| */
export const relErr = (a: ArrayLike<number>, b: ArrayLike<number>): number => maxAbsDiff(a, b) / maxAbs(b);
