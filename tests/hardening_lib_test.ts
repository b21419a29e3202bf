// Issue 11, the parts without a GPU: row specs bounded by the dataset (2^53, huge and repeated
// ranges), parameter names that only objects' prototypes know (constructor, toString), absurd model
// sizes refused before any tensor is listed, non-finite logit statistics, run folder names and
// what may be a run folder, the lock taken atomically, rows named in engine errors, duplicate
// dataset columns, saved work of an interrupted run, and which parameters are in the cache key.
import { join } from "node:path";
import { assert, assertEquals, assertRejects, assertThrows } from "./assert.ts";
import { MAX_ROW, parseRows, selectRows } from "../workflows/lib/rows.ts";
import { loadConfig } from "../workflows/lib/config.ts";
import { aboutRows, UsageError, UserError } from "../workflows/lib/errors.ts";
import { checkRunFolder, lockRunDir, RUN_CONFIG } from "../workflows/lib/lock.ts";
import { runName, splitParams } from "../workflows/lib/plan.ts";
import { readParquet, writeParquet } from "../workflows/lib/parquet.ts";
import { hasSavedWork, RowLog } from "../workflows/lib/resume.ts";
import { loadStages } from "../workflows/registry.ts";
import { checkModelSize, MODEL_LIMITS, parseConfig } from "../engine/config.ts";
import { checkFiniteLogits, checkFiniteStats, NumericError, statsFromRows } from "../engine/probs.ts";
import { InputError } from "../engine/arch.ts";
import { childEnv, FIXTURE_DIR } from "./helpers.ts";

const tmp = () => Deno.makeTempDir({ prefix: "hardening_lib_" });

Deno.test("--rows: indices bounded by the dataset while parsing; 2^53 and more, huge and repeated ranges end at once", () => {
  const t0 = performance.now();
  const bad: [string, RegExp][] = [
    ["9007199254740993", /row 9007199254740993 is out of range; the dataset has 100 rows \(0-99\)/],
    ["9007199254740992-9007199254740993", /row 9007199254740992 is out of range/], // looped forever: i++ is a no-op at 2^53
    ["0-9007199254740993", /row 9007199254740993 is out of range/],
    ["99999999999999999999999999", /out of range/],
    ["0-100", /row 100 is out of range/],
    ["5-2", /range "5-2" runs backwards/],
  ];
  for (const [spec, re] of bad) {
    const e = assertThrows(() => parseRows(spec, 100), re);
    assert(e instanceof UsageError, `${spec}: a usage error (exit 2)`);
    assert(!e.message.includes("\n"));
  }
  // without a dataset size (04_heatmap's prompt rows before the dataset is read), a fixed bound
  assertThrows(() => parseRows("9007199254740993"), new RegExp(`larger than any dataset row \\(at most ${MAX_ROW}\\)`));
  // a spec repeating the whole dataset 20,000 times is the dataset once (a Set of it overflowed before)
  const huge = Array(20_000).fill("0-21918").join(",");
  const rows = parseRows(huge, 21919);
  assertEquals(rows.length, 21919);
  assertEquals([rows[0], rows.at(-1)], [0, 21918]);
  assertEquals(parseRows("7,0-3,2-5,00012", 20), [0, 1, 2, 3, 4, 5, 7, 12]);
  assertEquals(selectRows(10, { rows: "3,1", limit: 1 }), [1]);
  assert(performance.now() - t0 < 5000, `parsing took ${performance.now() - t0} ms`);
});

Deno.test("--set and config files: only declared parameters, never an object's own methods (constructor, toString, __proto__)", async () => {
  const stages = await loadStages();
  for (const k of ["constructor", "toString", "__proto__", "hasOwnProperty", "valueOf"]) {
    const e = await assertRejects(() => loadConfig(stages, undefined, { set: [`01_construct.${k}=1`] }), new RegExp(`stage 01_construct has no parameter "${k}"`));
    assert(e instanceof UsageError, `${k}: ${e}`);
  }
  const dir = await tmp();
  for (const k of ["constructor", "toString", "__proto__"]) {
    const p = join(dir, "c.json");
    // written as text: JSON.stringify would not write a __proto__ key
    await Deno.writeTextFile(p, `{"model": "m", "dataset": "d", "stages": {"01_construct": {"${k}": 1}}}`);
    const e = await assertRejects(() => loadConfig(stages, p, {}), new RegExp(`stage 01_construct has no parameter "${k}"`));
    assert(e instanceof UsageError && !e.message.includes("\n"), String(e));
  }
  // a study configuration that is a FIFO would block: refused by its type
  const fifo = join(dir, "fifo.json");
  if ((await new Deno.Command("mkfifo", { args: [fifo] }).output()).success) {
    await assertRejects(() => loadConfig(stages, fifo, {}), /config file .*fifo\.json is not a regular file/);
  }
  await Deno.remove(dir, { recursive: true });
});

Deno.test("model config: absurd sizes refused before any tensor is listed or allocated", () => {
  const cfg = JSON.parse(Deno.readTextFileSync(FIXTURE_DIR + "config.json"));
  const t0 = performance.now();
  const cases: [Record<string, unknown>, RegExp][] = [
    [{ n_layer: 1e9 }, /"n_layer" is 1000000000, beyond any real model \(at most 1024\)/],
    [{ d_model: 1 << 20 }, /"d_model" is 1048576, beyond any real model \(at most 65536\)/],
    [{ vocab_size: 1e9 }, /"vocab_size" is 1000000000, beyond any real model/],
    [{ ssm_cfg: { ...cfg.ssm_cfg, d_state: 1e12 } }, /its sizes imply .* parameters, beyond any real model/],
  ];
  for (const [over, re] of cases) {
    const e = assertThrows(() => parseConfig({ ...cfg, ...over }), re);
    assertEquals(e.name, "ConfigError");
    assert(!e.message.includes("\n"));
  }
  assert(performance.now() - t0 < 2000, `took ${performance.now() - t0} ms`);
  // the real sizes pass (the largest Mamba-2, 2.7b: 64 layers, d_model 2560)
  const big = parseConfig({ ...cfg, n_layer: 64, d_model: 2560, ssm_cfg: { layer: "Mamba2" } });
  assertEquals(checkModelSize(big), big);
  assert(MODEL_LIMITS.nLayer >= 128 && MODEL_LIMITS.dModel >= 25600);
});

Deno.test("logit statistics: NaN or Inf (max, logsumexp, target) is one line, never a probability", () => {
  const ok = new Float32Array([2, 3, 7, 1]);
  assertEquals(statsFromRows(ok, 1)[0].predId, 7);
  for (const bad of [[NaN, NaN, 0, 1], [Infinity, Infinity, 0, 1], [-3.4e38, NaN, 4294967295, NaN], [1, 2, 3, -Infinity]]) {
    const out = new Float32Array([...ok, ...bad]);
    const e = assertThrows(() => statsFromRows(out, 2), /the model's logits are not finite \(max logit .*, logsumexp .*\): .*overflowed/);
    assert(e instanceof NumericError && !e.message.includes("\n"));
    assertThrows(() => checkFiniteStats(out, 2), /not finite/);
  }
  checkFiniteStats(new Float32Array([NaN, NaN, 0, 0]), 0); // rows beyond the count are not read
  const logits = new Float32Array([0.5, NaN, 1, Infinity, NaN]);
  assertThrows(() => checkFiniteLogits(logits, 5), /the logits hold 3 non-finite values \(NaN or Inf; the first at token 1\)/);
  checkFiniteLogits(logits, 1); // only the real vocabulary counts
});

Deno.test("engine errors about a batch name its dataset rows", () => {
  const batch = [{ row: 4342, ids: [1, 2, 3] }, { row: 7, ids: Array(2049).fill(1) }, { row: 12, ids: [5] }];
  const long = aboutRows(new InputError("a prompt of 2049 tokens is too long for attention mode on this adapter (largest binding 134217728 bytes)"), batch, "01_construct, attention mode");
  assert(long instanceof UserError);
  assertEquals(
    (long as Error).message,
    "01_construct, attention mode, dataset row 7: a prompt of 2049 tokens is too long for attention mode on this adapter (largest binding 134217728 bytes); leave it out with --rows, or run it on an adapter with larger buffers",
  );
  const indexed = aboutRows(new InputError("prompt 2: token id 99999 is out of range (ids are integers in 0..50276)"), batch, "01_construct, scan mode");
  assert((indexed as Error).message.startsWith("01_construct, scan mode, dataset row 12: prompt 2: token id 99999"), String(indexed));
  const nan = aboutRows(new NumericError("the model's logits are not finite (max logit NaN, logsumexp NaN): …"), batch, "03_info_flow");
  assert((nan as Error).message.startsWith("03_info_flow, dataset rows 7, 12, 4342: the model's logits are not finite"), String(nan));
  const other = new TypeError("boom");
  assertEquals(aboutRows(other, batch, "x"), other, "other errors pass through");
});

Deno.test("run folder names: readable and shell-safe, distinct selections never share one", () => {
  const safe = /^[A-Za-z0-9._+-]+$/;
  assertEquals(runName("state-spaces/mamba2-1.3b", [0, 1, 2], 3), "mamba2-1.3b");
  assertEquals(runName("/x/tests/fixtures/mamba2-tiny/", [0, 1, 2, 7], 100), "mamba2-tiny_rows-0-2+7");
  assertEquals(runName("m", [...Array.from({ length: 100 }, (_, i) => i), 4342], 21919), "m_rows-0-99+4342");
  const sparse = Array.from({ length: 50 }, (_, i) => 3 * i);
  const name = runName("m", sparse, 1000);
  assert(/^m_rows-0-147_50-rows_[0-9a-f]{6}$/.test(name), name);
  for (const n of [name, runName("a b/c,d", [1, 2, 5], 10)]) assert(safe.test(n), `${n} is not shell-safe`);
  const twin1 = [0, 2, ...Array.from({ length: 30 }, (_, i) => 10 + 2 * i), 147];
  const twin2 = [0, 4, ...Array.from({ length: 30 }, (_, i) => 10 + 2 * i), 147];
  assert(runName("m", twin1, 1000) !== runName("m", twin2, 1000), "same first, last and count, other rows: other folders");
});

Deno.test("run folder: a model's folder or any other folder is refused before anything is written", async () => {
  const dir = await tmp();
  await checkRunFolder(join(dir, "new")); // does not exist yet: fine
  await Deno.mkdir(join(dir, "empty"));
  await checkRunFolder(join(dir, "empty"));
  const run = join(dir, "run");
  await Deno.mkdir(join(run, "01_construct"), { recursive: true });
  await Deno.writeTextFile(join(run, RUN_CONFIG), "{}");
  await checkRunFolder(run); // an earlier run's folder
  // one of the runs before run.config.json: its config.json is the effective configuration, not a model's
  await Deno.writeTextFile(join(run, "config.json"), JSON.stringify({ $comment: "effective configuration of the last pipeline run in this folder (each stage's manifest.json has its own)", stages: {} }));
  await checkRunFolder(run);
  const model = join(dir, "model");
  await Deno.mkdir(model);
  await Deno.copyFile(FIXTURE_DIR + "config.json", join(model, "config.json"));
  await Deno.writeTextFile(join(model, "model.safetensors"), "x");
  let e = await assertRejects(() => checkRunFolder(model), /run folder .*model holds a model \(config\.json, model\.safetensors\); a run would write among its files/);
  assert(e instanceof UsageError);
  const docs = join(dir, "docs");
  await Deno.mkdir(docs);
  await Deno.writeTextFile(join(docs, "thesis.tex"), "x");
  e = await assertRejects(() => checkRunFolder(docs), /run folder .*docs is not a run folder \(it holds thesis\.tex\)/);
  assert(e instanceof UsageError);
  await assertRejects(() => checkRunFolder(join(docs, "thesis.tex")), /is a file, not a folder/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("lock: created atomically with its process id; one holder among racing runs; stale locks taken over", async () => {
  const dir = await tmp();
  const lock = join(dir, ".lock");
  // a lock without a process id yet (an older writer between create and write) is not stale at once
  await Deno.writeTextFile(lock, "");
  await assertRejects(() => lockRunDir(dir), /another pipeline run \(a process whose lock holds no process id yet\) is writing to/);
  // ... but one left like that long ago is
  const old = new Date(Date.now() - 60_000);
  await Deno.utime(lock, old, old);
  let unlock = await lockRunDir(dir);
  assertEquals((await Deno.readTextFile(lock)).trim(), `${Deno.pid} ${Deno.hostname()}`);
  unlock();
  assert(!(await Deno.stat(lock).then(() => true, () => false)), "released");
  // a dead process's lock is taken over; no temporary file is left behind
  await Deno.writeTextFile(lock, "2147483646\n");
  unlock = await lockRunDir(dir);
  unlock();
  assertEquals((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name), []);

  // six processes race for one folder: exactly one holds it
  const url = new URL("../workflows/lib/lock.ts", import.meta.url).href;
  const code = `import { lockRunDir } from ${JSON.stringify(url)};
    try { const u = await lockRunDir(${JSON.stringify(dir)}); console.log("held"); await new Promise((r) => setTimeout(r, 3000)); u(); }
    catch (e) { console.log("refused: " + e.message); }`;
  const runs = Array.from({ length: 6 }, () =>
    new Deno.Command(Deno.execPath(), { args: ["eval", code], env: childEnv(), stdout: "piped", stderr: "piped" }).output()
  );
  const outs = (await Promise.all(runs)).map((o) => new TextDecoder().decode(o.stdout).trim());
  assertEquals(outs.filter((o) => o === "held").length, 1, outs.join("\n"));
  assert(outs.every((o) => o === "held" || /^refused: another pipeline run/.test(o)), outs.join("\n"));
  assertEquals((await Array.fromAsync(Deno.readDir(dir))).map((e) => e.name), []);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("dataset: two columns of one name are refused, naming it", async () => {
  const dir = await tmp();
  const p = join(dir, "dup.parquet");
  await writeParquet(p, [
    { name: "prompt", type: "STRING", data: ["a", "b"] },
    { name: "target_true", type: "STRING", data: [" x", " y"] },
    { name: "prompt", type: "STRING", data: ["c", "d"] },
  ]);
  const e = await assertRejects(() => readParquet(p), /dup\.parquet has two columns named "prompt"/);
  assert(e instanceof UserError && !e.message.includes("\n"));
  await Deno.remove(dir, { recursive: true });
});

Deno.test("saved work of an interrupted run is recognised by its key", async () => {
  const dir = await tmp();
  const work = join(dir, ".work");
  assertEquals(await hasSavedWork(work, "k1"), false);
  const log = await RowLog.open<{ row: number }>(join(work, "scan.jsonl"), "k1");
  assertEquals(await hasSavedWork(work, "k1"), false, "a header alone is no work");
  await log.append([{ row: 3 }]);
  log.close();
  assertEquals(await hasSavedWork(work, "k1"), true);
  assertEquals(await hasSavedWork(work, "k2"), false, "work for other parameters is not this work");
  await Deno.remove(dir, { recursive: true });
});

Deno.test("cache key: throughput-only parameters are out of it, everything that changes outputs is in", async () => {
  const stages = await loadStages();
  const cfg = await loadConfig(stages, undefined, {});
  const throughput: Record<string, string[]> = {};
  for (const s of stages) {
    const { params, throughputParams } = splitParams(s, cfg.stages[s.name]);
    throughput[s.name] = Object.keys(throughputParams);
    assertEquals(Object.keys(params).length + Object.keys(throughputParams).length, Object.keys(s.params).length);
  }
  // batch sizes and prompts per call only; bootstrap and x_axis change outputs (intervals, figures)
  assertEquals(throughput["01_construct"], ["batchSize"]);
  assertEquals(throughput["03_info_flow"], ["group_prompts"]);
  assertEquals(throughput["04_heatmap"], ["group_prompts"]);
  assertEquals(throughput["02_compare"], []);
});
