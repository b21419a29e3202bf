// The pipeline end to end on the fixture model over a few CounterFact rows: outputs, parquet
// columns and types, values against the engine run directly (and the golden float64 reference),
// and the cache: a second run does nothing, a changed parameter reruns exactly its stage and
// what depends on it, --force reruns, --dry-run only says.
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { FIXTURE_DIR, loadBackbone } from "./helpers.ts";
import { describe, FIXTURE, ONLY_01_02, pipeline, snapshot, stage } from "./pipeline_helpers.ts";
import { readParquet } from "../workflows/lib/parquet.ts";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { tokenStats } from "../engine/probs.ts";

const ROWS = [0, 1, 2, 3, 4342];
const ROW_SPEC = "0-3,4342";
const DATASET_COLUMNS = [
  "relation",
  "relation_prefix",
  "relation_suffix",
  "prompt",
  "relation_id",
  "target_false_id",
  "target_true_id",
  "target_true",
  "target_false",
  "subject",
];
const ADDED = ["row", "ids", "true_id", "true_prob", "max_prob", "pred_id", "pred", "hit"];

interface GoldenPrompt {
  row: number;
  ids: number[];
  true_id: number;
  base: { true_prob: number; max_prob: number; pred_id: number; pred: string };
}

function close(a: number, b: number, abs: number, rel: number): boolean {
  return Math.abs(a - b) <= abs + rel * Math.abs(b);
}

Deno.test("pipeline on the fixture model: outputs, values, cache", async (t) => {
  const out = await Deno.makeTempDir({ prefix: "pipeline_run_" });
  const base = ["--model", FIXTURE, "--rows", ROW_SPEC, "--out", out, ...ONLY_01_02];
  const construct = join(out, "01_construct"), compare = join(out, "02_compare");

  await t.step("first run runs both stages and writes every output", async () => {
    const r = await pipeline(base);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("01_construct: runs: no earlier output"), describe(r));
    assert(r.stdout.includes("02_compare: runs: no earlier output"), describe(r));
    for (const f of ["construct_scan.parquet", "construct_attention.parquet", "manifest.json"]) {
      assert((await Deno.stat(join(construct, f))).size > 0, f);
    }
    for (const f of ["summary.json", "summary.md", "delta_distributions.svg", "delta_distributions.png", "delta_distributions.vl.json", "manifest.json"]) {
      assert((await Deno.stat(join(compare, f))).size > 0, f);
    }
    const cfg = JSON.parse(await Deno.readTextFile(join(out, "run.config.json")));
    assertEquals(cfg.rows, ROW_SPEC);
    assertEquals(cfg.stages["01_construct"].batchSize, 16);
    // no progress files are left once a stage has finished
    for await (const e of Deno.readDir(construct)) assert(!e.name.startsWith("."), `left over: ${e.name}`);
  });

  await t.step("parquet columns, types and values agree with the engine run directly", async () => {
    const tok = await loadTokenizer();
    const ckpt = await openCheckpoint(FIXTURE_DIR);
    const model = await loadBackbone(ckpt);
    const golden: GoldenPrompt[] = JSON.parse(await Deno.readTextFile(FIXTURE_DIR + "golden-experiments.json")).prompts;
    const dataset = await readParquet(new URL("../data/counterfact-tracing.parquet", import.meta.url).pathname);
    try {
      for (const mode of ["scan", "attention"] as const) {
        const t = await readParquet(join(construct, `construct_${mode}.parquet`));
        assertEquals(t.columns, [...DATASET_COLUMNS, ...ADDED]);
        for (const c of DATASET_COLUMNS) assertEquals(t.types[c], "STRING", c);
        assertEquals(
          ADDED.map((c) => t.types[c]),
          ["INT32", "INT32_LIST", "INT32", "DOUBLE", "DOUBLE", "INT32", "STRING", "BOOLEAN"],
        );
        assertEquals(t.rows.map((r) => r.row), ROWS);
        for (const r of t.rows) {
          const row = r.row as number;
          for (const c of DATASET_COLUMNS) assertEquals(r[c], dataset.rows[row][c], `row ${row} ${c}`);
          const ids = tok.encode(r.prompt as string);
          assertEquals(r.ids, ids, `row ${row} ids`);
          assertEquals(r.true_id, tok.encode(r.target_true as string)[0]);
          // one prompt at a time, logits back to the host, softmax in float64
          const [logits] = await model.forward([ids], { mode });
          const s = tokenStats(logits, model.info.vocabSize, r.true_id as number);
          assert(close(r.true_prob as number, s.trueProb, 1e-9, 1e-4), `row ${row} ${mode} true_prob ${r.true_prob} vs ${s.trueProb}`);
          assert(close(r.max_prob as number, s.maxProb, 1e-9, 1e-4), `row ${row} ${mode} max_prob ${r.max_prob} vs ${s.maxProb}`);
          assertEquals(r.pred_id, s.predId, `row ${row} ${mode} pred_id`);
          assertEquals(r.pred, tok.decode([s.predId]));
          assertEquals(r.hit, s.predId === r.true_id);
          // and the float64 PyTorch reference of the seed (attention mode; scan gives the same logits)
          const g = golden.find((p) => p.row === row);
          if (g) {
            assertEquals(r.ids, g.ids);
            assertEquals(r.true_id, g.true_id);
            assert(Math.abs((r.true_prob as number) - g.base.true_prob) < 1e-6, `row ${row} ${mode} true_prob vs golden`);
            assert(Math.abs((r.max_prob as number) - g.base.max_prob) < 1e-6, `row ${row} ${mode} max_prob vs golden`);
            assertEquals(r.pred_id, g.base.pred_id);
            assertEquals(r.pred, g.base.pred);
          }
        }
      }
    } finally {
      model.destroy();
      ckpt.close();
    }
    const summary = JSON.parse(await Deno.readTextFile(join(compare, "summary.json")));
    assertEquals(summary.rows, ROWS.length);
    assertEquals(summary.threshold, 0.1);
    assert(Math.abs(summary.delta.true_prob.mean) < 1e-6, "scan and attention mode agree");
    assertEquals(summary.delta.true_prob.count_abs_gt_threshold, 0);
    const m = JSON.parse(await Deno.readTextFile(join(construct, "manifest.json")));
    assertEquals(m.params, {}, "batchSize is throughput only: not in the key");
    assertEquals(m.throughputParams, { batchSize: 16 });
    assertEquals(m.counts.rows, ROWS.length);
    assertEquals(m.inputs.dataset.rows, ROW_SPEC);
    assertEquals(m.inputs.model.identity.length, 64);
    assert(typeof m.engine.adapter === "string" && m.engine.adapter.length > 0);
    assert(m.wallTimeS > 0);
    assertEquals(Object.keys(m.outputs).sort(), ["construct_attention.parquet", "construct_scan.parquet"]);
  });

  await t.step("a second run does nothing and says so", async () => {
    const before = await snapshot(out);
    const r = await pipeline(base);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("01_construct: up to date, skipped"), describe(r));
    assert(r.stdout.includes("02_compare: up to date, skipped"), describe(r));
    assert(r.stdout.includes("nothing to do"), describe(r));
    assertEquals(await snapshot(out), before);
  });

  await t.step("--dry-run says what would run and why, and runs nothing", async () => {
    const before = await snapshot(out);
    const r = await pipeline([...base, "--dtype", "f16", "--dry-run"]);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("01_construct: would run: dtype changed (f32 → f16)"), describe(r));
    assert(r.stdout.includes("02_compare: would run: upstream 01_construct changed"), describe(r));
    assertEquals(await snapshot(out), before);
  });

  await t.step("a changed 02_compare parameter reruns 02_compare only", async () => {
    const before = await snapshot(construct);
    const r = await pipeline([...base, "--set", "02_compare.threshold=0.05"]);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("01_construct: up to date, skipped"), describe(r));
    assert(r.stdout.includes("02_compare: runs: parameter threshold changed (0.1 → 0.05)"), describe(r));
    assertEquals(await snapshot(construct), before);
    assertEquals(JSON.parse(await Deno.readTextFile(join(compare, "summary.json"))).threshold, 0.05);
    // and the default again is a change back
    const again = await pipeline(base);
    assert(again.stdout.includes("02_compare: runs: parameter threshold changed (0.05 → 0.1)"), describe(again));
  });

  await t.step("a changed throughput-only parameter (01_construct.batchSize) reruns nothing", async () => {
    const before = await snapshot(out);
    const r = await pipeline([...base, "--set", "01_construct.batchSize=2"]);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("01_construct: up to date, skipped"), describe(r));
    assert(r.stdout.includes("02_compare: up to date, skipped"), describe(r));
    assertEquals(await snapshot(out), before);
  });

  await t.step("--force reruns; deno task stage runs one stage", async () => {
    const scanBefore = await readParquet(join(construct, "construct_scan.parquet"));
    const args = [...base, "--set", "01_construct.batchSize=2"];
    const r = await pipeline([...args, "--force"]);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("01_construct: runs: forced (--force)"), describe(r));
    assert(r.stdout.includes("02_compare: runs: forced (--force)"), describe(r));
    const m = JSON.parse(await Deno.readTextFile(join(construct, "manifest.json")));
    assertEquals(m.throughputParams.batchSize, 2);
    assertEquals(m.info.batches, 3);
    // other batches, same numbers
    const scanAfter = await readParquet(join(construct, "construct_scan.parquet"));
    scanAfter.rows.forEach((r, i) => {
      assertEquals(r.pred_id, scanBefore.rows[i].pred_id);
      assert(close(r.true_prob as number, scanBefore.rows[i].true_prob as number, 1e-12, 1e-5));
    });
    const before = await snapshot(construct);
    const s = await stage(["02_compare", "--model", FIXTURE, "--rows", ROW_SPEC, "--out", out, "--set", "01_construct.batchSize=2", "--force"]);
    assertEquals(s.code, 0, describe(s));
    assert(s.stdout.includes("02_compare: runs: forced (--force)"), describe(s));
    assert(!s.stdout.includes("01_construct"), describe(s));
    assertEquals(await snapshot(construct), before);
    const quiet = await pipeline(args);
    assert(quiet.stdout.includes("nothing to do"), describe(quiet));
  });

  await t.step("--from reruns that stage and later ones, not earlier ones", async () => {
    // 03_info_flow's default k = 9,15 does not fit the test model's 6 layers: refused before anything runs
    const args = ["--model", FIXTURE, "--rows", ROW_SPEC, "--out", out, "--set", "01_construct.batchSize=2", "--set", "03_info_flow.k=3"];
    const before = await snapshot(construct);
    const r = await pipeline([...args, "--from", "02_compare", "--dry-run"]);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("02_compare: would run: forced (--from 02_compare)"), describe(r));
    assert(!r.stdout.includes("01_construct:"), describe(r));
    assertEquals(await snapshot(construct), before);
  });

  await t.step("a modified output is noticed and remade", async () => {
    const args = [...base, "--set", "01_construct.batchSize=2"];
    await Deno.writeTextFile(join(compare, "summary.md"), "edited by hand\n");
    const r = await pipeline(args);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("01_construct: up to date, skipped"), describe(r));
    assert(r.stdout.includes("02_compare: runs: output summary.md was modified"), describe(r));
    assert((await Deno.readTextFile(join(compare, "summary.md"))).startsWith("# Scan mode vs attention mode"));
  });

  await Deno.remove(out, { recursive: true });
});
