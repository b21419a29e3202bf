// Every shared kernel (kernels/*.wgsl, engine/ops.ts) against the float64 CPU reference in
// tests/reference/shared.ts, over several shapes with seeded random inputs. The Mamba-2 kernels are
// tests/mamba2_kernels_test.ts; the matmul kernels' plans and dtypes tests/matmul_test.ts.
//
// Tolerances are on max |gpu - ref| / max |ref| over the compared elements (ref computed in
// float64 from the same f32 inputs). f32 has a unit roundoff of 6e-8; the kernels' sums run
// over at most a few hundred terms and exp/log on the GPU are a few ulp, so a correct kernel
// lands around 1e-7..1e-6. 1e-5 (TOL_F32) leaves a 10x margin and still catches any indexing,
// masking or formula slip, which shows up as an O(1) relative error. Copies are checked exactly.
// Outputs are pre-filled with NaN (or random values where the kernel accumulates) so that an
// element the kernel forgets to write fails the comparison.

import { uploadWeight, destroyWeight } from "../engine/matmul.ts";
import * as ref from "./reference/shared.ts";
import { maxAbsDiff } from "./helpers.ts";
import { assert, assertClose, Bufs, desc, getOps, read, Rng, rowsScenario, run, TOL_F32 } from "./kernel_helpers.ts";

Deno.test("embed: rows of the (chunked) table", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(1);
  // rowsPerChunk forces the table across several bindings (null: one binding)
  for (const c of [
    { n: 1, dModel: 64, vocab: 10, rowsPerChunk: null },
    { n: 37, dModel: 33, vocab: 200, rowsPerChunk: 37 },
    { n: 130, dModel: 5, vocab: 1000, rowsPerChunk: 64 },
    { n: 70, dModel: 70, vocab: 50, rowsPerChunk: 1 },
  ]) {
    const bufs = new Bufs(gpu);
    const table = rng.f32(c.vocab * c.dModel);
    const ids = Array.from({ length: c.n }, () => rng.int(0, c.vocab));
    ids[0] = c.vocab - 1; // the last row, in the last chunk
    const g = c.rowsPerChunk ? { ...gpu, maxBinding: c.rowsPerChunk * c.dModel * 4 } : gpu;
    const w = uploadWeight(g, table, c.vocab, c.dModel, "table");
    if (c.rowsPerChunk) assert(w.chunks.length === Math.ceil(c.vocab / c.rowsPerChunk), "table not chunked as intended");
    const out = bufs.out(c.n * c.dModel);
    await run(ops, (rec) => ops.embed(rec, bufs.u32(ids), c.n, w, out));
    assertClose(await read(gpu, out, c.n * c.dModel), ref.embedding(table, c.dModel, ids), 0, `embed ${desc(c)}`);
    destroyWeight(w);
    bufs.destroy();
  }
});

Deno.test("rmsnorm", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(2);
  // dims around the 64-wide workgroup; 70000 rows spill the dispatch into y (65535 per dimension)
  for (const c of [
    { rows: 1, dim: 1 },
    { rows: 1, dim: 64 },
    { rows: 3, dim: 63 },
    { rows: 7, dim: 65 },
    { rows: 5, dim: 200 },
    { rows: 2, dim: 1000 },
    { rows: 70000, dim: 3 },
  ]) {
    const bufs = new Bufs(gpu);
    const x = rng.f32(c.rows * c.dim, -3, 3), weight = rng.f32(c.dim, 0.5, 1.5);
    const out = bufs.out(c.rows * c.dim);
    await run(ops, (rec) => ops.rmsnorm(rec, bufs.f32(x), bufs.f32(weight), out, c.rows, c.dim, ref.NORM_EPS));
    assertClose(await read(gpu, out, c.rows * c.dim), ref.rmsnorm(x, weight, c.rows, c.dim, ref.NORM_EPS), TOL_F32, `rmsnorm ${desc(c)}`);
    bufs.destroy();
  }
});

Deno.test("matmul: tiles, edges, chunked weights, y columns and accumulate", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(3);
  // m, n not multiples of the 64x64 tile, k not a multiple of the 16-deep k step; m = 1 rows;
  // y wider than n (yStride, yCol) with accumulate; weights split across 2..5 bindings whose
  // row counts are not multiples of 64
  for (const c of [
    { m: 1, n: 1, k: 1 },
    { m: 1, n: 100, k: 64 },
    { m: 5, n: 7, k: 3 },
    { m: 63, n: 65, k: 17 },
    { m: 65, n: 130, k: 16 },
    { m: 130, n: 64, k: 100 },
    { m: 3, n: 20, k: 33, yStride: 50, yCol: 17, accumulate: true },
    { m: 70, n: 300, k: 40, rowsPerChunk: 70 },
    { m: 1, n: 200, k: 24, rowsPerChunk: 100 },
    { m: 9, n: 150, k: 31, rowsPerChunk: 37, yStride: 160, yCol: 5, accumulate: true },
  ] as { m: number; n: number; k: number; rowsPerChunk?: number; yStride?: number; yCol?: number; accumulate?: boolean }[]) {
    const bufs = new Bufs(gpu);
    const x = rng.f32(c.m * c.k), wData = rng.f32(c.n * c.k);
    const yStride = c.yStride ?? c.n;
    const y0 = rng.f32(c.m * yStride); // the columns outside [yCol, yCol + n) must keep these
    const g = c.rowsPerChunk ? { ...gpu, maxBinding: c.rowsPerChunk * c.k * 4 } : gpu;
    const w = uploadWeight(g, wData, c.n, c.k, "w");
    if (c.rowsPerChunk) assert(w.chunks.length > 1, "weight not chunked as intended");
    const y = bufs.f32(y0);
    await run(ops, (rec) => ops.matmul(rec, bufs.f32(x), w, y, c.m, { accumulate: c.accumulate, yStride: c.yStride, yCol: c.yCol }));
    const want = ref.matmul(x, wData, c.m, c.n, c.k, { y: Float64Array.from(y0), yStride, yCol: c.yCol, accumulate: c.accumulate });
    const got = await read(gpu, y, c.m * yStride);
    const yCol = c.yCol ?? 0;
    const inside = (i: number) => i % yStride >= yCol && i % yStride < yCol + c.n;
    assertClose(got, want, TOL_F32, `matmul ${desc(c)}`, inside);
    if (yStride > c.n) assertClose(got, want, 0, `matmul ${desc(c)} columns outside the output`, (i) => !inside(i));
    destroyWeight(w);
    bufs.destroy();
  }
});

Deno.test("conv1dSilu: causal per prompt, on the xBC slice", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(4);
  // several prompts (rows = batch * seq: the conv must restart at each prompt), d_conv 4 and
  // others, seq shorter than d_conv, a slice in the middle of a wider row
  for (const c of [
    { batch: 1, seq: 1, convDim: 1, dConv: 4, inStride: 1, inOffset: 0 },
    { batch: 3, seq: 5, convDim: 70, dConv: 4, inStride: 100, inOffset: 13 },
    { batch: 2, seq: 2, convDim: 33, dConv: 4, inStride: 40, inOffset: 7 },
    { batch: 2, seq: 9, convDim: 160, dConv: 2, inStride: 296, inOffset: 128 },
    { batch: 4, seq: 6, convDim: 17, dConv: 3, inStride: 17, inOffset: 0 },
  ]) {
    const bufs = new Bufs(gpu);
    const rows = c.batch * c.seq;
    const s = { rows, seq: c.seq, convDim: c.convDim, dConv: c.dConv, inStride: c.inStride, inOffset: c.inOffset };
    const zxbcdt = rng.f32(rows * c.inStride, -2, 2), weight = rng.f32(c.convDim * c.dConv), bias = rng.f32(c.convDim, -0.5, 0.5);
    for (const masked of [false, true]) {
      // conv knockouts: random taps removed per row (any of its d_conv taps, the row's own included)
      const taps = masked ? Array.from({ length: rows }, () => rng.int(0, 2 ** c.dConv)) : null;
      const out = bufs.out(rows * c.convDim);
      const at = { stride: c.inStride, offset: c.inOffset };
      await run(ops, (rec) => ops.conv1dSilu(rec, bufs.f32(zxbcdt), bufs.f32(weight), bufs.f32(bias), out, { ...s, at }, taps ? bufs.u32(taps) : null));
      const want = ref.conv1dSilu(zxbcdt, weight, bias, s, taps);
      assertClose(await read(gpu, out, rows * c.convDim), want, TOL_F32, `conv1dSilu ${desc(c)} tap mask ${masked}`);
      if (taps) assert(maxAbsDiff(want, ref.conv1dSilu(zxbcdt, weight, bias, s)) > 1e-3, "the tap mask changes the output");
    }
    bufs.destroy();
  }
});

Deno.test("dtSoftplus: moderate values, tiny results, the threshold at 20, the dt_limit clamp", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(5);
  for (const c of [
    { rows: 1, nheads: 1, lo: -5, hi: 5, inStride: 1, inOffset: 0 },
    { rows: 77, nheads: 3, lo: -8, hi: 4, inStride: 10, inOffset: 6 },
    { rows: 13, nheads: 24, lo: -30, hi: 30, inStride: 300, inOffset: 276 },
    { rows: 40, nheads: 5, lo: -8, hi: 4, inStride: 5, inOffset: 0, limit: [0.01, 0.5] as [number, number] },
  ]) {
    const bufs = new Bufs(gpu);
    const s = { rows: c.rows, width: c.nheads, inStride: c.inStride, inOffset: c.inOffset, limit: c.limit };
    const zxbcdt = rng.f32(c.rows * c.inStride, c.lo, c.hi), dtBias = rng.f32(c.nheads, -1, 1);
    if (c.hi > 20) { // straddle the threshold exactly: just below, at, and just above 20
      [19.999, 20, 20.001, -20, 0].forEach((v, k) => zxbcdt[k * c.inStride + c.inOffset] = v - dtBias[0]);
    }
    const dt = bufs.out(c.rows * c.nheads);
    await run(ops, (rec) => ops.dtSoftplus(rec, bufs.f32(zxbcdt), bufs.f32(dtBias), dt, { rows: c.rows, width: c.nheads, at: { stride: c.inStride, offset: c.inOffset }, limit: c.limit }));
    const got = await read(gpu, dt, c.rows * c.nheads);
    const want = ref.dtSoftplus(zxbcdt, dtBias, s);
    if (c.limit) { // both ends of the clamp are reached
      assert(want.some((v) => v === c.limit[0]) && want.some((v) => v === c.limit[1]), "the clamp acts at both ends");
      assert(maxAbsDiff(want, ref.dtSoftplus(zxbcdt, dtBias, { ...s, limit: undefined })) > 0.1, "the clamp changes dt");
    }
    assertClose(got, want, TOL_F32, `dtSoftplus ${desc(c)}`);
    // Per element too, so the small dt (which set the decay exp(dt A)) are not hidden by the max:
    // |err| <= 1e-5 |ref| + 2^-21 (WGSL's log is only absolutely accurate, to 2^-21, near 1).
    for (let i = 0; i < want.length; i++) {
      assert(Math.abs(got[i] - want[i]) <= 1e-5 * Math.abs(want[i]) + 2 ** -21, `dtSoftplus ${desc(c)} [${i}]: gpu ${got[i]}, ref ${want[i]}`);
    }
    bufs.destroy();
  }
});

Deno.test("gatherRows", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(12);
  // repeated and out-of-order rows; 1100 x 4000 > 65535 * 64 elements spills the dispatch into y
  for (const c of [
    { xRows: 1, nOut: 1, dim: 1 },
    { xRows: 10, nOut: 3, dim: 64 },
    { xRows: 40, nOut: 70, dim: 130 },
    { xRows: 1100, nOut: 1100, dim: 4000 },
  ]) {
    const bufs = new Bufs(gpu);
    const x = rng.f32(c.xRows * c.dim);
    const rows = Array.from({ length: c.nOut }, () => rng.int(0, c.xRows));
    rows[0] = c.xRows - 1;
    const out = bufs.out(c.nOut * c.dim);
    await run(ops, (rec) => ops.gatherRows(rec, bufs.u32(rows), bufs.f32(x), out, c.nOut, c.dim, c.xRows));
    assertClose(await read(gpu, out, c.nOut * c.dim), ref.gatherRows(rows, x, c.dim), 0, `gatherRows ${desc(c)}`);
    bufs.destroy();
  }
});

Deno.test("rowsConv1dSilu: recomputed rows read earlier recomputed rows or the base run; tap knockouts in the window", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(14);
  for (const c of [
    { lengths: [1], configs: 1, convDim: 3, dConv: 4, inStride: 5, inOffset: 1 },
    { lengths: [7, 3, 5], configs: 6, convDim: 70, dConv: 4, inStride: 100, inOffset: 13 },
    { lengths: [9, 9], configs: 4, convDim: 33, dConv: 2, inStride: 40, inOffset: 0 },
  ]) {
    const sc = rowsScenario(rng, c.lengths, c.configs, 3, 1, c.dConv);
    const zx = rng.f32(sc.n * c.inStride, -2, 2), baseZx = rng.f32(c.lengths.length * sc.T * c.inStride, -2, 2);
    const weight = rng.f32(c.convDim * c.dConv), bias = rng.f32(c.convDim, -0.5, 0.5);
    for (const layer of [0, 1, 2]) {
      const bufs = new Bufs(gpu);
      const s = { n: sc.n, convDim: c.convDim, dConv: c.dConv, inStride: c.inStride, inOffset: c.inOffset, layer };
      const out = bufs.out(sc.n * c.convDim);
      const at = { stride: c.inStride, offset: c.inOffset }, baseRows = c.lengths.length * sc.T;
      await run(ops, (rec) =>
        ops.rowsConv1dSilu(rec, {
          rowsMeta: bufs.u32(sc.rowsMeta),
          src: bufs.f32(zx),
          baseSrc: bufs.f32(baseZx),
          weight: bufs.f32(weight),
          bias: bufs.f32(bias),
          out,
        }, { n: sc.n, baseRows, convDim: c.convDim, dConv: c.dConv, at, layer }));
      const want = ref.rowsConv1dSilu(sc.rowsMeta, zx, baseZx, weight, bias, s);
      assertClose(await read(gpu, out, sc.n * c.convDim), want, TOL_F32, `rowsConv1dSilu ${desc(c)} layer ${layer}`);
      bufs.destroy();
    }
  }
});

Deno.test("rowStats: max, logsumexp, argmax (lowest id of ties) and the target's logit over the real vocabulary", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(17);
  for (const c of [
    { rows: 1, vocab: 1, stride: 1 },
    { rows: 3, vocab: 300, stride: 304 },
    { rows: 5, vocab: 50277, stride: 50288 },
    { rows: 70000, vocab: 3, stride: 4 }, // rows spill the dispatch into y
  ]) {
    const bufs = new Bufs(gpu);
    const logits = rng.f32(c.rows * c.stride, -20, 20);
    for (let r = 0; r < Math.min(c.rows, 50); r++) {
      // padding columns hold the largest values (they must be ignored); some rows have tied maxima
      for (let v = c.vocab; v < c.stride; v++) logits[r * c.stride + v] = 100;
      if (r % 2 === 1 && c.vocab > 2) logits[r * c.stride + c.vocab - 1] = logits[r * c.stride + 1] = 50;
    }
    const targets = Array.from({ length: c.rows }, () => rng.int(0, c.vocab));
    const out = bufs.out(c.rows * 4);
    await run(ops, (rec) => ops.rowStats(rec, bufs.f32(logits), bufs.u32(targets), out, c));
    const got = await read(gpu, out, c.rows * 4), want = ref.rowStats(logits, targets, c);
    for (const [k, what] of [[0, "max"], [2, "argmax"], [3, "target logit"]] as const) {
      assertClose(got.filter((_, i) => i % 4 === k), want.filter((_, i) => i % 4 === k), 0, `rowStats ${desc(c)} ${what}`);
    }
    // logsumexp: exp and the sum in f32 over up to 50277 terms, absolute error on an O(10..100) value
    assertClose(got.filter((_, i) => i % 4 === 1), want.filter((_, i) => i % 4 === 1), TOL_F32, `rowStats ${desc(c)} logsumexp`);
    bufs.destroy();
  }
});
