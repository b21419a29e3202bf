// The matmul kernels (engine/matmul.ts: matmul_tiled.wgsl for k a multiple of 8, the generic
// matmul.wgsl otherwise) with every weight storage (f32, f16 read packed, f16 read as shader-f16
// values where the adapter has it) and every register block the planner may pick, against the
// float64 CPU reference on the same (f16-rounded) weights. Edges: m not a multiple of the block's
// rows, n not a multiple of a workgroup's columns, weights split across bindings, y wider than
// the output (yStride, yCol) with accumulate. Outputs start as NaN (or random where accumulated),
// so an output left unwritten fails.
import { createGpu, type Gpu, readBuffer, Recorder, uploadBuffer } from "../engine/gpu.ts";
import { destroyWeight, type F16Kernel, matmulPlan, type MatmulPlan, uploadWeight, type WeightDtype } from "../engine/matmul.ts";
import { Ops } from "../engine/ops.ts";
import { float32ToHalf, halfToFloat32 } from "../engine/checkpoint/dtype.ts";
import * as ref from "./reference/shared.ts";
import { assert, assertEquals } from "./assert.ts";
import { seeded } from "./helpers.ts";

// f32 accumulation over at most a few hundred products, compared with float64: ~1e-6 relative.
const TOL = 1e-5;

let gpuP: Promise<Gpu> | undefined;
const getGpu = () => gpuP ??= createGpu();
const opsCache = new Map<string, Promise<Ops>>();
function getOps(gpu: Gpu, f16Kernel: F16Kernel): Promise<Ops> {
  let o = opsCache.get(f16Kernel);
  if (!o) opsCache.set(f16Kernel, o = Ops.create(gpu, { f16Kernel }));
  return o;
}

function rand(r: () => number, n: number): Float32Array {
  return Float32Array.from({ length: n }, () => 2 * r() - 1);
}

interface Case {
  m: number;
  n: number;
  k: number;
  rowsPerChunk?: number;
  yStride?: number;
  yCol?: number;
  accumulate?: boolean;
  plan?: MatmulPlan;
}

async function check(gpu: Gpu, ops: Ops, dtype: WeightDtype, c: Case, seed: number) {
  const r = seeded(seed);
  const x = rand(r, c.m * c.k);
  let wData = rand(r, c.n * c.k);
  // the reference sees the weights as stored
  const wRef = dtype === "f16" ? halfToFloat32(float32ToHalf(wData)) : wData;
  if (dtype === "f16" && r() < 0.5) wData = wRef; // sometimes hand over halves already rounded
  const yStride = c.yStride ?? c.n;
  const y0 = c.accumulate ? rand(r, c.m * yStride) : new Float32Array(c.m * yStride).fill(NaN);
  const bytesPerRow = dtype === "f16" ? Math.ceil(c.k / 8) * 16 : c.k * 4;
  const g = c.rowsPerChunk ? { ...gpu, maxBinding: c.rowsPerChunk * bytesPerRow } : gpu;
  const w = uploadWeight(g, dtype === "f16" && r() < 0.5 ? float32ToHalf(wData) : wData, c.n, c.k, "w", dtype);
  assertEquals(w.dtype, dtype);
  if (c.rowsPerChunk) assertEquals(w.chunks.length, Math.ceil(c.n / c.rowsPerChunk), "chunks");
  const xb = uploadBuffer(gpu, x, "x"), yb = uploadBuffer(gpu, y0, "y");
  const rec = new Recorder(gpu);
  ops.matmul(rec, xb, w, yb, c.m, { accumulate: c.accumulate, yStride: c.yStride, yCol: c.yCol, plan: c.plan });
  rec.submit();
  const got = new Float32Array(await readBuffer(gpu, yb, c.m * yStride * 4));
  const want = ref.matmul(x, wRef, c.m, c.n, c.k, { y: Float64Array.from(y0), yStride, yCol: c.yCol, accumulate: c.accumulate });
  const yCol = c.yCol ?? 0;
  let scale = 0, err = 0, at = -1;
  for (let i = 0; i < got.length; i++) {
    const col = i % yStride;
    if (col < yCol || col >= yCol + c.n) {
      // outside this matmul's columns: untouched, bit for bit (NaN stays NaN)
      assert(Object.is(got[i], y0[i]), `${JSON.stringify(c)} ${dtype}: y[${i}] outside the output changed`);
      continue;
    }
    scale = Math.max(scale, Math.abs(want[i]));
    const e = Math.abs(got[i] - want[i]);
    if (!(e <= err)) [err, at] = [Number.isNaN(e) ? Infinity : e, i];
  }
  assert(err <= TOL * scale, `${JSON.stringify(c)} ${dtype} (${ops.f16Kernel}): max error ${err} at ${at} (gpu ${got[at]}, ref ${want[at]}), scale ${scale}`);
  destroyWeight(w);
  xb.destroy();
  yb.destroy();
}

const TILED_CASES: Case[] = [
  { m: 1, n: 1, k: 8 },
  { m: 1, n: 300, k: 64 },
  { m: 2, n: 37, k: 16 },
  { m: 3, n: 129, k: 24 },
  { m: 5, n: 70, k: 40 },
  { m: 9, n: 33, k: 8 },
  { m: 17, n: 130, k: 32 },
  { m: 40, n: 65, k: 56 },
  { m: 130, n: 100, k: 72 },
  { m: 3, n: 20, k: 32, yStride: 50, yCol: 17, accumulate: true },
  { m: 70, n: 300, k: 40, rowsPerChunk: 70 },
  { m: 1, n: 200, k: 24, rowsPerChunk: 100 },
  { m: 19, n: 150, k: 16, rowsPerChunk: 37, yStride: 160, yCol: 5, accumulate: true },
];

// every register block the planner can pick, forced, on shapes with ragged edges
const FORCED: MatmulPlan[] = [
  ...[1, 2, 4, 8, 16].flatMap((R) => [1, 2, 4].map((NC) => ({ kind: "tiled" as const, R, NC, WG: R === 16 ? 64 : 16 }))),
  // the split-k kernel of GPUs (engine/matmul_tune.ts's candidates): k shared by the lanes of a workgroup
  { kind: "splitk", R: 1, NC: 1, WG: 64 },
  { kind: "splitk", R: 4, NC: 1, WG: 256 },
  { kind: "splitk", R: 3, NC: 2, WG: 4 },
];

for (const dtype of ["f32", "f16"] as const) {
  for (const f16Kernel of (dtype === "f32" ? ["packed"] : ["packed", "native"]) as F16Kernel[]) {
    const label = dtype === "f32" ? "f32" : `f16 ${f16Kernel}`;
    Deno.test(`matmul ${label}: planned kernels on ragged shapes, chunks, yCol and accumulate`, async (t) => {
      const gpu = await getGpu();
      if (f16Kernel === "native" && !gpu.hasF16) {
        await t.step({ name: "adapter lacks shader-f16", ignore: true, fn: () => {} });
        return;
      }
      const ops = await getOps(gpu, f16Kernel);
      let seed = 100;
      for (const c of TILED_CASES) {
        assertEquals(matmulPlan(c.m, c.n, c.k).kind, "tiled");
        await check(gpu, ops, dtype, c, seed++);
      }
    });

    Deno.test(`matmul ${label}: every register block, forced`, async (t) => {
      const gpu = await getGpu();
      if (f16Kernel === "native" && !gpu.hasF16) {
        await t.step({ name: "adapter lacks shader-f16", ignore: true, fn: () => {} });
        return;
      }
      const ops = await getOps(gpu, f16Kernel);
      let seed = 200;
      for (const plan of FORCED) {
        // k up to 120: a split-k workgroup's lanes get several steps each, or none
        for (const [m, n, k] of [[1, 45, 16], [plan.kind === "generic" ? 5 : plan.R + 3, 77, 24], [33, 9, 8], [2, 13, 120]]) {
          await check(gpu, ops, dtype, { m, n, k, plan, accumulate: seed % 2 === 0, yStride: n + 3, yCol: 2 }, seed++);
        }
      }
    });

    Deno.test(`matmul ${label}: generic kernel for k not a multiple of 8`, async (t) => {
      const gpu = await getGpu();
      if (f16Kernel === "native" && !gpu.hasF16) {
        await t.step({ name: "adapter lacks shader-f16", ignore: true, fn: () => {} });
        return;
      }
      const ops = await getOps(gpu, f16Kernel);
      let seed = 300;
      for (const c of [{ m: 1, n: 1, k: 1 }, { m: 5, n: 7, k: 3 }, { m: 63, n: 65, k: 17 }, { m: 9, n: 150, k: 31, rowsPerChunk: 37, yStride: 160, yCol: 5, accumulate: true }]) {
        assertEquals(matmulPlan(c.m, c.n, c.k).kind, "generic");
        await check(gpu, ops, dtype, c, seed++);
      }
    });
  }
}

Deno.test("matmul with a row map: the listed rows of x and y only, the others untouched bit for bit", async () => {
  const gpu = await getGpu();
  const ops = await getOps(gpu, "packed");
  const r = seeded(400);
  // a padded batch: 4 prompts of lengths 5, 2, 7, 1 padded to 7 rows each
  const T = 7, lengths = [5, 2, 7, 1], of = T * lengths.length;
  const rows = lengths.flatMap((len, b) => Array.from({ length: len }, (_, t) => b * T + t));
  const map = uploadBuffer(gpu, Uint32Array.from(rows), "rows");
  const plans: (MatmulPlan | undefined)[] = [undefined, { kind: "tiled", R: 16, NC: 4, WG: 64 }, { kind: "tiled", R: 4, NC: 2, WG: 16 }, { kind: "tiled", R: 1, NC: 2, WG: 16 }];
  for (const dtype of ["f32", "f16"] as const) {
    for (const [n, k, plan] of [...plans.map((p) => [37, 24, p] as const), [29, 13, undefined] as const]) {
      const x = rand(r, of * k), wData = rand(r, n * k);
      const wRef = dtype === "f16" ? halfToFloat32(float32ToHalf(wData)) : wData;
      const y0 = rand(r, of * n);
      const w = uploadWeight(gpu, wData, n, k, "w", dtype);
      const xb = uploadBuffer(gpu, x, "x"), yb = uploadBuffer(gpu, y0, "y");
      const rec = new Recorder(gpu);
      ops.matmul(rec, xb, w, yb, rows.length, { accumulate: true, plan, rows: { buffer: map, count: rows.length, of } });
      rec.submit();
      const got = new Float32Array(await readBuffer(gpu, yb, of * n * 4));
      const want = ref.matmul(x, wRef, of, n, k, { y: Float64Array.from(y0), accumulate: true });
      const what = `${dtype} n=${n} k=${k} ${JSON.stringify(plan ?? matmulPlan(rows.length, n, k))}`;
      for (let row = 0; row < of; row++) {
        for (let j = 0; j < n; j++) {
          const i = row * n + j;
          if (rows.includes(row)) assert(Math.abs(got[i] - want[i]) <= TOL * Math.max(1, Math.abs(want[i])), `${what}: y[${row}, ${j}] = ${got[i]}, want ${want[i]}`);
          else assert(Object.is(got[i], y0[i]), `${what}: padded row ${row} changed`);
        }
      }
      destroyWeight(w);
      xb.destroy();
      yb.destroy();
    }
  }
  map.destroy();
});

Deno.test("uploadWeight: f16 rows padded to 8 halves, f32 stored as given, conversions both ways", async () => {
  const gpu = await getGpu();
  const r = seeded(9);
  const data = rand(r, 5 * 13);
  const h = uploadWeight(gpu, data, 5, 13, "h", "f16");
  assertEquals([h.dtype, h.stride, h.chunks.length], ["f16", 16, 1]);
  const stored = new Uint16Array(await readBuffer(gpu, h.chunks[0].buffer, 5 * 16 * 2));
  const halves = float32ToHalf(data);
  for (let row = 0; row < 5; row++) {
    for (let col = 0; col < 16; col++) assertEquals(stored[row * 16 + col], col < 13 ? halves[row * 13 + col] : 0, `[${row}, ${col}]`);
  }
  const f = uploadWeight(gpu, halves, 5, 13, "f", "f32"); // halves given, f32 asked: widened exactly
  assertEquals([f.dtype, f.stride], ["f32", 13]);
  const widened = new Float32Array(await readBuffer(gpu, f.chunks[0].buffer, 5 * 13 * 4));
  assertEquals(Array.from(widened), Array.from(halfToFloat32(halves)));
  assertEquals(uploadWeight(gpu, halves, 5, 13, "d").dtype, "f16"); // dtype defaults to what is given
  destroyWeight(h);
  destroyWeight(f);
});

Deno.test("embed from an f16 table equals the table's halves, across chunks", async () => {
  const gpu = await getGpu();
  const ops = await getOps(gpu, "packed");
  const r = seeded(10);
  const vocab = 300, dModel = 20; // stride 24: padded rows
  const table = rand(r, vocab * dModel);
  const g = { ...gpu, maxBinding: 64 * 24 * 2 };
  const w = uploadWeight(g, table, vocab, dModel, "table", "f16");
  assertEquals(w.chunks.length, Math.ceil(vocab / 64));
  const ids = Array.from({ length: 50 }, () => Math.floor(r() * vocab));
  ids[0] = vocab - 1;
  const idsBuf = uploadBuffer(gpu, Uint32Array.from(ids), "ids");
  const out = uploadBuffer(gpu, new Float32Array(ids.length * dModel).fill(NaN), "out");
  const rec = new Recorder(gpu);
  ops.embed(rec, idsBuf, ids.length, w, out);
  rec.submit();
  const got = new Float32Array(await readBuffer(gpu, out, ids.length * dModel * 4));
  const want = ref.embedding(halfToFloat32(float32ToHalf(table)), dModel, ids);
  assertEquals(Array.from(got), Array.from(want));
  destroyWeight(w);
  idsBuf.destroy();
  out.destroy();
});

Deno.test("the native f16 reader is refused on an adapter without shader-f16", async () => {
  const gpu = await getGpu();
  let msg = "";
  try {
    await Ops.create({ ...gpu, hasF16: false }, { f16Kernel: "native" });
  } catch (e) {
    msg = (e as Error).message;
  }
  assert(/shader-f16/.test(msg), `got "${msg}"`);
});
