// Issue 11 through the commands as a user runs them, on the fixture model: exit codes (usage 2,
// other errors 1), parameters checked against the model before anything runs, --out that is a
// model's folder, non-finite logits, a prompt too long for attention mode, throughput-only
// parameters (byte-identical outputs, nothing reruns), figures of an earlier k, resumed and
// forced runs said as such, and 04_heatmap's hint.
import { join } from "node:path";
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { describe, expectOneLineError, FIXTURE, interruptedRun, pipeline, type RunResult } from "./pipeline_helpers.ts";
import { FIXTURE_DIR, loadBackbone, runDeno, testGpu } from "./helpers.ts";
import { hashFile } from "../workflows/lib/hash.ts";
import { writeParquet } from "../workflows/lib/parquet.ts";
import { STUDY_ROWS } from "../workflows/04_heatmap.ts";

const exists = (p: string) => Deno.stat(p).then(() => true, () => false);
const oneLine = (r: RunResult, re: RegExp, code: number) => {
  expectOneLineError(r, re, { ignoreProgress: true });
  assertEquals(r.code, code, `exit code\n${describe(r)}`);
};

/** The fixture model with norm_f's weights at 3e38: finite, so loaded, but the logits overflow float32. */
async function overflowingModel(dir: string): Promise<string> {
  const bytes = await Deno.readFile(join(FIXTURE_DIR, "model.safetensors"));
  const n = Number(new DataView(bytes.buffer).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + n)));
  const [a, b] = header["backbone.norm_f.weight"].data_offsets as [number, number];
  new Float32Array(bytes.buffer, 8 + n + a, (b - a) / 4).fill(3e38);
  await Deno.mkdir(dir);
  await Deno.copyFile(join(FIXTURE_DIR, "config.json"), join(dir, "config.json"));
  await Deno.writeFile(join(dir, "model.safetensors"), bytes);
  return dir;
}

Deno.test("usage errors exit 2, other errors 1; every value checked against the model before anything runs", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "hardening_pipeline_" });
  const base = ["--model", FIXTURE, "--rows", "0-1", "--out", join(tmp, "run")];
  const cases: [string, string[], RegExp, number][] = [
    ["a row index of 2^53 and more (looped forever)", ["--rows", "9007199254740993"], /--rows: row 9007199254740993 is out of range; the dataset has 21919 rows \(0-21918\)/, 2],
    ["a range of rows beyond the dataset", ["--rows", "0-99999999999"], /--rows: row 99999999999 is out of range/, 2],
    ["a parameter only an object's prototype has", ["--set", "01_construct.constructor=1"], /stage 01_construct has no parameter "constructor"/, 2],
    ["toString", ["--set", "02_compare.toString=1"], /stage 02_compare has no parameter "toString"/, 2],
    ["k larger than the model (dry run)", ["--dry-run", "--set", "03_info_flow.k=3,9"], /03_info_flow\.k: window size k=9 is larger than the model's 6 layers; use k <= 6/, 2],
    ["04's k larger than the model (dry run)", ["--dry-run", "--only", "04_heatmap", "--set", "04_heatmap.k=7"], /04_heatmap\.k: window size k=7 is larger than the model's 6 layers/, 2],
    ["a head the model does not have (dry run)", ["--dry-run", "--set", "03_info_flow.k=3", "--set", "03_info_flow.heads=all,only:2+8"], /03_info_flow\.heads: unit selector only:2\+8: unit 8 does not exist \(a mamba2 layer has units 0\.\.7\)/, 2],
    ["04's head selector that picks no head (dry run)", ["--dry-run", "--set", "03_info_flow.k=3", "--set", "04_heatmap.heads=fast:1/9"], /04_heatmap\.heads: unit selector fast:1\/9 picks no unit of a mamba2 layer \(8 units\)/, 2],
    ["k that is not a number (dry run)", ["--dry-run", "--set", "03_info_flow.k=abc"], /03_info_flow\.k: "abc" is not a positive integer/, 2],
    ["k given twice (dry run)", ["--dry-run", "--set", "03_info_flow.k=3,3"], /03_info_flow\.k: "3" is given twice/, 2],
    ["04's k that is not an integer", ["--dry-run", "--set", "04_heatmap.k=abc"], /04_heatmap\.k must be an integer/, 2],
    ["an unknown flag", ["--bogus"], /--bogus/, 2],
    ["a missing dataset (not a usage error)", ["--dataset", join(tmp, "nope.parquet")], /nope\.parquet does not exist/, 1],
  ];
  for (const [what, args, re, code] of cases) {
    await t.step(what, async () => {
      oneLine(await pipeline([...base, ...args]), re, code);
      assert(!(await exists(join(tmp, "run"))), "nothing was written");
    });
  }
  await t.step("a model config with absurd sizes: one line before anything is allocated", async () => {
    const model = join(tmp, "absurd");
    await Deno.mkdir(model);
    const cfg = JSON.parse(await Deno.readTextFile(join(FIXTURE_DIR, "config.json")));
    await Deno.writeTextFile(join(model, "config.json"), JSON.stringify({ ...cfg, n_layer: 1e9 }));
    await Deno.copyFile(join(FIXTURE_DIR, "model.safetensors"), join(model, "model.safetensors"));
    const t0 = performance.now();
    oneLine(await pipeline([...base, "--model", model, "--only", "01_construct"]), /"n_layer" is 1000000000, beyond any real model \(at most 1024\)/, 1);
    const r = await runDeno(["run", "-A", "engine/infer.ts", "--model", model, "--ids", "1"]);
    oneLine(r, /"n_layer" is 1000000000, beyond any real model/, 1);
    assert(performance.now() - t0 < 60_000, "refused up front, not after minutes");
  });
  await Deno.remove(tmp, { recursive: true });
});

Deno.test("--out: a model's folder or another folder is refused, the effective configuration is run.config.json", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "hardening_out_" });
  const model = join(tmp, "model");
  await Deno.mkdir(model);
  for (const f of ["config.json", "model.safetensors"]) await Deno.copyFile(join(FIXTURE_DIR, f), join(model, f));
  const before = await hashFile(join(model, "config.json"));
  const base = ["--model", model, "--rows", "0-1", "--only", "01_construct"];
  oneLine(await pipeline([...base, "--out", model]), /run folder .*model holds a model \(config\.json, model\.safetensors\); a run would write among its files: pass --out with a new or empty folder/, 2);
  oneLine(await pipeline([...base, "--out", model, "--dry-run"]), /holds a model/, 2);
  assertEquals(await hashFile(join(model, "config.json")), before, "the model's config.json is untouched");
  assertEquals((await Array.fromAsync(Deno.readDir(model))).map((e) => e.name).sort(), ["config.json", "model.safetensors"]);
  const docs = join(tmp, "docs");
  await Deno.mkdir(docs);
  await Deno.writeTextFile(join(docs, "notes.txt"), "mine");
  oneLine(await pipeline([...base, "--out", docs]), /run folder .*docs is not a run folder \(it holds notes\.txt\)/, 2);
  // a run writes run.config.json, and a second run in the same folder is fine
  const run = join(tmp, "run");
  for (let i = 0; i < 2; i++) {
    const r = await pipeline([...base, "--out", run]);
    assertEquals(r.code, 0, describe(r));
  }
  assert(await exists(join(run, "run.config.json")));
  assert(!(await exists(join(run, "config.json"))));
  const m = JSON.parse(await Deno.readTextFile(join(run, "01_construct", "manifest.json")));
  assertEquals(m.selection, { rows: "0-1", rowCount: 2 }, "the rows are in the manifest");
  await Deno.remove(tmp, { recursive: true });
});

Deno.test("non-finite logits: infer and 01_construct stop with one line (naming the rows), nothing saved", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "hardening_nan_" });
  const model = await overflowingModel(join(tmp, "overflow"));
  const r = await runDeno(["run", "-A", "engine/infer.ts", "--model", model, "--ids", "1,2,3"]);
  oneLine(r, /the last position's logits hold \d+ non-finite values \(NaN or Inf; the first at token \d+\): the model's activations overflowed float32/, 1);
  assert(!r.stdout.includes("NaN"), r.stdout);
  const out = join(tmp, "run");
  const p = await pipeline(["--model", model, "--rows", "0-3", "--only", "01_construct", "--out", out]);
  oneLine(p, /01_construct, scan mode, dataset rows 0, 1, 2, 3: the model's logits are not finite \(max logit .*, logsumexp .*\)/, 1);
  assert(!(await exists(join(out, "01_construct", "construct_scan.parquet"))));
  assert(!(await exists(join(out, "01_construct", "manifest.json"))));
  await Deno.remove(tmp, { recursive: true });
});

Deno.test("non-finite statistics from the GPU: forwardStats (01) and the fast path (03, 04) refuse them", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "hardening_nan_engine_" });
  const model = await loadBackbone(await overflowingModel(join(tmp, "overflow")));
  try {
    const ids = [[3996, 12299, 42765, 909, 13, 4882, 253], [2115, 961, 91]];
    for (const mode of ["scan", "attention"] as const) {
      const e = await assertRejects(() => model.forwardStats(ids, [5112, 5112], { mode }), /the model's logits are not finite/);
      assertEquals(e.name, "NumericError");
    }
    const e = await assertRejects(
      () => model.knockouts(ids, [5112, 5112], [{ prompt: 0, target: 5112, start: 2, end: 4, edges: [[6, 0]] }]),
      /the model's logits are not finite \(max logit .*, logsumexp .*\)/,
    );
    assertEquals(e.name, "NumericError");
  } finally {
    model.destroy();
    await Deno.remove(tmp, { recursive: true });
  }
});

Deno.test("a prompt too long for attention mode names its dataset row", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "hardening_long_" });
  // the tiny model's attention matrix is nheads·T²·4 bytes: past the adapter's largest binding at this T
  const gpu = await testGpu();
  const T = Math.ceil(Math.sqrt(gpu.maxBinding / (8 * 4))) + 1;
  const dataset = join(tmp, "long.parquet");
  await writeParquet(dataset, [
    { name: "prompt", type: "STRING", data: ["The capital of France is", "Once" + " the".repeat(T)] },
    { name: "subject", type: "STRING", data: ["France", "Once"] },
    { name: "target_true", type: "STRING", data: [" Paris", " end"] },
  ]);
  const r = await pipeline(["--model", FIXTURE, "--dataset", dataset, "--only", "01_construct", "--out", join(tmp, "run")]);
  oneLine(r, new RegExp(`01_construct, attention mode, dataset row 1: a prompt of \\d+ tokens is too long for attention mode on this adapter .*; leave it out with --rows`), 1);
  // without it the run goes through
  const ok = await pipeline(["--model", FIXTURE, "--dataset", dataset, "--rows", "0", "--only", "01_construct", "--out", join(tmp, "run0")]);
  assertEquals(ok.code, 0, describe(ok));
  await Deno.remove(tmp, { recursive: true });
});

Deno.test("throughput-only parameters: byte-identical outputs, nothing reruns; figures of an earlier k are removed", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "hardening_throughput_" });
  const rows = [...STUDY_ROWS, 0, 1, 2, 3].join(",");
  const common = [
    "--model", FIXTURE, "--rows", rows, "--only", "01_construct", "--only", "03_info_flow", "--only", "04_heatmap",
    "--set", "03_info_flow.filter=all", "--set", "03_info_flow.bootstrap=20",
    "--set", "03_info_flow.flows=last<-subject,relation<-relation", "--set", "03_info_flow.heads=not-fast:1/3",
    "--set", "04_heatmap.filter=all",
  ];
  const k3 = ["--set", "03_info_flow.k=3"];
  const small = [...k3, "--set", "01_construct.batchSize=1", "--set", "03_info_flow.group_prompts=1", "--set", "04_heatmap.group_prompts=1"];
  const large = [...k3, "--set", "01_construct.batchSize=5", "--set", "03_info_flow.group_prompts=8", "--set", "04_heatmap.group_prompts=3"];
  const a = join(tmp, "a"), b = join(tmp, "b");

  await t.step("the same outputs, byte for byte, whatever the batch sizes", async () => {
    for (const [out, sizes] of [[a, small], [b, large]] as const) {
      const r = await pipeline([...common, ...sizes, "--out", out]);
      assertEquals(r.code, 0, describe(r));
    }
    let compared = 0;
    for (const stage of ["01_construct", "03_info_flow", "04_heatmap"]) {
      const files = (await Array.fromAsync(Deno.readDir(join(a, stage)))).filter((e) => e.isFile && e.name !== "manifest.json").map((e) => e.name).sort();
      const other = (await Array.fromAsync(Deno.readDir(join(b, stage)))).filter((e) => e.isFile && e.name !== "manifest.json").map((e) => e.name).sort();
      assertEquals(other, files, stage);
      for (const f of files) {
        assertEquals(await hashFile(join(b, stage, f)), await hashFile(join(a, stage, f)), `${stage}/${f} differs across batch sizes`);
        compared++;
      }
      const [ma, mb] = await Promise.all([a, b].map(async (d) => JSON.parse(await Deno.readTextFile(join(d, stage, "manifest.json")))));
      assertEquals(mb.cacheKey, ma.cacheKey, `${stage}: the same cache key`);
      assert(mb.throughputParams && JSON.stringify(mb.throughputParams) !== JSON.stringify(ma.throughputParams), "recorded in the manifest");
    }
    assert(compared > 20, `compared ${compared} files`);
  });

  await t.step("changing only them reruns nothing", async () => {
    const r = await pipeline([...common, ...large, "--out", a]);
    assertEquals(r.code, 0, describe(r));
    for (const s of ["01_construct", "03_info_flow", "04_heatmap"]) assert(r.stdout.includes(`${s}: up to date, skipped`), describe(r));
  });

  await t.step("03: figures of an earlier k are removed (k=3 then k=2)", async () => {
    const dir = join(a, "03_info_flow");
    const figs = async () => (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name).filter((n) => /^info_flow.*\.png$/.test(n)).sort();
    assert((await figs()).some((f) => f.startsWith("info_flow_k3_")), (await figs()).join(" "));
    const r = await pipeline([...common, "--set", "03_info_flow.k=2", "--out", a]);
    assertEquals(r.code, 0, describe(r));
    const now = await figs();
    assert(now.length > 0 && now.every((f) => /^info_flow(_features)?_k2_/.test(f)), now.join(" "));
    const all = (await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name);
    assert(!all.some((f) => /_k3_/.test(f)), `left over: ${all.filter((f) => /_k3_/.test(f)).join(" ")}`);
  });
  await Deno.remove(tmp, { recursive: true });
});

/** 01_construct one prompt per batch, killed once `minRecords` scan-mode prompts are saved; the prompts saved. */
async function killedRun(args: string[], out: string, minRecords: number): Promise<number> {
  return (await interruptedRun([...args, "--out", out], join(out, "01_construct", ".work", "scan.jsonl"), minRecords)).saved;
}

Deno.test("an interrupted run is said to resume; rerun with --force, it starts over", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "hardening_resume_" });
  const out = join(tmp, "run");
  const args = ["--model", FIXTURE, "--rows", "0-9", "--only", "01_construct", "--set", "01_construct.batchSize=1"];
  const saved = await killedRun(args, out, 2);
  assert(saved >= 2 && saved < 10, `saved ${saved}`);
  const dry = await pipeline([...args, "--out", out, "--dry-run"]);
  assert(dry.stdout.includes("01_construct: would run: resumes an interrupted run (its saved work is kept)"), describe(dry));
  assert(!dry.stdout.includes("no earlier output"), describe(dry));
  const r = await pipeline([...args, "--out", out]);
  assertEquals(r.code, 0, describe(r));
  assert(r.stdout.includes("01_construct: runs: resumes an interrupted run") && r.stdout.includes(`scan mode: resuming, ${saved} of 10 prompts already done`), describe(r));

  // a --force run killed in the middle, then --force again: it starts over rather than resuming the killed one
  const again = await killedRun([...args, "--force"], out, 2);
  assert(again >= 2 && again < 10, `saved ${again}`);
  const forced = await pipeline([...args, "--out", out, "--force"]);
  assertEquals(forced.code, 0, describe(forced));
  assert(forced.stdout.includes("01_construct: runs: forced (--force), starts over (the saved work of an interrupted run is discarded)"), describe(forced));
  assert(!forced.stdout.includes("resuming"), describe(forced));
  const m = JSON.parse(await Deno.readTextFile(join(out, "01_construct", "manifest.json")));
  assertEquals(m.info.resumedPrompts, 0);
  await Deno.remove(tmp, { recursive: true });
});

Deno.test("04_heatmap: when the row selection leaves out the prompts, the hint says --rows, not filter=all", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "hardening_hint_" });
  const r = await pipeline(["--model", FIXTURE, "--rows", "0-3", "--only", "01_construct", "--only", "04_heatmap", "--out", join(tmp, "run")]);
  oneLine(
    r,
    new RegExp(`04_heatmap: no prompt to run \\("Commerzbank, whose headquarters are in" is not the prompt of any selected row, and 3 more\\); include the prompts' rows in --rows \\(the study's four: --rows ${STUDY_ROWS.join(",")}\\), or choose others with --heatmap-prompts$`),
    1,
  );
  assert(!r.stderr.includes("filter=all"), r.stderr);
  await Deno.remove(tmp, { recursive: true });
});
