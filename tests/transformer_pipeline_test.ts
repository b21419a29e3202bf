// `deno task pipeline --model EleutherAI/pythia-160m` end to end on a checkpoint in the Hugging Face
// cache: the pythia-tiny fixture laid out as that id's cache entry (blobs, refs/main, a snapshot of
// links) under a temporary HF_HUB_CACHE, offline and with an endpoint that answers nothing, so that
// nothing is downloaded. 01_construct runs attention mode only (a Transformer has no scan mode) and
// says so; 02_compare says "not applicable"; 03_info_flow reproduces every flow × window case of the
// fixture's float64 golden through the real vocabulary (the tokenizer's 50277 ids, not the head's
// 50304 rows); 04_heatmap runs; a second run does nothing; decay selectors and conv knockouts are
// refused in one line by 03 and 04.
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { runDeno } from "./helpers.ts";
import { assertGoldenFlowCases, describe, expectOneLineError, type RunResult } from "./pipeline_helpers.ts";
import { fixtureDir, goldenExperiments } from "./transformer_helpers.ts";
import { hashFile } from "../workflows/lib/hash.ts";
import { readParquet } from "../workflows/lib/parquet.ts";

const MODEL = "EleutherAI/pythia-160m";
const STAGES = ["01_construct", "02_compare", "03_info_flow", "04_heatmap"].flatMap((s) => ["--only", s]);

/** The fixture as the cache entry of MODEL: blobs named by their hashes, a snapshot of links, refs/main. */
async function hubCache(cache: string): Promise<string> {
  const repo = `${cache}/models--${MODEL.replace("/", "--")}`;
  const commit = "3".repeat(40);
  const snapshot = `${repo}/snapshots/${commit}`;
  await Deno.mkdir(`${repo}/blobs`, { recursive: true });
  await Deno.mkdir(snapshot, { recursive: true });
  await Deno.mkdir(`${repo}/refs`, { recursive: true });
  await Deno.writeTextFile(`${repo}/refs/main`, commit);
  // config.json is a git blob (sha1), the weights an LFS blob (sha256)
  for (const [name, blob] of [["config.json", "c".repeat(40)], ["model.safetensors", await hashFile(fixtureDir("pythia") + "model.safetensors")]]) {
    await Deno.copyFile(fixtureDir("pythia") + name, `${repo}/blobs/${blob}`);
    await Deno.symlink(`../../blobs/${blob}`, `${snapshot}/${name}`);
  }
  return snapshot;
}

Deno.test("deno task pipeline --model EleutherAI/pythia-160m: the study end to end on the HF cache, offline", async (t) => {
  const g = await goldenExperiments("pythia");
  const tmp = await Deno.makeTempDir({ prefix: "transformer_pipeline_" });
  const cache = join(tmp, "hub"), out = join(tmp, "out");
  const env = { HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "1", HF_ENDPOINT: "http://127.0.0.1:9" };
  const rows = g.prompts.map((p) => p.row).sort((a, b) => a - b);
  const args = [
    "run", "-A", "workflows/pipeline.ts", "--model", MODEL, "--rows", rows.join(","), "--out", out, ...STAGES,
    "--set", "03_info_flow.filter=all", "--set", `03_info_flow.k=${g.window_size}`, "--set", `03_info_flow.flows=${g.flows.join(",")}`,
    "--set", "03_info_flow.bootstrap=20", "--set", "04_heatmap.prompts=all", "--set", "04_heatmap.filter=all", "--set", "04_heatmap.k=2",
  ];
  const run = (extra: string[] = []): Promise<RunResult> => runDeno([...args, ...extra], { env });
  try {
    const snapshot = await hubCache(cache);

    await t.step("the four stages run on the cached checkpoint", async () => {
      const r = await run();
      assertEquals(r.code, 0, describe(r));
      for (const s of ["01_construct", "02_compare", "03_info_flow", "04_heatmap"]) assert(r.stdout.includes(`${s}: runs: no earlier output`), describe(r));
    });

    await t.step("01_construct: attention mode only, recorded; the real vocabulary", async () => {
      const dir = join(out, "01_construct");
      const m = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
      assertEquals(m.inputs.model.id, MODEL);
      assertEquals(Object.keys(m.outputs), ["construct_attention.parquet"]);
      assertEquals(m.info.modes, ["attention"]);
      assertEquals(m.counts.hits_scan, undefined);
      assert(!(await Deno.stat(join(dir, "construct_scan.parquet")).then(() => true, () => false)), "no scan table");
      const table = await readParquet(join(dir, "construct_attention.parquet"));
      assertEquals(table.rows.map((x) => x.row), rows);
      for (const p of g.prompts) {
        const x = table.rows.find((y) => y.row === p.row)!;
        assertEquals(Array.from(x.ids as number[]), p.ids, `ids of row ${p.row}`);
        // the golden softmax runs over the tokenizer's 50277 ids: over the head's 50304 rows p would differ
        const rel = Math.abs((x.true_prob as number) - p.base.true_prob) / p.base.true_prob;
        assert(rel <= 2e-4, `row ${p.row}: p(true) ${x.true_prob} vs golden ${p.base.true_prob}`);
        assertEquals(x.hit, p.base.hit);
      }
      // the checkpoint is the cache entry: identified by its blob names, nothing downloaded
      assertEquals((await Deno.realPath(join(snapshot, "model.safetensors"))).includes("/blobs/"), true);
    });

    await t.step("02_compare: not applicable, in its summary and its manifest", async () => {
      const dir = join(out, "02_compare");
      const summary = JSON.parse(await Deno.readTextFile(join(dir, "summary.json")));
      assertEquals([summary.model, summary.applicable, summary.modes], [MODEL, false, ["attention"]]);
      assert(/no scan mode/.test(summary.reason), summary.reason);
      assert((await Deno.readTextFile(join(dir, "summary.md"))).includes("not applicable"), "summary.md");
      const m = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
      assertEquals(m.info.applicable, false);
      assertEquals(Object.keys(m.outputs).sort(), ["summary.json", "summary.md"]);
    });

    await t.step("03_info_flow: every golden flow × window case; 04_heatmap ran", async () => {
      const table = await readParquet(join(out, "03_info_flow", "info_flow.parquet"));
      const { checked, absent } = assertGoldenFlowCases(g.prompts, table.rows);
      assert(checked > 150 && absent > 0, `${checked} cases checked, ${absent} without edges`);
      const heat = await readParquet(join(out, "04_heatmap", "heatmap.parquet"));
      assert(heat.numRows > 0, "heatmap rows");
    });

    await t.step("a second run does nothing", async () => {
      const r = await run();
      assertEquals(r.code, 0, describe(r));
      assert(r.stdout.includes("nothing to do"), describe(r));
    });

    await t.step("decay selectors and conv knockouts are refused in one line, and nothing is written", async () => {
      const cases: [string[], RegExp][] = [
        [["--only", "03_info_flow", "--set", "03_info_flow.heads=all,not-fast:1/3"], /03_info_flow\.heads: unit selector not-fast:1\/3 ranks units by decay, which a gpt_neox layer does not have: use all or only/],
        [["--only", "03_info_flow", "--set", "03_info_flow.conv=false,true"], /03_info_flow\.conv: gpt_neox models have no conv path to cut; use conv=false/],
        [["--only", "04_heatmap", "--set", "04_heatmap.heads=slow:1/2"], /04_heatmap\.heads: unit selector slow:1\/2 ranks units by decay/],
        [["--only", "04_heatmap", "--set", "04_heatmap.conv=true"], /04_heatmap\.conv: gpt_neox models have no conv path to cut/],
      ];
      for (const [extra, re] of cases) {
        const stage = extra[1];
        const before = await Deno.readTextFile(join(out, stage, "manifest.json"));
        const r = await runDeno([...args.filter((a, i) => !(a === "--only" || args[i - 1] === "--only")), ...extra], { env });
        expectOneLineError(r, re, { ignoreProgress: true });
        assertEquals(await Deno.readTextFile(join(out, stage, "manifest.json")), before, `${stage}: its earlier outputs stay`);
      }
    });
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
