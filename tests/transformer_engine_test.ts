// The Transformer families' full forward on the four fixtures (Pythia, GPT-2, Llama, Qwen2; F16
// weights, float64 goldens from independent references): the float64 reference itself against the
// goldens, then the GPU forward against the goldens (last logits within 1e-4 of the largest |logit|,
// plain and with the 3 knockout cases), the argmax at every position, f16 storage, the residual
// stream after every layer, batching, per-head knockouts, and one-line errors.
import { assert, assertEquals, assertRejects, assertThrows } from "./assert.ts";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import type { KnockoutSpec } from "../engine/arch.ts";
import { referenceForward, type RefKnockout } from "./reference/transformer.ts";
import { knockoutFromGolden } from "./helpers.ts";
import { type Fixture, fixtureDir, fixtureModel, FIXTURES, goldenEngine, referenceTensors, relErr } from "./transformer_helpers.ts";

const LOGIT_TOL = 1e-4; // relative to the largest |logit| (the bound)

const specsOf = knockoutFromGolden;

async function reference(f: Fixture, ids: number[], ko: RefKnockout[] = []) {
  const ckpt = await openCheckpoint(fixtureDir(f));
  try {
    const t = referenceTensors(ckpt);
    return await referenceForward(ckpt.config.raw, t.get, t.has, ids, ko);
  } finally {
    ckpt.close();
  }
}

for (const f of FIXTURES) {
  Deno.test(`${f}: the float64 reference reproduces the golden logits (so it can judge the engine)`, async () => {
    const g = await goldenEngine(f);
    for (const s of [...g.sequences, ...g.knockouts.map((k) => ({ ...k, ko: specsOf(k.blocked_edges) }))]) {
      const r = await reference(f, s.ids, "ko" in s ? s.ko : []);
      const T = s.ids.length;
      const e = relErr(r.logits.subarray((T - 1) * r.vocabRows, T * r.vocabRows), s.last_logits);
      assert(e < 1e-8, `${f} reference, ${T} tokens${"ko" in s ? " with knockouts" : ""}: ${e}`);
    }
  });

  Deno.test(`${f}: GPU forward = golden last logits, plain and with the 3 knockout cases; argmax at every position`, async () => {
    const m = await fixtureModel(f);
    const g = await goldenEngine(f);
    assertEquals(m.info.vocabPadded, g.sequences[0].last_logits.length);
    const plain = await m.forward(g.sequences.map((s) => s.ids), { mode: "attention" });
    g.sequences.forEach((s, i) => {
      const e = relErr(plain[i], s.last_logits);
      assert(e < LOGIT_TOL, `${f}, ${s.ids.length} tokens: ${e}`);
    });
    const ko = await m.forward(g.knockouts.map((k) => k.ids), { mode: "attention", knockouts: g.knockouts.map((k) => specsOf(k.blocked_edges)) });
    g.knockouts.forEach((k, i) => {
      const e = relErr(ko[i], k.last_logits);
      assert(e < LOGIT_TOL, `${f}, knockout ${i}: ${e}`);
      // the knockout changed something: the test would notice a knockout that does nothing
      assert(relErr(ko[i], plain[2]) > 100 * e, `${f}, knockout ${i} has no effect`);
    });
    const all = await m.forward(g.sequences.map((s) => s.ids), { mode: "attention", allPositions: true });
    g.sequences.forEach((s, i) => {
      const V = m.info.vocabPadded;
      s.argmax_per_position.forEach((want, t) => {
        const row = all[i].subarray(t * V, (t + 1) * V);
        let best = 0;
        for (let v = 1; v < V; v++) if (row[v] > row[best]) best = v;
        assert(best === want || Math.abs(row[best] - row[want]) < 1e-5 * Math.abs(row[want]), `${f}: argmax at position ${t}: ${best}, want ${want}`);
      });
    });
  });

  Deno.test(`${f}: f16 weights on the GPU give the same logits (the fixture's weights are F16)`, async () => {
    const m32 = await fixtureModel(f), m16 = await fixtureModel(f, "f16");
    const g = await goldenEngine(f);
    const ids = g.sequences.map((s) => s.ids);
    const a = await m32.forward(ids, { mode: "attention" }), b = await m16.forward(ids, { mode: "attention" });
    ids.forEach((_, i) => {
      assert(relErr(b[i], g.sequences[i].last_logits) < LOGIT_TOL, `${f} f16 vs golden`);
      assert(relErr(b[i], a[i]) < 1e-5, `${f} f16 vs f32`);
    });
  });

  Deno.test(`${f}: residual stream after every layer = the float64 reference; batching changes nothing`, async () => {
    const m = await fixtureModel(f);
    const g = await goldenEngine(f);
    const ids = g.sequences[2].ids;
    const r = await reference(f, ids);
    const got = await m.forwardDetailed([ids], { mode: "attention", captureResiduals: true });
    assertEquals(got.residuals![0].length, m.info.nLayer);
    r.residuals.forEach((want, l) => assert(relErr(got.residuals![0][l], want) < 1e-5, `${f} residual after layer ${l}`));
    // the three sequences together (padded, sorted by length inside) = each alone
    const together = await m.forward(g.sequences.map((s) => s.ids), { mode: "attention" });
    for (let i = 0; i < 3; i++) {
      const alone = await m.forward([g.sequences[i].ids], { mode: "attention" });
      assert(relErr(together[i], alone[0]) < 1e-6, `${f}: sequence ${i} in a batch vs alone`);
    }
  });
}

Deno.test("knockouts in chosen heads only (only:…), over several windows: GPU = float64 reference", async () => {
  for (const f of ["llama", "pythia"] as Fixture[]) {
    const m = await fixtureModel(f);
    const ids = (await goldenEngine(f)).sequences[2].ids;
    const T = ids.length;
    const specs: KnockoutSpec[] = [
      { start: 0, end: 2, edges: [[T - 1, 2], [T - 1, 3], [6, 0]], units: { kind: "only", units: [1, 3] } },
      { start: 2, end: 4, edges: Array.from({ length: T }, (_, s) => [T - 1, s] as [number, number]), units: { kind: "only", units: [0] } },
    ];
    const got = await m.forward([ids], { mode: "attention", knockouts: [specs] });
    const want = await reference(f, ids, specs.map((s) => ({ start: s.start, end: s.end, edges: s.edges, heads: s.units!.kind === "only" ? s.units!.units : undefined })));
    const V = want.vocabRows;
    const e = relErr(got[0], want.logits.subarray((T - 1) * V, T * V));
    assert(e < 1e-5, `${f} per-head knockouts: ${e}`);
    const allHeads = await m.forward([ids], { mode: "attention", knockouts: [specs.map((s) => ({ ...s, units: { kind: "all" as const } }))] });
    assert(relErr(allHeads[0], got[0]) > 1e-3, `${f}: choosing heads made no difference`);
  }
});

Deno.test("Transformer model: info, selectors and one-line errors (the backbone's checks)", async () => {
  const m = await fixtureModel("pythia");
  assertEquals(m.info.family, "gpt_neox");
  assertEquals(m.info.modes, ["attention"]);
  assertEquals([m.info.unitName, m.info.unitsPerLayer, m.info.convWidth, m.info.vocabSize, m.info.vocabPadded], ["head", 4, 0, 50277, 50304]);
  assertEquals(m.decay(0), null);
  assertEquals(m.selectUnits(1, { kind: "all" }), [0, 1, 2, 3]);
  assertEquals(m.selectUnits(1, { kind: "only", units: [3, 1, 3] }), [1, 3]);
  const oneLine = (e: Error) => assert(!e.message.includes("\n"), `not one line: ${e.message}`);
  oneLine(assertThrows(() => m.selectUnits(0, { kind: "fast", a: 1, b: 3 }), /decay.*use all or only/));
  oneLine(assertThrows(() => m.selectUnits(0, { kind: "only", units: [4] }), /unit 4 does not exist/));
  const ok = [[1, 2, 3]];
  oneLine(await assertRejects(() => m.forward(ok, { mode: "scan" }), /unknown mode scan: gpt_neox models run in attention mode/));
  oneLine(await assertRejects(() => m.forward([[]], { mode: "attention" }), /empty/));
  oneLine(await assertRejects(() => m.forward([[50277]], { mode: "attention" }), /out of range/));
  oneLine(await assertRejects(() => m.forward(ok, { mode: "attention", knockouts: [[{ start: 0, end: 1, edges: [[1, 2]] }]] }), /edge \(1,2\) is invalid/));
  oneLine(await assertRejects(() => m.forward(ok, { mode: "attention", knockouts: [[{ start: 3, end: 5, edges: [] }]] }), /not within the model's 4 layers/));
  oneLine(await assertRejects(() => m.forward(ok, { mode: "attention", knockouts: [[{ start: 0, end: 1, edges: [[2, 0]], conv: true }]] }), /conv knockouts need a conv path, which gpt_neox models do not have/));
  oneLine(await assertRejects(() => m.forwardStats(ok, [60000], { mode: "attention" }), /target id 60000/));
  const gpt2 = await fixtureModel("gpt2");
  oneLine(await assertRejects(() => gpt2.forward([new Array(65).fill(1)], { mode: "attention" }), /65 tokens; gpt2 models have positions for 64 only/));
  // after the errors the model still works
  assertEquals((await m.forward(ok, { mode: "attention" }))[0].length, 50304);
});

Deno.test("infer on a Transformer: attention mode by default, softmax over the tokenizer's ids, knockouts by --block", async () => {
  const { runDeno } = await import("./helpers.ts");
  const { topK } = await import("../engine/probs.ts");
  const g = await goldenEngine("pythia");
  const s = g.sequences[2], k = g.knockouts[0];
  const r = await runDeno(["run", "-A", "engine/infer.ts", "--model", fixtureDir("pythia"), "--ids", s.ids.join(","), "--json", "--top", "3"]);
  assertEquals(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert(relErr(out.last_logits, s.last_logits) < LOGIT_TOL, "infer logits vs golden");
  const want = topK(s.last_logits, 50277, 3);
  out.top.forEach((t: { id: number; prob: number }, i: number) => {
    assertEquals(t.id, want[i].id);
    assert(Math.abs(t.prob - want[i].prob) <= 1e-4 * want[i].prob, `top ${i}: ${t.prob} vs ${want[i].prob} (softmax over 50277 ids)`);
  });
  const [layer, edges] = Object.entries(k.blocked_edges)[0];
  const T = k.ids.length;
  const cols = edges.filter(([t]) => t === T - 1).map(([, c]) => c);
  // the first golden knockout blocks edges of the last row in one layer: one --block says it
  assertEquals([Object.keys(k.blocked_edges).length, cols.length], [1, edges.length]);
  const b = await runDeno(["run", "-A", "engine/infer.ts", "--model", fixtureDir("pythia"), "--ids", k.ids.join(","), "--mode", "attention", "--block", `${layer}:last>${cols.join(",")}`, "--json"]);
  assertEquals(b.code, 0, b.stderr);
  assert(relErr(JSON.parse(b.stdout).last_logits, k.last_logits) < LOGIT_TOL, "infer --block vs golden knockout");
});
