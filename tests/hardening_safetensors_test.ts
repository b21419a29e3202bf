// safetensors headers the reference implementation (huggingface/safetensors, Metadata::validate)
// refuses (issue 11, item 7): sorted by offsets, the tensors must tile the data exactly: no overlap
// (aliased weights), no gap, nothing after the last one. Shard indexes may only name plain
// *.safetensors files beside them.

import assert from "node:assert/strict";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import {
  f32Bytes,
  isolatedTest,
  modelDir,
  rejects,
  type SafetensorsEntry,
  safetensorsBytes,
  withTempDir,
} from "./hardening_fixtures.ts";

const f32 = (name: string, n: number, begin: number): SafetensorsEntry => ({
  name,
  dtype: "F32",
  shape: [n],
  offsets: [begin, begin + 4 * n],
});

async function open(entries: SafetensorsEntry[], dataBytes: number) {
  return await withTempDir(async (dir) => {
    const data = f32Bytes(Array.from({ length: dataBytes / 4 }, (_, i) => i));
    await modelDir(dir, { "model.safetensors": safetensorsBytes({ entries, data }) });
    const ckpt = await openCheckpoint(dir);
    const values = Object.fromEntries(
      await Promise.all(ckpt.list().map(async (t) => [t.name, [...await ckpt.readF32(t.name)]])),
    );
    ckpt.close();
    return values;
  });
}

isolatedTest("safetensors: tensors that tile the data in any header order load (zero-size ones too)", async () => {
  const values = await open([f32("b", 2, 8), f32("empty", 0, 8), f32("a", 2, 0), f32("c", 1, 16)], 20);
  assert.deepEqual(values, { b: [2, 3], empty: [], a: [0, 1], c: [4] });
});

isolatedTest("safetensors: overlapping tensors (aliased weights) are refused, naming both", async () => {
  await rejects(
    open([f32("embedding", 4, 0), f32("lm_head", 4, 8)], 24),
    "CheckpointError",
    /model\.safetensors: tensors 'embedding' and 'lm_head' overlap \(data bytes 8\.\.16 belong to both\): aliased weights; the file is corrupt \(the safetensors library refuses it too\)$/,
  );
  // the same bytes under two names
  await rejects(open([f32("a", 2, 0), f32("b", 2, 0)], 8), "CheckpointError", /tensors 'a' and 'b' overlap/);
});

isolatedTest("safetensors: gaps and trailing bytes are refused as the reference does", async () => {
  await rejects(
    open([f32("a", 1, 0), f32("b", 1, 8)], 12),
    "CheckpointError",
    /data bytes 4\.\.8 between tensors 'a' and 'b' belong to no tensor/,
  );
  await rejects(open([f32("a", 1, 4)], 8), "CheckpointError", /data bytes 0\.\.4 before the first tensor belong to no tensor/);
  await rejects(open([f32("a", 1, 0)], 8), "CheckpointError", /4 bytes after the last tensor belong to no tensor/);
});

isolatedTest("safetensors: offsets beyond the file still read as truncation, and absurd sizes are refused", async () => {
  await rejects(open([f32("a", 4, 0)], 8), "CheckpointError", /truncated \(tensor 'a' ends at byte \d+ but the file has \d+\); download it again/);
  await rejects(
    open([{ name: "huge", dtype: "F32", shape: [2 ** 40, 2 ** 40], offsets: [0, 8] }], 8),
    "CheckpointError",
    /tensor 'huge' \(F32 \[1099511627776, 1099511627776\]\) is impossibly large/,
  );
});

isolatedTest("safetensors: the whole header is validated, including tensors of other dtypes", async () => {
  const entries: SafetensorsEntry[] = [
    f32("w", 2, 0),
    { name: "steps", dtype: "I64", shape: [1], offsets: [4, 12] }, // overlaps w, and is not even readable
  ];
  await rejects(open(entries, 12), "CheckpointError", /tensors 'w' and 'steps' overlap/);
});

isolatedTest("sharded safetensors: the index may only name plain *.safetensors files beside it", async () => {
  for (const shard of ["../outside.safetensors", "/etc/passwd", "sub/dir.safetensors", "config.json", ".hidden.safetensors"]) {
    await withTempDir(async (dir) => {
      await modelDir(dir, {
        "model.safetensors.index.json": new TextEncoder().encode(JSON.stringify({ weight_map: { w: shard } })),
      });
      await rejects(
        openCheckpoint(dir),
        "CheckpointError",
        new RegExp(`weight_map entry for 'w' is ${JSON.stringify(JSON.stringify(shard)).slice(1, -1).replace(/[./]/g, "\\$&")}, not a plain \\*\\.safetensors file name`),
      );
    });
  }
});

isolatedTest("sharded safetensors: a shard's tiling is checked over all its tensors, listed or not", async () => {
  await withTempDir(async (dir) => {
    const shard = safetensorsBytes({ entries: [f32("w", 2, 0), f32("unlisted", 2, 4)], data: f32Bytes([1, 2, 3]) });
    await modelDir(dir, {
      "model-00001-of-00001.safetensors": shard,
      "model.safetensors.index.json": new TextEncoder().encode(
        JSON.stringify({ weight_map: { w: "model-00001-of-00001.safetensors" } }),
      ),
    });
    await rejects(openCheckpoint(dir), "CheckpointError", /tensors 'w' and 'unlisted' overlap/);
  });
});
