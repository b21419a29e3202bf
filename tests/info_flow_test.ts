// 03_info_flow: its pieces (subject tokens, windows, flows, selectors, configurations, sample,
// bootstrap, aggregates, figure names) and the stage itself through the pipeline on the fixture
// model against the float64 goldens (the seed's blocks, and every case of golden-flows.json:
// flows, head selectors, conv), a killed run resumed to byte-identical outputs, and bad input (a
// subject not in its prompt, k larger than the model, no prompt to run).
import { join } from "node:path";
import { assert, assertEquals, assertThrows } from "./assert.ts";
import { childEnv, FIXTURE_DIR } from "./helpers.ts";
import { assertGoldenFlowCases, describe, expectOneLineError, FIXTURE, type GoldenFlows, pipeline, type RunResult } from "./pipeline_helpers.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { readParquet, writeParquet } from "../workflows/lib/parquet.ts";
import { subjectTokenRange, subjectTokens } from "../workflows/lib/subject.ts";
import {
  DEFAULT_FLOWS,
  heatmapConfigs,
  infoFlowConfigs,
  layerWindows,
  parseFlows,
  parseSelectors,
  parseWindowSizes,
} from "../workflows/lib/knockout_configs.ts";
import { parseBooleanList } from "../workflows/lib/params.ts";
import { figureSpecs, flowLabel, selectorWords } from "../workflows/lib/info_flow_figure.ts";
import { formatUnitSelector, parseUnitSelector, type UnitSelector } from "../engine/arch.ts";
import { deterministicSample, MeanBootstrap, mean, quantileSorted } from "../workflows/lib/bootstrap.ts";
import { fixedGroups } from "../workflows/lib/groups.ts";
import { aggregate, type InfoFlowPrompt, type InfoFlowResult, relativeChange } from "../workflows/lib/info_flow_stats.ts";
import { outputsFor } from "../workflows/03_info_flow.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const P_ABS = 1e-6; // the issue's tolerance on probabilities
const P_REL = 1e-4; // and relative to the golden (the fixture's probabilities are ~1e-7)
const REL_CHANGE_TOL = 5e-3; // percentage points; float32 against float64 (measured ~5e-4)

interface GoldenPrompt {
  row: number;
  prompt: string;
  subject: string;
  ids: number[];
  true_id: number;
  subject_tokens: number[];
  first_token_in_subject: boolean;
  base: { true_prob: number };
  blocks: Record<string, { true_prob: number; hit: boolean; relative_change_pct: number }[]>;
}
const GOLDEN: { window_size: number; windows: number[][]; prompts: GoldenPrompt[] } = JSON.parse(
  await Deno.readTextFile(FIXTURE_DIR + "golden-experiments.json"),
);
const ROWS = GOLDEN.prompts.map((p) => p.row).sort((a, b) => a - b);
const ROW_SPEC = ROWS.join(",");
const K = GOLDEN.window_size;
const STAGE_ARGS = ["--only", "01_construct", "--only", "03_info_flow", "--set", "03_info_flow.filter=all", "--set", `03_info_flow.k=${K}`];

const oneLineError = (r: RunResult, mention: RegExp) => expectOneLineError(r, mention, { ignoreProgress: true });

async function exists(p: string): Promise<boolean> {
  return await Deno.stat(p).then(() => true, () => false);
}

// ---------------------------------------------------------------- pieces

Deno.test("subject tokens: the golden ranges and first-token flags from the real tokenizer", async () => {
  const tok = await loadTokenizer();
  for (const p of GOLDEN.prompts) {
    assertEquals(tok.encode(p.prompt), p.ids, `ids of row ${p.row}`);
    const st = subjectTokens(tok.decodeEach(p.ids), p.subject);
    assertEquals(st, p.subject_tokens, `subject tokens of row ${p.row}`);
    assertEquals(st!.includes(0), p.first_token_in_subject, `first-token flag of row ${p.row}`);
  }
});

Deno.test("subject tokens: overlap rule, first occurrence, not found", () => {
  const pieces = ["The", " Eiff", "el", " Tower", " is", " in"];
  assertEquals(subjectTokenRange(pieces, " Eiffel Tower"), [1, 4]);
  assertEquals(subjectTokenRange(pieces, "Eiffel"), [1, 3]); // starts inside " Eiff": that token overlaps
  assertEquals(subjectTokenRange(pieces, "ffel Tow"), [1, 4]); // partial tokens at both ends
  assertEquals(subjectTokenRange(["a", "b", "a", "b"], "ab"), [0, 2]); // the first occurrence
  assertEquals(subjectTokenRange(pieces, " in"), [5, 6]);
  assertEquals(subjectTokenRange(pieces, "Paris"), null);
  assertEquals(subjectTokenRange(pieces, ""), null);
  assertEquals(subjectTokens(pieces, "Tower is"), [3, 4]);
});

Deno.test("windows of layers and window sizes", () => {
  assertEquals(layerWindows(6, 3).map((w) => [w.at, w.start, w.end]), [[0, 0, 3], [1, 1, 4], [2, 2, 5], [3, 3, 6]]);
  assertEquals(layerWindows(48, 9).length, 40);
  assertEquals(layerWindows(48, 15).length, 34);
  assertEquals(layerWindows(6, 6).length, 1);
  // centred (Geva et al.): [l − ⌊k/2⌋, l + ⌈k/2⌉) clipped, one window per layer
  assertEquals(layerWindows(6, 3, "centred").map((w) => [w.start, w.end]), [[0, 2], [0, 3], [1, 4], [2, 5], [3, 6], [4, 6]]);
  assertEquals(layerWindows(6, 4, "centred").map((w) => [w.start, w.end]), [[0, 2], [0, 3], [0, 4], [1, 5], [2, 6], [3, 6]]);
  assertThrows(() => layerWindows(6, 7), /k=7 is larger than the model's 6 layers/);
  assertEquals(parseWindowSizes("15, 9"), [15, 9]);
  assertThrows(() => parseWindowSizes("9, 15,9"), /k: "9" is given twice/);
  assertThrows(() => parseWindowSizes("9,09"), /k: "09" is given twice \(as "9" and "09"\)/);
  assertThrows(() => parseWindowSizes("9,x"), /"x" is not a positive integer/);
  assertThrows(() => parseWindowSizes(""), /empty/);
});

const ALL: UnitSelector = { kind: "all" };

Deno.test("configurations: k × flow × heads × conv × window, a flow without edges has none", () => {
  // 5 tokens, subject at 0..1: `subject<-context` blocks nothing
  const axes = {
    ks: [3, 2],
    flows: parseFlows("last<-last,subject<-context,last<-relation"),
    heads: [ALL, parseUnitSelector("fast:1/2")],
    conv: [false, true],
    convention: "start" as const,
  };
  const { configs, skipped } = infoFlowConfigs(6, 5, [0, 1], axes);
  assertEquals(skipped.map((f) => f.text), ["subject<-context"]);
  assertEquals(configs.length, 2 * 2 * 2 * 4 + 2 * 2 * 2 * 5);
  assertEquals(
    configs.slice(0, 9).map((c) => `${c.k}/${c.flow.text}/${c.heads}/${c.conv}/${c.window.at}`),
    ["3/last<-last/all/false/0", "3/last<-last/all/false/1", "3/last<-last/all/false/2", "3/last<-last/all/false/3", "3/last<-last/all/true/0",
      "3/last<-last/all/true/1", "3/last<-last/all/true/2", "3/last<-last/all/true/3", "3/last<-last/fast:1/2/false/0"],
  );
  const rel = configs.find((c) => c.flow.text === "last<-relation" && c.heads === "fast:1/2" && c.conv)!;
  assertEquals(rel.edges, [[4, 2], [4, 3], [4, 4]]);
  assertEquals(rel.units, { kind: "fast", a: 1, b: 2 });
  // depth: the window's position as % of the model's layers
  assertEquals(layerWindows(6, 3).map((w) => w.depth), [0, 100 / 6, 200 / 6, 50]);
  // the heatmap's cells: the single edge position → last
  const cells = heatmapConfigs(6, 4, 2, { units: ALL, conv: true });
  assertEquals(cells.length, 4 * 5);
  assertEquals([cells[6].position, cells[6].start, cells[6].edges, cells[6].conv], [1, 1, [[3, 1]], true]);
});

Deno.test("parameters: lists of flows, selectors and conv; one line naming a bad value", () => {
  assertEquals(parseFlows(DEFAULT_FLOWS).map((f) => f.text), ["last<-last", "last<-subject", "last<-relation"]);
  assertEquals(parseSelectors("all, not-fast:1/3").map(formatUnitSelector), ["all", "not-fast:1/3"]);
  assertEquals(parseBooleanList("false,true", "conv"), [false, true]);
  const bad: [() => unknown, RegExp][] = [
    [() => parseFlows("last<-subjet"), /flows: flow "last<-subjet": unknown token set "subjet"/],
    [() => parseFlows("last-subject"), /flows: flow "last-subject": expected target<-source/],
    [() => parseFlows("last<-subject, last <- subject"), /flows: "last <- subject" is given twice/],
    [() => parseFlows(" , "), /flows is empty/],
    [() => parseSelectors("fast:4/3"), /heads: unit selector "fast:4\/3": the fraction 4\/3 is not in \(0, 1\]/],
    [() => parseSelectors("fast"), /heads: unit selector "fast": fast needs a fraction/],
    [() => parseSelectors("quick:1/3"), /heads: unknown unit selector "quick:1\/3"/],
    [() => parseSelectors("all,only:0-1,only:0+1"), /heads: "only:0\+1" is given twice \(as "only:0-1" and "only:0\+1"\)/],
    [() => parseBooleanList("false,yes", "conv"), /conv: "yes" is not true or false/],
    [() => parseBooleanList("true,true", "conv"), /conv: "true" is given twice/],
  ];
  for (const [f, re] of bad) {
    const e = assertThrows(f, re);
    assert(!String((e as Error).message).includes("\n"), "one line");
  }
  // every figure's name follows from the parameters
  const base = { k: "9,15", flows: DEFAULT_FLOWS, heads: "all", conv: "false" } as never;
  assertEquals(outputsFor(base).filter((f) => f.endsWith(".png")), [
    "info_flow_k9_all.png", "info_flow_k9_first_in_subject.png", "info_flow_k9_first_not_in_subject.png",
    "info_flow_k15_all.png", "info_flow_k15_first_in_subject.png", "info_flow_k15_first_not_in_subject.png",
  ]);
  const specs = figureSpecs({ ks: [9], flows: ["last<-subject", "subject<-context"], heads: ["all", "not-fast:1/3"], conv: [false, true] });
  assertEquals(specs.filter((f) => f.split === "all").map((f) => f.base), [
    "info_flow_k9_all", "info_flow_k9_all_conv", "info_flow_k9_all_heads-not-fast-1of3", "info_flow_k9_all_heads-not-fast-1of3_conv",
    "info_flow_features_k9_all_subject-to-last", "info_flow_features_k9_all_context-to-subject",
    "info_flow_features_k9_all_subject-to-last_conv", "info_flow_features_k9_all_context-to-subject_conv",
    "info_flow_conv_k9_all", "info_flow_conv_k9_all_heads-not-fast-1of3",
  ]);
  assertEquals(flowLabel("last<-subject"), "subject → last");
  assertEquals(selectorWords(parseUnitSelector("not-fast:1/3"), "head"), "all but the fastest third of heads");
  assertEquals(selectorWords(parseUnitSelector("slow:2/5"), "channel"), "the slowest 2/5 of channels");
});

Deno.test("deterministic sample and fixed groups", () => {
  const items = Array.from({ length: 100 }, (_, i) => 3 * i);
  const a = deterministicSample(items, 10, 0);
  assertEquals(a, deterministicSample([...items].reverse(), 10, 0)); // order of the input does not matter
  assertEquals(a.length, 10);
  assertEquals(a, [...a].sort((x, y) => x - y));
  assert(a.every((x) => items.includes(x)));
  assert(JSON.stringify(a) !== JSON.stringify(deterministicSample(items, 10, 1)), "another seed, another sample");
  assert(deterministicSample(items, 20, 0).filter((x) => a.includes(x)).length === 10, "a larger n gives a superset");
  assertEquals(deterministicSample(items, 1000, 0), items); // fewer qualify: all of them
  const jobs = [5, 1, 3, 2, 4].map((row) => ({ row, ids: Array(row % 3 + 1).fill(0) }));
  // lengths 3, 2, 1, 3, 2: sorted by length, then row, cut every 2
  assertEquals(fixedGroups(jobs, 2).map((g) => g.map((j) => j.row)), [[3, 1], [4, 2], [5]]);
});

Deno.test("bootstrap: reproducible percentile intervals around the mean", () => {
  assertEquals(quantileSorted([1, 2, 3, 4], 0.5), 2.5);
  const xs = Array.from({ length: 200 }, (_, i) => Math.sin(i) * 10 + (i % 7));
  const b = new MeanBootstrap(xs.length, 1000, 42);
  const [lo, hi] = b.ci(xs);
  const m = mean(xs);
  assert(lo < m && m < hi, `${lo} < ${m} < ${hi}`);
  // about 1.96 standard errors on either side
  const sd = Math.sqrt(xs.reduce((s, x) => s + (x - m) ** 2, 0) / (xs.length - 1));
  const se = sd / Math.sqrt(xs.length);
  assert(Math.abs((hi - lo) / (2 * 1.96 * se) - 1) < 0.15, `width ${hi - lo} vs ${2 * 1.96 * se}`);
  assertEquals(new MeanBootstrap(xs.length, 1000, 42).ci(xs), [lo, hi]);
  assertEquals(new MeanBootstrap(1, 100, 0).ci([3]), [3, 3]);
  const empty = new MeanBootstrap(0, 100, 0).ci([]);
  assert(Number.isNaN(empty[0]) && Number.isNaN(empty[1]));
});

/** A per-prompt result of a configuration of flow `flow` at window `w`. */
function result(row: number, flow: string, w: number, p: number, firstInSubject: boolean): InfoFlowResult {
  const [target, source] = flow.split("<-");
  return {
    row,
    k: 3,
    flow,
    target,
    source,
    heads: "all",
    conv: false,
    window: w,
    depth: (100 * w) / 6,
    window_start: w,
    window_end: w + 3,
    edges: 1,
    target_id: 7,
    base_prob: 0.5,
    true_prob: p,
    pred_id: p > 0.25 ? 7 : 8,
    hit: p > 0.25,
    relative_change: relativeChange(p, 0.5),
    first_in_subject: firstInSubject,
  };
}

Deno.test("aggregates: accuracy, mean relative change and n per split; a flow some prompts lack", () => {
  const first = [true, false, true];
  const prompts = first.map((f, i) => ({ row: i, firstInSubject: f, baseHit: i !== 1 }) as InfoFlowPrompt);
  const vals = [[0.5, 0.2], [0.4, 0.1], [0.3, 0.05]]; // per prompt, per window
  const res: InfoFlowResult[] = [];
  prompts.forEach((p, i) => {
    vals[i].forEach((v, w) => res.push(result(p.row, "last<-last", w, v, p.firstInSubject)));
    // `subject<-context` blocks nothing in prompt 0: no result for it
    if (i > 0) vals[i].forEach((v, w) => res.push(result(p.row, "subject<-context", w, v / 2, p.firstInSubject)));
  });
  const order = { flows: ["subject<-context", "last<-last"], heads: ["all"], conv: [false] };
  const a = aggregate(prompts, res, 200, 0, order);
  const get = (flow: string, split: string, w: number) => a.find((x) => x.flow === flow && x.split === split && x.window === w)!;
  assertEquals(a.length, 2 * 3 * 2);
  // sorted by k, split, heads, conv, then flow in the order of the parameter, then window
  assertEquals(a.slice(0, 4).map((x) => `${x.split}/${x.flow}/${x.window}`), ["all/subject<-context/0", "all/subject<-context/1", "all/last<-last/0", "all/last<-last/1"]);
  assertEquals([get("last<-last", "all", 0).n, get("last<-last", "first_in_subject", 0).n, get("last<-last", "first_not_in_subject", 0).n], [3, 2, 1]);
  assertEquals(get("last<-last", "all", 0).accuracy, 1);
  assertEquals(get("last<-last", "all", 1).accuracy, 0);
  assertEquals(get("last<-last", "all", 0).base_accuracy, 2 / 3);
  assert(Math.abs(get("last<-last", "all", 0).relative_change - mean([0, -20, -40])) < 1e-12);
  assert(Math.abs(get("last<-last", "first_in_subject", 1).relative_change - mean([-60, -90])) < 1e-12);
  assertEquals(get("last<-last", "first_not_in_subject", 1).relative_change_lo, -80);
  assert(get("last<-last", "all", 0).relative_change_lo <= -20 && get("last<-last", "all", 0).relative_change_hi >= -20);
  // the flow that prompt 0 lacks: over the two prompts it has
  assertEquals([get("subject<-context", "all", 0).n, get("subject<-context", "first_in_subject", 0).n], [2, 1]);
  assert(Math.abs(get("subject<-context", "all", 0).relative_change - mean([-60, -70])) < 1e-12);
  assertEquals(get("subject<-context", "all", 0).base_accuracy, 1 / 2);
  const ci = [get("subject<-context", "all", 0).relative_change_lo, get("subject<-context", "all", 0).relative_change_hi];
  assert(ci[0] >= -70 && ci[1] <= -60 && ci[0] < ci[1], `CI ${ci} within the two values`);
  // the same input, the same intervals
  assertEquals(aggregate(prompts, res, 200, 0, order), a);
});

// ---------------------------------------------------------------- the stage

/** The seed's blocks (golden-experiments.json) are the flows into the last position from these sets. */
const BLOCK_FLOW: Record<string, string> = { last: "last<-last", subject: "last<-subject", relation: "last<-relation" };
/** The seed's three flows, a flow that blocks nothing when the subject starts the prompt, two selectors, conv both ways. */
const RICH = ["last<-last", "last<-subject", "last<-relation", "subject<-context"];
const RICH_ARGS = [
  "--set", `03_info_flow.flows=${RICH.join(",")}`,
  "--set", "03_info_flow.heads=all,not-fast:1/3",
  "--set", "03_info_flow.conv=false,true",
];

Deno.test("03_info_flow on the fixture model: the goldens, flows × heads × conv, the outputs, a killed run resumed", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "info_flow_" });
  const whole = join(tmp, "whole");
  const args = ["--model", FIXTURE, "--rows", ROW_SPEC, ...STAGE_ARGS, ...RICH_ARGS, "--set", "03_info_flow.group_prompts=2"];
  const dir = join(whole, "03_info_flow");

  await t.step("runs and matches the goldens (subject tokens, first-token flag, p_base, p(true), hit, relative change)", async () => {
    const r = await pipeline([...args, "--out", whole]);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("16 prompts qualify, fewer than n_prompts = 1000"), describe(r));
    const nFirst = GOLDEN.prompts.filter((p) => p.first_token_in_subject).length;
    assert(r.stdout.includes(`flows that block no edge of a prompt give no row for it: subject<-context in ${nFirst} prompt(s)`), describe(r));
    const prompts = await readParquet(join(dir, "prompts.parquet"));
    assertEquals(prompts.rows.map((x) => x.row), ROWS);
    const table = await readParquet(join(dir, "info_flow.parquet"));
    for (const c of ["row", "k", "flow", "target", "source", "heads", "conv", "edges", "window", "depth", "window_start", "true_prob", "hit", "relative_change", "first_in_subject"]) {
      assert(table.columns.includes(c), `column ${c}`);
    }
    // every (flow with an edge) × heads × conv × window of every prompt; `subject<-context` is absent when the subject starts the prompt
    const nW = GOLDEN.windows.length;
    assertEquals(table.numRows, (GOLDEN.prompts.length * 3 + (GOLDEN.prompts.length - nFirst)) * 2 * 2 * nW);
    for (const g of GOLDEN.prompts) {
      const ctx = table.rows.filter((x) => x.row === g.row && x.flow === "subject<-context");
      assertEquals(ctx.length, g.first_token_in_subject ? 0 : 2 * 2 * nW, `subject<-context rows of row ${g.row}`);
      for (const x of ctx) assertEquals([x.target, x.source, x.edges], ["subject", "context", g.subject_tokens.length * g.subject_tokens[0]]);
    }
    let worst = 0;
    for (const g of GOLDEN.prompts) {
      const p = prompts.rows.find((x) => x.row === g.row)!;
      assertEquals(Array.from(p.subject_tokens as number[]), g.subject_tokens, `subject tokens of row ${g.row}`);
      assertEquals(p.first_in_subject, g.first_token_in_subject);
      const pb = p.base_prob as number;
      assert(Math.abs(pb - g.base.true_prob) <= Math.min(P_ABS, P_REL * g.base.true_prob), `p_base of row ${g.row}: ${pb} vs ${g.base.true_prob}`);
      for (const [block, entries] of Object.entries(g.blocks)) {
        entries.forEach((e, w) => {
          const x = table.rows.find((y) => y.row === g.row && y.flow === BLOCK_FLOW[block] && y.heads === "all" && !y.conv && y.window === w)!;
          const where = `row ${g.row} ${block} window ${w}`;
          assertEquals([x.k, x.window_start, x.window_end], [K, GOLDEN.windows[w][0], GOLDEN.windows[w][K - 1] + 1], where);
          assertEquals(x.depth, (100 * w) / 6, where);
          const pt = x.true_prob as number;
          assert(Math.abs(pt - e.true_prob) <= Math.min(P_ABS, P_REL * e.true_prob), `p(true) at ${where}: ${pt} vs ${e.true_prob}`);
          assertEquals(x.hit, e.hit, where);
          assertEquals(x.first_in_subject, g.first_token_in_subject, where);
          const d = Math.abs((x.relative_change as number) - e.relative_change_pct);
          worst = Math.max(worst, d);
          assert(d <= REL_CHANGE_TOL, `relative change at ${where}: ${x.relative_change} vs ${e.relative_change_pct}`);
        });
      }
    }
    // aggregates: every (k, flow, heads, conv, window, split), consistent with the per-prompt table
    const agg = await readParquet(join(dir, "info_flow_aggregates.parquet"));
    assertEquals(agg.numRows, RICH.length * 2 * 2 * nW * 3);
    for (const a of agg.rows) {
      const mine = table.rows.filter((x) =>
        x.flow === a.flow && x.heads === a.heads && x.conv === a.conv && x.window === a.window &&
        (a.split === "all" || x.first_in_subject === (a.split === "first_in_subject"))
      );
      const n = a.flow !== "subject<-context"
        ? (a.split === "all" ? 16 : a.split === "first_in_subject" ? nFirst : 16 - nFirst)
        : (a.split === "first_in_subject" ? 0 : 16 - nFirst);
      assertEquals([a.n, mine.length], [n, n], `n of ${a.flow} ${a.heads} ${a.conv} ${a.split}`);
      if (n === 0) continue;
      const m = mean(mine.map((x) => x.relative_change as number));
      assert(Math.abs((a.relative_change as number) - m) < 1e-9, "mean relative change");
      assert((a.relative_change_lo as number) <= m && m <= (a.relative_change_hi as number), "the CI holds the mean");
      assertEquals(a.accuracy, mean(mine.map((x) => (x.hit ? 1 : 0))));
    }
    // figures: per k, split, heads and conv one line per flow, in the direction information flows
    for (const split of ["all", "first_in_subject", "first_not_in_subject"]) {
      for (const suffix of ["", "_conv", "_heads-not-fast-1of3", "_heads-not-fast-1of3_conv"]) {
        const svg = await Deno.readTextFile(join(dir, `info_flow_k${K}_${split}${suffix}.svg`));
        for (const text of ["subject → last", "relation → last", "last → last", "accuracy (%)", "Relative change of p(true token)", "window start layer"]) {
          assert(svg.includes(text), `${split}${suffix} figure lacks "${text}"`);
        }
        if (split !== "first_in_subject") assert(svg.includes("context → subject"), `${split}${suffix}: context → subject`);
        // one row of panels per target set (last, subject): each draws its reference line and label once
        assertEquals(svg.split(">no change<").length - 1, 2, "the reference label is drawn once per row");
        assert(svg.includes("Flows into the last position") && svg.includes("Flows into the subject"), "a row per target set");
      }
      const features = await Deno.readTextFile(join(dir, `info_flow_features_k${K}_${split}_subject-to-last.svg`));
      for (const text of ["all heads", "not-fast:1/3: all but the fastest third of heads"]) assert(features.includes(text), `features figure lacks "${text}"`);
      const conv = await Deno.readTextFile(join(dir, `info_flow_conv_k${K}_${split}.svg`));
      assert(conv.includes("subject → last, conv cut too"), "conv figure");
      const png = await Deno.readFile(join(dir, `info_flow_k${K}_${split}.png`));
      assertEquals([...png.slice(1, 4)], [0x50, 0x4e, 0x47]);
    }
    const m = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
    assertEquals(m.counts.prompts, 16);
    assertEquals(m.counts.skipped_subject_not_found, 0);
    assertEquals(m.counts.no_edge_prompt_flows, nFirst);
    assertEquals(m.info.noEdgePrompts, { "last<-last": 0, "last<-subject": 0, "last<-relation": 0, "subject<-context": nFirst });
    assertEquals(m.info.prompts.sampled, 16);
    assert(/only 16 prompts qualify/.test(m.info.prompts.note));
    assert(m.info.maxAbsBaseProbDiffFastPathVs01 < 1e-9, "the fast path's base run agrees with 01_construct");
    const summary = await Deno.readTextFile(join(dir, "summary.md"));
    assert(summary.includes(`context → subject: ${nFirst}`), "summary counts the prompts without edges");
  });

  await t.step("killed in the middle, resumed: the same bytes as the uninterrupted run", async () => {
    const out = join(tmp, "killed");
    // 01_construct first, so that the kill lands in 03_info_flow
    const first = await pipeline(["--model", FIXTURE, "--rows", ROW_SPEC, "--only", "01_construct", "--out", out]);
    assertEquals(first.code, 0, describe(first));
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "workflows/pipeline.ts", ...args, "--out", out],
      cwd: ROOT,
      env: childEnv(),
      stdout: "null",
      stderr: "null",
    }).spawn();
    const log = join(out, "03_info_flow", ".work", "knockouts.jsonl");
    let saved = 0;
    const deadline = Date.now() + 120_000;
    while (Date.now() < deadline) {
      const text = await Deno.readTextFile(log).catch(() => "");
      saved = text.split("\n").length - 2; // header line and the trailing newline
      if (saved >= 2) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    child.kill("SIGKILL");
    await child.status;
    assert(saved >= 2 && saved < 16, `saved ${saved} of 16 prompts before the kill`);
    assert(!(await exists(join(out, "03_info_flow", "manifest.json"))), "no manifest after the kill");
    const r = await pipeline([...args, "--out", out]);
    assertEquals(r.code, 0, describe(r));
    assert(/03_info_flow: resuming, \d+ of 16 prompts already done/.test(r.stdout), describe(r));
    const m = JSON.parse(await Deno.readTextFile(join(out, "03_info_flow", "manifest.json")));
    assert(m.info.resumedPrompts >= 2, `resumed ${m.info.resumedPrompts}`);
    const ref = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
    for (const f of Object.keys(ref.outputs)) assertEquals(m.outputs[f], ref.outputs[f], `${f} differs from the uninterrupted run`);
  });

  await t.step("a subject not in its prompt: reported, skipped, counted", async () => {
    const dataset = await readParquet(join(ROOT, "data/counterfact-tracing.parquet"), { rowEnd: 4 });
    dataset.rows[1] = { ...dataset.rows[1], subject: "Nobody In Particular" };
    const file = join(tmp, "bad-subject.parquet");
    await writeParquet(file, dataset.columns.map((c) => ({ name: c, type: dataset.types[c]!, data: dataset.rows.map((r) => r[c]), nullable: true })));
    const r = await pipeline(["--model", FIXTURE, "--dataset", file, "--out", join(tmp, "bad-subject"), ...STAGE_ARGS]);
    assertEquals(r.code, 0, describe(r));
    assert(/skipped 1 row\(s\) whose subject is not in the prompt: 1\b/.test(r.stdout), describe(r));
    const m = JSON.parse(await Deno.readTextFile(join(tmp, "bad-subject", "03_info_flow", "manifest.json")));
    assertEquals(m.counts.skipped_subject_not_found, 1);
    assertEquals(m.info.skippedSubjectNotFound, [1]);
    assertEquals(m.counts.prompts, 3);
    const prompts = await readParquet(join(tmp, "bad-subject", "03_info_flow", "prompts.parquet"));
    assertEquals(prompts.rows.map((x) => x.row), [0, 2, 3]);
  });

  await t.step("k larger than the model's layers, and no prompt to run: one line each, nothing lost", async () => {
    const out = join(tmp, "whole");
    const before = await Deno.readTextFile(join(dir, "manifest.json"));
    oneLineError(
      await pipeline(["--model", FIXTURE, "--rows", ROW_SPEC, ...STAGE_ARGS, "--set", "03_info_flow.k=3,7", "--out", out]),
      /k=7 is larger than the model's 6 layers/,
    );
    // the default filter: nothing on the fixture model is predicted correctly
    oneLineError(
      await pipeline(["--model", FIXTURE, "--rows", ROW_SPEC, "--only", "01_construct", "--only", "03_info_flow", "--set", `03_info_flow.k=${K}`, "--out", out]),
      /no prompt to run: none of the 16 selected rows was predicted correctly in both modes.*filter=all/,
    );
    // a selector that cannot apply to the model: said before any knockout runs
    oneLineError(
      await pipeline(["--model", FIXTURE, "--rows", ROW_SPEC, ...STAGE_ARGS, "--set", "03_info_flow.heads=all,only:9", "--out", out]),
      /03_info_flow\.heads: unit selector only:9: unit 9 does not exist/,
    );
    assertEquals(await Deno.readTextFile(join(dir, "manifest.json")), before);
    assert(await exists(join(out, "01_construct", "construct_attention.parquet")));
  });

  await Deno.remove(tmp, { recursive: true });
});

// ---------------------------------------------------------------- golden-flows.json through the pipeline

Deno.test("03_info_flow reproduces every case of golden-flows.json (flows, head selectors, conv)", async () => {
  const g: GoldenFlows = JSON.parse(await Deno.readTextFile(FIXTURE_DIR + "golden-flows.json"));
  const tmp = await Deno.makeTempDir({ prefix: "info_flow_golden_" });
  const rows = g.prompts.map((p) => p.row).sort((a, b) => a - b).join(",");
  const base = ["--model", FIXTURE, "--rows", rows, "--only", "01_construct", "--only", "03_info_flow", "--set", "03_info_flow.filter=all",
    "--set", `03_info_flow.k=${g.window_size}`, "--set", "03_info_flow.bootstrap=20"];
  const cases = g.prompts.flatMap((p) => p.cases.map((c) => ({ p, c })));
  // two runs cover every case: every flow with and without conv (heads all), and the selectors on the flows that have them
  const selectorFlows = [...new Set(cases.filter(({ c }) => c.heads !== "all").map(({ c }) => c.flow))];
  const runs = [
    { name: "flows", flows: g.flows, heads: ["all"], conv: "false,true" },
    { name: "selectors", flows: selectorFlows, heads: g.selectors, conv: "false" },
  ];
  const infoRows: Record<string, unknown>[] = [];
  for (const run of runs) {
    const out = join(tmp, run.name);
    const r = await pipeline([...base, "--set", `03_info_flow.flows=${run.flows.join(",")}`, "--set", `03_info_flow.heads=${run.heads.join(",")}`,
      "--set", `03_info_flow.conv=${run.conv}`, "--out", out]);
    assertEquals(r.code, 0, describe(r));
    const t = await readParquet(join(out, "03_info_flow", "info_flow.parquet"));
    infoRows.push(...t.rows);
  }
  const { checked, absent, worst } = assertGoldenFlowCases(g.prompts, infoRows);
  assertEquals(checked + absent, cases.length);
  assert(absent > 0 && checked > 1000, `${checked} cases checked, ${absent} without edges`);
  console.log(`  ${checked} golden cases reproduced (worst relative error of p(true) ${worst.toExponential(1)}), ${absent} without edges have no row`);
  await Deno.remove(tmp, { recursive: true });
});
