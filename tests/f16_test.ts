// The fixture model with f16 weights (loadModel(..., {dtype: "f16"})) against the float64
// goldens: the same argmax at every position of every golden sequence, and last-position logits
// within 2e-2 x max|logit| — in both modes, with the halves read packed (any adapter; also on an
// adapter made to lack shader-f16) and, where the adapter has it, as shader-f16 values.
// f32 stays the default: its own goldens are tests/engine_test.ts.
import { assert, assertEquals } from "./assert.ts";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import type { Backbone } from "../engine/backbone.ts";
import type { F16Kernel } from "../engine/matmul.ts";
import type { Gpu } from "../engine/gpu.ts";
import { loadModel } from "../engine/families.ts";
import { assertGoldenKnockouts, assertGoldenSequences, FIXTURE_DIR, goldenEngine, loadBackbone, testGpu } from "./helpers.ts";

const LOGIT_TOL = 2e-2; // relative to max |logit|

function loadF16(gpu: Gpu, f16Kernel: F16Kernel): Promise<Backbone> {
  return loadBackbone(FIXTURE_DIR, { gpu, dtype: "f16", f16Kernel });
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
      const golden = await goldenEngine();
      for (const mode of ["scan", "attention"] as const) {
        const logits = await model.forward(golden.sequences.map((s) => s.ids), { mode, allPositions: true });
        assertGoldenSequences(logits, golden, model.info, LOGIT_TOL, mode);
      }
      // knockouts go through the same matmuls
      await assertGoldenKnockouts(model, golden, LOGIT_TOL, "f16");
    } finally {
      model.destroy();
    }
  });
}

Deno.test("f16 weights take half the memory of f32 and next-token statistics agree", async () => {
  const ckpt = await openCheckpoint(FIXTURE_DIR);
  const f32 = await loadBackbone(ckpt);
  const f16 = await loadBackbone(ckpt, { dtype: "f16" });
  ckpt.close();
  try {
    assertEquals(f32.dtype, "f32");
    const bytes = (m: Backbone) => m.lmHead.chunks.reduce((s, c) => s + c.buffer.size, 0);
    assertEquals(bytes(f16) * 2, bytes(f32));
    // the matrices (all but a few vectors) take half the bytes
    assert(f16.weightBytes < 0.51 * f32.weightBytes && f16.weightBytes > 0.49 * f32.weightBytes, `f16 ${f16.weightBytes} vs f32 ${f32.weightBytes} bytes`);
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
    await loadModel(gpu, ckpt, { dtype: "bf16" as "f16" });
  } catch (e) {
    msg = (e as Error).message;
  } finally {
    ckpt.close();
  }
  assert(/unknown dtype bf16/.test(msg), `got "${msg}"`);
});
