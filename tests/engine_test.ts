// The engine against the float64 PyTorch goldens of the fixture model, for both checkpoint
// formats and both modes. Tolerances are the issue's: logits within 1e-4 x max|logit|,
// logsumexp within 1e-4, argmax equal at every position.
import { assert, assertEquals } from "./assert.ts";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { Mamba2Model } from "../engine/model.ts";
import type { KnockoutSpec } from "../engine/arch.ts";
import { logSumExp, argmax } from "../engine/probs.ts";
import { FIXTURE_DIR, goldenEngine, knockoutFromGolden, maxAbs, maxAbsDiff, seeded, testGpu } from "./helpers.ts";

const LOGIT_TOL = 1e-4; // relative to max |logit|
const LSE_TOL = 1e-4;
const RESIDUAL_TOL = 1e-4; // relative to max |residual| of the layer

const models = new Map<string, Promise<Mamba2Model>>();
function fixtureModel(format: "safetensors" | "pytorch"): Promise<Mamba2Model> {
  let m = models.get(format);
  if (!m) {
    m = (async () => {
      const dir = await Deno.makeTempDir();
      await Deno.copyFile(FIXTURE_DIR + "config.json", `${dir}/config.json`);
      const file = format === "safetensors" ? "model.safetensors" : "pytorch_model.bin";
      await Deno.copyFile(FIXTURE_DIR + file, `${dir}/${file}`);
      const ckpt = await openCheckpoint(dir);
      assertEquals(ckpt.format, format);
      const model = await Mamba2Model.load(await testGpu(), ckpt);
      ckpt.close();
      return model;
    })();
    models.set(format, m);
  }
  return m;
}

for (const format of ["safetensors", "pytorch"] as const) {
  for (const mode of ["scan", "attention"] as const) {
    Deno.test(`golden sequences: ${format} checkpoint, ${mode} mode`, async () => {
      const model = await fixtureModel(format);
      const V = model.config.vocabPadded, vocab = model.config.vocabSize;
      const golden = await goldenEngine();
      const { logits, residuals } = await model.forwardDetailed(golden.sequences.map((s) => s.ids), {
        mode,
        allPositions: true,
        captureResiduals: true,
      });
      golden.sequences.forEach((seq, i) => {
        const T = seq.ids.length;
        const last = logits[i].subarray((T - 1) * V, T * V);
        const err = maxAbsDiff(last, seq.last_logits) / maxAbs(seq.last_logits);
        assert(err <= LOGIT_TOL, `sequence ${i} (${T} tokens): last logits off by ${err} x max|logit|`);
        for (let t = 0; t < T; t++) {
          const lse = logSumExp(logits[i], vocab, t * V);
          assert(Math.abs(lse - seq.logsumexp_per_position[t]) <= LSE_TOL, `sequence ${i} position ${t}: logsumexp ${lse} vs ${seq.logsumexp_per_position[t]}`);
          assertEquals(argmax(logits[i], vocab, t * V), seq.argmax_per_position[t], `sequence ${i} position ${t}: argmax`);
        }
        seq.residual_after_layer?.forEach((layer, l) => {
          const want = layer.flat();
          const got = residuals![i][l];
          const rerr = maxAbsDiff(got, want) / maxAbs(want);
          assert(rerr <= RESIDUAL_TOL, `sequence ${i} residual after layer ${l}: off by ${rerr} relative`);
        });
      });
      assert(golden.sequences.some((s) => s.residual_after_layer), "the golden file has a residual-stream sequence");
    });
  }

  Deno.test(`golden knockouts: ${format} checkpoint, attention mode`, async () => {
    const model = await fixtureModel(format);
    const golden = await goldenEngine();
    const logits = await model.forward(golden.knockouts.map((k) => k.ids), {
      mode: "attention",
      knockouts: golden.knockouts.map((k) => knockoutFromGolden(k.blocked_edges)),
    });
    golden.knockouts.forEach((k, i) => {
      const err = maxAbsDiff(logits[i], k.last_logits) / maxAbs(k.last_logits);
      assert(err <= LOGIT_TOL, `knockout ${i} (${JSON.stringify(k.blocked_edges)}): logits off by ${err}`);
    });
    // and the knockouts matter: the unblocked run differs from each golden knockout
    const plain = await model.forward(golden.knockouts.map((k) => k.ids), { mode: "attention" });
    golden.knockouts.forEach((k, i) => {
      assert(maxAbsDiff(plain[i], k.last_logits) / maxAbs(k.last_logits) > 10 * LOGIT_TOL, `knockout ${i} changes nothing`);
    });
  });
}

function randomPrompts(seed: number, count: number, maxLen: number): number[][] {
  const r = seeded(seed);
  return Array.from({ length: count }, () => Array.from({ length: 1 + Math.floor(r() * maxLen) }, () => Math.floor(r() * 50277)));
}

Deno.test("scan and attention modes agree on random prompts", async () => {
  const model = await fixtureModel("safetensors");
  const prompts = randomPrompts(7, 12, 40);
  const scan = await model.forward(prompts, { mode: "scan" });
  const attn = await model.forward(prompts, { mode: "attention" });
  prompts.forEach((p, i) => {
    const err = maxAbsDiff(scan[i], attn[i]) / maxAbs(scan[i]);
    assert(err <= LOGIT_TOL, `prompt ${i} (${p.length} tokens): modes differ by ${err}`);
  });
});

Deno.test("a batch of mixed-length prompts equals each prompt run alone", async () => {
  const model = await fixtureModel("safetensors");
  const prompts = randomPrompts(11, 6, 20);
  for (const mode of ["scan", "attention"] as const) {
    const batched = await model.forward(prompts, { mode, allPositions: true });
    for (let i = 0; i < prompts.length; i++) {
      const [alone] = await model.forward([prompts[i]], { mode, allPositions: true });
      assertEquals(batched[i].length, prompts[i].length * model.config.vocabPadded);
      const err = maxAbsDiff(batched[i], alone) / maxAbs(alone);
      assert(err <= 1e-6, `${mode}: prompt ${i} batched vs alone differs by ${err}`);
    }
  }
});

Deno.test("knockouts of one prompt in a batch leave the others untouched", async () => {
  const model = await fixtureModel("safetensors");
  const prompts = randomPrompts(5, 3, 12).map((p) => [...p, 42, 43]);
  const ko: KnockoutSpec[] = [{ start: 2, end: 3, edges: [[prompts[1].length - 1, 0]] }];
  const plain = await model.forward(prompts, { mode: "attention" });
  const blocked = await model.forward(prompts, { mode: "attention", knockouts: [undefined, ko, undefined] });
  assert(maxAbsDiff(plain[0], blocked[0]) <= 1e-6 * maxAbs(plain[0]));
  assert(maxAbsDiff(plain[2], blocked[2]) <= 1e-6 * maxAbs(plain[2]));
  assert(maxAbsDiff(plain[1], blocked[1]) > 1e-4 * maxAbs(plain[1]), "the knocked-out prompt changed");
});

Deno.test("bad engine input gives one clear error", async () => {
  const model = await fixtureModel("safetensors");
  const bad: [number[][], Parameters<Mamba2Model["forward"]>[1], RegExp][] = [
    [[[1, 2, 50277]], { mode: "scan" }, /token id 50277 is out of range/],
    [[[1, -1]], { mode: "scan" }, /token id -1 is out of range/],
    [[[]], { mode: "scan" }, /empty/],
    [[[1, 2]], { mode: "scan", knockouts: [[{ start: 0, end: 1, edges: [[1, 0]] }]] }, /attention mode/],
    [[[1, 2]], { mode: "attention", knockouts: [[{ start: 0, end: 1, edges: [[1, 2]] }]] }, /invalid/],
    [[[1, 2]], { mode: "attention", knockouts: [[{ start: 6, end: 7, edges: [[1, 0]] }]] }, /window \[6, 7\) is not within/],
  ];
  for (const [prompts, opts, re] of bad) {
    let msg = "";
    try {
      await model.forward(prompts, opts);
    } catch (e) {
      msg = (e as Error).message;
    }
    assert(re.test(msg), `expected ${re}, got "${msg}"`);
    assert(!msg.includes("\n"), "one line");
  }
});
