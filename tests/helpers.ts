// Shared test helpers: the fixture model, its golden outputs, one GPU device per test file.
import { createGpu, type Gpu } from "../engine/gpu.ts";
import type { KnockoutSpec } from "../engine/arch.ts";

export const FIXTURE_DIR = new URL("./fixtures/mamba2-tiny/", import.meta.url).pathname;

export interface GoldenSequence {
  ids: number[];
  last_logits: number[];
  logsumexp_per_position: number[];
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

let golden: GoldenEngine | undefined;
export async function goldenEngine(): Promise<GoldenEngine> {
  return golden ??= JSON.parse(await Deno.readTextFile(FIXTURE_DIR + "golden-engine.json"));
}

let gpu: Promise<Gpu> | undefined;
export function testGpu(): Promise<Gpu> {
  return gpu ??= createGpu();
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

/** Run a deno subprocess of this repo, returning exit code and text output. */
export async function runDeno(args: string[], opts: { env?: Record<string, string>; cwd?: string } = {}) {
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd: opts.cwd ?? new URL("..", import.meta.url).pathname,
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1", ...opts.env },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const dec = new TextDecoder();
  return { code: out.code, stdout: dec.decode(out.stdout), stderr: dec.decode(out.stderr) };
}
