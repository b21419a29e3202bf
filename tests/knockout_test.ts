// The exact knockout fast path (engine/knockout.ts) as the stages use it, on the fixture model:
// for every window, block and heatmap cell of the golden experiments it equals the full
// attention-mode recompute with the same edges knocked out (|Δp| ≤ 1e-6, the argmax the same),
// and both match the float64 goldens of golden-experiments.json.
import { assert, assertEquals } from "./assert.ts";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { lastRowKnockouts, type LastRowKnockout } from "../engine/knockout.ts";
import { type Knockout, Mamba2Model } from "../engine/model.ts";
import type { TokenStats } from "../engine/probs.ts";
import { BLOCKS, blockColumns, heatmapConfigs, infoFlowConfigs, type PromptKnockout } from "../workflows/lib/knockout_configs.ts";
import { FIXTURE_DIR, testGpu } from "./helpers.ts";

const P_TOL = 1e-6; // absolute, on probabilities
const P_REL_TOL = 1e-4; // relative to the golden probability (the fixture's probabilities are tiny)

interface GoldenEntry {
  true_prob: number;
  hit: boolean;
  relative_change_pct: number;
}
export interface GoldenPrompt {
  row: number;
  prompt: string;
  subject: string;
  target_true: string;
  ids: number[];
  true_id: number;
  subject_tokens: number[];
  first_token_in_subject: boolean;
  base: { true_prob: number; max_prob: number; pred_id: number };
  blocks: Record<string, GoldenEntry[]>;
  heatmap?: { window_size: number; windows: number[][]; true_prob: number[][] };
}
export interface GoldenExperiments {
  window_size: number;
  windows: number[][];
  prompts: GoldenPrompt[];
}

export async function goldenExperiments(): Promise<GoldenExperiments> {
  return JSON.parse(await Deno.readTextFile(FIXTURE_DIR + "golden-experiments.json"));
}

let modelP: Promise<Mamba2Model> | undefined;
function fixtureModel(): Promise<Mamba2Model> {
  return modelP ??= (async () => {
    const ckpt = await openCheckpoint(FIXTURE_DIR);
    const m = await Mamba2Model.load(await testGpu(), ckpt);
    ckpt.close();
    return m;
  })();
}

/** The same knockout as a full attention-mode forward: edges (last, s) removed in every layer of the window. */
function asKnockout(k: PromptKnockout, nTokens: number): Knockout {
  const m: Knockout = new Map();
  for (let l = k.start; l < k.end; l++) m.set(l, k.cols.map((s) => [nTokens - 1, s] as [number, number]));
  return m;
}

async function fullRecompute(model: Mamba2Model, prompts: number[][], configs: LastRowKnockout[]): Promise<TokenStats[]> {
  return await model.forwardStats(
    configs.map((c) => prompts[c.prompt]),
    configs.map((c) => c.target),
    { mode: "attention", knockouts: configs.map((c) => asKnockout(c, prompts[c.prompt].length)) },
  );
}

function close(a: number, b: number, golden = b): boolean {
  return Math.abs(a - b) <= P_TOL && Math.abs(a - b) <= P_REL_TOL * Math.abs(golden) + 1e-12;
}

Deno.test("fast path = full recompute = golden, every window and block of the info-flow experiment", async () => {
  const model = await fixtureModel();
  const g = await goldenExperiments();
  const k = g.window_size;
  const prompts = g.prompts.map((p) => p.ids);
  const configs: LastRowKnockout[] = [];
  const labels: { p: GoldenPrompt; block: string; w: number }[] = [];
  g.prompts.forEach((p, pi) => {
    const cfg = infoFlowConfigs(model.config.nLayer, p.ids.length, p.subject_tokens, { ks: [k], convention: "start", relationLast: true });
    assertEquals(cfg.map((c) => [c.start, c.end]).slice(0, g.windows.length), g.windows.map((w) => [w[0], w[w.length - 1] + 1]));
    for (const c of cfg) {
      configs.push({ prompt: pi, start: c.start, end: c.end, cols: c.cols, target: p.true_id });
      labels.push({ p, block: c.block, w: c.window.at });
    }
  });
  assertEquals(configs.length, g.prompts.length * BLOCKS.length * g.windows.length);
  const fast = await lastRowKnockouts(model, prompts, g.prompts.map((p) => p.true_id), configs);
  const full = await fullRecompute(model, prompts, configs);
  let worstFull = 0, worstGolden = 0;
  configs.forEach((_, i) => {
    const { p, block, w } = labels[i];
    const gold = p.blocks[block][w];
    const where = `row ${p.row}, block ${block}, window ${w}`;
    worstFull = Math.max(worstFull, Math.abs(fast.results[i].trueProb - full[i].trueProb));
    worstGolden = Math.max(worstGolden, Math.abs(fast.results[i].trueProb - gold.true_prob) / gold.true_prob);
    assert(Math.abs(fast.results[i].trueProb - full[i].trueProb) <= P_TOL, `fast ${fast.results[i].trueProb} vs full ${full[i].trueProb} at ${where}`);
    assertEquals(fast.results[i].predId, full[i].predId, `argmax at ${where}`);
    assert(close(fast.results[i].trueProb, gold.true_prob), `fast ${fast.results[i].trueProb} vs golden ${gold.true_prob} at ${where}`);
    assert(close(full[i].trueProb, gold.true_prob), `full ${full[i].trueProb} vs golden ${gold.true_prob} at ${where}`);
    assertEquals(fast.results[i].predId === p.true_id, gold.hit, `hit at ${where}`);
  });
  g.prompts.forEach((p, pi) => assert(close(fast.base[pi].trueProb, p.base.true_prob), `base of row ${p.row}`));
  // the fast path is exact: it differs from the full recompute by float32 rounding only
  assert(worstFull < 1e-9, `worst |fast − full| = ${worstFull}`);
  assert(worstGolden < P_REL_TOL, `worst relative difference to the golden = ${worstGolden}`);
});

Deno.test("fast path = full recompute = golden, every heatmap cell", async () => {
  const model = await fixtureModel();
  const g = await goldenExperiments();
  const withHeat = g.prompts.filter((p) => p.heatmap);
  assert(withHeat.length >= 2, "the golden file carries heatmaps");
  const k = withHeat[0].heatmap!.window_size;
  const configs: LastRowKnockout[] = [];
  const cells: { p: GoldenPrompt; pos: number; w: number }[] = [];
  withHeat.forEach((p, pi) => {
    for (const c of heatmapConfigs(model.config.nLayer, p.ids.length, k)) {
      configs.push({ prompt: pi, start: c.start, end: c.end, cols: c.cols, target: p.true_id });
      cells.push({ p, pos: c.position, w: c.window.at });
    }
    assertEquals(p.heatmap!.windows.length, model.config.nLayer - k + 1);
  });
  const prompts = withHeat.map((p) => p.ids);
  const fast = await lastRowKnockouts(model, prompts, withHeat.map((p) => p.true_id), configs);
  const full = await fullRecompute(model, prompts, configs);
  assertEquals(configs.length, withHeat.reduce((s, p) => s + p.heatmap!.true_prob.length * p.heatmap!.windows.length, 0));
  configs.forEach((_, i) => {
    const { p, pos, w } = cells[i];
    const gold = p.heatmap!.true_prob[pos][w];
    const where = `row ${p.row}, position ${pos}, window ${w}`;
    assert(Math.abs(fast.results[i].trueProb - full[i].trueProb) <= P_TOL, `fast vs full at ${where}`);
    assert(close(fast.results[i].trueProb, gold), `fast ${fast.results[i].trueProb} vs golden ${gold} at ${where}`);
  });
});

Deno.test("fast path: relation without the last position, centred windows, several prompts per call", async () => {
  // conventions the goldens do not pin: still exactly the full recompute
  const model = await fixtureModel();
  const g = await goldenExperiments();
  const some = g.prompts.slice(0, 5);
  const configs: LastRowKnockout[] = [];
  some.forEach((p, pi) => {
    for (const c of infoFlowConfigs(model.config.nLayer, p.ids.length, p.subject_tokens, { ks: [2, 5], convention: "centred", relationLast: false })) {
      configs.push({ prompt: pi, start: c.start, end: c.end, cols: c.cols, target: p.base.pred_id });
    }
  });
  const prompts = some.map((p) => p.ids);
  const fast = await lastRowKnockouts(model, prompts, some.map((p) => p.base.pred_id), configs);
  const full = await fullRecompute(model, prompts, configs);
  configs.forEach((c, i) => {
    assert(Math.abs(fast.results[i].trueProb - full[i].trueProb) <= P_TOL, `configuration ${i} (${c.start}-${c.end}, cols ${c.cols})`);
    assertEquals(fast.results[i].predId, full[i].predId);
  });
  // relation without the last position really leaves it out
  assertEquals(blockColumns("relation", 5, [1, 2], false), [0, 3]);
  assertEquals(blockColumns("relation", 5, [1, 2], true), [0, 3, 4]);
});
