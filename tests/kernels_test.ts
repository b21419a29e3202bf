// Every Ops method (one WGSL kernel each) against the float64 CPU reference in tests/reference.ts,
// over several shapes with seeded random inputs; and the reference itself against the float64
// golden logits of the fixture model, so that it is known right before it judges the kernels.
//
// Tolerances are on max |gpu - ref| / max |ref| over the compared elements (ref computed in
// float64 from the same f32 inputs). f32 has a unit roundoff of 6e-8; the kernels' sums run
// over at most a few hundred terms and exp/log on the GPU are a few ulp, so a correct kernel
// lands around 1e-7..1e-6. 1e-5 (TOL_F32) leaves a 10x margin and still catches any indexing,
// masking or formula slip, which shows up as an O(1) relative error. Copies are checked exactly.
// Outputs are pre-filled with NaN (or random values where the kernel accumulates) so that an
// element the kernel forgets to write fails the comparison.
// KERNELS_TEST_VERBOSE=1 prints the measured error of every comparison.

import { createGpu, type Gpu, readBuffer, Recorder, storageBuffer, uploadBuffer, writeBuffer } from "../engine/gpu.ts";
import { destroyWeight, Ops, type SsdShape, uploadWeight } from "../engine/ops.ts";
import { parseConfig } from "../engine/config.ts";
import { maxAbsDiff } from "./helpers.ts";
import { parseUnitSelector } from "../engine/arch.ts";
import { flowEdges } from "../engine/flows.ts";
import * as ref from "./reference.ts";

const TOL_F32 = 1e-5;

// ---------- helpers ----------

/** mulberry32: a small seeded PRNG, so that every run sees the same inputs. */
class Rng {
  constructor(private s: number) {}
  next(): number {
    let t = (this.s = (this.s + 0x6d2b79f5) | 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.next();
  }
  int(lo: number, hiExcl: number): number {
    return lo + Math.floor(this.next() * (hiExcl - lo));
  }
  f32(n: number, lo = -1, hi = 1): Float32Array {
    return Float32Array.from({ length: n }, () => this.uniform(lo, hi));
  }
}

let opsPromise: Promise<Ops> | undefined;
/** One device and compiled kernels for the whole file, made on first use. */
function getOps(): Promise<Ops> {
  return opsPromise ??= createGpu().then((gpu) => Ops.create(gpu));
}

/** Buffers of one test, destroyed together. */
class Bufs {
  private list: GPUBuffer[] = [];
  constructor(readonly gpu: Gpu) {}
  f32(data: Float32Array, label = "f32"): GPUBuffer {
    return this.keep(uploadBuffer(this.gpu, data, label));
  }
  u32(data: ArrayLike<number>, label = "u32"): GPUBuffer {
    return this.keep(uploadBuffer(this.gpu, Uint32Array.from(data), label));
  }
  /** An output of n f32, pre-filled with `fill` (NaN: any element left unwritten fails). */
  out(n: number, fill = NaN, label = "out"): GPUBuffer {
    const b = this.keep(storageBuffer(this.gpu, n * 4, label));
    writeBuffer(this.gpu, b, new Float32Array(n).fill(fill));
    return b;
  }
  keep(b: GPUBuffer): GPUBuffer {
    this.list.push(b);
    return b;
  }
  destroy() {
    for (const b of this.list) b.destroy();
  }
}

/** Record with `fn`, submit, wait. */
async function run(ops: Ops, fn: (rec: Recorder) => void): Promise<void> {
  const rec = new Recorder(ops.gpu);
  fn(rec);
  rec.submit();
  await ops.gpu.device.queue.onSubmittedWorkDone();
}

async function read(gpu: Gpu, buf: GPUBuffer, n: number): Promise<Float32Array> {
  return new Float32Array(await readBuffer(gpu, buf, n * 4));
}

/**
 * max |got - want| <= tol * max |want| over the indices `keep` accepts (all by default);
 * NaN or a length mismatch fails. tol = 0 asks for equality.
 */
function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, tol: number, what: string, keep?: (i: number) => boolean) {
  if (got.length !== want.length) throw new Error(`${what}: length ${got.length}, want ${want.length}`);
  let scale = 0, err = 0, worst = -1, n = 0;
  for (let i = 0; i < want.length; i++) {
    if (keep && !keep(i)) continue;
    n++;
    scale = Math.max(scale, Math.abs(want[i]));
    const e = Math.abs(got[i] - want[i]);
    if (!(e <= err)) { // also takes NaN
      err = Number.isNaN(e) ? Infinity : e;
      worst = i;
    }
  }
  if (n === 0) throw new Error(`${what}: nothing compared`);
  if (!(err <= tol * scale)) {
    throw new Error(
      `${what}: max |gpu - ref| = ${err.toExponential(3)} at [${worst}] (gpu ${got[worst]}, ref ${want[worst]}), ` +
        `${(err / scale).toExponential(3)} of max |ref| ${scale.toExponential(3)}; tolerance ${tol}`,
    );
  }
  if (Deno.env.get("KERNELS_TEST_VERBOSE")) console.log(`  ${what}: ${(err / (scale || 1)).toExponential(2)} of max |ref|`);
  return err / (scale || 1);
}

function assert(cond: boolean, msg: string): asserts cond {
  if (!cond) throw new Error(msg);
}

const desc = (o: object) => Object.entries(o).map(([k, v]) => `${k}=${Array.isArray(v) ? `[${v}]` : v}`).join(" ");

// ---------- the reference against the float64 golden of the fixture model ----------

const FIXTURE = new URL("./fixtures/mamba2-tiny/", import.meta.url);

/** safetensors: 8-byte LE header length, JSON header {name: {dtype, shape, data_offsets}}, raw data. */
async function readSafetensors(url: URL): Promise<ref.Weights> {
  const bytes = await Deno.readFile(url);
  const headerLen = Number(new DataView(bytes.buffer, bytes.byteOffset, 8).getBigUint64(0, true));
  const header = JSON.parse(new TextDecoder().decode(bytes.subarray(8, 8 + headerLen)));
  const base = 8 + headerLen;
  const out: ref.Weights = new Map();
  for (const [name, info] of Object.entries(header) as [string, { dtype: string; data_offsets: [number, number] }][]) {
    if (name === "__metadata__") continue;
    if (info.dtype !== "F32") throw new Error(`${name}: dtype ${info.dtype}, the test reads F32 only`);
    const [b, e] = info.data_offsets;
    out.set(name, new Float32Array(bytes.slice(base + b, base + e).buffer)); // slice: the data may be unaligned
  }
  return out;
}

interface Golden {
  sequences: { ids: number[]; last_logits: number[]; logsumexp_per_position: number[]; argmax_per_position: number[] }[];
  knockouts: { ids: number[]; blocked_edges: Record<string, [number, number][]>; last_logits: number[] }[];
}

let fixture: Promise<{ weights: ref.Weights; cfg: ReturnType<typeof parseConfig>; golden: Golden }> | undefined;
function loadFixture() {
  return fixture ??= (async () => ({
    weights: await readSafetensors(new URL("model.safetensors", FIXTURE)),
    cfg: parseConfig(JSON.parse(await Deno.readTextFile(new URL("config.json", FIXTURE)))),
    golden: JSON.parse(await Deno.readTextFile(new URL("golden-engine.json", FIXTURE))) as Golden,
  }))();
}

/** Row t of (T, V) logits. */
const rowOf = (logits: Float64Array, V: number, t: number) => logits.subarray(t * V, (t + 1) * V);

function logsumexp(v: ArrayLike<number>): number {
  let m = -Infinity;
  for (let i = 0; i < v.length; i++) m = Math.max(m, v[i]);
  let s = 0;
  for (let i = 0; i < v.length; i++) s += Math.exp(v[i] - m);
  return m + Math.log(s);
}

function argmax(v: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < v.length; i++) if (v[i] > v[best]) best = i;
  return best;
}

// The golden is float64 from the same f32 weights, printed to 9 significant digits: a correct
// float64 reference agrees to ~1e-8 relative (print rounding and summation order); 1e-6 of the
// max logit leaves margin while any modelling slip (eps, gate order, softplus, decay) is >1e-3.
const TOL_GOLDEN = 1e-6;

Deno.test("reference forward matches the float64 golden (scan and attention modes)", async () => {
  const { weights, cfg, golden } = await loadFixture();
  const V = cfg.vocabPadded;
  // two short sequences keep the full-vocab CPU forward quick
  for (const seq of golden.sequences.filter((s) => s.ids.length === 1 || s.ids.length === 3)) {
    for (const mode of ["scan", "attention"] as const) {
      const logits = ref.referenceForward(weights, cfg, seq.ids, { mode });
      const T = seq.ids.length;
      assert(logits.length === T * V, `logits length ${logits.length}, want ${T * V}`);
      assertClose(rowOf(logits, V, T - 1), seq.last_logits, TOL_GOLDEN, `${mode} ids=[${seq.ids}] last logits`);
      // every position, through the golden's per-position summaries (over the real vocabulary)
      for (let t = 0; t < T; t++) {
        const row = rowOf(logits, V, t).subarray(0, cfg.vocabSize);
        const lse = logsumexp(row);
        assert(Math.abs(lse - seq.logsumexp_per_position[t]) < 1e-6, `${mode} t=${t}: logsumexp ${lse}, golden ${seq.logsumexp_per_position[t]}`);
        assert(argmax(row) === seq.argmax_per_position[t], `${mode} t=${t}: argmax ${argmax(row)}, golden ${seq.argmax_per_position[t]}`);
      }
    }
  }
});

Deno.test("reference forward with knockouts matches the float64 golden", async () => {
  const { weights, cfg, golden } = await loadFixture();
  const V = cfg.vocabPadded;
  // a multi-layer off-diagonal knockout, and one diagonal edge (M[t, t] only: D x_t stays)
  const cases = golden.knockouts.filter((k) => k.ids.length <= 12 && Object.keys(k.blocked_edges).length <= 2);
  assert(cases.length >= 2, `expected two small knockout cases in the golden, found ${cases.length}`);
  for (const k of cases) {
    const knockouts = Object.entries(k.blocked_edges).map(([l, edges]) => ({ start: Number(l), end: Number(l) + 1, edges }));
    const logits = ref.referenceForward(weights, cfg, k.ids, { mode: "attention", knockouts });
    const last = rowOf(logits, V, k.ids.length - 1);
    assertClose(last, k.last_logits, TOL_GOLDEN, `knockout ${JSON.stringify(k.blocked_edges)} last logits`);
    // the knockout must matter here, or the comparison above could not tell it was applied
    const plain = golden.sequences.find((s) => s.ids.join() === k.ids.join())!.last_logits;
    let diff = 0;
    for (let i = 0; i < V; i++) diff = Math.max(diff, Math.abs(plain[i] - k.last_logits[i]));
    // (the allowed error is TOL_GOLDEN * max |logit| ~ 1e-5; the knockouts move logits by 1e-2..1e-1)
    assert(diff > 1e-3, `knockout ${JSON.stringify(k.blocked_edges)} barely changes the golden (${diff})`);
  }
});

Deno.test("reference forward with flows, head selectors and conv knockouts matches golden-flows.json", async () => {
  const { weights, cfg } = await loadFixture();
  const g = JSON.parse(await Deno.readTextFile(new URL("golden-flows.json", FIXTURE)));
  const V = cfg.vocabPadded;
  const p = g.prompts[0];
  const T = p.ids.length;
  // one case of each kind: a flow into the subject, a selector, a conv knockout, a flow out of every token
  const picks = [
    p.cases.find((c: { flow: string; edges: number }) => c.flow === "subject<-subject" && c.edges > 0),
    p.cases.find((c: { heads: string }) => c.heads === "not-fast:1/3"),
    p.cases.find((c: { heads: string }) => c.heads === "slow:1/3"),
    p.cases.find((c: { conv: boolean; flow: string }) => c.conv && c.flow === "relation<-subject"),
    p.cases.find((c: { conv: boolean; flow: string }) => c.conv && c.flow === "last<-all"),
  ];
  for (const c of picks) {
    const edges = flowEdges(c.flow, T, p.subject_tokens);
    const knockouts = [{ start: c.window_start, end: c.window_start + g.window_size, edges, units: parseUnitSelector(c.heads), conv: c.conv }];
    const logits = ref.referenceForward(weights, cfg, p.ids, { mode: "attention", knockouts });
    const last = rowOf(logits, V, T - 1).subarray(0, cfg.vocabSize);
    const prob = Math.exp(last[p.true_id] - logsumexp(last));
    assert(Math.abs(prob - c.true_prob) <= 1e-6 * c.true_prob, `${c.flow} ${c.heads} conv ${c.conv}: p ${prob}, golden ${c.true_prob}`);
    assert(argmax(last) === p.true_id === c.hit, `${c.flow}: hit`);
  }
});

Deno.test("reference SSD: scan and attention forms agree in float64", () => {
  // Two different algorithms for the same y; float64 leaves only ~1e-15 rounding between them.
  const rng = new Rng(7);
  for (const [seq, nheads, headdim, dState, ngroups] of [[1, 1, 1, 1, 1], [9, 4, 3, 5, 2], [17, 6, 2, 8, 3]]) {
    const dInner = nheads * headdim, convDim = dInner + 2 * ngroups * dState;
    const s: SsdShape = { batch: 2, seq, nheads, headdim, dState, ngroups, convDim, dInner };
    const xbc = rng.f32(2 * seq * convDim), dt = rng.f32(2 * seq * nheads, 0.01, 0.8);
    const a = rng.f32(nheads, -4, -0.2), d = rng.f32(nheads);
    const scan = ref.ssdScan(xbc, dt, a, d, [seq, seq], s);
    const attn = ref.ssdAttentionApply(ref.ssdAttentionMatrix(ref.ssdGram(xbc, s), dt, a, null, s), xbc, dt, d, s);
    assertClose(attn, scan, 1e-12, `scan vs attention ${desc(s)}`);
  }
});

// ---------- kernels ----------

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
      await run(ops, (rec) => ops.conv1dSilu(rec, bufs.f32(zxbcdt), bufs.f32(weight), bufs.f32(bias), out, s, taps ? bufs.u32(taps) : null));
      const want = ref.conv1dSilu(zxbcdt, weight, bias, s, taps);
      assertClose(await read(gpu, out, rows * c.convDim), want, TOL_F32, `conv1dSilu ${desc(c)} tap mask ${masked}`);
      if (taps) assert(maxAbsDiff(want, ref.conv1dSilu(zxbcdt, weight, bias, s)) > 1e-3, "the tap mask changes the output");
    }
    bufs.destroy();
  }
});

Deno.test("dtSoftplus: moderate values, tiny results, and the threshold at 20", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(5);
  for (const c of [
    { rows: 1, nheads: 1, lo: -5, hi: 5, inStride: 1, inOffset: 0 },
    { rows: 77, nheads: 3, lo: -8, hi: 4, inStride: 10, inOffset: 6 },
    { rows: 13, nheads: 24, lo: -30, hi: 30, inStride: 300, inOffset: 276 },
  ]) {
    const bufs = new Bufs(gpu);
    const s = { rows: c.rows, nheads: c.nheads, inStride: c.inStride, inOffset: c.inOffset };
    const zxbcdt = rng.f32(c.rows * c.inStride, c.lo, c.hi), dtBias = rng.f32(c.nheads, -1, 1);
    if (c.hi > 20) { // straddle the threshold exactly: just below, at, and just above 20
      [19.999, 20, 20.001, -20, 0].forEach((v, k) => zxbcdt[k * c.inStride + c.inOffset] = v - dtBias[0]);
    }
    const dt = bufs.out(c.rows * c.nheads);
    await run(ops, (rec) => ops.dtSoftplus(rec, bufs.f32(zxbcdt), bufs.f32(dtBias), dt, s));
    const got = await read(gpu, dt, c.rows * c.nheads);
    const want = ref.dtSoftplus(zxbcdt, dtBias, s);
    assertClose(got, want, TOL_F32, `dtSoftplus ${desc(c)}`);
    // Per element too, so the small dt (which set the decay exp(dt A)) are not hidden by the max:
    // |err| <= 1e-5 |ref| + 2^-21 (WGSL's log is only absolutely accurate, to 2^-21, near 1).
    for (let i = 0; i < want.length; i++) {
      assert(Math.abs(got[i] - want[i]) <= 1e-5 * Math.abs(want[i]) + 2 ** -21, `dtSoftplus ${desc(c)} [${i}]: gpu ${got[i]}, ref ${want[i]}`);
    }
    bufs.destroy();
  }
});

/** Random SSD inputs of one shape; lengths[b] <= seq real rows per prompt. */
function ssdInputs(rng: Rng, s: SsdShape) {
  const N = s.batch * s.seq;
  return {
    xbc: rng.f32(N * s.convDim), // post-SiLU activations are O(1)
    dt: rng.f32(N * s.nheads, 0.001, 1), // softplus outputs of a trained model's range
    a: rng.f32(s.nheads, -8, -0.1), // -exp(A_log)
    d: rng.f32(s.nheads, -1, 1),
  };
}

function ssdShape(batch: number, seq: number, nheads: number, headdim: number, dState: number, ngroups: number): SsdShape {
  const dInner = nheads * headdim;
  return { batch, seq, nheads, headdim, dState, ngroups, dInner, convDim: dInner + 2 * ngroups * dState };
}

/** Rows b*seq + t with t < lengths[b]: the real (non-padding) rows of a (batch*seq, width) matrix. */
const realRows = (lengths: number[], seq: number, width: number) => (i: number) => {
  const row = Math.floor(i / width);
  return row % seq < lengths[Math.floor(row / seq)];
};

// batch of prompts of different lengths (padding rows), ngroups > 1, sizes off the workgroup
const SSD_CASES: { s: SsdShape; lengths: number[] }[] = [
  { s: ssdShape(1, 1, 1, 1, 1, 1), lengths: [1] },
  { s: ssdShape(3, 7, 4, 5, 16, 2), lengths: [7, 1, 4] },
  { s: ssdShape(2, 20, 6, 16, 17, 3), lengths: [13, 20] },
  { s: ssdShape(2, 33, 8, 16, 16, 1), lengths: [33, 30] },
  { s: ssdShape(1, 9, 2, 3, 256, 2), lengths: [9] }, // the scan kernel's largest d_state
];

Deno.test("ssdScan: recurrence with the D skip, batch with padding, ngroups > 1", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(6);
  for (const { s, lengths } of SSD_CASES) {
    const bufs = new Bufs(gpu);
    const inp = ssdInputs(rng, s);
    const n = s.batch * s.seq * s.dInner;
    const y = bufs.out(n);
    await run(ops, (rec) => ops.ssdScan(rec, bufs.f32(inp.xbc), bufs.f32(inp.dt), bufs.f32(inp.a), bufs.f32(inp.d), bufs.u32(lengths), y, s));
    // padding rows are not part of the contract (the scan stops at each prompt's length)
    assertClose(await read(gpu, y, n), ref.ssdScan(inp.xbc, inp.dt, inp.a, inp.d, lengths, s), TOL_F32, `ssdScan ${desc(s)} lengths=[${lengths}]`, realRows(lengths, s.seq, s.dInner));
    bufs.destroy();
  }
  const big = ssdShape(1, 2, 1, 1, 257, 1);
  const bufs = new Bufs(gpu);
  const b = bufs.out(16);
  let threw = false;
  try {
    await run(ops, (rec) => ops.ssdScan(rec, b, b, b, b, b, b, big));
  } catch {
    threw = true;
  }
  bufs.destroy();
  assert(threw, "ssdScan accepted d_state 257 (its state array holds 256)");
});

Deno.test("ssdGram: causal C.B per prompt and group", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(8);
  for (const { s } of SSD_CASES) {
    const bufs = new Bufs(gpu);
    const { xbc } = ssdInputs(rng, s);
    const n = s.batch * s.ngroups * s.seq * s.seq;
    const gram = bufs.out(n);
    await run(ops, (rec) => ops.ssdGram(rec, bufs.f32(xbc), gram, s));
    // the whole matrix, zeros above the diagonal included (pre-filled NaN)
    assertClose(await read(gpu, gram, n), ref.ssdGram(xbc, s), TOL_F32, `ssdGram ${desc(s)}`);
    bufs.destroy();
  }
});

Deno.test("ssdAttentionMatrix: segsum decay, causal zeros, knockout masks", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(9);
  for (const { s } of SSD_CASES) {
    for (const masked of [false, true]) {
      const bufs = new Bufs(gpu);
      const { dt, a } = ssdInputs(rng, s);
      const T = s.seq;
      // a gram with junk above the diagonal: the kernel must not read it
      const gram = rng.f32(s.batch * s.ngroups * T * T, -3, 3);
      // ~30% of edges knocked out, including diagonals and edges above it (which must stay 0), each
      // in one of 3 random head sets
      const nSets = 3;
      const mask = masked ? Uint32Array.from({ length: s.batch * T * T }, () => rng.next() < 0.3 ? rng.int(1, nSets + 1) : 0) : null;
      const headSets = Uint32Array.from({ length: nSets * s.nheads }, () => rng.int(0, 2));
      const n = s.batch * s.nheads * T * T;
      const m = bufs.out(n);
      const knockout = mask ? { mask: bufs.u32(mask), headSets: bufs.u32(headSets), nSets } : null;
      await run(ops, (rec) => ops.ssdAttentionMatrix(rec, bufs.f32(gram), bufs.f32(dt), bufs.f32(a), knockout, m, s));
      const want = ref.ssdAttentionMatrix(gram, dt, a, mask, s, headSets);
      const got = await read(gpu, m, n);
      assertClose(got, want, TOL_F32, `ssdAttentionMatrix ${desc(s)} masked=${masked}`);
      if (mask) { // knocked-out entries are exactly 0, in their head set's heads only
        let kept = 0;
        for (let i = 0; i < n; i++) {
          const b = Math.floor(i / (s.nheads * T * T)), h = Math.floor(i / (T * T)) % s.nheads, ts = i % (T * T);
          const k = mask[b * T * T + ts];
          if (k && headSets[(k - 1) * s.nheads + h]) assert(got[i] === 0, `ssdAttentionMatrix: knocked-out entry ${i} is ${got[i]}`);
          else if (k && ts % T <= Math.floor(ts / T) && got[i] !== 0) kept++;
        }
        assert(s.nheads === 1 || kept > 0, "entries of heads outside the head set stay");
      }
      bufs.destroy();
    }
  }
});

Deno.test("ssdAttentionApply: M (dt x) + D x", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(10);
  for (const { s } of SSD_CASES) {
    const bufs = new Bufs(gpu);
    const { xbc, dt, d } = ssdInputs(rng, s);
    // junk above the diagonal: the kernel must only read s <= t
    const m = rng.f32(s.batch * s.nheads * s.seq * s.seq);
    const n = s.batch * s.seq * s.dInner;
    const y = bufs.out(n);
    await run(ops, (rec) => ops.ssdAttentionApply(rec, bufs.f32(m), bufs.f32(xbc), bufs.f32(dt), bufs.f32(d), y, s));
    assertClose(await read(gpu, y, n), ref.ssdAttentionApply(m, xbc, dt, d, s), TOL_F32, `ssdAttentionApply ${desc(s)}`);
    bufs.destroy();
  }
});

Deno.test("gatedRmsnorm: gate then norm, per group", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(11);
  // groups narrower and wider than the 64-wide workgroup, not multiples of it; rows * ngroups
  // over 65535 spills the dispatch into y
  for (const c of [
    { rows: 1, dInner: 1, ngroups: 1, zStride: 1 },
    { rows: 3, dInner: 128, ngroups: 1, zStride: 296 },
    { rows: 5, dInner: 96, ngroups: 2, zStride: 100 },
    { rows: 4, dInner: 300, ngroups: 3, zStride: 310 },
    { rows: 2, dInner: 64, ngroups: 4, zStride: 70 },
    { rows: 33000, dInner: 6, ngroups: 2, zStride: 6 },
  ]) {
    const bufs = new Bufs(gpu);
    const s = { ...c, eps: ref.NORM_EPS };
    const y = rng.f32(c.rows * c.dInner, -2, 2), zxbcdt = rng.f32(c.rows * c.zStride, -4, 4), weight = rng.f32(c.dInner, 0.5, 1.5);
    const out = bufs.out(c.rows * c.dInner);
    await run(ops, (rec) => ops.gatedRmsnorm(rec, bufs.f32(y), bufs.f32(zxbcdt), bufs.f32(weight), out, s));
    assertClose(await read(gpu, out, c.rows * c.dInner), ref.gatedRmsnorm(y, zxbcdt, weight, s), TOL_F32, `gatedRmsnorm ${desc(c)}`);
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
    await run(ops, (rec) => ops.gatherRows(rec, bufs.u32(rows), bufs.f32(x), out, c.nOut, c.dim));
    assertClose(await read(gpu, out, c.nOut * c.dim), ref.gatherRows(rows, x, c.dim), 0, `gatherRows ${desc(c)}`);
    bufs.destroy();
  }
});

Deno.test("SSD layer chain on a padded batch: conv, dt, scan and attention (with knockouts), gated norm", async () => {
  // The kernels composed as in one mixer layer, on three prompts of different lengths in one
  // padded batch; each prompt's real rows must equal the reference run on that prompt alone.
  // Errors compound over four kernels: 1e-5 still holds with margin (one kernel is ~1e-6).
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(13);
  const lengths = [11, 4, 1], B = lengths.length, T = 11;
  const s = ssdShape(B, T, 4, 8, 12, 2);
  const dConv = 4, dInProj = 2 * s.dInner + 2 * s.ngroups * s.dState + s.nheads, N = B * T;
  const zxbcdt = rng.f32(N * dInProj, -2, 2);
  const convW = rng.f32(s.convDim * dConv, -0.7, 0.7), convB = rng.f32(s.convDim, -0.3, 0.3);
  const dtBias = rng.f32(s.nheads, -3, 0), a = rng.f32(s.nheads, -6, -0.2), d = rng.f32(s.nheads), normW = rng.f32(s.dInner, 0.5, 1.5);
  // knockouts differ per prompt; prompt 2 has none
  const edges: [number, number][][] = [[[10, 0], [10, 9], [5, 5], [7, 2]], [[3, 0], [3, 3]], []];
  const mask = new Uint32Array(B * T * T);
  edges.forEach((es, b) => es.forEach(([t, u]) => mask[(b * T + t) * T + u] = 1));

  const bufs = new Bufs(gpu);
  const zBuf = bufs.f32(zxbcdt), xbc = bufs.out(N * s.convDim), dt = bufs.out(N * s.nheads);
  const aBuf = bufs.f32(a), dBuf = bufs.f32(d), normBuf = bufs.f32(normW);
  const yScan = bufs.out(N * s.dInner), yAttn = bufs.out(N * s.dInner);
  const outScan = bufs.out(N * s.dInner), outAttn = bufs.out(N * s.dInner);
  const gram = bufs.out(B * s.ngroups * T * T), m = bufs.out(B * s.nheads * T * T);
  const norm = { rows: N, dInner: s.dInner, ngroups: s.ngroups, zStride: dInProj, eps: ref.NORM_EPS };
  await run(ops, (rec) => {
    ops.conv1dSilu(rec, zBuf, bufs.f32(convW), bufs.f32(convB), xbc, { rows: N, seq: T, convDim: s.convDim, dConv, inStride: dInProj, inOffset: s.dInner });
    ops.dtSoftplus(rec, zBuf, bufs.f32(dtBias), dt, { rows: N, nheads: s.nheads, inStride: dInProj, inOffset: s.dInner + s.convDim });
    ops.ssdScan(rec, xbc, dt, aBuf, dBuf, bufs.u32(lengths), yScan, s);
    ops.ssdGram(rec, xbc, gram, s);
    ops.ssdAttentionMatrix(rec, gram, dt, aBuf, { mask: bufs.u32(mask), headSets: bufs.u32(new Array(s.nheads).fill(1)), nSets: 1 }, m, s);
    ops.ssdAttentionApply(rec, m, xbc, dt, dBuf, yAttn, s);
    ops.gatedRmsnorm(rec, yScan, zBuf, normBuf, outScan, norm);
    ops.gatedRmsnorm(rec, yAttn, zBuf, normBuf, outAttn, norm);
  });
  const gotScan = await read(gpu, outScan, N * s.dInner), gotAttn = await read(gpu, outAttn, N * s.dInner);
  bufs.destroy();

  for (let b = 0; b < B; b++) {
    const L = lengths[b];
    const one = { ...s, batch: 1, seq: L };
    const z = zxbcdt.subarray(b * T * dInProj, (b * T + L) * dInProj);
    const xbcR = ref.conv1dSilu(z, convW, convB, { rows: L, seq: L, convDim: s.convDim, dConv, inStride: dInProj, inOffset: s.dInner });
    const dtR = ref.dtSoftplus(z, dtBias, { rows: L, nheads: s.nheads, inStride: dInProj, inOffset: s.dInner + s.convDim });
    const maskR = new Uint8Array(L * L);
    edges[b].forEach(([t, u]) => maskR[t * L + u] = 1);
    const yS = ref.ssdScan(xbcR, dtR, a, d, [L], one);
    const yA = ref.ssdAttentionApply(ref.ssdAttentionMatrix(ref.ssdGram(xbcR, one), dtR, a, maskR, one), xbcR, dtR, d, one);
    const normR = { ...norm, rows: L };
    const rows = (v: Float32Array) => v.subarray(b * T * s.dInner, (b * T + L) * s.dInner);
    assertClose(rows(gotScan), ref.gatedRmsnorm(yS, z, normW, normR), TOL_F32, `chain scan, prompt ${b} (length ${L})`);
    assertClose(rows(gotAttn), ref.gatedRmsnorm(yA, z, normW, normR), TOL_F32, `chain attention, prompt ${b} (length ${L}, knockouts ${JSON.stringify(edges[b])})`);
  }
});

// ---------- the knockout fast path's kernels (recomputed rows) and row_stats ----------

/**
 * Random recomputed rows over a padded base batch: configurations on prompts of different lengths,
 * each with its first recomputed position t0, a window among nLayer layers, a selector, conv taps
 * and blocked columns (random, on and off the diagonal).
 */
function rowsScenario(rng: Rng, lengths: number[], nConfigs: number, nLayer: number, nSel: number, dConv: number) {
  const T = Math.max(...lengths);
  const meta: number[] = [], colmask: number[] = [];
  for (let k = 0; k < nConfigs; k++) {
    const b = rng.int(0, lengths.length), len = lengths[b];
    const t0 = rng.int(0, len), start = rng.int(0, nLayer), end = rng.int(start + 1, nLayer + 1), sel = rng.int(0, nSel);
    for (let t = t0; t < len; t++) {
      meta.push(t, t0, b * T, start, end, sel, rng.int(0, 2 ** dConv), 0);
      for (let s = 0; s < T; s++) colmask.push(s <= t && rng.next() < 0.4 ? 1 : 0);
    }
  }
  return { T, n: meta.length / 8, rowsMeta: meta, colmask };
}

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
      await run(ops, (rec) =>
        ops.rowsConv1dSilu(rec, {
          rowsMeta: bufs.u32(sc.rowsMeta),
          zxbcdt: bufs.f32(zx),
          baseZxbcdt: bufs.f32(baseZx),
          weight: bufs.f32(weight),
          bias: bufs.f32(bias),
          out,
        }, s));
      const want = ref.rowsConv1dSilu(sc.rowsMeta, zx, baseZx, weight, bias, s);
      assertClose(await read(gpu, out, sc.n * c.convDim), want, TOL_F32, `rowsConv1dSilu ${desc(c)} layer ${layer}`);
      bufs.destroy();
    }
  }
});

Deno.test("reference: the rows functions equal the full ones when every row is recomputed", () => {
  // t0 = 0 and no knockout: the rows of a configuration are its whole prompt, so the rows kernels
  // must give what conv1d_silu, ssd_cb + ssd_attention_matrix and ssd_attention_apply give
  const rng = new Rng(15);
  const s = ssdShape(1, 6, 4, 3, 5, 2), dConv = 4, inStride = s.convDim + 3;
  const meta = Array.from({ length: s.seq }, (_, t) => [t, 0, 0, 0, 1, 0, 0, 0]).flat();
  const zx = rng.f32(s.seq * inStride, -2, 2), weight = rng.f32(s.convDim * dConv), bias = rng.f32(s.convDim);
  const conv = ref.conv1dSilu(zx, weight, bias, { rows: s.seq, seq: s.seq, convDim: s.convDim, dConv, inStride, inOffset: 2 });
  const rowsConv = ref.rowsConv1dSilu(meta, zx, zx, weight, bias, { n: s.seq, convDim: s.convDim, dConv, inStride, inOffset: 2, layer: 0 });
  assertClose(rowsConv, conv, 1e-14, "reference rowsConv1dSilu = conv1dSilu");
  const { xbc, dt, a, d } = ssdInputs(rng, s);
  const m = ref.ssdAttentionMatrix(ref.ssdGram(xbc, s), dt, a, null, s);
  const headSel = new Array(s.nheads).fill(1);
  const mRows = ref.rowsSsdAttention(meta, new Array(s.seq * s.seq).fill(0), headSel, xbc, dt, xbc, dt, a, { ...s, n: s.seq, maxLen: s.seq, layer: 0, nSel: 1 });
  // m is (1, H, T, T), mRows (T, H, T)
  const mT = Float64Array.from({ length: m.length }, (_, i) => {
    const t = Math.floor(i / (s.nheads * s.seq)), h = Math.floor(i / s.seq) % s.nheads, u = i % s.seq;
    return m[(h * s.seq + t) * s.seq + u];
  });
  assertClose(mRows, mT, 1e-14, "reference rowsSsdAttention = ssdAttentionMatrix");
  const yRows = ref.rowsSsdAttentionApply(meta, mRows, xbc, dt, xbc, dt, d, { n: s.seq, nheads: s.nheads, headdim: s.headdim, convDim: s.convDim, dInner: s.dInner, maxLen: s.seq });
  assertClose(yRows, ref.ssdAttentionApply(m, xbc, dt, d, s), 1e-14, "reference rowsSsdAttentionApply = ssdAttentionApply");
});

Deno.test("rowsSsdAttention and rowsSsdAttentionApply: rows from the recomputed rows and the base run, head selectors", async () => {
  const ops = await getOps(), gpu = ops.gpu;
  const rng = new Rng(16);
  for (const c of [
    { lengths: [1], configs: 1, shape: ssdShape(1, 1, 1, 1, 1, 1), nSel: 1 },
    { lengths: [7, 2, 5], configs: 7, shape: ssdShape(3, 7, 4, 5, 16, 2), nSel: 3 },
    { lengths: [13, 20], configs: 5, shape: ssdShape(2, 20, 6, 16, 17, 3), nSel: 2 },
  ]) {
    const nLayer = 3, s = c.shape;
    const sc = rowsScenario(rng, c.lengths, c.configs, nLayer, c.nSel, 4);
    const baseRows = c.lengths.length * sc.T;
    const xbc = rng.f32(sc.n * s.convDim), dt = rng.f32(sc.n * s.nheads, 0.001, 1);
    const baseXbc = rng.f32(baseRows * s.convDim), baseDt = rng.f32(baseRows * s.nheads, 0.001, 1);
    const a = rng.f32(s.nheads, -8, -0.1), d = rng.f32(s.nheads);
    const headSel = Array.from({ length: nLayer * c.nSel * s.nheads }, () => rng.int(0, 2));
    for (const layer of [0, 1, 2]) {
      const bufs = new Bufs(gpu);
      const attn = { ...s, n: sc.n, maxLen: sc.T, layer, nSel: c.nSel };
      const mRows = bufs.out(sc.n * s.nheads * sc.T), y = bufs.out(sc.n * s.dInner);
      const b = { rowsMeta: bufs.u32(sc.rowsMeta), xbc: bufs.f32(xbc), dt: bufs.f32(dt), baseXbc: bufs.f32(baseXbc), baseDt: bufs.f32(baseDt) };
      const mWant = ref.rowsSsdAttention(sc.rowsMeta, sc.colmask, headSel, xbc, dt, baseXbc, baseDt, a, attn);
      // apply reads random junk beyond each row's position t (the kernel must stop at t)
      const mJunk = Float32Array.from(mWant, (v, i) => (i % sc.T) > sc.rowsMeta[Math.floor(i / (s.nheads * sc.T)) * 8] ? rng.uniform(-1, 1) : v);
      const apply = { n: sc.n, nheads: s.nheads, headdim: s.headdim, convDim: s.convDim, dInner: s.dInner, maxLen: sc.T };
      await run(ops, (rec) => {
        ops.rowsSsdAttention(rec, { ...b, colmask: bufs.u32(sc.colmask), headSel: bufs.u32(headSel), a: bufs.f32(a), mRows }, attn);
        ops.rowsSsdAttentionApply(rec, { ...b, mRows: bufs.f32(mJunk), d: bufs.f32(d), y }, apply);
      });
      assertClose(await read(gpu, mRows, sc.n * s.nheads * sc.T), mWant, TOL_F32, `rowsSsdAttention ${desc(s)} lengths [${c.lengths}] layer ${layer}`);
      const yWant = ref.rowsSsdAttentionApply(sc.rowsMeta, mJunk, xbc, dt, baseXbc, baseDt, d, apply);
      assertClose(await read(gpu, y, sc.n * s.dInner), yWant, TOL_F32, `rowsSsdAttentionApply ${desc(s)} lengths [${c.lengths}] layer ${layer}`);
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
