// The exact knockout fast path (LanguageModel.knockouts) against the full attention-mode forward
// with the same KnockoutSpec, and both against the float64 goldens of the fixture model:
// - golden-experiments.json: the seed's blocks into the last position and its heatmaps;
// - golden-flows.json: every flow target<-source, every head selector on two flows, conv knockouts.
// Tolerances: against the goldens p(true) within 2e-4 relative (the issue's) and the same hit; fast
// path against full recompute within 1e-4 relative and the same argmax (they differ by float32
// rounding only: the worst case is printed, typically ~1e-6).
import { assert, assertEquals } from "./assert.ts";
import type { Backbone } from "../engine/backbone.ts";
import { formatUnitSelector, type KnockoutConfig, parseUnitSelector } from "../engine/arch.ts";
import { flowEdges, parseFlow } from "../engine/flows.ts";
import type { TokenStats } from "../engine/probs.ts";
import { DEFAULT_FLOWS, heatmapConfigs, infoFlowConfigs, parseFlows } from "../workflows/lib/knockout_configs.ts";
import { FIXTURE_DIR, loadBackbone } from "./helpers.ts";
import type { GoldenFlowCase, GoldenFlows } from "./pipeline_helpers.ts";

const GOLDEN_REL_TOL = 2e-4; // p(true) against the float64 goldens, relative
const FULL_REL_TOL = 1e-4; // fast path against the full recompute, relative

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

async function goldenFlows(): Promise<GoldenFlows> {
  return JSON.parse(await Deno.readTextFile(FIXTURE_DIR + "golden-flows.json"));
}

let modelP: Promise<Backbone> | undefined;
function fixtureModel(): Promise<Backbone> {
  return modelP ??= loadBackbone(FIXTURE_DIR);
}

/** The configurations as full attention-mode forwards: one prompt per configuration, its spec as the knockout. */
async function fullRecompute(model: Backbone, prompts: number[][], configs: KnockoutConfig[]): Promise<TokenStats[]> {
  return await model.forwardStats(
    configs.map((c) => prompts[c.prompt]),
    configs.map((c) => c.target),
    { mode: "attention", knockouts: configs.map(({ prompt: _p, target: _t, ...spec }) => [spec]) },
  );
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

/** Fast path = full recompute for every configuration (relative p, same argmax); the worst relative difference. */
function assertFastEqualsFull(fast: TokenStats[], full: TokenStats[], label: (i: number) => string): number {
  let worst = 0;
  fast.forEach((f, i) => {
    const d = rel(f.trueProb, full[i].trueProb);
    worst = Math.max(worst, d);
    assert(d <= FULL_REL_TOL, `fast ${f.trueProb} vs full ${full[i].trueProb} at ${label(i)}`);
    assertEquals(f.predId, full[i].predId, `argmax at ${label(i)}`);
  });
  return worst;
}

/** The seed's three flows (its blocks last, subject, relation: the golden's `blocks` are named by the source). */
const SEED_FLOWS = parseFlows(DEFAULT_FLOWS);

Deno.test("fast path = full recompute = golden, every window and block of the info-flow experiment", async () => {
  const model = await fixtureModel();
  const g = await goldenExperiments();
  const prompts = g.prompts.map((p) => p.ids);
  const configs: KnockoutConfig[] = [];
  const labels: { p: GoldenPrompt; block: string; w: number }[] = [];
  g.prompts.forEach((p, pi) => {
    const cfg = infoFlowConfigs(model.info.nLayer, p.ids.length, p.subject_tokens, {
      ks: [g.window_size],
      flows: SEED_FLOWS,
      heads: [{ kind: "all" }],
      conv: [false],
      convention: "start",
    }).configs;
    assertEquals(cfg.map((c) => [c.start, c.end]).slice(0, g.windows.length), g.windows.map((w) => [w[0], w[w.length - 1] + 1]));
    for (const c of cfg) {
      configs.push({ prompt: pi, start: c.start, end: c.end, edges: c.edges, target: p.true_id });
      labels.push({ p, block: c.flow.source, w: c.window.at });
    }
  });
  assertEquals(configs.length, g.prompts.length * SEED_FLOWS.length * g.windows.length);
  const fast = await model.knockouts(prompts, g.prompts.map((p) => p.true_id), configs);
  const full = await fullRecompute(model, prompts, configs);
  const where = (i: number) => `row ${labels[i].p.row}, block ${labels[i].block}, window ${labels[i].w}`;
  const worst = assertFastEqualsFull(fast.results, full, where);
  configs.forEach((_, i) => {
    const { p, block, w } = labels[i];
    const gold = p.blocks[block][w];
    assert(rel(fast.results[i].trueProb, gold.true_prob) <= GOLDEN_REL_TOL, `fast ${fast.results[i].trueProb} vs golden ${gold.true_prob} at ${where(i)}`);
    assert(rel(full[i].trueProb, gold.true_prob) <= GOLDEN_REL_TOL, `full ${full[i].trueProb} vs golden ${gold.true_prob} at ${where(i)}`);
    assertEquals(fast.results[i].predId === p.true_id, gold.hit, `hit at ${where(i)}`);
  });
  g.prompts.forEach((p, pi) => assert(rel(fast.base[pi].trueProb, p.base.true_prob) <= GOLDEN_REL_TOL, `base of row ${p.row}`));
  console.log(`  worst relative |fast − full| ${worst.toExponential(1)}`);
});

Deno.test("fast path = full recompute = golden, every heatmap cell", async () => {
  const model = await fixtureModel();
  const g = await goldenExperiments();
  const withHeat = g.prompts.filter((p) => p.heatmap);
  assert(withHeat.length >= 2, "the golden file carries heatmaps");
  const k = withHeat[0].heatmap!.window_size;
  const configs: KnockoutConfig[] = [];
  const cells: { p: GoldenPrompt; pos: number; w: number }[] = [];
  withHeat.forEach((p, pi) => {
    for (const c of heatmapConfigs(model.info.nLayer, p.ids.length, k, { units: { kind: "all" }, conv: false })) {
      configs.push({ prompt: pi, start: c.start, end: c.end, edges: c.edges, target: p.true_id });
      cells.push({ p, pos: c.position, w: c.window.at });
    }
    assertEquals(p.heatmap!.windows.length, model.info.nLayer - k + 1);
  });
  const prompts = withHeat.map((p) => p.ids);
  const fast = await model.knockouts(prompts, withHeat.map((p) => p.true_id), configs);
  const full = await fullRecompute(model, prompts, configs);
  assertEquals(configs.length, withHeat.reduce((s, p) => s + p.heatmap!.true_prob.length * p.heatmap!.windows.length, 0));
  const where = (i: number) => `row ${cells[i].p.row}, position ${cells[i].pos}, window ${cells[i].w}`;
  assertFastEqualsFull(fast.results, full, where);
  configs.forEach((_, i) => {
    const gold = cells[i].p.heatmap!.true_prob[cells[i].pos][cells[i].w];
    assert(rel(fast.results[i].trueProb, gold) <= GOLDEN_REL_TOL, `fast ${fast.results[i].trueProb} vs golden ${gold} at ${where(i)}`);
  });
});

Deno.test("golden flows: every case by the full forward and by the fast path (flows, head selectors, conv)", async () => {
  const model = await fixtureModel();
  const g = await goldenFlows();
  const k = g.window_size;
  // the decays the selectors rank by: exp(-exp(A_log)) per head, as the golden file has them
  g.decay_per_layer!.forEach((want, l) => {
    const got = model.decay(l)!;
    want.forEach((d, h) => assert(rel(got[h], d) <= 1e-6, `decay of layer ${l} head ${h}: ${got[h]} vs ${d}`));
  });
  const prompts = g.prompts.map((p) => p.ids);
  const configs: KnockoutConfig[] = [];
  const cases: { row: number; c: GoldenFlowCase }[] = [];
  let empty = 0;
  g.prompts.forEach((p, pi) => {
    for (const c of p.cases) {
      const edges = flowEdges(parseFlow(c.flow), p.ids.length, p.subject_tokens);
      assertEquals(edges.length, c.edges, `edges of ${c.flow} in row ${p.row}`);
      if (edges.length === 0) {
        assertEquals(c.true_prob, undefined, "a configuration that blocks nothing has no golden result");
        empty++;
        continue;
      }
      const units = parseUnitSelector(c.heads);
      assertEquals(formatUnitSelector(units), c.heads);
      configs.push({ prompt: pi, start: c.window_start, end: c.window_start + k, edges, units, conv: c.conv, target: p.true_id });
      cases.push({ row: p.row, c });
    }
  });
  assert(empty > 0 && configs.length > 1000, `${configs.length} cases with edges, ${empty} without`);
  for (const kind of ["conv", "selector", "subject<-", "relation<-"]) {
    assert(cases.some(({ c }) => kind === "conv" ? c.conv : kind === "selector" ? c.heads !== "all" : c.flow.startsWith(kind)), `the goldens cover ${kind}`);
  }
  const fast = await model.knockouts(prompts, g.prompts.map((p) => p.true_id), configs);
  const full = await fullRecompute(model, prompts, configs);
  const where = (i: number) => {
    const { row, c } = cases[i];
    return `row ${row}, ${c.flow}, heads ${c.heads}, conv ${c.conv}, window ${c.window_start}`;
  };
  let worst = 0;
  cases.forEach(({ c }, i) => {
    for (const [name, got] of [["fast path", fast.results[i]], ["full forward", full[i]]] as const) {
      const d = rel(got.trueProb, c.true_prob!);
      worst = Math.max(worst, d);
      assert(d <= GOLDEN_REL_TOL, `${name}: p ${got.trueProb} vs golden ${c.true_prob} at ${where(i)}`);
      assertEquals(got.predId === g.prompts.find((p) => p.row === cases[i].row)!.true_id, c.hit, `${name}: hit at ${where(i)}`);
    }
  });
  g.prompts.forEach((p, pi) => assert(rel(fast.base[pi].trueProb, p.base.true_prob) <= GOLDEN_REL_TOL, `base of row ${p.row}`));
  const worstFull = assertFastEqualsFull(fast.results, full, where);
  console.log(`  ${configs.length} cases: worst relative difference to the goldens ${worst.toExponential(1)}, fast vs full ${worstFull.toExponential(1)}`);
});

const FLOWS = [
  "last<-subject",
  "last<-relation",
  "last<-last",
  "last<-first",
  "last<-relation_minus_last",
  "last<-all",
  "subject<-context",
  "subject<-subject",
  "relation<-context",
  "relation<-subject",
  "relation<-relation",
  "all<-all",
];
const SELECTORS = ["all", "fast:1/3", "slow:1/3", "not-fast:1/3", "not-slow:1/3", "only:0+5-6"];

Deno.test("fast path = full recompute for every flow × selector × conv, windows of 1 to 6 layers", async () => {
  const model = await fixtureModel();
  const g = await goldenFlows();
  // a prompt whose subject starts at 0, one in the middle, one with a single-token subject
  const some = [g.prompts[2], g.prompts[0], g.prompts[4]];
  const windows = [[0, 1], [3, 6], [0, 6], [5, 6]];
  const configs: KnockoutConfig[] = [];
  const labels: string[] = [];
  some.forEach((p, pi) => {
    for (const flow of FLOWS) {
      const edges = flowEdges(flow, p.ids.length, p.subject_tokens);
      if (edges.length === 0) continue;
      for (const heads of SELECTORS) {
        for (const conv of [false, true]) {
          for (const [start, end] of windows) {
            configs.push({ prompt: pi, start, end, edges, units: parseUnitSelector(heads), conv, target: p.true_id });
            labels.push(`row ${p.row}, ${flow}, ${heads}, conv ${conv}, [${start}, ${end})`);
          }
        }
      }
    }
  });
  const prompts = some.map((p) => p.ids);
  const fast = await model.knockouts(prompts, some.map((p) => p.true_id), configs);
  const full = await fullRecompute(model, prompts, configs);
  const worst = assertFastEqualsFull(fast.results, full, (i) => labels[i]);
  // the knockouts are not no-ops: conv and selectors change the result
  const changed = configs.filter((_, i) => rel(fast.results[i].trueProb, fast.base[configs[i].prompt].trueProb) > 1e-3).length;
  assert(changed > configs.length / 2, `only ${changed} of ${configs.length} configurations change p(true)`);
  console.log(`  ${configs.length} configurations, worst relative |fast − full| ${worst.toExponential(1)}`);
});

Deno.test("fast path: many groups and passes (small memory budget) give the same results", async () => {
  const model = await fixtureModel();
  const g = await goldenFlows();
  const prompts = g.prompts.map((p) => p.ids);
  const configs: KnockoutConfig[] = [];
  g.prompts.forEach((p, pi) => {
    for (const flow of ["relation<-relation", "last<-subject", "subject<-subject"]) {
      const edges = flowEdges(flow, p.ids.length, p.subject_tokens);
      for (const start of [0, 2, 4]) configs.push({ prompt: pi, start, end: start + 2, edges, units: parseUnitSelector("not-fast:1/3"), conv: true, target: p.true_id });
    }
  });
  const targets = g.prompts.map((p) => p.true_id);
  const one = await model.knockouts(prompts, targets, configs);
  let calls = 0;
  // capture of ~2 prompts per group and ~3 rows' worth of activations per pass
  const small = await model.knockouts(prompts, targets, configs, () => calls++, { captureBytes: 2 * 6 * 13 * 600 * 4, rowsBytes: 3 * 4000 });
  assert(calls >= 20, `${calls} progress calls: the budget did not split the work`);
  small.results.forEach((s, i) => {
    assertEquals(s.predId, one.results[i].predId);
    assert(rel(s.trueProb, one.results[i].trueProb) <= 1e-6, `configuration ${i}: ${s.trueProb} vs ${one.results[i].trueProb}`);
  });
  small.base.forEach((s, i) => assert(rel(s.trueProb, one.base[i].trueProb) <= 1e-6, `base ${i}`));
});

Deno.test("fast path: a configuration that blocks nothing gives the unblocked result; bad configurations are one line", async () => {
  const model = await fixtureModel();
  const g = await goldenExperiments();
  const p = g.prompts[0];
  const res = await model.knockouts([p.ids], [p.true_id], [{ prompt: 0, start: 1, end: 3, edges: [], target: p.base.pred_id }]);
  assert(rel(res.results[0].trueProb, p.base.max_prob) <= GOLDEN_REL_TOL, "no edge: the base distribution");
  assertEquals(res.results[0].predId, p.base.pred_id);
  const T = p.ids.length;
  const bad: [Partial<KnockoutConfig>, RegExp][] = [
    [{ prompt: 1 }, /names prompt 1, which does not exist/],
    [{ start: 4, end: 7 }, /window \[4, 7\) is not within the model's 6 layers/],
    [{ edges: [[T, 0]] }, /edge \(\d+,0\) is invalid/],
    [{ edges: [[2, 3]] }, /edge \(2,3\) is invalid/],
    [{ units: parseUnitSelector("only:9") }, /unit 9 does not exist/],
    [{ units: { kind: "fast", a: 1, b: 9 } }, /picks no unit/],
    [{ target: 50277 }, /target id 50277 is out of range/],
  ];
  for (const [change, re] of bad) {
    let msg = "";
    try {
      await model.knockouts([p.ids], [p.true_id], [{ prompt: 0, start: 0, end: 2, edges: [[T - 1, 0]], target: 1, ...change }]);
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(re.test(msg) && !msg.includes("\n"), `${JSON.stringify(change)}: expected ${re}, got "${msg}"`);
  }
});

Deno.test("relation without the last position, centred windows: the seed's columns", () => {
  assertEquals(flowEdges("last<-relation_minus_last", 5, [1, 2]), [[4, 0], [4, 3]]);
  assertEquals(flowEdges("last<-relation", 5, [1, 2]), [[4, 0], [4, 3], [4, 4]]);
});
