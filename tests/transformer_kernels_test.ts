// Every Transformer kernel (kernels/transformer/*.wgsl, through engine/transformer/ops.ts) against
// its float64 CPU reference (tests/reference/transformer.ts) over awkward shapes: odd widths, one
// row, many heads, grouped-query attention, partial rotary, sliding windows, rows whose every edge
// is blocked, both knockout forms (a full forward's per-layer head sets, the fast path's
// per-layer selectors), and the fast path's split of keys between recomputed rows and the base
// run's cache.
//
// Tolerance: max |gpu − ref| <= TOL · max |ref| (ref in float64 from the same f32 inputs), as in
// tests/kernels_test.ts: f32 rounding over sums of at most a few hundred terms and a few-ulp
// exp lands near 1e-7..1e-6, so 1e-5 has a 10x margin and still catches any indexing or masking
// slip. GELU's erf approximation (|error| <= 1.5e-7, kernels/transformer/bias_act.wgsl) is inside
// it too. Outputs are pre-filled with NaN wherever the kernel must write every element.

import { type Gpu, readBuffer, Recorder, storageBuffer, uploadBuffer, writeBuffer } from "../engine/gpu.ts";
import { Ops } from "../engine/ops.ts";
import { type Activation, TransformerOps } from "../engine/transformer/ops.ts";
import { assert } from "./assert.ts";
import { seeded, testGpu } from "./helpers.ts";
import * as ref from "./reference/transformer.ts";

const TOL = 1e-5;

let opsP: Promise<TransformerOps & { gpu: Gpu }> | undefined;
const getOps = () =>
  opsP ??= (async () => {
    const ops = await Ops.create(await testGpu());
    return Object.assign(await TransformerOps.create(ops), { gpu: ops.gpu });
  })();

class Inputs {
  private next: () => number;
  constructor(seed: number) {
    this.next = seeded(seed);
  }
  f32(n: number, lo = -1, hi = 1): Float32Array {
    return Float32Array.from({ length: n }, () => lo + (hi - lo) * this.next());
  }
  int(lo: number, hiExcl: number): number {
    return lo + Math.floor(this.next() * (hiExcl - lo));
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

/** Buffers of one case, destroyed together. */
class Bufs {
  private list: GPUBuffer[] = [];
  constructor(readonly gpu: Gpu) {}
  up(data: Float32Array | Uint32Array): GPUBuffer {
    const b = uploadBuffer(this.gpu, data);
    this.list.push(b);
    return b;
  }
  out(n: number): GPUBuffer {
    const b = storageBuffer(this.gpu, n * 4);
    writeBuffer(this.gpu, b, new Float32Array(n).fill(NaN));
    this.list.push(b);
    return b;
  }
  async read(b: GPUBuffer, n: number): Promise<Float32Array> {
    return new Float32Array(await readBuffer(this.gpu, b, n * 4));
  }
  async run(fn: (rec: Recorder) => void) {
    const rec = new Recorder(this.gpu);
    fn(rec);
    rec.submit();
    await this.gpu.device.queue.onSubmittedWorkDone();
  }
  destroy() {
    for (const b of this.list) b.destroy();
  }
}

function assertClose(got: ArrayLike<number>, want: ArrayLike<number>, what: string, tol = TOL) {
  assert(got.length === want.length, `${what}: length ${got.length}, want ${want.length}`);
  let scale = 0, err = 0, at = -1;
  for (let i = 0; i < want.length; i++) {
    scale = Math.max(scale, Math.abs(want[i]));
    const e = Math.abs(got[i] - want[i]);
    if (!(e <= err)) {
      err = Number.isNaN(e) ? Infinity : e;
      at = i;
    }
  }
  assert(err <= tol * Math.max(scale, 1e-30), `${what}: max |gpu − ref| ${err.toExponential(3)} at [${at}] (gpu ${got[at]}, ref ${want[at]}), max |ref| ${scale.toExponential(3)}`);
}

/** Element by element: |gpu − ref| <= tol · max(1, |x|) for each input x (an activation's own error bound). */
function assertCloseEach(got: ArrayLike<number>, want: ArrayLike<number>, inputs: ArrayLike<number>, tol: number, what: string) {
  assert(got.length === want.length, `${what}: length ${got.length}, want ${want.length}`);
  for (let i = 0; i < want.length; i++) {
    const e = Math.abs(got[i] - want[i]);
    assert(e <= tol * Math.max(1, Math.abs(inputs[i])), `${what}: |gpu − ref| ${e.toExponential(3)} at [${i}] (input ${inputs[i]}, gpu ${got[i]}, ref ${want[i]})`);
  }
}

const desc = (o: object) => Object.entries(o).map(([k, v]) => `${k}=${v}`).join(" ");

Deno.test("layernorm.wgsl = reference (odd widths, one element, a large common offset)", async () => {
  const ops = await getOps();
  const r = new Inputs(1);
  for (const [rows, dim, offset] of [[1, 1, 0], [3, 7, 0], [5, 64, 3], [2, 100, 0], [4, 130, 50], [1, 2048, 0]]) {
    const b = new Bufs(ops.gpu);
    try {
      const x = r.f32(rows * dim, offset - 2, offset + 2), w = r.f32(dim, 0.5, 1.5), bias = r.f32(dim);
      const out = b.out(rows * dim);
      await b.run((rec) => ops.layernorm(rec, b.up(x), b.up(w), b.up(bias), out, rows, dim, 1e-5));
      assertClose(await b.read(out, rows * dim), ref.layernorm(x, w, bias, rows, dim, 1e-5), `layernorm ${desc({ rows, dim, offset })}`);
    } finally {
      b.destroy();
    }
  }
});

Deno.test("bias_act.wgsl = reference: identity, exact GELU and tanh GELU, with and without bias, large inputs", async () => {
  const ops = await getOps();
  const r = new Inputs(2);
  for (const act of ["none", "gelu", "gelu_tanh"] as Activation[]) {
    for (const [rows, dim, withBias] of [[1, 1, true], [3, 5, false], [7, 33, true], [2, 300, true]] as [number, number, boolean][]) {
      const b = new Bufs(ops.gpu);
      try {
        const x = r.f32(rows * dim, -6, 6);
        x[0] = -40; // far tails: exp(−z²) underflows, tanh saturates
        if (x.length > 1) x[1] = 40;
        const bias = withBias ? r.f32(dim) : null;
        const buf = b.up(x);
        await b.run((rec) => ops.biasAct(rec, buf, bias && b.up(bias), rows, dim, act));
        if (act === "none" && !withBias) continue; // nothing to do, nothing dispatched
        // per element: f32 rounding (6e-8 relative) plus the erf approximation's |x|·0.75e-7
        const inputs = Float64Array.from(x, (v, i) => v + (bias ? bias[i % dim] : 0));
        assertCloseEach(await b.read(buf, rows * dim), ref.biasAct(x, bias, rows, dim, act), inputs, 4e-7, `bias_act ${desc({ act, rows, dim, withBias })}`);
      } finally {
        b.destroy();
      }
    }
  }
  // the reference's erf itself, at points where erf is known to many digits
  for (const [x, want] of [[0.5, 0.5204998778130465], [1, 0.8427007929497149], [2, 0.9953222650189527], [3, 0.9999779095030014], [-2.5, -0.9995930479825550]]) {
    assert(Math.abs(ref.erf(x) - want) < 1e-15, `reference erf(${x}) = ${ref.erf(x)}, want ${want}`);
  }
});

Deno.test("swiglu.wgsl = reference", async () => {
  const ops = await getOps();
  const r = new Inputs(3);
  for (const [rows, dff] of [[1, 1], [3, 17], [4, 96], [2, 1000]]) {
    const b = new Bufs(ops.gpu);
    try {
      const gu = r.f32(rows * 2 * dff, -5, 5);
      const out = b.out(rows * dff);
      await b.run((rec) => ops.swiglu(rec, b.up(gu), out, rows, dff));
      assertClose(await b.read(out, rows * dff), ref.swiglu(gu, rows, dff), `swiglu ${desc({ rows, dff })}`);
    } finally {
      b.destroy();
    }
  }
});

/** A row meta table (rows, 8) u32 as the kernels read it. */
function metaTable(meta: ref.RowMeta[]): Uint32Array {
  const out = new Uint32Array(meta.length * 8);
  meta.forEach((m, i) => out.set([m.t, m.t0, m.baseRow0, m.koStart, m.koEnd, m.sel, 0, 0], i * 8));
  return out;
}

Deno.test("rope.wgsl = reference: partial and full rotary, GQA, padded rows, llama3-scaled frequencies", async () => {
  const ops = await getOps();
  const r = new Inputs(4);
  const cases = [
    { rows: 1, nHead: 1, nKvHead: 1, headDim: 2, rotDims: 2, pad: 0, base: 10000, llama3: false },
    { rows: 6, nHead: 4, nKvHead: 4, headDim: 8, rotDims: 2, pad: 3, base: 10000, llama3: false }, // Pythia's 25 %
    { rows: 5, nHead: 4, nKvHead: 2, headDim: 8, rotDims: 8, pad: 0, base: 500000, llama3: true },
    { rows: 9, nHead: 6, nKvHead: 3, headDim: 12, rotDims: 6, pad: 5, base: 1e6, llama3: false },
  ];
  for (const c of cases) {
    const b = new Bufs(ops.gpu);
    try {
      const stride = (c.nHead + 2 * c.nKvHead) * c.headDim + c.pad;
      const qkv = r.f32(c.rows * stride, -2, 2);
      const positions = Array.from({ length: c.rows }, () => r.int(0, 3000));
      let inv = ref.ropeInvFreq(c.rotDims, c.base);
      if (c.llama3) inv = ref.llama3InvFreq(inv, { factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 });
      const maxPos = Math.max(...positions) + 1, half = c.rotDims / 2;
      const cos = new Float32Array(maxPos * half), sin = new Float32Array(maxPos * half);
      for (let t = 0; t < maxPos; t++) {
        for (let j = 0; j < half; j++) {
          cos[t * half + j] = Math.cos(t * inv[j]);
          sin[t * half + j] = Math.sin(t * inv[j]);
        }
      }
      const meta = metaTable(positions.map((t) => ({ t, t0: 0, baseRow0: 0, koStart: 0, koEnd: 0, sel: 0 })));
      const buf = b.up(qkv);
      await b.run((rec) => ops.rope(rec, { meta: b.up(meta), cos: b.up(cos), sin: b.up(sin), qkv: buf }, { ...c, stride, positions: maxPos }));
      // the reference rotates with float64 angles; the tables hold them rounded to f32 (a few 1e-8)
      assertClose(await b.read(buf, c.rows * stride), ref.rope(qkv, c.rows, { ...c, stride }, positions, inv), `rope ${desc(c)}`);
    } finally {
      b.destroy();
    }
  }
});

interface AttnCase {
  name: string;
  nHead: number;
  nKvHead: number;
  headDim: number;
  pad: number; // extra columns of a qkv row
  window: number;
  layer: number;
  /** sequences: length, first recomputed position (0 = full forward), knockout layers */
  seqs: { len: number; t0: number; ko?: [number, number] }[];
  maskDensity: number;
  extraLen: number; // maxLen beyond the longest sequence
  /** the knockout's form: a full forward's head sets (mask = set id + 1) or the fast path's selectors per layer (mask 0/1) */
  form: "sets" | "selectors";
}

const ATTN_CASES: AttnCase[] = [
  { name: "one token", nHead: 1, nKvHead: 1, headDim: 1, pad: 0, window: 0, layer: 0, seqs: [{ len: 1, t0: 0 }], maskDensity: 0, extraLen: 0, form: "sets" },
  { name: "full forward, 2 prompts padded, GQA", nHead: 4, nKvHead: 2, headDim: 8, pad: 0, window: 0, layer: 0, seqs: [{ len: 11, t0: 0, ko: [0, 4] }, { len: 6, t0: 0, ko: [0, 4] }], maskDensity: 0.3, extraLen: 0, form: "sets" },
  { name: "knockouts in and out of the layer's window", nHead: 4, nKvHead: 4, headDim: 5, pad: 3, window: 0, layer: 2, seqs: [{ len: 9, t0: 0, ko: [1, 3] }, { len: 9, t0: 0, ko: [3, 4] }, { len: 4, t0: 0, ko: [0, 2] }], maskDensity: 0.4, extraLen: 2, form: "selectors" },
  { name: "33 heads, dense mask: rows with every edge blocked", nHead: 33, nKvHead: 11, headDim: 3, pad: 1, window: 0, layer: 0, seqs: [{ len: 7, t0: 0, ko: [0, 1] }], maskDensity: 0.85, extraLen: 1, form: "sets" },
  { name: "sliding window 3", nHead: 2, nKvHead: 1, headDim: 16, pad: 0, window: 3, layer: 5, seqs: [{ len: 10, t0: 0, ko: [5, 6] }], maskDensity: 0.3, extraLen: 0, form: "sets" },
  { name: "fast path: keys below t0 from the base cache", nHead: 4, nKvHead: 2, headDim: 8, pad: 2, window: 0, layer: 1, seqs: [{ len: 10, t0: 4, ko: [1, 2] }, { len: 12, t0: 11, ko: [0, 2] }, { len: 5, t0: 0, ko: [1, 3] }], maskDensity: 0.3, extraLen: 3, form: "selectors" },
  { name: "fast path with a sliding window", nHead: 3, nKvHead: 3, headDim: 4, pad: 0, window: 4, layer: 0, seqs: [{ len: 9, t0: 6, ko: [0, 1] }], maskDensity: 0.5, extraLen: 0, form: "selectors" },
];

Deno.test("attention_probs.wgsl and attention_apply.wgsl = reference (causal, GQA, windows, masks, base cache)", async () => {
  const ops = await getOps();
  const r = new Inputs(5);
  for (const c of ATTN_CASES) {
    const b = new Bufs(ops.gpu);
    try {
      const stride = (c.nHead + 2 * c.nKvHead) * c.headDim + c.pad;
      const maxLen = Math.max(...c.seqs.map((s) => s.len)) + c.extraLen;
      // base cache: each sequence's full rows; computed rows: positions t0..len-1 of each
      // the fast path's selectors: nSel per layer; a full forward's head sets: nSets, the first one every head
      const nSel = c.form === "selectors" ? 2 : 0, nSets = 3;
      const meta: ref.RowMeta[] = [];
      let baseRows = 0, rows = 0;
      c.seqs.forEach((s, k) => {
        for (let t = s.t0; t < s.len; t++) {
          meta.push({ t, t0: s.t0, baseRow0: baseRows, koStart: s.ko?.[0] ?? 0, koEnd: s.ko?.[1] ?? 0, sel: nSel ? k % nSel : 0 });
        }
        rows += s.len - s.t0;
        baseRows += s.len;
      });
      const qkv = r.f32(rows * stride, -2, 2), base = r.f32(Math.max(1, baseRows) * stride, -2, 2);
      const setRows = nSel ? (c.layer + 1) * nSel : nSets;
      const sets = Uint32Array.from({ length: setRows * c.nHead }, (_, j) => (!nSel && j < c.nHead) || r.chance(0.5) ? 1 : 0);
      const mask = new Uint32Array(rows * maxLen);
      if (c.maskDensity > 0) {
        for (let i = 0; i < rows; i++) {
          for (let s = 0; s <= meta[i].t; s++) if (r.chance(c.maskDensity)) mask[i * maxLen + s] = nSel ? 1 : 1 + r.int(0, nSets);
        }
      }
      const hasMask = c.maskDensity > 0;
      const shape = { rows, nHead: c.nHead, nKvHead: c.nKvHead, headDim: c.headDim, stride, maxLen, baseRows, layer: c.layer, window: c.window };
      const metaBuf = b.up(metaTable(meta)), qkvBuf = b.up(qkv);
      const baseBuf = c.seqs.some((s) => s.t0 > 0) ? b.up(base) : null;
      const probs = b.out(rows * c.nHead * maxLen), out = b.out(rows * c.nHead * c.headDim);
      await b.run((rec) => {
        const m = hasMask ? { mask: b.up(mask), sets: b.up(sets), setRows, nSel } : null;
        ops.attentionProbs(rec, { meta: metaBuf, qkv: qkvBuf, base: baseBuf, mask: m, probs }, shape);
        ops.attentionApply(rec, { meta: metaBuf, probs, qkv: qkvBuf, base: baseBuf, out }, shape);
      });
      const a: ref.AttnShape = { nHead: c.nHead, nKvHead: c.nKvHead, headDim: c.headDim, stride, maxLen, layer: c.layer, window: c.window, scale: 1 / Math.sqrt(c.headDim) };
      const wantP = ref.attentionProbs(qkv, base, meta, hasMask ? { mask, sets, nSel } : null, a);
      assertClose(await b.read(probs, wantP.length), wantP, `attention_probs: ${c.name}`);
      // the probabilities fed to apply are the reference's, so that apply is judged on its own
      assertClose(await b.read(out, rows * c.nHead * c.headDim), ref.attentionApply(wantP, qkv, base, meta, a), `attention_apply: ${c.name}`);
      if (c.maskDensity > 0.8) {
        let empty = 0;
        for (let i = 0; i < rows * c.nHead; i++) if (wantP.subarray(i * maxLen, (i + 1) * maxLen).every((v) => v === 0)) empty++;
        assert(empty > 0, `${c.name}: the case should hold rows whose every edge is blocked`);
      }
    } finally {
      b.destroy();
    }
  }
});

Deno.test("add_positions.wgsl = reference", async () => {
  const ops = await getOps();
  const r = new Inputs(6);
  for (const [rows, dim, nPos] of [[1, 1, 1], [7, 33, 9], [12, 64, 64]]) {
    const b = new Bufs(ops.gpu);
    try {
      const x = r.f32(rows * dim), wpe = r.f32(nPos * dim);
      const positions = Array.from({ length: rows }, () => r.int(0, nPos));
      const buf = b.up(x);
      const meta = metaTable(positions.map((t) => ({ t, t0: 0, baseRow0: 0, koStart: 0, koEnd: 0, sel: 0 })));
      await b.run((rec) => ops.addPositions(rec, b.up(meta), b.up(wpe), buf, { rows, dim, positions: nPos }));
      assertClose(await b.read(buf, rows * dim), ref.addPositions(x, wpe, positions, dim), `add_positions ${desc({ rows, dim, nPos })}`);
    } finally {
      b.destroy();
    }
  }
});
