// The fixture model with f16 weights (Mamba2Model.load(..., {dtype: "f16"})) against the float64
// goldens: the same argmax at every position of every golden sequence, and last-position logits
// within 2e-2 x max|logit| — in both modes, with the halves read packed (any adapter; also on an
// adapter made to lack shader-f16) and, where the adapter has it, as shader-f16 values.
// f32 stays the default: its own goldens are tests/engine_test.ts.
import { assert, assertEquals } from "./assert.ts";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { Mamba2Model } from "../engine/model.ts";
import type { F16Kernel } from "../engine/ops.ts";
import type { Gpu } from "../engine/gpu.ts";
import { argmax } from "../engine/probs.ts";
import { FIXTURE_DIR, goldenEngine, knockoutFromGolden, maxAbs, maxAbsDiff, testGpu } from "./helpers.ts";

const LOGIT_TOL = 2e-2; // relative to max |logit|

async function loadF16(gpu: Gpu, f16Kernel: F16Kernel): Promise<Mamba2Model> {
  const ckpt = await openCheckpoint(FIXTURE_DIR);
  try {
    return await Mamba2Model.load(gpu, ckpt, { dtype: "f16", f16Kernel });
  } finally {
    ckpt.close();
  }
}

const variants: { name: string; gpu: () => Promise<Gpu | null>; kernel: F16Kernel }[] = [
  { name: "packed halves", gpu: testGpu, kernel: "packed" },
  // the same device, presented as one without shader-f16: only the packed path may be used
  { name: "packed halves, adapter without shader-f16", gpu: async () => ({ ...(await testGpu()), hasF16: false }), kernel: "packed" },
  { name: "shader-f16 halves", gpu: async () => ((await testGpu()).hasF16 ? testGpu() : null), kernel: "native" },
];

for (const v of variants) {
  Deno.test(`f16 weights (${v.name}): argmax and logits against the goldens, both modes`, async (t) => {
    const gpu = await v.gpu();
    if (!gpu) {
      await t.step({ name: "adapter lacks shader-f16", ignore: true, fn: () => {} });
      return;
    }
    const model = await loadF16(gpu, v.kernel);
    try {
      assertEquals(model.dtype, "f16");
      assertEquals(model.lmHead.dtype, "f16");
      assertEquals(model.layers[0].inProj.dtype, "f16");
      const V = model.config.vocabPadded, vocab = model.config.vocabSize;
      const golden = await goldenEngine();
      for (const mode of ["scan", "attention"] as const) {
        const logits = await model.forward(golden.sequences.map((s) => s.ids), { mode, allPositions: true });
        golden.sequences.forEach((seq, i) => {
          const T = seq.ids.length;
          const last = logits[i].subarray((T - 1) * V, T * V);
          const err = maxAbsDiff(last, seq.last_logits) / maxAbs(seq.last_logits);
          assert(err <= LOGIT_TOL, `${mode}: sequence ${i}: last logits off by ${err} x max|logit|`);
          for (let p = 0; p < T; p++) {
            assertEquals(argmax(logits[i], vocab, p * V), seq.argmax_per_position[p], `${mode}: sequence ${i} position ${p}: argmax`);
          }
        });
      }
      // knockouts go through the same matmuls
      const ko = await model.forward(golden.knockouts.map((k) => k.ids), {
        mode: "attention",
        knockouts: golden.knockouts.map((k) => knockoutFromGolden(k.blocked_edges)),
      });
      golden.knockouts.forEach((k, i) => {
        const err = maxAbsDiff(ko[i], k.last_logits) / maxAbs(k.last_logits);
        assert(err <= LOGIT_TOL, `knockout ${i}: logits off by ${err}`);
      });
    } finally {
      model.destroy();
    }
  });
}

Deno.test("f16 weights take half the memory of f32 and next-token statistics agree", async () => {
  const gpu = await testGpu();
  const ckpt = await openCheckpoint(FIXTURE_DIR);
  const f32 = await Mamba2Model.load(gpu, ckpt);
  const f16 = await Mamba2Model.load(gpu, ckpt, { dtype: "f16" });
  ckpt.close();
  try {
    assertEquals(f32.dtype, "f32");
    const bytes = (m: Mamba2Model) => m.lmHead.chunks.reduce((s, c) => s + c.buffer.size, 0);
    assertEquals(bytes(f16) * 2, bytes(f32));
    const golden = await goldenEngine();
    const prompts = golden.sequences.map((s) => s.ids);
    const targets = golden.sequences.map((s) => s.argmax_per_position.at(-1)!);
    const a = await f32.forwardStats(prompts, targets, { mode: "scan" });
    const b = await f16.forwardStats(prompts, targets, { mode: "scan" });
    a.forEach((s, i) => {
      assertEquals(b[i].predId, s.predId, `prompt ${i}: argmax`);
      assert(Math.abs(b[i].trueProb - s.trueProb) <= 2e-2 * Math.max(s.trueProb, 1e-3) + 1e-3, `prompt ${i}: p(target) ${b[i].trueProb} vs ${s.trueProb}`);
    });
  } finally {
    f32.destroy();
    f16.destroy();
  }
});

Deno.test("an unknown dtype is one clear error", async () => {
  const gpu = await testGpu();
  const ckpt = await openCheckpoint(FIXTURE_DIR);
  let msg = "";
  try {
    await Mamba2Model.load(gpu, ckpt, { dtype: "bf16" as "f16" });
  } catch (e) {
    msg = (e as Error).message;
  } finally {
    ckpt.close();
  }
  assert(/unknown dtype bf16/.test(msg), `got "${msg}"`);
});
