// The pipeline's library without a GPU: row selection, atomic writes, parquet round trips,
// resumable progress logs, configuration checks, the comparison statistics and the figures.
import { assert, assertEquals, assertRejects, assertThrows } from "./assert.ts";
import { join } from "node:path";
import { formatRows, parseRows, selectRows } from "../workflows/lib/rows.ts";
import { removeStaleTemps, writeFileAtomic } from "../workflows/lib/atomic.ts";
import { readParquet, writeParquet } from "../workflows/lib/parquet.ts";
import { RowLog } from "../workflows/lib/resume.ts";
import { loadConfig } from "../workflows/lib/config.ts";
import { hashValue, stableStringify } from "../workflows/lib/hash.ts";
import { errorLine, UserError } from "../workflows/lib/errors.ts";
import { checkStages, runName } from "../workflows/lib/plan.ts";
import { svgToPng, vegaLiteToSvg } from "../workflows/lib/plot.ts";
import { loadStages } from "../workflows/registry.ts";
import { compareModes, deltaFigure, type ModeRow } from "../workflows/02_compare.ts";
import { fixedGroups } from "../workflows/lib/groups.ts";

const tmp = () => Deno.makeTempDir({ prefix: "pipeline_lib_" });

Deno.test("rows: ranges, singles, order and duplicates", () => {
  assertEquals(parseRows("0-3,10,2"), [0, 1, 2, 3, 10]);
  assertEquals(parseRows(" 4342 "), [4342]);
  assertEquals(formatRows([0, 1, 2, 3, 10, 12, 13]), "0-3,10,12-13");
  assertEquals(formatRows(parseRows("0-99,4342")), "0-99,4342");
  for (const bad of ["", "a", "3-1", "1,,2", "-1", "1-2-3"]) {
    assert(assertThrows(() => parseRows(bad)) instanceof UserError, bad);
  }
  assertEquals(selectRows(10, {}), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assertEquals(selectRows(10, { limit: 3 }), [0, 1, 2]);
  assertEquals(selectRows(10, { rows: "5-9", limit: 2 }), [5, 6]);
  assert(assertThrows(() => selectRows(10, { rows: "8-12" }), /out of range/) instanceof UserError);
});

Deno.test("atomic write: replaces whole files and leaves no temporary file behind", async () => {
  const dir = await tmp();
  const p = join(dir, "a.json");
  await writeFileAtomic(p, "first");
  await writeFileAtomic(p, "second");
  assertEquals(await Deno.readTextFile(p), "second");
  // a temp file from a crashed writer is cleaned up, final names are left alone
  await Deno.writeTextFile(join(dir, ".a.json.tmp-123-4"), "partial");
  await removeStaleTemps(dir);
  const names = [];
  for await (const e of Deno.readDir(dir)) names.push(e.name);
  assertEquals(names, ["a.json"]);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("parquet: typed columns round-trip (list<int32>, int32, double, bool, string with nulls)", async () => {
  const dir = await tmp();
  const p = join(dir, "t.parquet");
  await writeParquet(p, [
    { name: "prompt", type: "STRING", data: ["a", null, "ünï"] },
    { name: "row", type: "INT32", data: Int32Array.from([0, 7, 4342]) },
    { name: "ids", type: "INT32_LIST", data: [[1, 2, 3], [50276], [0]] },
    { name: "p", type: "DOUBLE", data: Float64Array.from([0.5, 1e-300, 4.20445191587564e-7]) },
    { name: "big", type: "INT64", data: [1, 2, 2 ** 40] },
    { name: "hit", type: "BOOLEAN", data: [true, false, true] },
  ], { k: "v" });
  const t = await readParquet(p);
  assertEquals(t.numRows, 3);
  assertEquals(t.columns, ["prompt", "row", "ids", "p", "big", "hit"]);
  assertEquals(t.types, { prompt: "STRING", row: "INT32", ids: "INT32_LIST", p: "DOUBLE", big: "INT64", hit: "BOOLEAN" });
  assertEquals(t.rows[0], { prompt: "a", row: 0, ids: [1, 2, 3], p: 0.5, big: 1, hit: true });
  assertEquals(t.rows[1].prompt, null);
  assertEquals(t.rows[2].p, 4.20445191587564e-7);
  assertEquals(t.rows[2].big, 2 ** 40);
  const some = await readParquet(p, { columns: ["row", "hit"], rowStart: 1, rowEnd: 3 });
  assertEquals(some.rows, [{ row: 7, hit: false }, { row: 4342, hit: true }]);
  await assertRejects(() => readParquet(join(dir, "missing.parquet")), /does not exist/);
  await Deno.writeTextFile(join(dir, "bad.parquet"), "not parquet at all");
  await assertRejects(() => readParquet(join(dir, "bad.parquet")), /not a readable parquet/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("parquet: the dataset's columns and types are read", async () => {
  const t = await readParquet(new URL("../data/counterfact-tracing.parquet", import.meta.url).pathname, { rowEnd: 2 });
  assertEquals(t.numRows, 21919);
  for (const c of ["prompt", "subject", "target_true", "target_false", "relation_id"]) assertEquals(t.types[c], "STRING");
  assertEquals(t.rows[0].prompt, "The mother tongue of Danielle Darrieux is");
});

Deno.test("resume log: keeps saved records, cuts a torn last line, starts over for other work", async () => {
  const dir = await tmp();
  const p = join(dir, "scan.jsonl");
  type R = { row: number; v: number };
  let log = await RowLog.open<R>(p, "key1");
  assertEquals(log.done.size, 0);
  await log.append([{ row: 3, v: 0.25 }, { row: 1, v: 1e-9 }]);
  log.close();
  // a crash in the middle of the next write
  await Deno.writeTextFile(p, '{"row": 7, "v": 0.', { append: true });
  log = await RowLog.open<R>(p, "key1");
  assertEquals([...log.done.keys()].sort(), [1, 3]);
  assertEquals(log.resumed, 2);
  assertEquals(log.done.get(1)!.v, 1e-9);
  await log.append([{ row: 7, v: 0.5 }]);
  log.close();
  log = await RowLog.open<R>(p, "key1");
  assertEquals([...log.done.keys()].sort(), [1, 3, 7]);
  log.close();
  const lines = (await Deno.readTextFile(p)).trimEnd().split("\n");
  assertEquals(lines.length, 4); // header + 3 records, the torn line is gone
  // the same file for different work (another cache key) is not trusted
  log = await RowLog.open<R>(p, "key2");
  assertEquals(log.done.size, 0);
  log.close();
  await Deno.remove(dir, { recursive: true });
});

Deno.test("config: defaults, overrides, and one clear error for each mistake", async () => {
  const stages = await loadStages();
  checkStages(stages);
  assertEquals(stages.map((s) => s.name).slice(0, 2), ["01_construct", "02_compare"]);
  const cfg = await loadConfig(stages, undefined, {});
  assertEquals(cfg.model, "state-spaces/mamba2-1.3b");
  assert(cfg.dataset.endsWith("data/counterfact-tracing.parquet"));
  assertEquals(cfg.stages["02_compare"].threshold, 0.1);
  const over = await loadConfig(stages, undefined, { set: ["02_compare.threshold=0.25", "01_construct.batchSize=3"], limit: "5" });
  assertEquals(over.stages["02_compare"].threshold, 0.25);
  assertEquals(over.stages["01_construct"].batchSize, 3);
  assertEquals(over.limit, 5);

  const dir = await tmp();
  const write = async (obj: unknown) => {
    const p = join(dir, "c.json");
    await Deno.writeTextFile(p, typeof obj === "string" ? obj : JSON.stringify(obj));
    return p;
  };
  const cases: [unknown, string][] = [
    [{ model: "m", dataset: "d", modle: "x" }, 'unknown key "modle"'],
    [{ model: "m", dataset: "d", stages: { "07_nope": {} } }, 'unknown stage "07_nope"'],
    [{ model: "m", dataset: "d", stages: { "01_construct": { bs: 1 } } }, 'has no parameter "bs"'],
    [{ model: "m", dataset: "d", stages: { "01_construct": { batchSize: 0 } } }, "batchSize must be an integer"],
    [{ model: "m", dataset: "d", stages: { "02_compare": { threshold: "x" } } }, "threshold must be a number"],
    [{ dataset: "d" }, "no model"],
    ["{ not json", "not valid JSON"],
  ];
  for (const [obj, msg] of cases) {
    const path = await write(obj);
    const e = await assertRejects(() => loadConfig(stages, path, {}));
    assert(e instanceof UserError, String(e));
    assert(e.message.includes(msg), `${e.message} should mention ${msg}`);
    assert(!e.message.includes("\n"));
  }
  await assertRejects(() => loadConfig(stages, join(dir, "nope.json"), {}), /does not exist/);
  await assertRejects(() => loadConfig(stages, undefined, { set: ["02_compare.threshold"] }), /STAGE\.PARAM=VALUE/);
  await assertRejects(() => loadConfig(stages, undefined, { limit: "x" }), /--limit/);
  await Deno.remove(dir, { recursive: true });
});

Deno.test("cache keys and run names are stable", () => {
  assertEquals(stableStringify({ b: 1, a: { d: [1, { f: 2, e: 3 }], c: null } }), '{"a":{"c":null,"d":[1,{"e":3,"f":2}]},"b":1}');
  assertEquals(hashValue({ a: 1, b: 2 }), hashValue({ b: 2, a: 1 }));
  assertEquals(runName("state-spaces/mamba2-1.3b", [0, 1, 2], 3), "mamba2-1.3b");
  assertEquals(runName("/x/tests/fixtures/mamba2-tiny/", [0, 1, 2, 7], 100), "mamba2-tiny_rows-0-2+7");
  assert(runName("m", Array.from({ length: 50 }, (_, i) => 3 * i), 1000).length < 40);
});

Deno.test("errors: one line, no stack", () => {
  assertEquals(errorLine(new UserError("dataset x does not exist; pass --dataset\n  at foo")), "dataset x does not exist; pass --dataset");
  assertEquals(errorLine(new TypeError("boom")), "TypeError: boom");
});

Deno.test("batches depend only on the selection and the batch size", () => {
  const items = [5, 1, 3, 3, 2, 7].map((len, row) => ({ row, ids: Array(len).fill(1), trueId: 0 }));
  const b = fixedGroups(items, 4);
  assertEquals(b.map((x) => x.map((i) => i.row)), [[1, 4, 2, 3], [0, 5]]);
  assertEquals(fixedGroups([...items].reverse(), 4).map((x) => x.map((i) => i.row)), [[1, 4, 2, 3], [0, 5]]);
});

Deno.test("compare: accuracy, differing rows and the statistics of attention − scan", () => {
  const scan: ModeRow[] = [
    { row: 0, true_prob: 0.5, max_prob: 0.5, pred_id: 1, hit: true },
    { row: 1, true_prob: 0.1, max_prob: 0.6, pred_id: 2, hit: false },
    { row: 2, true_prob: 0.3, max_prob: 0.3, pred_id: 3, hit: true },
  ];
  const attention: ModeRow[] = [
    { row: 2, true_prob: 0.3, max_prob: 0.3, pred_id: 3, hit: true },
    { row: 0, true_prob: 0.3, max_prob: 0.45, pred_id: 4, hit: false },
    { row: 1, true_prob: 0.15, max_prob: 0.6, pred_id: 2, hit: false },
  ];
  const s = compareModes(scan, attention, 0.1);
  assertEquals(s.rows, 3);
  assertEquals(s.modes.scan, { hit_count: 2, accuracy: 2 / 3 });
  assertEquals(s.modes.attention, { hit_count: 1, accuracy: 1 / 3 });
  assertEquals(s.hit_differs, 1);
  assertEquals(s.pred_differs, 1);
  const d = s.delta.true_prob;
  assert(Math.abs(d.mean - (-0.2 + 0.05 + 0) / 3) < 1e-12);
  assert(Math.abs(d.min - -0.2) < 1e-12 && Math.abs(d.max - 0.05) < 1e-12);
  assertEquals(d.count_abs_gt_threshold, 1);
  assertEquals(s.delta.max_prob.count_abs_gt_threshold, 0);
});

Deno.test("figure: Vega-Lite renders to SVG with text and to a PNG", async () => {
  const scan: ModeRow[] = [], attention: ModeRow[] = [];
  for (let i = 0; i < 200; i++) {
    const p = (i % 17) / 20;
    scan.push({ row: i, true_prob: p, max_prob: 0.9, pred_id: 1, hit: i % 3 === 0 });
    attention.push({ row: i, true_prob: p + Math.sin(i) * 0.05, max_prob: 0.9 + Math.cos(i) * 0.01, pred_id: 1, hit: i % 5 === 0 });
  }
  const s = compareModes(scan, attention, 0.1);
  const svg = await vegaLiteToSvg(deltaFigure(scan, attention, s, "test-model"));
  assert(svg.startsWith("<svg"), svg.slice(0, 50));
  assert(svg.includes("true_prob: attention − scan"));
  assert(svg.includes("max_prob: attention − scan"));
  const png = await svgToPng(svg);
  assertEquals([...png.subarray(1, 4)].map((c) => String.fromCharCode(c)).join(""), "PNG");
  const view = new DataView(png.buffer, png.byteOffset);
  const width = view.getUint32(16), height = view.getUint32(20);
  assert(width > 800 && height > 600, `${width}x${height}`);
  assert(png.length > 20_000, `PNG of ${png.length} bytes is suspiciously small`);
});
