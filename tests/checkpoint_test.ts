// Checkpoint loading: both fixture formats, crafted torch.save files (dtypes, strides, zip64,
// deflate, malicious pickles), truncation and other one-line errors, dtype conversions, the
// Hugging Face cache and downloads from a local stand-in for the Hub.
//
// Crafted files come from tests/fixtures/crafted/make_crafted.py (numpy gives the expected values).

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { CheckpointError, expectModelTensors, hfCacheDir, openCheckpoint } from "../engine/checkpoint/mod.ts";
import { bytesToFloat32, bytesToHalf, floatBitsToHalfBits, halfBitsToFloatBits } from "../engine/checkpoint/dtype.ts";
import { identityCachePath } from "../engine/checkpoint/identity.ts";
import { isolatedTest, safetensorsBytes, type SafetensorsTensor, standInHub, u16Bytes } from "./hardening_fixtures.ts";

const FIXTURE = new URL("./fixtures/mamba2-tiny", import.meta.url).pathname;
const CRAFTED = new URL("./fixtures/crafted", import.meta.url).pathname;

// Every test runs through isolatedTest: a private HOME (the identity cache lives there), no Hugging
// Face settings from the machine, the environment restored afterwards, and the file lock that keeps
// it from changing HOME while another test file's isolated test runs.

/** The error is a one-line CheckpointError matching `pattern`; returns its message. */
function expectCheckpointError(e: unknown, pattern: RegExp): string {
  assert.ok(e instanceof CheckpointError, `expected CheckpointError, got ${e}`);
  assert.ok(!e.message.includes("\n"), `error is not one line: ${e.message}`);
  assert.match(e.message, pattern);
  return e.message;
}

async function rejectsWith(promise: Promise<unknown>, pattern: RegExp): Promise<string> {
  try {
    await promise;
  } catch (e) {
    return expectCheckpointError(e, pattern);
  }
  throw new assert.AssertionError({ message: `expected a CheckpointError matching ${pattern}` });
}

function throwsWith(fn: () => unknown, pattern: RegExp): string {
  try {
    fn();
  } catch (e) {
    return expectCheckpointError(e, pattern);
  }
  throw new assert.AssertionError({ message: `expected a CheckpointError matching ${pattern}` });
}

async function withTempDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "ckpt-test-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A checkpoint directory holding config.json and only the named fixture weight file (symlinked). */
async function fixtureWith(dir: string, weightFile: string, config?: Record<string, unknown>): Promise<string> {
  if (config) await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
  else await Deno.symlink(`${FIXTURE}/config.json`, `${dir}/config.json`);
  await Deno.symlink(`${FIXTURE}/${weightFile}`, `${dir}/${weightFile}`);
  return dir;
}

function fixtureConfig(): Record<string, unknown> {
  return JSON.parse(Deno.readTextFileSync(`${FIXTURE}/config.json`));
}

function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

// ---------------------------------------------------------------------------------------------
// The real fixture

isolatedTest("fixture: safetensors preferred; both formats hold the same tensors bit for bit", async () => {
  const st = await openCheckpoint(FIXTURE);
  await withTempDir(async (dir) => {
    const pt = await openCheckpoint(await fixtureWith(dir, "pytorch_model.bin"));
    try {
      assert.equal(st.format, "safetensors");
      assert.equal(pt.format, "pytorch");
      assert.equal(st.config.nLayer, 6);
      assert.equal(st.list().length, 2 + 6 * 9);
      assert.deepEqual(
        pt.list().map((t) => t.name).sort(),
        [...st.list().map((t) => t.name), "lm_head.weight"].sort(),
      );
      // Read the .bin tensors concurrently: reads share one file handle and the tied storage.
      const names = st.list().map((t) => t.name);
      const fromBin = await Promise.all(names.map((n) => pt.readF32(n)));
      for (const [i, name] of names.entries()) {
        assert.deepEqual(pt.info(name), st.info(name));
        assert.equal(st.info(name).dtype, "F32");
        const a = bitsOf(await st.readF32(name));
        const b = bitsOf(fromBin[i]);
        assert.equal(a.length, st.info(name).shape.reduce((x, y) => x * y, 1), name);
        assert.ok(a.every((v, j) => v === b[j]), `${name} differs between the formats`);
      }
      expectModelTensors(st);
      expectModelTensors(pt);
    } finally {
      pt.close();
      st.close();
    }
  });
});

isolatedTest("fixture: lm_head.weight in the .bin is the embedding's storage", async () => {
  await withTempDir(async (dir) => {
    const pt = await openCheckpoint(await fixtureWith(dir, "pytorch_model.bin"));
    try {
      assert.deepEqual(pt.info("lm_head.weight").shape, [50288, 64]);
      const [embedding, head] = await Promise.all([
        pt.readF32("backbone.embedding.weight"),
        pt.readF32("lm_head.weight"),
      ]);
      assert.deepEqual(bitsOf(head), bitsOf(embedding));
      assert.ok(embedding.some((v) => v !== 0));
      embedding[0] = 12345; // results are the caller's own arrays, not views of a shared cache
      assert.notEqual(head[0], 12345);
      const again = await pt.readF32("backbone.embedding.weight");
      assert.equal(again[0], head[0]);
    } finally {
      pt.close();
    }
    await rejectsWith(pt.readF32("lm_head.weight"), /after close/);
  });
});

isolatedTest("fixture: readF16 rounds each float32 weight to its nearest half", async () => {
  const st = await openCheckpoint(FIXTURE);
  try {
    const f32 = await st.readF32("backbone.layers.0.mixer.in_proj.weight");
    const f16 = await st.readF16("backbone.layers.0.mixer.in_proj.weight");
    assert.equal(f16.length, f32.length);
    const back = bytesToFloat32(new Uint8Array(f16.buffer), "F16");
    for (let i = 0; i < f32.length; i++) {
      // nearest: no other half lies closer than the chosen one
      const err = Math.abs(back[i] - f32[i]);
      const ulp = Math.abs(bytesToFloat32(u16Bytes([f16[i] + 1]), "F16")[0] - back[i]);
      assert.ok(err <= ulp / 2, `element ${i}: ${f32[i]} -> ${back[i]}`);
    }
  } finally {
    st.close();
  }
});

isolatedTest("expectModelTensors names the tensor, its shape and the expected shape", async () => {
  await withTempDir(async (dir) => {
    const wrongState = { ...fixtureConfig(), ssm_cfg: { layer: "Mamba2", d_state: 32, headdim: 16 } };
    const ckpt = await openCheckpoint(await fixtureWith(dir, "model.safetensors", wrongState));
    try {
      throwsWith(
        () => expectModelTensors(ckpt),
        /tensor 'backbone\.layers\.0\.mixer\.in_proj\.weight' has shape \[296, 64\] but config\.json implies \[328, 64\]/,
      );
    } finally {
      ckpt.close();
    }
  });
  await withTempDir(async (dir) => {
    const moreLayers = { ...fixtureConfig(), n_layer: 7 };
    const ckpt = await openCheckpoint(await fixtureWith(dir, "model.safetensors", moreLayers));
    try {
      throwsWith(
        () => expectModelTensors(ckpt),
        /tensor 'backbone\.layers\.6\.norm\.weight' \(expected shape \[64\]\) is missing/,
      );
      throwsWith(() => ckpt.info("backbone.layers.6.norm.weight"), /no tensor 'backbone\.layers\.6\.norm\.weight'/);
    } finally {
      ckpt.close();
    }
  });
  await withTempDir(async (dir) => {
    const untied = { ...fixtureConfig(), tie_embeddings: false };
    const ckpt = await openCheckpoint(await fixtureWith(dir, "model.safetensors", untied));
    try {
      throwsWith(
        () => expectModelTensors(ckpt),
        /tensor 'lm_head\.weight' \(expected shape \[50288, 64\]\) is missing/,
      );
    } finally {
      ckpt.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Crafted torch.save files

interface ExpectedTensor {
  dtype: string;
  shape: number[];
  f32_bits: number[];
  f16_bits: number[];
}
const expected: { tensors: Record<string, ExpectedTensor>; unsupported: Record<string, string> } = JSON.parse(
  Deno.readTextFileSync(`${CRAFTED}/expected.json`),
);

for (const variant of ["dtypes-proto2", "dtypes-proto4-deflate", "dtypes-zip64"]) {
  isolatedTest(`crafted ${variant}: F16/BF16 storages, offsets, strides, shared storage give numpy's values`, async () => {
    const ckpt = await openCheckpoint(`${CRAFTED}/${variant}`);
    try {
      assert.equal(ckpt.format, "pytorch");
      assert.deepEqual(ckpt.list().map((t) => t.name).sort(), Object.keys(expected.tensors).sort());
      for (const [name, want] of Object.entries(expected.tensors)) {
        assert.deepEqual(ckpt.info(name), { name, dtype: want.dtype, shape: want.shape });
        // A tensor holding ±Inf/NaN (f32.parameter) is refused by both readers, with the count.
        const nonFinite = want.f32_bits.filter((b) => (b & 0x7f800000) === 0x7f800000).length;
        if (nonFinite > 0) {
          const refused = new RegExp(`tensor '${name.replace(".", "\\.")}' .* has ${nonFinite} non-finite values`);
          await rejectsWith(ckpt.readF32(name), refused);
          await rejectsWith(ckpt.readF16(name), refused);
          continue;
        }
        assert.deepEqual([...bitsOf(await ckpt.readF32(name))], want.f32_bits, `${name} as F32`);
        assert.deepEqual([...await ckpt.readF16(name)], want.f16_bits, `${name} as F16`);
      }
      for (const [name, dtype] of Object.entries(expected.unsupported)) {
        assert.equal(ckpt.has(name), false);
        throwsWith(() => ckpt.info(name), new RegExp(`tensor '${name}' is ${dtype}; only F32, F16 and BF16`));
      }
    } finally {
      ckpt.close();
    }
  });
}

isolatedTest("crafted: a pickle naming os.system is refused", async () => {
  const message = await rejectsWith(openCheckpoint(`${CRAFTED}/evil-os-system`), /refusing to load/);
  assert.ok(
    message.endsWith(
      "pytorch_model.bin: refusing to load: the pickle names the global 'os.system', which is not a tensor type (a checkpoint must never run code)",
    ),
    message,
  );
});

isolatedTest("crafted: builtins.eval through STACK_GLOBAL is refused", async () => {
  await rejectsWith(
    openCheckpoint(`${CRAFTED}/evil-builtins-eval`),
    /pytorch_model\.bin: refusing to load: the pickle names the global 'builtins\.eval', which is not a tensor type/,
  );
});

isolatedTest("crafted: an opcode torch.save never emits is refused", async () => {
  await rejectsWith(
    openCheckpoint(`${CRAFTED}/unknown-opcode`),
    /pickle opcode 0x82 at byte 13 is not one torch\.save uses/,
  );
});

// ---------------------------------------------------------------------------------------------
// Broken inputs: one line each

isolatedTest("truncated model.safetensors is a CheckpointError", async () => {
  const full = await Deno.readFile(`${FIXTURE}/model.safetensors`);
  for (const keep of [full.length - 1, full.length / 2, 4000]) {
    await withTempDir(async (dir) => {
      await Deno.symlink(`${FIXTURE}/config.json`, `${dir}/config.json`);
      await Deno.writeFile(`${dir}/model.safetensors`, full.subarray(0, keep));
      await rejectsWith(openCheckpoint(dir), /model\.safetensors: truncated .*download it again/);
    });
  }
});

isolatedTest("truncated pytorch_model.bin is a CheckpointError", async () => {
  const full = await Deno.readFile(`${FIXTURE}/pytorch_model.bin`);
  for (const keep of [full.length - 10, Math.floor(full.length * 0.6), 100]) {
    await withTempDir(async (dir) => {
      await Deno.symlink(`${FIXTURE}/config.json`, `${dir}/config.json`);
      await Deno.writeFile(`${dir}/pytorch_model.bin`, full.subarray(0, keep));
      await rejectsWith(openCheckpoint(dir), /pytorch_model\.bin: not a complete zip archive .*truncated/);
    });
  }
});

isolatedTest("bad safetensors header JSON is a CheckpointError", async () => {
  await withTempDir(async (dir) => {
    await Deno.symlink(`${FIXTURE}/config.json`, `${dir}/config.json`);
    const junk = new TextEncoder().encode('{"a": {"dtype": "F32",');
    const file = new Uint8Array(8 + junk.length);
    new DataView(file.buffer).setBigUint64(0, BigInt(junk.length), true);
    file.set(junk, 8);
    await Deno.writeFile(`${dir}/model.safetensors`, file);
    await rejectsWith(openCheckpoint(dir), /model\.safetensors: header is not valid JSON/);
  });
});

isolatedTest("missing directory, weights, config and bad config are one-line CheckpointErrors", async () => {
  await rejectsWith(openCheckpoint("/nonexistent/dir/for/sure"), /no such directory/);
  await rejectsWith(openCheckpoint(`${FIXTURE}/config.json`), /is a file; pass the directory/);
  await withTempDir(async (dir) => {
    await Deno.symlink(`${FIXTURE}/config.json`, `${dir}/config.json`);
    await rejectsWith(
      openCheckpoint(dir),
      /has no weights: put model\.safetensors or pytorch_model\.bin next to config\.json/,
    );
  });
  await withTempDir(async (dir) => {
    await Deno.symlink(`${FIXTURE}/model.safetensors`, `${dir}/model.safetensors`);
    await rejectsWith(openCheckpoint(dir), /has no config\.json/);
  });
  await withTempDir(async (dir) => {
    const { d_model: _, ...noDModel } = fixtureConfig();
    await rejectsWith(
      openCheckpoint(await fixtureWith(dir, "model.safetensors", noDModel)),
      /config\.json: missing "d_model"/,
    );
  });
  await withTempDir(async (dir) => {
    await fixtureWith(dir, "model.safetensors", {});
    await Deno.writeTextFile(`${dir}/config.json`, "{ nope");
    await rejectsWith(openCheckpoint(dir), /config\.json is not valid JSON/);
  });
});

// ---------------------------------------------------------------------------------------------
// safetensors with F16/BF16, unsupported dtypes, shards

isolatedTest("safetensors F16 and BF16 tensors convert exactly; other dtypes are named", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/config.json`, await Deno.readTextFile(`${CRAFTED}/dtypes-proto2/config.json`));
    // (no Inf/NaN in the file: such weights are refused, see tests/hardening_weights_test.ts)
    const half = [0x3c00, 0xc000, 0x7800, 0x0001, 0x8000, 0x7bff];
    const bf16 = [0x3f80, 0x4049, 0xc780, 0x0001, 0x4788];
    await Deno.writeFile(
      `${dir}/model.safetensors`,
      safetensorsBytes([
        { name: "h", dtype: "F16", shape: [2, 3], bytes: u16Bytes(half) },
        { name: "b", dtype: "BF16", shape: [5], bytes: u16Bytes(bf16) },
        { name: "steps", dtype: "I64", shape: [1], bytes: new Uint8Array(8) },
      ]),
    );
    const ckpt = await openCheckpoint(dir);
    try {
      assert.deepEqual(ckpt.list().map((t) => [t.name, t.dtype]), [["h", "F16"], ["b", "BF16"]]);
      assert.deepEqual([...await ckpt.readF32("h")], [1, -2, 32768, 2 ** -24, -0, 65504]);
      assert.deepEqual([...await ckpt.readF16("h")], half);
      assert.deepEqual([...await ckpt.readF32("b")], [1, 3.140625, -65536, 2 ** -133, 69632]);
      // 2^-133 is far below the smallest half; -65536 and 69632 are beyond the largest
      assert.deepEqual([...await ckpt.readF16("b")], [0x3c00, 0x4248, 0xfc00, 0x0000, 0x7c00]);
      throwsWith(() => ckpt.info("steps"), /tensor 'steps' is I64; only F32, F16 and BF16/);
    } finally {
      ckpt.close();
    }
  });
});

isolatedTest("sharded safetensors (model.safetensors.index.json) load like the single file", async () => {
  const single = await openCheckpoint(FIXTURE);
  try {
    await withTempDir(async (dir) => {
      await Deno.symlink(`${FIXTURE}/config.json`, `${dir}/config.json`);
      const shards: SafetensorsTensor[][] = [[], []];
      const weightMap: Record<string, string> = {};
      for (const [i, t] of single.list().entries()) {
        const data = await single.readF32(t.name);
        shards[i % 2].push({ name: t.name, dtype: "F32", shape: t.shape, bytes: new Uint8Array(data.buffer) });
        weightMap[t.name] = `model-0000${(i % 2) + 1}-of-00002.safetensors`;
      }
      for (const [i, shard] of shards.entries()) {
        await Deno.writeFile(`${dir}/model-0000${i + 1}-of-00002.safetensors`, safetensorsBytes(shard));
      }
      await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify({ weight_map: weightMap }));
      const sharded = await openCheckpoint(dir);
      try {
        assert.equal(sharded.format, "safetensors");
        expectModelTensors(sharded);
        for (const t of single.list()) {
          assert.deepEqual(bitsOf(await sharded.readF32(t.name)), bitsOf(await single.readF32(t.name)), t.name);
        }
      } finally {
        sharded.close();
      }
    });
  } finally {
    single.close();
  }
});

// ---------------------------------------------------------------------------------------------
// Conversions

isolatedTest("F32 -> F16 rounds to nearest even, with subnormals, overflow and NaN", () => {
  const cases: [number, number][] = [
    [0, 0x0000],
    [-0, 0x8000],
    [1, 0x3c00],
    [65504, 0x7bff], // largest half
    [65519, 0x7bff], // just below the halfway point to 65536
    [65520, 0x7c00], // halfway: ties to even, which is infinity
    [1e10, 0x7c00],
    [-Infinity, 0xfc00],
    [2 ** -24, 0x0001], // smallest subnormal
    [2 ** -25, 0x0000], // halfway to the smallest subnormal: even is zero
    [2 ** -25 * 1.5, 0x0001],
    [3 * 2 ** -25, 0x0002], // halfway between subnormals 1 and 2: even is 2
    [2 ** -14, 0x0400], // smallest normal
    [2 ** -14 - 2 ** -25, 0x0400], // halfway between the largest subnormal and the smallest normal
    [1023 * 2 ** -24, 0x03ff],
    [1 + 2 ** -11, 0x3c00], // tie, down to even
    [1 + 3 * 2 ** -11, 0x3c02], // tie, up to even
    [1 + 2 ** -10, 0x3c01],
    [-2.5, 0xc100],
    [1e-30, 0x0000],
  ];
  const input = new Float32Array(cases.map(([x]) => x));
  const out = bytesToHalf(new Uint8Array(input.buffer), "F32");
  cases.forEach(([x, h], i) => assert.equal(out[i], h, `${x} -> 0x${out[i].toString(16)}, want 0x${h.toString(16)}`));
  const nan = floatBitsToHalfBits(bitsOf(new Float32Array([NaN]))[0]);
  assert.ok((nan & 0x7c00) === 0x7c00 && (nan & 0x3ff) !== 0, "NaN stays NaN");
  assert.ok((floatBitsToHalfBits(0x7f800001) & 0x3ff) !== 0, "a NaN with only low payload bits stays NaN");
});

isolatedTest("F16 -> F32 is exact for every half and round-trips", () => {
  const all = new Uint16Array(65536).map((_, i) => i);
  const f32 = bytesToFloat32(new Uint8Array(all.buffer), "F16");
  for (let h = 0; h < 65536; h++) {
    const exp = (h >> 10) & 0x1f, mant = h & 0x3ff, sign = h & 0x8000 ? -1 : 1;
    const value = exp === 0x1f
      ? (mant ? NaN : sign * Infinity)
      : exp === 0
      ? sign * mant * 2 ** -24
      : sign * (1 + mant / 1024) * 2 ** (exp - 15);
    assert.ok(Object.is(f32[h], value), `0x${h.toString(16)}: ${f32[h]} vs ${value}`);
    if (exp !== 0x1f || mant === 0) assert.equal(floatBitsToHalfBits(halfBitsToFloatBits(h)), h);
  }
});

isolatedTest("BF16 -> F32 is a shift; BF16 -> F16 rounds once", () => {
  const bf16 = [0x3f80, 0xc000, 0x7f80, 0x7fc0, 0x8000, 0x3eab, 0x3380];
  const f32 = bytesToFloat32(u16Bytes(bf16), "BF16");
  assert.deepEqual([...bitsOf(f32)], bf16.map((b) => (b << 16) >>> 0));
  assert.equal(f32[0], 1);
  assert.equal(f32[1], -2);
  assert.ok(Number.isNaN(f32[3]));
  assert.equal(f32[5], 0.333984375);
  // 0x3380 = 2^-24 * 1.0 exactly: the smallest half subnormal
  assert.deepEqual([...bytesToHalf(u16Bytes(bf16), "BF16")].filter((_, i) => i !== 3), [
    0x3c00,
    0xc000,
    0x7c00,
    0x8000,
    0x3558,
    0x0001,
  ]);
});

// ---------------------------------------------------------------------------------------------
// Identity

isolatedTest("identity depends on content, is cached per file, and changes with the weights", async () => {
  const first = await openCheckpoint(FIXTURE);
  first.close();
  assert.match(first.identity, /^[0-9a-f]{64}$/);
  const cache = JSON.parse(await Deno.readTextFile(identityCachePath()!));
  const keys = Object.keys(cache.files);
  assert.ok(keys.some((k) => k.startsWith(`${FIXTURE}/model.safetensors\t`)), keys.join(", "));
  assert.ok(keys.some((k) => k.startsWith(`${FIXTURE}/config.json\t`)));
  const second = await openCheckpoint(FIXTURE);
  second.close();
  assert.equal(second.identity, first.identity);

  await withTempDir(async (dir) => {
    await Deno.copyFile(`${FIXTURE}/config.json`, `${dir}/config.json`);
    await Deno.copyFile(`${FIXTURE}/model.safetensors`, `${dir}/model.safetensors`);
    const copy = await openCheckpoint(dir);
    copy.close();
    assert.equal(copy.identity, first.identity, "same bytes elsewhere, same identity");
    const file = await Deno.open(`${dir}/model.safetensors`, { read: true, write: true });
    await file.seek(-3, Deno.SeekMode.End);
    await file.write(new Uint8Array([1, 2, 3]));
    file.close();
    await Deno.utime(`${dir}/model.safetensors`, new Date(), new Date(Date.now() + 5000));
    const changed = await openCheckpoint(dir);
    changed.close();
    assert.notEqual(changed.identity, first.identity);
  });
});

// ---------------------------------------------------------------------------------------------
// Hugging Face cache and Hub

/** A Hugging Face cache entry in the standard layout, blobs copied from the fixture. */
async function fakeHubCache(
  cache: string,
  id: string,
  commit: string,
  files: Record<string, string>, // name in the snapshot -> blob name
  opts: { ref?: boolean } = {},
): Promise<string> {
  const repo = `${cache}/models--${id.replace("/", "--")}`;
  const snapshot = `${repo}/snapshots/${commit}`;
  await Deno.mkdir(`${repo}/blobs`, { recursive: true });
  await Deno.mkdir(snapshot, { recursive: true });
  for (const [name, blob] of Object.entries(files)) {
    await Deno.copyFile(`${FIXTURE}/${name}`, `${repo}/blobs/${blob}`);
    await Deno.symlink(`../../blobs/${blob}`, `${snapshot}/${name}`);
  }
  if (opts.ref ?? true) {
    await Deno.mkdir(`${repo}/refs`, { recursive: true });
    await Deno.writeTextFile(`${repo}/refs/main`, commit);
  }
  return snapshot;
}

isolatedTest("hfCacheDir: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub", (home) => {
  assert.equal(hfCacheDir(), `${home}/.cache/huggingface/hub`);
  Deno.env.set("HF_HOME", "/x/hf");
  assert.equal(hfCacheDir(), "/x/hf/hub");
  Deno.env.set("HF_HUB_CACHE", "/y/hub");
  assert.equal(hfCacheDir(), "/y/hub");
});

isolatedTest("a Hub id is found in the Hugging Face cache, by refs/main or the newest snapshot", async () => {
  await withTempDir(async (cache) => {
    Deno.env.set("HF_HUB_CACHE", cache);
    const blobA = "a".repeat(64), blobB = "b".repeat(64), configBlob = "c".repeat(40);
    const old = await fakeHubCache(cache, "test-org/tiny", "1".repeat(40), {
      "config.json": configBlob,
      "model.safetensors": blobA,
    });
    const current = await fakeHubCache(cache, "test-org/tiny", "2".repeat(40), {
      "config.json": configBlob,
      "pytorch_model.bin": blobB,
    });
    const ckpt = await openCheckpoint("test-org/tiny", { offline: true });
    ckpt.close();
    assert.equal(ckpt.dir, current);
    assert.equal(ckpt.format, "pytorch");
    expectModelTensors(ckpt);
    // Cache snapshots are identified by their blob names: nothing was hashed.
    const hashed = await Deno.readTextFile(identityCachePath()!).then(
      (t) => Object.keys(JSON.parse(t).files),
      () => [],
    );
    assert.ok(!hashed.some((k) => k.startsWith(cache)), hashed.join(", "));

    await Deno.writeTextFile(`${cache}/models--test-org--tiny/refs/main`, "1".repeat(40));
    const byRef = await openCheckpoint("test-org/tiny", { offline: true });
    byRef.close();
    assert.equal(byRef.dir, old);
    assert.equal(byRef.format, "safetensors");
    assert.notEqual(byRef.identity, ckpt.identity);

    // Without refs/main the newest complete snapshot wins.
    await Deno.remove(`${cache}/models--test-org--tiny/refs/main`);
    await Deno.utime(old, new Date(), new Date(Date.now() + 60_000));
    const newest = await openCheckpoint("test-org/tiny", { offline: true });
    newest.close();
    assert.equal(newest.dir, old);
    assert.equal(newest.identity, byRef.identity);
  });
});

isolatedTest("a Hub id that is not cached cannot be opened offline, with a one-line fix", async () => {
  await withTempDir(async (cache) => {
    Deno.env.set("HF_HUB_CACHE", cache);
    const want =
      `model state-spaces/mamba2-1.3b is not in the Hugging Face cache and cannot be downloaded (offline): ` +
      `put config.json and pytorch_model.bin in ${cache}/models--state-spaces--mamba2-1.3b/snapshots/main/`;
    const message = await rejectsWith(openCheckpoint("state-spaces/mamba2-1.3b", { offline: true }), /offline/);
    assert.equal(message, want);
    Deno.env.set("HF_HUB_OFFLINE", "1");
    assert.equal(await rejectsWith(openCheckpoint("state-spaces/mamba2-1.3b"), /offline/), want);
    Deno.env.delete("HF_HUB_OFFLINE");
    // An unreachable Hub reads the same (port 9 on localhost refuses connections).
    Deno.env.set("HF_ENDPOINT", "http://127.0.0.1:9");
    assert.equal(await rejectsWith(openCheckpoint("state-spaces/mamba2-1.3b"), /offline/), want);
    // A snapshot with only config.json is not a checkpoint yet.
    await fakeHubCache(cache, "state-spaces/mamba2-1.3b", "3".repeat(40), { "config.json": "d".repeat(40) });
    assert.equal(await rejectsWith(openCheckpoint("state-spaces/mamba2-1.3b", { offline: true }), /offline/), want);
  });
});

isolatedTest("download: resumes a partial blob, verifies it, lays out the cache like huggingface_hub", async () => {
  const config = await Deno.readFile(`${FIXTURE}/config.json`);
  const bin = await Deno.readFile(`${FIXTURE}/pytorch_model.bin`);
  const sha = createHash("sha256").update(bin).digest("hex");
  const hub = standInHub({
    "config.json": { bytes: config, lfs: false },
    "pytorch_model.bin": { bytes: bin, lfs: true },
  });
  try {
    await withTempDir(async (cache) => {
      Deno.env.set("HF_HUB_CACHE", cache);
      Deno.env.set("HF_ENDPOINT", hub.endpoint);
      const repo = `${cache}/models--test-org--remote`;
      await Deno.mkdir(`${repo}/blobs`, { recursive: true });
      await Deno.writeFile(`${repo}/blobs/${sha}.incomplete`, bin.subarray(0, 1 << 20));
      const ckpt = await openCheckpoint("test-org/remote");
      try {
        assert.deepEqual(hub.ranges, [`bytes=${1 << 20}-`]);
        assert.equal(ckpt.dir, `${repo}/snapshots/${hub.commit}`);
        assert.equal(await Deno.readTextFile(`${repo}/refs/main`), hub.commit);
        assert.equal(await Deno.readLink(`${ckpt.dir}/pytorch_model.bin`), `../../blobs/${sha}`);
        assert.deepEqual(await Deno.readFile(`${repo}/blobs/${sha}`), bin);
        expectModelTensors(ckpt);
      } finally {
        ckpt.close();
      }
      // Now cached: no Hub needed.
      Deno.env.set("HF_ENDPOINT", "http://127.0.0.1:9");
      (await openCheckpoint("test-org/remote")).close();
    });
  } finally {
    await hub.server.shutdown();
  }
});

isolatedTest("download: bytes that do not match the LFS sha256 are rejected and deleted", async () => {
  const config = await Deno.readFile(`${FIXTURE}/config.json`);
  const bin = await Deno.readFile(`${FIXTURE}/pytorch_model.bin`);
  const corrupt = bin.slice();
  corrupt[5000] ^= 0xff;
  const hub = standInHub({
    "config.json": { bytes: config, lfs: false },
    "pytorch_model.bin": { bytes: bin, lfs: true, servedBytes: corrupt },
  });
  try {
    await withTempDir(async (cache) => {
      Deno.env.set("HF_HUB_CACHE", cache);
      Deno.env.set("HF_ENDPOINT", hub.endpoint);
      await rejectsWith(
        openCheckpoint("test-org/remote"),
        /pytorch_model\.bin gave sha256 [0-9a-f]{64}, not [0-9a-f]{64}; the partial file was deleted/,
      );
      const blobs = [...Deno.readDirSync(`${cache}/models--test-org--remote/blobs`)].map((e) => e.name);
      assert.ok(!blobs.some((n) => n.includes(createHash("sha256").update(bin).digest("hex"))), blobs.join(", "));
    });
  } finally {
    await hub.server.shutdown();
  }
});
