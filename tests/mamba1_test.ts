// The Mamba-1 and Falcon-Mamba family (engine/mamba1/, kernels/mamba1/): every kernel against the
// float64 reference (tests/reference/mamba1.ts) over several shapes with seeded random inputs; the
// reference and the engine against the float64 goldens of mamba1-tiny and falcon-mamba-tiny in both
// modes (knockouts included); conv knockouts (Mamba-1's width-4 conv on x, cut as Mamba-2's) against
// the reference; the fast path against the full recompute (flows, channel selectors, conv); batching;
// f16 weights. Tolerances as tests/mamba2_kernels_test.ts (kernels) and tests/engine_test.ts (logits).
import { type KnockoutConfig, type KnockoutSpec, parseUnitSelector } from "../engine/arch.ts";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { flowEdges } from "../engine/flows.ts";
import type { Mamba1Config } from "../engine/mamba1/config.ts";
import { Mamba1Ops, type Mamba1Shape } from "../engine/mamba1/ops.ts";
import { argmax } from "../engine/probs.ts";
import { assert as check, assertEquals } from "./assert.ts";
import {
  assertGoldenKnockouts,
  assertGoldenSequences,
  type GoldenEngine,
  goldenEngine,
  knockoutFromGolden,
  loadBackbone,
  maxAbs,
  maxAbsDiff,
} from "./helpers.ts";
import { assert, assertClose, Bufs, desc, getOps, read, Rng, rowsScenario, run, TOL_F32 } from "./kernel_helpers.ts";
import * as ref from "./reference/mamba1.ts";

const MAMBA1 = new URL("./fixtures/mamba1-tiny/", import.meta.url).pathname;
const FALCON = new URL("./fixtures/falcon-mamba-tiny/", import.meta.url).pathname;
const LOGIT_TOL = 1e-4; // relative to max |logit|, as tests/engine_test.ts
const REAL_VOCAB = 50277; // GPT-NeoX-20B's tokens; the HF configs count the 50280 head rows

let m1: Promise<Mamba1Ops> | undefined;
const getM1 = () => m1 ??= getOps().then((ops) => Mamba1Ops.create(ops));

// ---------- the kernels ----------

const shape = (batch: number, seq: number, dInner: number, dState: number): Mamba1Shape => ({ batch, seq, dInner, dState });

Deno.test("selectiveScan: the recurrence over each prompt's rows, padding left alone", async () => {
  const k = await getM1(), ops = k.ops, gpu = ops.gpu;
  const rng = new Rng(31);
  for (const c of [{ s: shape(1, 1, 1, 1), lengths: [1] }, { s: shape(3, 9, 20, 8), lengths: [9, 4, 1] }, { s: shape(2, 17, 65, 16), lengths: [17, 11] }]) {
    const s = c.s, N = s.batch * s.seq;
    const x = rng.f32(N * s.dInner), dt = rng.f32(N * s.dInner, 0.001, 1), a = rng.f32(s.dInner * s.dState, -8, -0.1);
    const bc = rng.f32(N * 2 * s.dState), d = rng.f32(s.dInner);
    const bufs = new Bufs(gpu);
    const y = bufs.out(N * s.dInner);
    await run(ops, (rec) => k.selectiveScan(rec, { x: bufs.f32(x), dt: bufs.f32(dt), a: bufs.f32(a), bc: bufs.f32(bc), d: bufs.f32(d), lengths: bufs.u32(c.lengths), y }, s));
    const want = ref.selectiveScan(x, dt, a, bc, d, c.lengths, s);
    const real = (i: number) => (Math.floor(i / s.dInner) % s.seq) < c.lengths[Math.floor(i / (s.dInner * s.seq))];
    assertClose(await read(gpu, y, N * s.dInner), want, TOL_F32, `selectiveScan ${desc(s)}`, real);
    bufs.destroy();
  }
});

Deno.test("hiddenAttention and its apply: alpha per channel, knockouts in unit sets; the scan and attention forms agree", async () => {
  const k = await getM1(), ops = k.ops, gpu = ops.gpu;
  const rng = new Rng(32);
  for (const c of [{ s: shape(1, 1, 1, 1), masked: false }, { s: shape(2, 7, 12, 8), masked: true }, { s: shape(3, 13, 33, 16), masked: true }]) {
    const s = c.s, N = s.batch * s.seq, T = s.seq;
    const x = rng.f32(N * s.dInner), dt = rng.f32(N * s.dInner, 0.001, 0.5), a = rng.f32(s.dInner * s.dState, -4, -0.1);
    const bc = rng.f32(N * 2 * s.dState), d = rng.f32(s.dInner);
    const nSets = 3;
    const mask = c.masked ? Array.from({ length: s.batch * T * T }, (_, i) => (i % T) <= Math.floor(i / T) % T && rng.next() < 0.3 ? rng.int(1, nSets + 1) : 0) : null;
    const sets = Array.from({ length: nSets * s.dInner }, () => rng.int(0, 2));
    const bufs = new Bufs(gpu);
    const alpha = bufs.out(s.batch * s.dInner * T * T), y = bufs.out(N * s.dInner);
    const knockout = mask ? { mask: bufs.u32(mask), sets: bufs.u32(sets), nSets } : null;
    await run(ops, (rec) => {
      k.hiddenAttention(rec, { dt: bufs.f32(dt), a: bufs.f32(a), bc: bufs.f32(bc), alpha }, knockout, s);
      k.hiddenAttentionApply(rec, { alpha, x: bufs.f32(x), d: bufs.f32(d), y }, s);
    });
    const alphaWant = ref.hiddenAttention(dt, a, bc, mask, mask ? sets : null, s);
    assertClose(await read(gpu, alpha, alphaWant.length), alphaWant, TOL_F32, `hiddenAttention ${desc(s)} masked ${c.masked}`);
    assertClose(await read(gpu, y, N * s.dInner), ref.hiddenAttentionApply(alphaWant, x, d, s), TOL_F32, `hiddenAttentionApply ${desc(s)}`);
    if (!c.masked) {
      const full = Array.from({ length: s.batch }, () => T);
      assertClose(ref.hiddenAttentionApply(alphaWant, x, d, s), ref.selectiveScan(x, dt, a, bc, d, full, s), 1e-12, "reference: attention form = scan form");
    } else {
      assert(maxAbsDiff(alphaWant, ref.hiddenAttention(dt, a, bc, null, null, s)) > 1e-3, "the knockout changes alpha");
    }
    bufs.destroy();
  }
});

Deno.test("gateSilu: y * silu(z) from the z half of in_proj's output", async () => {
  const k = await getM1(), ops = k.ops, gpu = ops.gpu;
  const rng = new Rng(33);
  for (const c of [{ rows: 1, dInner: 1 }, { rows: 19, dInner: 40 }]) {
    const xz = rng.f32(c.rows * 2 * c.dInner, -6, 6), y = rng.f32(c.rows * c.dInner);
    const s = { rows: c.rows, dInner: c.dInner, zStride: 2 * c.dInner, zOffset: c.dInner };
    const bufs = new Bufs(gpu);
    const out = bufs.out(c.rows * c.dInner);
    await run(ops, (rec) => k.gateSilu(rec, { y: bufs.f32(y), xz: bufs.f32(xz), out }, s));
    assertClose(await read(gpu, out, c.rows * c.dInner), ref.gateSilu(y, xz, s), TOL_F32, `gateSilu ${desc(c)}`);
    bufs.destroy();
  }
});

Deno.test("rowsHiddenAttention and its apply: rows from the recomputed rows and the base run, channel selectors", async () => {
  const k = await getM1(), ops = k.ops, gpu = ops.gpu;
  const rng = new Rng(34);
  for (const c of [
    { lengths: [1], configs: 1, dInner: 1, dState: 1, nSel: 1 },
    { lengths: [7, 2, 5], configs: 7, dInner: 12, dState: 8, nSel: 3 },
    { lengths: [13, 20], configs: 5, dInner: 33, dState: 16, nSel: 2 },
  ]) {
    const nLayer = 3, I = c.dInner, S = c.dState;
    const sc = rowsScenario(rng, c.lengths, c.configs, nLayer, c.nSel, 4);
    const baseRows = c.lengths.length * sc.T;
    const x = rng.f32(sc.n * I), dt = rng.f32(sc.n * I, 0.001, 0.5), bc = rng.f32(sc.n * 2 * S);
    const baseX = rng.f32(baseRows * I), baseDt = rng.f32(baseRows * I, 0.001, 0.5), baseBc = rng.f32(baseRows * 2 * S);
    const a = rng.f32(I * S, -4, -0.1), d = rng.f32(I);
    const unitSel = Array.from({ length: nLayer * c.nSel * I }, () => rng.int(0, 2));
    for (const layer of [0, 1, 2]) {
      const bufs = new Bufs(gpu);
      const s = { n: sc.n, dInner: I, dState: S, maxLen: sc.T, layer, nSel: c.nSel };
      const alphaRows = bufs.out(sc.n * I * sc.T), y = bufs.out(sc.n * I);
      const want = ref.rowsHiddenAttention(sc.rowsMeta, sc.colmask, unitSel, dt, bc, baseDt, baseBc, a, s);
      // apply reads random junk beyond each row's position t (the kernel must stop at t)
      const junk = Float32Array.from(want, (v, i) => (i % sc.T) > sc.rowsMeta[Math.floor(i / (I * sc.T)) * 8] ? rng.uniform(-1, 1) : v);
      await run(ops, (rec) => {
        k.rowsHiddenAttention(rec, {
          rowsMeta: bufs.u32(sc.rowsMeta),
          colmask: bufs.u32(sc.colmask),
          unitSel: bufs.u32(unitSel),
          dt: bufs.f32(dt),
          bc: bufs.f32(bc),
          baseDt: bufs.f32(baseDt),
          baseBc: bufs.f32(baseBc),
          a: bufs.f32(a),
          alphaRows,
        }, { ...s, baseRows });
        k.rowsHiddenAttentionApply(rec, { rowsMeta: bufs.u32(sc.rowsMeta), alphaRows: bufs.f32(junk), x: bufs.f32(x), baseX: bufs.f32(baseX), d: bufs.f32(d), y }, {
          n: sc.n,
          baseRows,
          dInner: I,
          maxLen: sc.T,
        });
      });
      assertClose(await read(gpu, alphaRows, sc.n * I * sc.T), want, TOL_F32, `rowsHiddenAttention ${desc(c)} layer ${layer}`);
      assertClose(await read(gpu, y, sc.n * I), ref.rowsHiddenAttentionApply(sc.rowsMeta, junk, x, baseX, d, { n: sc.n, dInner: I, maxLen: sc.T }), TOL_F32, `rowsHiddenAttentionApply ${desc(c)} layer ${layer}`);
      bufs.destroy();
    }
  }
});

// ---------- the reference and the engine against the goldens ----------

interface Fixture {
  cfg: Mamba1Config;
  weights: ref.Weights;
  golden: GoldenEngine;
}
const fixtures = new Map<string, Promise<Fixture>>();
function fixture(dir: string): Promise<Fixture> {
  let f = fixtures.get(dir);
  if (!f) {
    fixtures.set(dir, f = (async () => {
      const ckpt = await openCheckpoint(dir);
      try {
        const weights: ref.Weights = new Map();
        for (const t of ckpt.list()) weights.set(t.name, await ckpt.readF32(t.name));
        return { cfg: ckpt.config as Mamba1Config, weights, golden: await goldenEngine(dir) };
      } finally {
        ckpt.close();
      }
    })());
  }
  return f;
}

const rowOf = (logits: ArrayLike<number>, V: number, t: number) => Array.prototype.slice.call(logits, t * V, (t + 1) * V) as number[];

for (const [name, dir, family] of [["mamba1-tiny", MAMBA1, "mamba1"], ["falcon-mamba-tiny", FALCON, "falcon_mamba"]] as const) {
  Deno.test(`${name}: the float64 reference reproduces the goldens (both forms, knockouts)`, async () => {
    const { cfg, weights, golden } = await fixture(dir);
    assertEquals(cfg.family, family);
    const V = cfg.vocabPadded;
    for (const seq of golden.sequences.slice(0, 3)) {
      for (const mode of ["scan", "attention"] as const) {
        const logits = ref.referenceForward(weights, cfg, seq.ids, { mode });
        const last = rowOf(logits, V, seq.ids.length - 1);
        check(maxAbsDiff(last, seq.last_logits) <= 1e-9 * maxAbs(seq.last_logits), `${name} ${mode} ${seq.ids.length} tokens`);
        seq.ids.forEach((_, t) => assertEquals(argmax(rowOf(logits, V, t), REAL_VOCAB), seq.argmax_per_position[t]));
      }
    }
    for (const k of golden.knockouts) {
      const logits = ref.referenceForward(weights, cfg, k.ids, { mode: "attention", knockouts: knockoutFromGolden(k.blocked_edges) });
      check(maxAbsDiff(rowOf(logits, V, k.ids.length - 1), k.last_logits) <= 1e-9 * maxAbs(k.last_logits), `${name} knockout ${JSON.stringify(k.blocked_edges)}`);
    }
  });

  Deno.test(`${name}: the engine reproduces the goldens in scan and attention mode, and the golden knockouts`, async () => {
    const { golden } = await fixture(dir);
    const model = await loadBackbone(dir, { vocabSize: REAL_VOCAB });
    try {
      assertEquals([model.info.family, model.info.unitName, model.info.unitsPerLayer, model.info.convWidth, model.info.vocabSize], [family, "channel", 64, 4, REAL_VOCAB]);
      for (const mode of ["scan", "attention"] as const) {
        const logits = await model.forward(golden.sequences.map((s) => s.ids), { mode, allPositions: true });
        assertGoldenSequences(logits, golden, model.info, LOGIT_TOL, `${name} ${mode}`);
      }
      await assertGoldenKnockouts(model, golden, LOGIT_TOL, name);
      // the decay selectors rank by: sum_n exp(A[c, n])
      const { weights, cfg } = await fixture(dir);
      const aLog = weights.get("backbone.layers.2.mixer.A_log")!;
      const decay = model.decay(2)!;
      for (let c = 0; c < cfg.dInner; c++) {
        let s = 0;
        for (let n = 0; n < cfg.dState; n++) s += Math.exp(-Math.exp(aLog[c * cfg.dState + n]));
        check(Math.abs(decay[c] - s) <= 1e-12 * s, `decay of channel ${c}`);
      }
    } finally {
      model.destroy();
    }
  });
}

Deno.test("Mamba-1 conv knockouts (the taps s -> t of blocked edges cut before the SiLU) and channel selectors against the float64 reference", async () => {
  for (const dir of [MAMBA1, FALCON]) {
    const { cfg, weights } = await fixture(dir);
    const model = await loadBackbone(dir, { vocabSize: REAL_VOCAB });
    try {
      const ids = [510, 3101, 14018, 273, 10213, 282, 11128, 6595, 2310, 310];
      const subject = [4, 5, 6, 7, 8];
      const specs: KnockoutSpec[][] = [
        [{ start: 1, end: 3, edges: flowEdges("last<-subject", ids.length, subject), conv: true }],
        [{ start: 0, end: 2, edges: flowEdges("relation<-relation", ids.length, subject), units: parseUnitSelector("not-fast:1/3"), conv: true }],
        [{ start: 2, end: 4, edges: flowEdges("subject<-subject", ids.length, subject), units: parseUnitSelector("slow:1/3") }],
        [{ start: 0, end: 4, edges: flowEdges("last<-all", ids.length, subject), units: parseUnitSelector("only:0-9+40"), conv: true }],
      ];
      const logits = await model.forward(specs.map(() => ids), { mode: "attention", knockouts: specs });
      const V = cfg.vocabPadded;
      specs.forEach((k, i) => {
        const want = rowOf(ref.referenceForward(weights, cfg, ids, { mode: "attention", knockouts: k }), V, ids.length - 1);
        check(maxAbsDiff(logits[i], want) <= LOGIT_TOL * maxAbs(want), `${dir} spec ${i}: logits off by ${maxAbsDiff(logits[i], want) / maxAbs(want)}`);
        if (k[0].conv) {
          const noConv = rowOf(ref.referenceForward(weights, cfg, ids, { mode: "attention", knockouts: [{ ...k[0], conv: false }] }), V, ids.length - 1);
          check(maxAbsDiff(noConv, want) > 1e-3 * maxAbs(want), `${dir} spec ${i}: cutting the conv taps changes the logits`);
        }
      });
    } finally {
      model.destroy();
    }
  }
});

Deno.test("Mamba-1 and Falcon-Mamba: the fast path equals the full recompute (flows, channel selectors, conv); batching", async () => {
  for (const dir of [MAMBA1, FALCON]) {
    const model = await loadBackbone(dir, { vocabSize: REAL_VOCAB });
    try {
      const { golden } = await fixture(dir);
      const prompts = golden.sequences.filter((s) => s.ids.length > 2).map((s) => s.ids);
      const configs: KnockoutConfig[] = [];
      prompts.forEach((ids, p) => {
        const subject = [1, 2];
        for (const flow of ["last<-subject", "relation<-relation", "subject<-context", "last<-last"]) {
          const edges = flowEdges(flow, ids.length, subject);
          if (edges.length === 0) continue;
          for (const heads of ["all", "fast:1/3", "not-slow:1/3"]) {
            for (const conv of [false, true]) {
              for (const start of [0, 2]) configs.push({ prompt: p, start, end: start + 2, edges, units: parseUnitSelector(heads), conv, target: 7 });
            }
          }
        }
      });
      const fast = await model.knockouts(prompts, prompts.map(() => 7), configs);
      const full = await model.forwardStats(configs.map((c) => prompts[c.prompt]), configs.map((c) => c.target), {
        mode: "attention",
        knockouts: configs.map(({ prompt: _p, target: _t, ...spec }) => [spec]),
      });
      configs.forEach((_, i) => {
        check(Math.abs(fast.results[i].trueProb - full[i].trueProb) <= 1e-4 * full[i].trueProb, `${dir} configuration ${i}: ${fast.results[i].trueProb} vs ${full[i].trueProb}`);
        assertEquals(fast.results[i].predId, full[i].predId);
      });
      // a batch of mixed lengths equals each prompt alone, in both modes
      for (const mode of ["scan", "attention"] as const) {
        const batch = await model.forward(prompts, { mode });
        for (const [i, p] of prompts.entries()) {
          const [alone] = await model.forward([p], { mode });
          check(maxAbsDiff(batch[i], alone) <= 1e-5 * maxAbs(alone), `${dir} ${mode}: prompt ${i} in a batch`);
        }
      }
    } finally {
      model.destroy();
    }
  }
});

Deno.test("Mamba-1 and Falcon-Mamba with f16 weights: within half precision of the goldens, same argmax", async () => {
  for (const dir of [MAMBA1, FALCON]) {
    const model = await loadBackbone(dir, { dtype: "f16", vocabSize: REAL_VOCAB });
    try {
      const f32 = await loadBackbone(dir, { vocabSize: REAL_VOCAB });
      check(model.weightBytes < 0.6 * f32.weightBytes, "f16 weights take about half the memory");
      f32.destroy();
      const { golden } = await fixture(dir);
      for (const mode of ["scan", "attention"] as const) {
        const logits = await model.forward(golden.sequences.map((s) => s.ids), { mode });
        golden.sequences.forEach((s, i) => {
          const err = maxAbsDiff(logits[i], s.last_logits) / maxAbs(s.last_logits);
          check(err <= 5e-3, `${dir} ${mode} f16: sequence ${i} off by ${err}`);
          assertEquals(argmax(logits[i], REAL_VOCAB), s.argmax_per_position[s.ids.length - 1]);
        });
      }
    } finally {
      model.destroy();
    }
  }
});
