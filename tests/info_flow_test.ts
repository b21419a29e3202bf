// 03_info_flow: its pieces (subject tokens, windows, blocks, sample, bootstrap, aggregates) and
// the stage itself through the pipeline on the fixture model against the float64 goldens, a
// killed run resumed to byte-identical outputs, and bad input (a subject not in its prompt, k
// larger than the model, no prompt to run).
import { join } from "node:path";
import { assert, assertEquals, assertThrows } from "./assert.ts";
import { FIXTURE_DIR } from "./helpers.ts";
import { describe, FIXTURE, pipeline, type RunResult, expectOneLineError } from "./pipeline_helpers.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { readParquet, writeParquet } from "../workflows/lib/parquet.ts";
import { subjectTokenRange, subjectTokens } from "../workflows/lib/subject.ts";
import { blockColumns, infoFlowConfigs, layerWindows, parseWindowSizes } from "../workflows/lib/knockout_configs.ts";
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

Deno.test("windows, blocks and configurations", () => {
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
  assertEquals(blockColumns("last", 5, [1, 2]), [4]);
  assertEquals(blockColumns("subject", 5, [1, 2]), [1, 2]);
  assertEquals(blockColumns("relation", 5, [1, 2]), [0, 3, 4]);
  assertEquals(blockColumns("relation", 5, [1, 2], false), [0, 3]);
  const cfg = infoFlowConfigs(6, 5, [1, 2], { ks: [3, 2], convention: "start", relationLast: true });
  assertEquals(cfg.length, 3 * 4 + 3 * 5);
  assertEquals(cfg.slice(0, 5).map((c) => `${c.k}/${c.block}/${c.window.at}`), ["3/last/0", "3/last/1", "3/last/2", "3/last/3", "3/subject/0"]);
  assertEquals(outputsFor({ k: "9,15" } as never).filter((f) => f.endsWith(".png")).length, 6);
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

Deno.test("aggregates: accuracy, mean relative change and n per split", () => {
  const prompts = [true, false, true].map((first, i) => ({ row: i, firstInSubject: first, baseHit: true }) as InfoFlowPrompt);
  const res: InfoFlowResult[] = [];
  const vals = [[0.5, 0.2], [0.4, 0.1], [0.3, 0.05]]; // per prompt, per configuration
  prompts.forEach((p, i) => {
    vals[i].forEach((v, c) => {
      res.push({
        row: p.row,
        k: 3,
        block: "last",
        window: c,
        window_start: c,
        window_end: c + 3,
        target_id: 7,
        base_prob: 0.5,
        true_prob: v,
        pred_id: v > 0.25 ? 7 : 8,
        hit: v > 0.25,
        relative_change: relativeChange(v, 0.5),
        first_in_subject: p.firstInSubject,
      });
    });
  });
  const a = aggregate(prompts, res, 200, 0);
  const get = (split: string, w: number) => a.find((x) => x.split === split && x.window === w)!;
  assertEquals(get("all", 0).n, 3);
  assertEquals(get("first_in_subject", 0).n, 2);
  assertEquals(get("first_not_in_subject", 0).n, 1);
  assertEquals(get("all", 0).accuracy, 1);
  assertEquals(get("all", 1).accuracy, 0);
  assert(Math.abs(get("all", 0).relative_change - mean([0, -20, -40])) < 1e-12);
  assert(Math.abs(get("first_in_subject", 1).relative_change - mean([-60, -90])) < 1e-12);
  assertEquals(get("first_not_in_subject", 1).relative_change_lo, -80);
  assert(get("all", 0).relative_change_lo <= -20 && get("all", 0).relative_change_hi >= -20);
});

// ---------------------------------------------------------------- the stage

Deno.test("03_info_flow on the fixture model: the goldens, the outputs, a killed run resumed", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "info_flow_" });
  const whole = join(tmp, "whole");
  const args = ["--model", FIXTURE, "--rows", ROW_SPEC, ...STAGE_ARGS, "--set", "03_info_flow.group_prompts=2"];
  const dir = join(whole, "03_info_flow");

  await t.step("runs and matches the goldens (subject tokens, first-token flag, p_base, p(true), hit, relative change)", async () => {
    const r = await pipeline([...args, "--out", whole]);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("16 prompts qualify, fewer than n_prompts = 1000"), describe(r));
    const prompts = await readParquet(join(dir, "prompts.parquet"));
    assertEquals(prompts.rows.map((x) => x.row), ROWS);
    const table = await readParquet(join(dir, "info_flow.parquet"));
    for (const c of ["row", "k", "block", "window_start", "true_prob", "hit", "relative_change", "first_in_subject"]) {
      assert(table.columns.includes(c), `column ${c}`);
    }
    assertEquals(table.numRows, GOLDEN.prompts.length * 3 * GOLDEN.windows.length);
    let worst = 0;
    for (const g of GOLDEN.prompts) {
      const p = prompts.rows.find((x) => x.row === g.row)!;
      assertEquals(Array.from(p.subject_tokens as number[]), g.subject_tokens, `subject tokens of row ${g.row}`);
      assertEquals(p.first_in_subject, g.first_token_in_subject);
      const pb = p.base_prob as number;
      assert(Math.abs(pb - g.base.true_prob) <= Math.min(P_ABS, P_REL * g.base.true_prob), `p_base of row ${g.row}: ${pb} vs ${g.base.true_prob}`);
      for (const [block, entries] of Object.entries(g.blocks)) {
        entries.forEach((e, w) => {
          const x = table.rows.find((y) => y.row === g.row && y.block === block && y.window === w)!;
          const where = `row ${g.row} ${block} window ${w}`;
          assertEquals([x.k, x.window_start, x.window_end], [K, GOLDEN.windows[w][0], GOLDEN.windows[w][K - 1] + 1], where);
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
    // aggregates: every (k, block, window, split), consistent with the per-prompt table
    const agg = await readParquet(join(dir, "info_flow_aggregates.parquet"));
    assertEquals(agg.numRows, 3 * GOLDEN.windows.length * 3);
    const nFirst = GOLDEN.prompts.filter((p) => p.first_token_in_subject).length;
    for (const a of agg.rows) {
      const n = a.split === "all" ? 16 : a.split === "first_in_subject" ? nFirst : 16 - nFirst;
      assertEquals(a.n, n);
      const mine = table.rows.filter((x) =>
        x.block === a.block && x.window === a.window && (a.split === "all" || x.first_in_subject === (a.split === "first_in_subject"))
      );
      const m = mean(mine.map((x) => x.relative_change as number));
      assert(Math.abs((a.relative_change as number) - m) < 1e-9, "mean relative change");
      assert((a.relative_change_lo as number) <= m && m <= (a.relative_change_hi as number), "the CI holds the mean");
      assertEquals(a.accuracy, mean(mine.map((x) => (x.hit ? 1 : 0))));
    }
    // figures: per k and split, SVG with the labels and a PNG
    for (const split of ["all", "first_in_subject", "first_not_in_subject"]) {
      const svg = await Deno.readTextFile(join(dir, `info_flow_k${K}_${split}.svg`));
      for (const text of ["last → subject", "last → relation", "last → last", "accuracy (%)", "% change of p(true token)", "window start layer"]) {
        assert(svg.includes(text), `${split} figure lacks "${text}"`);
      }
      const png = await Deno.readFile(join(dir, `info_flow_k${K}_${split}.png`));
      assertEquals([...png.slice(1, 4)], [0x50, 0x4e, 0x47]);
    }
    const m = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
    assertEquals(m.counts.prompts, 16);
    assertEquals(m.counts.skipped_subject_not_found, 0);
    assertEquals(m.info.prompts.sampled, 16);
    assert(/only 16 prompts qualify/.test(m.info.prompts.note));
    assert(m.info.maxAbsBaseProbDiffFastPathVs01 < 1e-9, "the fast path's base run agrees with 01_construct");
  });

  await t.step("killed in the middle, resumed: the same bytes as the uninterrupted run", async () => {
    const out = join(tmp, "killed");
    // 01_construct first, so that the kill lands in 03_info_flow
    const first = await pipeline(["--model", FIXTURE, "--rows", ROW_SPEC, "--only", "01_construct", "--out", out]);
    assertEquals(first.code, 0, describe(first));
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "workflows/pipeline.ts", ...args, "--out", out],
      cwd: ROOT,
      env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
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
    assertEquals(await Deno.readTextFile(join(dir, "manifest.json")), before);
    assert(await exists(join(out, "01_construct", "construct_attention.parquet")));
  });

  await Deno.remove(tmp, { recursive: true });
});
