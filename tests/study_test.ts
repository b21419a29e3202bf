// A study of several models: `models` in the config and repeated --model, the study's folders, the
// filter all-models-correct (per row, from every model's 01_construct, one-mode families included),
// the order the stages run in (a stage reading every model waits for them), and 05_compare_models.
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { describe, expectOneLineError, FIXTURE, pipeline } from "./pipeline_helpers.ts";
import { loadStages } from "../workflows/registry.ts";
import { loadConfig } from "../workflows/lib/config.ts";
import { studyName } from "../workflows/lib/plan.ts";
import { applyFilter, type ConstructRow, type ConstructTables } from "../workflows/lib/prompt_choice.ts";
import { readParquet, writeParquet } from "../workflows/lib/parquet.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const GROUPS = "tests/fixtures/mamba2-groups";

Deno.test("study config: models, model, both, none, twice; --model, --models", async () => {
  const stages = await loadStages();
  const dir = await Deno.makeTempDir({ prefix: "study_cfg_" });
  try {
    const write = async (name: string, v: unknown) => {
      const p = join(dir, name);
      await Deno.writeTextFile(p, JSON.stringify({ dataset: "d.parquet", ...(v as object) }));
      return p;
    };
    const two = await loadConfig(stages, await write("two.json", { models: ["a/x", "b/y"] }), {});
    assertEquals(two.models, ["a/x", "b/y"]);
    assertEquals(two.model, "a/x");
    const one = await loadConfig(stages, await write("one.json", { model: "a/x" }), {});
    assertEquals(one.models, ["a/x"]);
    const over = await loadConfig(stages, await write("over.json", { models: ["a/x", "b/y"] }), { model: "c/z" });
    assertEquals(over.models, ["c/z"]);
    const flags = await loadConfig(stages, await write("flags.json", { model: "a/x" }), { models: "c/z,d/w" });
    assertEquals(flags.models, ["c/z", "d/w"]);
    await assertRejects(async () => loadConfig(stages, await write("flags.json", { model: "a/x" }), { model: "c/z", models: "d/w,e/v" }), /--model \(one\) or --models \(a list\), not both/);
    await assertRejects(async () => loadConfig(stages, await write("flags.json", { model: "a/x" }), { models: "c/z,,d/w" }), /--models "c\/z,,d\/w": give model ids/);
    await assertRejects(async () => loadConfig(stages, await write("both.json", { model: "a/x", models: ["b/y"] }), {}), /"model" \(one\) or "models" \(a list\), not both/);
    await assertRejects(async () => loadConfig(stages, await write("empty.json", { models: [] }), {}), /"models" must be a non-empty list/);
    await assertRejects(async () => loadConfig(stages, await write("twice.json", { models: ["a/x", "a/x"] }), {}), /named twice/);
    await assertRejects(async () => loadConfig(stages, await write("none.json", {}), {}), /no model: set "model" or "models"/);
    await assertRejects(async () => loadConfig(stages, await write("badstudy.json", { model: "a/x", study: "../up" }), {}), /must be a folder name/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("study folder names", () => {
  const all = Array.from({ length: 10 }, (_, i) => i);
  assertEquals(studyName(["state-spaces/mamba2-130m"], all, 10), "mamba2-130m"); // one model: its run folder
  assertEquals(studyName(["state-spaces/mamba2-130m", "/m/mamba1-tiny"], all, 10), "study_mamba2-130m+mamba1-tiny");
  assertEquals(studyName(["a/x", "b/y"], [0, 1, 2], 10), "study_x+y_rows-0-2");
  assertEquals(studyName(["a/x", "b/y"], all, 10, "mine"), "mine");
  assert(/^study_[0-9a-f]{12}$/.test(studyName(Array.from({ length: 20 }, (_, i) => `org/model-number-${i}`), all, 10)));
});

function tables(hits: Record<string, boolean[]>): ConstructTables {
  const mode = (h: boolean[] | undefined) =>
    new Map((h ?? []).map((hit, row): [number, ConstructRow] => [row, { row, ids: [1], true_id: 1, true_prob: 0.5, max_prob: 0.5, pred_id: hit ? 1 : 2, hit }]));
  return { scan: mode(hits.scan), attention: mode(hits.attention) };
}

Deno.test("all-models-correct: every model right in every mode it runs (a one-mode family in its one)", () => {
  const a = tables({ scan: [true, true, true, false], attention: [true, true, false, true] });
  const b = tables({ scan: [true, false, true, true], attention: [true, true, true, true] });
  const tr = tables({ attention: [true, true, true, true] }); // a Transformer: attention mode only
  const trWrong = tables({ attention: [false, true, true, true] });
  const rows = [0, 1, 2, 3];
  const run = (study: ConstructTables[], names = ["a", "b", "c"]) =>
    applyFilter("all-models-correct", rows, { construct: study[0], study: study.map((construct, i) => ({ model: names[i], construct })) });
  assertEquals(run([a, b]).kept, [0]);
  assertEquals(run([a, b]).failed.map((f) => f.why), [
    "is not predicted correctly by b",
    "is not predicted correctly by a",
    "is not predicted correctly by a",
  ]);
  assertEquals(run([a, b, tr]).kept, [0]);
  assertEquals(run([b, tr]).kept, [0, 2, 3]);
  assertEquals(run([b, trWrong], ["b", "tr"]).failed.map((f) => `${f.row} ${f.why}`), ["0 is not predicted correctly by tr", "1 is not predicted correctly by b"]);
  // alone, it is both-correct
  assertEquals(applyFilter("all-models-correct", rows, { construct: a }).kept, applyFilter("both-correct", rows, { construct: a }).kept);
});

Deno.test("a study of two models on the fixtures: all-models-correct, the order of the stages, 05_compare_models", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "study_" });
  try {
    // the copy of the fixture model is a second model that predicts what the first does
    const twin = join(tmp, "mamba2-twin");
    await Deno.mkdir(twin);
    for (const f of ["config.json", "model.safetensors"]) await Deno.copyFile(join(ROOT, FIXTURE, f), join(twin, f));
    // a dataset whose true tokens are the fixture model's predictions in rows 0-7 (nothing is right otherwise)
    const pre = join(tmp, "pre");
    let r = await pipeline(["--model", FIXTURE, "--limit", "12", "--only", "01_construct", "--out", pre]);
    assertEquals(r.code, 0, describe(r));
    const pred = (await readParquet(join(pre, "01_construct", "construct_attention.parquet"))).rows;
    const ds = await readParquet(join(ROOT, "data/counterfact-tracing.parquet"), { rowEnd: 12 });
    ds.rows.forEach((row, i) => {
      if (i < 8) row.target_true = pred[i].pred;
    });
    const dataset = join(tmp, "crafted.parquet");
    await writeParquet(dataset, ds.columns.map((c) => ({ name: c, type: ds.types[c]!, data: ds.rows.map((x) => x[c]), nullable: true })));

    const out = join(tmp, "twins");
    const args = [
      "--models", `${FIXTURE},${twin}`, "--dataset", dataset, "--out", out,
      "--only", "01_construct", "--only", "03_info_flow", "--only", "05_compare_models",
      "--set", "03_info_flow.filter=all-models-correct", "--set", "03_info_flow.k=2", "--set", "03_info_flow.bootstrap=50",
    ];
    await t.step("03 runs on the rows both models got right, after both models' 01", async () => {
      r = await pipeline(args);
      assertEquals(r.code, 0, describe(r));
      const done = r.stdout.split("\n").filter((l) => / done in /.test(l)).map((l) => l.split(":")[0]);
      assertEquals(done, [
        "01_construct [mamba2-tiny]",
        "01_construct [mamba2-twin]",
        "03_info_flow [mamba2-tiny]",
        "03_info_flow [mamba2-twin]",
        "05_compare_models [study]",
      ]);
      const hitsOf = async (run: string) => {
        const rows = new Map<number, boolean>();
        for (const mode of ["scan", "attention"]) {
          for (const x of (await readParquet(join(out, run, "01_construct", `construct_${mode}.parquet`))).rows) {
            rows.set(x.row as number, (rows.get(x.row as number) ?? true) && (x.hit as boolean));
          }
        }
        return rows;
      };
      const a = await hitsOf("mamba2-tiny"), b = await hitsOf("mamba2-twin");
      const expected = [...a.keys()].filter((row) => a.get(row) && b.get(row)).sort((x, y) => x - y);
      assert(expected.length >= 4, `the crafted rows should be right: ${expected}`);
      for (const run of ["mamba2-tiny", "mamba2-twin"]) {
        const got = (await readParquet(join(out, run, "03_info_flow", "prompts.parquet"))).rows.map((x) => x.row as number).sort((x, y) => x - y);
        assertEquals(got, expected, `${run}'s prompts`);
      }
      // each 03 is keyed on the other model's 01_construct too
      const m = JSON.parse(await Deno.readTextFile(join(out, "mamba2-tiny", "03_info_flow", "manifest.json")));
      const twin01 = JSON.parse(await Deno.readTextFile(join(out, "mamba2-twin", "01_construct", "manifest.json")));
      assertEquals(m.inputs.upstream["mamba2-twin/01_construct"], twin01.cacheKey);
      // 05: both models, their curves over the same prompts
      const models = (await readParquet(join(out, "05_compare_models", "models.parquet"))).rows;
      assertEquals(models.map((x) => [x.label, x.n_layer, x.prompts, x.filter]), [
        ["mamba2-tiny", 6, expected.length, "all-models-correct"],
        ["mamba2-twin", 6, expected.length, "all-models-correct"],
      ]);
      assertEquals(models[0].accuracy_scan, (await readParquet(join(out, "mamba2-tiny", "01_construct", "construct_scan.parquet"))).rows.filter((x) => x.hit).length / 12);
      const lowest = (await readParquet(join(out, "05_compare_models", "lowest.parquet"))).rows;
      assertEquals(lowest.length, 2 * 3, "a lowest point per model and flow");
      // the twin computes exactly what the original does
      for (const flow of new Set(lowest.map((x) => x.flow))) {
        const [x, y] = lowest.filter((l) => l.flow === flow);
        assertEquals([x.relative_change, x.window], [y.relative_change, y.window], `lowest point of ${flow}`);
      }
      const curves = (await readParquet(join(out, "05_compare_models", "curves.parquet"))).rows;
      const aggs = (await readParquet(join(out, "mamba2-tiny", "03_info_flow", "info_flow_aggregates.parquet"))).rows;
      assertEquals(curves.filter((c) => c.label === "mamba2-tiny").length, aggs.length);
      assert((await Deno.stat(join(out, "05_compare_models", "compare_k2.png"))).size > 10000, "the figure");
    });

    await t.step("run again: nothing to do", async () => {
      r = await pipeline(args);
      assertEquals(r.code, 0, describe(r));
      assert(r.stdout.includes("nothing to do"), describe(r));
    });

    await t.step("all-models-correct with a model that gets them wrong: the skip names that model", async () => {
      expectOneLineError(
        await pipeline([
          "--models", `${FIXTURE},${GROUPS}`, "--dataset", dataset, "--out", join(tmp, "mixed"),
          "--only", "01_construct", "--only", "04_heatmap", "--heatmap-prompts", "0-3",
          "--set", "04_heatmap.filter=all-models-correct", "--set", "04_heatmap.k=2",
        ]),
        /04_heatmap: no prompt to run \(row 0 \(".*"\) is not predicted correctly by (tests\/fixtures\/mamba2-tiny, )?tests\/fixtures\/mamba2-groups, and 3 more\)/,
        { ignoreProgress: true },
      );
    });

    await t.step("two models whose folders have one name: one line", async () => {
      const other = join(tmp, "elsewhere", "mamba2-tiny");
      await Deno.mkdir(other, { recursive: true });
      expectOneLineError(await pipeline(["--models", `${FIXTURE},${other}`, "--dataset", dataset, "--dry-run"]), /would share the run folder mamba2-tiny/);
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("a sharded study of two models (Mamba-2, Mamba-1): every model's shards, two rounds, the study stage in the merge, the bytes of one process", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "study_shards_" });
  const MAMBA1 = "tests/fixtures/mamba1-tiny";
  const args = [
    "--models", `${FIXTURE},${MAMBA1}`, "--limit", "12",
    "--only", "01_construct", "--only", "03_info_flow", "--only", "05_compare_models",
    "--set", "01_construct.batchSize=4", "--set", "03_info_flow.group_prompts=4", "--set", "03_info_flow.filter=all",
    "--set", "03_info_flow.k=2", "--set", "03_info_flow.bootstrap=50",
  ];
  const sharded = join(tmp, "sharded"), whole = join(tmp, "whole");
  const runs = ["mamba2-tiny_rows-0-11", "mamba1-tiny_rows-0-11"];
  const exists = (p: string) => Deno.stat(p).then(() => true, () => false);
  try {
    await t.step("round 1: each shard computes its share of both models' 01; 03 waits, 05 is left to the merge", async () => {
      for (const i of [0, 1]) {
        const r = await pipeline([...args, "--out", sharded, "--shard", `${i}/2`]);
        assertEquals(r.code, 0, describe(r));
        for (const run of runs) {
          assert(r.stdout.includes(`01_construct [${run}]: shard ${i}/2 done`), describe(r));
          assert(r.stdout.includes(`03_info_flow [${run}]: waits for 01_construct to be merged`), describe(r));
        }
        assert(r.stdout.includes("05_compare_models [study]: not sharded; the merge runs it"), describe(r));
      }
      for (const run of runs) assert(!(await exists(join(sharded, run, "01_construct", "manifest.json"))), "a shard wrote an output");
    });

    await t.step("merge 1: both models' 01 merged; 03 has no shards yet, and 05 waits for both 03", async () => {
      const r = await pipeline([...args, "--out", sharded, "--merge"]);
      assertEquals(r.code, 0, describe(r));
      for (const run of runs) {
        assert(r.stdout.includes(`01_construct [${run}]: merged in`), describe(r));
        assert(r.stdout.includes(`03_info_flow [${run}]: no shards yet`), describe(r));
      }
      assert(r.stdout.includes(`05_compare_models [study]: waits for ${runs[0]}/03_info_flow, ${runs[1]}/03_info_flow`), describe(r));
      assert(!(await exists(join(sharded, "05_compare_models", "manifest.json"))), "05 ran before 03 was merged");
      const eff = JSON.parse(await Deno.readTextFile(join(sharded, runs[1], "run.config.json")));
      assertEquals([eff.model.endsWith("mamba1-tiny"), eff.models.length, eff.stagesRun], [true, 2, ["01_construct"]]);
    });

    await t.step("round 2 and merge 2: both models' 03 from their shards, then 05", async () => {
      for (const i of [0, 1]) {
        const r = await pipeline([...args, "--out", sharded, "--shard", `${i}/2`]);
        assertEquals(r.code, 0, describe(r));
        for (const run of runs) assert(r.stdout.includes(`03_info_flow [${run}]: shard ${i}/2 done`), describe(r));
      }
      const r = await pipeline([...args, "--out", sharded, "--merge"]);
      assertEquals(r.code, 0, describe(r));
      for (const run of runs) assert(r.stdout.includes(`03_info_flow [${run}]: merged in`), describe(r));
      assert(r.stdout.includes("05_compare_models [study]: done in"), describe(r));
      const m = JSON.parse(await Deno.readTextFile(join(sharded, runs[1], "03_info_flow", "manifest.json")));
      assertEquals(m.info.shards.count, 2);
      assertEquals(m.info.family, "mamba1");
    });

    await t.step("the same bytes as one process", async () => {
      const r = await pipeline([...args, "--out", whole]);
      assertEquals(r.code, 0, describe(r));
      const files = [
        ...runs.flatMap((run) => [
          ...["construct_scan.parquet", "construct_attention.parquet"].map((f) => join(run, "01_construct", f)),
          ...["prompts.parquet", "info_flow.parquet", "info_flow_aggregates.parquet", "decay.parquet"].map((f) => join(run, "03_info_flow", f)),
        ]),
        ...["models.parquet", "curves.parquet", "lowest.parquet", "summary.md"].map((f) => join("05_compare_models", f)),
      ];
      for (const f of files) {
        const [a, b] = await Promise.all([Deno.readFile(join(sharded, f)), Deno.readFile(join(whole, f))]);
        assert(a.length === b.length && a.every((v, i) => v === b[i]), `${f} differs from one process's`);
      }
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
