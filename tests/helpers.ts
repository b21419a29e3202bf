// Shared test helpers: the fixture model, its golden outputs, one GPU device per test file.
import { createGpu, type Gpu } from "../engine/gpu.ts";
import type { KnockoutSpec, LanguageModel } from "../engine/arch.ts";
import { argmax } from "../engine/probs.ts";
import { assert, assertEquals } from "./assert.ts";
import { Backbone } from "../engine/backbone.ts";
import { type Checkpoint, openCheckpoint } from "../engine/checkpoint/mod.ts";
import { loadModel, type LoadOptions } from "../engine/families.ts";

export const FIXTURE_DIR = new URL("./fixtures/mamba2-tiny/", import.meta.url).pathname;

export interface GoldenSequence {
  ids: number[];
  last_logits: number[];
  logsumexp_per_position: number[]; // (not in every fixture)
  argmax_per_position: number[];
  residual_after_layer?: number[][][];
}
export interface GoldenKnockout {
  ids: number[];
  blocked_edges: Record<string, [number, number][]>;
  last_logits: number[];
}
export interface GoldenEngine {
  sequences: GoldenSequence[];
  knockouts: GoldenKnockout[];
}

const goldens = new Map<string, Promise<GoldenEngine>>();
/** golden-engine.json of a fixture folder (the Mamba-2 fixture by default), read once. */
export function goldenEngine(dir = FIXTURE_DIR): Promise<GoldenEngine> {
  let g = goldens.get(dir);
  if (!g) goldens.set(dir, g = Deno.readTextFile(dir + "golden-engine.json").then(JSON.parse));
  return g;
}

let gpu: Promise<Gpu> | undefined;
export function testGpu(): Promise<Gpu> {
  return gpu ??= createGpu();
}

/**
 * A checkpoint loaded through the family registry, as the generic backbone every family runs on
 * (tests read its weights' dtype and size); the checkpoint is closed unless given open.
 */
export async function loadBackbone(from: string | Checkpoint, opts: LoadOptions & { gpu?: Gpu } = {}): Promise<Backbone> {
  const ckpt = typeof from === "string" ? await openCheckpoint(from) : from;
  try {
    const model = await loadModel(opts.gpu ?? await testGpu(), ckpt, opts);
    if (!(model instanceof Backbone)) throw new Error(`${ckpt.dir}: not a backbone model`);
    return model;
  } finally {
    if (typeof from === "string") ckpt.close();
  }
}

export function maxAbs(xs: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < xs.length; i++) m = Math.max(m, Math.abs(xs[i]));
  return m;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Deterministic PRNG for test inputs (the one the knockout stages sample with). */
export { mulberry32 as seeded } from "../workflows/lib/bootstrap.ts";

/** A golden file's `blocked_edges` {layer: edges} as knockouts: one spec per layer, every head. */
export function knockoutFromGolden(edges: Record<string, [number, number][]>): KnockoutSpec[] {
  return Object.entries(edges).map(([l, e]) => ({ start: Number(l), end: Number(l) + 1, edges: e }));
}

/**
 * The golden sequences' logits (forward with allPositions, in the golden's order): the last
 * position's within tol × max |logit|, the argmax at every position.
 */
export function assertGoldenSequences(logits: Float32Array[], golden: GoldenEngine, vocab: { vocabPadded: number; vocabSize: number }, tol: number, what: string) {
  const V = vocab.vocabPadded;
  golden.sequences.forEach((seq, i) => {
    const T = seq.ids.length;
    const err = maxAbsDiff(logits[i].subarray((T - 1) * V, T * V), seq.last_logits) / maxAbs(seq.last_logits);
    assert(err <= tol, `${what}: sequence ${i} (${T} tokens): last logits off by ${err} x max|logit|`);
    for (let t = 0; t < T; t++) assertEquals(argmax(logits[i], vocab.vocabSize, t * V), seq.argmax_per_position[t], `${what}: sequence ${i} position ${t}: argmax`);
  });
}

/** The golden knockouts through the model in attention mode: last logits within tol × max |logit|; returns the logits. */
export async function assertGoldenKnockouts(model: LanguageModel, golden: GoldenEngine, tol: number, what: string): Promise<Float32Array[]> {
  const logits = await model.forward(golden.knockouts.map((k) => k.ids), {
    mode: "attention",
    knockouts: golden.knockouts.map((k) => knockoutFromGolden(k.blocked_edges)),
  });
  golden.knockouts.forEach((k, i) => {
    const err = maxAbsDiff(logits[i], k.last_logits) / maxAbs(k.last_logits);
    assert(err <= tol, `${what}: knockout ${i} (${JSON.stringify(k.blocked_edges)}): logits off by ${err}`);
  });
  return logits;
}

const MACHINE_ENV = "MAMBA_EXPLAIN_TEST_MACHINE_ENV";

/**
 * The machine's HOME and Deno cache, recorded once before any test changes the environment. Test
 * files run in parallel share one process environment, and some run with a private HOME
 * (hardening_fixtures.ts isolatedTest, checkpoint_test.ts): a child started meanwhile would inherit
 * it, download every npm package again into it (Deno's cache follows HOME) and write its caches
 * there. Tests that change HOME call this first; children get these values unless told otherwise.
 */
export function machineEnv(): { HOME: string; DENO_DIR: string } {
  const recorded = Deno.env.get(MACHINE_ENV);
  if (recorded) return JSON.parse(recorded);
  const home = Deno.env.get("HOME") ?? "/root";
  const env = { HOME: home, DENO_DIR: Deno.env.get("DENO_DIR") ?? `${Deno.env.get("XDG_CACHE_HOME") ?? `${home}/.cache`}/deno` };
  Deno.env.set(MACHINE_ENV, JSON.stringify(env));
  return env;
}
machineEnv();

/** The environment of a child deno process of the tests: the machine's HOME and Deno cache, no colours. */
export function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { ...machineEnv(), XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1", ...extra };
}

/** Run a deno subprocess of this repo, returning exit code and text output. */
export async function runDeno(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: opts.cwd ?? new URL("..", import.meta.url).pathname,
    env: childEnv(opts.env),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
