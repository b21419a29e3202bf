// NaN/Inf weights are refused at load (issue 11, item 4, the weights part): the checkpoint's read
// path counts non-finite values of every tensor as it is read, in every storage dtype, and the
// first tensor with any ends the load in one line with its name and the count.

import assert from "node:assert/strict";
import { countNonFinite } from "../engine/checkpoint/dtype.ts";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import {
  f32Bytes,
  isolatedTest,
  modelDir,
  rejects,
  safetensorsBytes,
  stateDictPickle,
  torchZip,
  u16Bytes,
  withTempDir,
} from "./hardening_fixtures.ts";

isolatedTest("countNonFinite: NaN and ±Inf in F32, F16 and BF16 bits; everything else finite", () => {
  assert.deepEqual(countNonFinite(f32Bytes([0, 1, NaN, -Infinity, 3.4e38, Infinity, -0]), "F32"), { count: 3, first: 2 });
  assert.deepEqual(countNonFinite(f32Bytes([1, 2, 3]), "F32"), { count: 0, first: -1 });
  // F16: 0x7c00 Inf, 0xfe00 NaN, 0x7bff the largest finite, 0x0001 the smallest subnormal
  assert.deepEqual(countNonFinite(u16Bytes([0x7bff, 0x0001, 0x7c00, 0xfe00]), "F16"), { count: 2, first: 2 });
  // BF16: 0xff80 -Inf, 0x7fc0 NaN, 0x7f7f the largest finite
  assert.deepEqual(countNonFinite(u16Bytes([0x7f7f, 0xff80, 0x3f80, 0x7fc0]), "BF16"), { count: 2, first: 1 });
});

// [dtype, a finite tensor, a tensor with `count` non-finite values, the first at `first`]
for (const [dtype, good, bad, count, first] of [
  ["F32", f32Bytes([1, 2, 3, 4]), f32Bytes([1, NaN, Infinity, NaN]), 3, 1],
  ["F16", u16Bytes([0x3c00, 0x4000, 0x4200, 0x4400]), u16Bytes([0x3c00, 0x4000, 0x7c00, 0xfe00]), 2, 2],
  ["BF16", u16Bytes([0x3f80, 0x4000, 0x4040, 0x4080]), u16Bytes([0x7fc0, 0x4000, 0xff80, 0x7f80]), 3, 0],
] as const) {
  isolatedTest(`non-finite ${dtype} weights: readF32 and readF16 refuse the tensor, naming it and the count`, async () => {
    await withTempDir(async (dir) => {
      const entries = [
        { name: "fine", dtype, shape: [4], offsets: [0, good.length] as [number, number] },
        { name: "broken.weight", dtype, shape: [2, 2], offsets: [good.length, good.length + bad.length] as [number, number] },
      ];
      await modelDir(dir, { "model.safetensors": safetensorsBytes({ entries, data: new Uint8Array([...good, ...bad]) }) });
      const ckpt = await openCheckpoint(dir);
      try {
        assert.equal((await ckpt.readF32("fine")).length, 4);
        assert.equal((await ckpt.readF16("fine")).length, 4);
        const want = new RegExp(
          `^${dir.replace(/[.]/g, "\\.")}.*/model\\.safetensors: tensor 'broken\\.weight' \\[2, 2\\] has ${count} non-finite values \\(NaN or Inf; the first at element ${first}\\); the weights are corrupt, download or export them again$`,
        );
        await rejects(ckpt.readF32("broken.weight"), "CheckpointError", want);
        await rejects(ckpt.readF16("broken.weight"), "CheckpointError", want);
      } finally {
        ckpt.close();
      }
    });
  });
}

isolatedTest("non-finite weights in pytorch_model.bin are refused the same way", async () => {
  await withTempDir(async (dir) => {
    await modelDir(dir, {
      "pytorch_model.bin": torchZip(stateDictPickle("w", 4), [{ name: "0", data: f32Bytes([1, 2, -Infinity, 4]), method: 0 }]),
    });
    const ckpt = await openCheckpoint(dir);
    try {
      await rejects(ckpt.readF32("w"), "CheckpointError", /pytorch_model\.bin: tensor 'w' \[4\] has 1 non-finite value \(NaN or Inf; the first at element 2\)/);
    } finally {
      ckpt.close();
    }
  });
});
