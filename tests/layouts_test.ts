// Layouts, configs and checkpoints of every Mamba: the Hugging Face layout (mamba1-tiny-hf and
// mamba2-tiny-hf, built at test time from their state-spaces twins, tests/hf_layout.ts) gives the same
// logits as the state-spaces one in both modes and reproduces the goldens; Python-written configs
// (Infinity in three spellings) load, and a finite time_step_limit / dt_limit clamps dt as the float64
// reference does; sharded safetensors with F32, F16 and BF16 shards; tensors larger than a binding are
// split; loading streams the weights in pieces; the real-vocabulary rule and each model's own
// tokenizer; and every checkpoint that disagrees with its config ends in one line naming the tensor.
import { assert, assertEquals, assertRejects, assertThrows } from "./assert.ts";
import { type Checkpoint, openCheckpoint } from "../engine/checkpoint/mod.ts";
import { float32ToHalf } from "../engine/checkpoint/dtype.ts";
import { parseConfig, parsePythonJson } from "../engine/config.ts";
import { detectFamily, realVocabSize } from "../engine/families.ts";
import { PIECE_BYTES } from "../engine/loading.ts";
import type { Mamba2Config } from "../engine/mamba2/config.ts";
import { loadTokenizer, tokenizerPathFor } from "../engine/tokenizer.ts";
import { assertGoldenKnockouts, assertGoldenSequences, FIXTURE_DIR, goldenEngine, loadBackbone, maxAbs, maxAbsDiff, runDeno, testGpu } from "./helpers.ts";
import { LIBRARY_SAFETENSORS, safetensorsBytes, type SafetensorsTensor } from "./hardening_fixtures.ts";
import { hfFixture } from "./hf_layout.ts";
import * as ref2 from "./reference/mamba2.ts";

const FIXTURES = new URL("./fixtures/", import.meta.url).pathname;
const MAMBA1 = `${FIXTURES}mamba1-tiny`;
const LOGIT_TOL = 1e-4;
const REAL_VOCAB = 50277;

async function tempDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir({ prefix: "layouts_" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** A folder with this config.json and (a link to) these weights. */
async function withModel(config: Record<string, unknown> | string, weights: string, fn: (dir: string) => Promise<void>) {
  await tempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/config.json`, typeof config === "string" ? config : JSON.stringify(config));
    await Deno.symlink(weights, `${dir}/model.safetensors`);
    await fn(dir);
  });
}

const readJson = (path: string) => parsePythonJson(Deno.readTextFileSync(path)) as Record<string, unknown>;

Deno.test("the Hugging Face layout: same weights, same logits as the state-spaces twin in both modes; goldens and golden knockouts", async () => {
  for (const [hf, twin] of [["mamba1-tiny-hf", MAMBA1], ["mamba2-tiny-hf", FIXTURE_DIR]] as const) {
    const dir = await hfFixture(hf); // checks the built file's sha256 against the published fixture's
    const ckpt = await openCheckpoint(dir);
    assertEquals(ckpt.config.vocabPadded, hf === "mamba1-tiny-hf" ? 50280 : 50288);
    assertEquals(ckpt.config.vocabSize, ckpt.config.vocabPadded, "the HF vocab_size counts the head's rows");
    ckpt.close();
    const model = await loadBackbone(dir, { vocabSize: REAL_VOCAB });
    const state = await loadBackbone(twin);
    try {
      assertEquals(model.info.vocabSize, REAL_VOCAB);
      assertEquals(model.info.family, state.info.family);
      const golden = await goldenEngine(twin.endsWith("/") ? twin : `${twin}/`);
      for (const mode of ["scan", "attention"] as const) {
        const ids = golden.sequences.map((s) => s.ids);
        const [a, b] = [await model.forward(ids, { mode, allPositions: true }), await state.forward(ids, { mode, allPositions: true })];
        a.forEach((x, i) => assertEquals(maxAbsDiff(x, b[i]), 0, `${hf} ${mode}: sequence ${i} as the state-spaces twin`));
        assertGoldenSequences(a, golden, model.info, LOGIT_TOL, `${hf} ${mode}`);
      }
      await assertGoldenKnockouts(model, golden, LOGIT_TOL, hf);
    } finally {
      model.destroy();
      state.destroy();
    }
  }
});

Deno.test("Python-written configs: Infinity, \"Infinity\" and {\"__float__\": \"Infinity\"}; a finite time_step_limit / dt_limit clamps dt", async () => {
  const hfDir = await hfFixture("mamba2-tiny-hf");
  const text = Deno.readTextFileSync(`${hfDir}/config.json`);
  assert(text.includes("Infinity]"), "the fixture's config holds a bare Infinity, as Python's json writes it");
  const spellings = [text, text.replace("Infinity]", '"Infinity"]'), text.replace("Infinity]", '{"__float__": "Infinity"}]')];
  for (const s of spellings) {
    await withModel(s, `${hfDir}/model.safetensors`, async (dir) => {
      const ckpt = await openCheckpoint(dir);
      assertEquals((ckpt.config as Mamba2Config).dtLimit, [0, Infinity]);
      ckpt.close();
    });
  }
  assertEquals(parsePythonJson('{"a": [-Infinity, NaN], "b": "Infinity"}'), { a: [-Infinity, NaN], b: "Infinity" });
  // a finite clamp: the engine as the float64 reference with the clamp, and not as without it
  const raw = readJson(`${hfDir}/config.json`);
  const ids = [2883, 47702, 36007, 2195, 27988, 50034, 22009, 16023];
  const weights: ref2.Weights = new Map();
  const hfCkpt = await openCheckpoint(hfDir);
  for (const t of hfCkpt.list()) weights.set(t.name, await hfCkpt.readF32(t.name));
  hfCkpt.close();
  for (const limit of [[0.0, 0.02], [0.05, "Infinity"]]) {
    await withModel({ ...raw, time_step_limit: limit }, `${hfDir}/model.safetensors`, async (dir) => {
      const model = await loadBackbone(dir);
      try {
        const cfg = parseConfig({ ...raw, time_step_limit: limit }) as Mamba2Config;
        const unclamped = parseConfig(raw) as Mamba2Config;
        const V = cfg.vocabPadded, T = ids.length;
        const want = ref2.referenceForward(weights, cfg, ids, { mode: "scan" }).subarray((T - 1) * V);
        const free = ref2.referenceForward(weights, unclamped, ids, { mode: "scan" }).subarray((T - 1) * V);
        assert(maxAbsDiff(want, free) > 1e-3 * maxAbs(free), `the clamp ${limit} changes the logits`);
        for (const mode of ["scan", "attention"] as const) {
          const [got] = await model.forward([ids], { mode });
          assert(maxAbsDiff(got, want) <= LOGIT_TOL * maxAbs(want), `time_step_limit ${limit} ${mode}: off by ${maxAbsDiff(got, want) / maxAbs(want)}`);
        }
      } finally {
        model.destroy();
      }
    });
  }
  // the state-spaces spelling: ssm_cfg.dt_limit
  const ss = readJson(`${FIXTURE_DIR}config.json`);
  assertEquals((parseConfig({ ...ss, ssm_cfg: { ...(ss.ssm_cfg as object), dt_limit: [0.001, 0.1] } }) as Mamba2Config).dtLimit, [0.001, 0.1]);
  assertThrows(() => parseConfig({ ...raw, time_step_limit: [0.1, 0.01] }), /"time_step_limit" must be \[min, max\] with 0 <= min < max/);
});

const bf16 = (x: Float32Array) => {
  const u = new Uint32Array(x.buffer, x.byteOffset, x.length);
  return Uint16Array.from(u, (v) => v >>> 16); // truncation: any BF16 value will do, the reference reads the same
};

Deno.test("sharded safetensors (model.safetensors.index.json) with F32, F16 and BF16 shards: the engine equals the reference on the same values", async () => {
  const single = await openCheckpoint(MAMBA1);
  const config = Deno.readTextFileSync(`${MAMBA1}/config.json`);
  await tempDir(async (dir) => {
    const shards: SafetensorsTensor[][] = [[], [], []];
    const weightMap: Record<string, string> = {};
    for (const t of single.list()) {
      const x = await single.readF32(t.name);
      const k = t.name.includes("layers.0.") ? 1 : t.name.includes("embedding") ? 2 : 0; // layer 0 F16, the embedding BF16, the rest F32
      const [dtype, bytes] = k === 1
        ? ["F16", new Uint8Array(float32ToHalf(x).buffer)]
        : k === 2
        ? ["BF16", new Uint8Array(bf16(x).buffer)]
        : ["F32", new Uint8Array(x.buffer)];
      shards[k].push({ name: t.name, dtype, shape: t.shape, bytes });
      weightMap[t.name] = `model-0000${k + 1}-of-00003.safetensors`;
    }
    shards.forEach((s, k) => Deno.writeFileSync(`${dir}/model-0000${k + 1}-of-00003.safetensors`, safetensorsBytes(s, LIBRARY_SAFETENSORS)));
    Deno.writeTextFileSync(`${dir}/model.safetensors.index.json`, JSON.stringify({ metadata: {}, weight_map: weightMap }));
    Deno.writeTextFileSync(`${dir}/config.json`, config);
    const ckpt = await openCheckpoint(dir);
    const dtypes = new Set(ckpt.list().map((t) => t.dtype));
    assertEquals([...dtypes].sort(), ["BF16", "F16", "F32"]);
    const { referenceForward } = await import("./reference/mamba1.ts");
    const weights = new Map<string, Float32Array>();
    for (const t of ckpt.list()) weights.set(t.name, await ckpt.readF32(t.name));
    const model = await loadBackbone(ckpt, { vocabSize: REAL_VOCAB });
    ckpt.close();
    try {
      const ids = [510, 3101, 14018, 273, 10213, 282];
      const V = model.info.vocabPadded;
      // deno-lint-ignore no-explicit-any
      const want = referenceForward(weights, ckpt.config as any, ids, { mode: "scan" }).subarray((ids.length - 1) * V);
      for (const mode of ["scan", "attention"] as const) {
        const [got] = await model.forward([ids], { mode });
        assert(maxAbsDiff(got, want) <= LOGIT_TOL * maxAbs(want), `sharded ${mode}: off by ${maxAbsDiff(got, want) / maxAbs(want)}`);
      }
    } finally {
      model.destroy();
    }
  });
  single.close();
});

Deno.test("large models: tensors larger than a binding are split; weights stream in pieces, never read whole", async () => {
  const real = await testGpu();
  // an adapter whose largest binding is 1 MiB: mamba1-tiny's 6.4 MB embedding becomes 7 chunks
  const small = { ...real, maxBinding: 1 << 20 };
  const ckpt = await openCheckpoint(MAMBA1);
  // a checkpoint that refuses whole reads of matrices and records the largest piece read
  let largest = 0;
  const watched: Checkpoint = Object.create(ckpt, {
    readF32: { value: (name: string) => name.endsWith("proj.weight") || name.includes("embedding") ? Promise.reject(new Error(`${name} read whole`)) : ckpt.readF32(name) },
    readF32Rows: {
      value: async (name: string, first: number, count: number) => {
        const x = await ckpt.readF32Rows(name, first, count);
        largest = Math.max(largest, x.byteLength);
        return x;
      },
    },
  });
  const split = await loadBackbone(watched, { gpu: small, vocabSize: REAL_VOCAB });
  const whole = await loadBackbone(ckpt, { vocabSize: REAL_VOCAB });
  ckpt.close();
  try {
    assert(split.embedding.chunks.length === 7 && whole.embedding.chunks.length === 1, `${split.embedding.chunks.length} chunks`);
    assert(largest > 0 && largest <= PIECE_BYTES, `largest piece ${largest} bytes`);
    const ids = [[510, 3101, 14018, 273, 10213], [282, 11128]];
    for (const mode of ["scan", "attention"] as const) {
      const [a, b] = [await split.forward(ids, { mode }), await whole.forward(ids, { mode })];
      a.forEach((x, i) => assertEquals(maxAbsDiff(x, b[i]), 0, `${mode} prompt ${i}: split = whole`));
    }
  } finally {
    split.destroy();
    whole.destroy();
  }
});

Deno.test("the real vocabulary: the tokenizer's tokens; the model's own tokenizer.json, else GPT-NeoX-20B's", async () => {
  const hf = await hfFixture("mamba1-tiny-hf");
  const ckpt = await openCheckpoint(hf);
  try {
    assertEquals(realVocabSize(ckpt.config), 50280);
    assertEquals(realVocabSize(ckpt.config, 50277), 50277);
    const err = assertThrows(() => realVocabSize(ckpt.config, 65024), /the tokenizer has 65024 tokens but the model's LM head only 50280 rows: it is not this model's tokenizer/);
    assert(!err.message.includes("\n"));
    await assertRejects(() => loadBackbone(ckpt, { vocabSize: 65024 }), /not this model's tokenizer/);
    // nor one that leaves a tenth of the head's rows unused (GPT-NeoX's tokens for Falcon-Mamba-7B's 65024 rows)
    assertThrows(() => realVocabSize({ ...ckpt.config, vocabPadded: 65024 }, 50277), /the tokenizer has 50277 tokens but the model's LM head 65024 rows: it is not this model's tokenizer/);
  } finally {
    ckpt.close();
  }
  const neox = await loadTokenizer();
  assertEquals(neox.vocabSize, 50277);
  assertEquals((await tokenizerPathFor(MAMBA1)).source, "default");
  assertEquals((await tokenizerPathFor(MAMBA1, "/x/t.json")).path, "/x/t.json");
  await tempDir(async (dir) => {
    // a model folder with its own tokenizer: a GPT-NeoX one with one token more
    const json = readJson(new URL("../data/gpt-neox-20b-tokenizer.json", import.meta.url).pathname) as { added_tokens: unknown[] };
    json.added_tokens.push({ id: 50277, content: "<|extra|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    Deno.writeTextFileSync(`${dir}/tokenizer.json`, JSON.stringify(json));
    const found = await tokenizerPathFor(dir);
    assertEquals(found, { path: `${dir}/tokenizer.json`, source: "model" });
    assertEquals((await loadTokenizer(found.path)).vocabSize, 50278);
  });
});

Deno.test("checkpoints that disagree with their config, and unknown families, end in one line naming the tensor or listing the families", async () => {
  const hf = await hfFixture("mamba1-tiny-hf");
  const hfConfig = readJson(`${hf}/config.json`);
  const weights = `${hf}/model.safetensors`;
  const cases: [Record<string, unknown>, RegExp][] = [
    // fewer layers in the config than in the weights
    [{ ...hfConfig, num_hidden_layers: 3 }, /tensor 'backbone\.layers\.3\.[^']+' \[[\d, ]+\] is not part of the model config\.json describes/],
    // more layers in the config than in the weights
    [{ ...hfConfig, num_hidden_layers: 5 }, /tensor 'backbone\.layers\.4\.[^']+' \(expected shape \[[\d, ]+\]\) is missing/],
    // an untied head the weights lack
    [{ ...hfConfig, tie_word_embeddings: false }, /tensor 'lm_head\.weight' \(expected shape \[50280, 32\]\) is missing/],
    // another shape
    [{ ...hfConfig, conv_kernel: 3 }, /'backbone\.layers\.0\.mixer\.conv1d\.weight' has shape \[64, 1, 4\] but config\.json implies \[64, 1, 3\]/],
    // the weights of another family
    [{ ...readJson(`${FIXTURE_DIR}config.json`), model_type: undefined }, /tensor '[^']+' .*(is missing|is not part of|has shape)/],
  ];
  for (const [config, re] of cases) {
    await withModel(config, weights, async (dir) => {
      const r = await runDeno(["run", "-A", "engine/infer.ts", "--model", dir, "--ids", "1,2,3"]);
      const lines = r.stderr.trim().split("\n");
      assert(r.code !== 0 && lines.length === 1 && re.test(lines[0]), `${JSON.stringify(config).slice(0, 80)}: ${r.stderr}`);
    });
  }
  // an extra tensor: the HF file plus one more in a second shard
  await tempDir(async (dir) => {
    const names = (await openCheckpoint(hf)).list().map((t) => t.name);
    Deno.writeTextFileSync(`${dir}/config.json`, JSON.stringify(hfConfig));
    await Deno.symlink(weights, `${dir}/model-00001-of-00002.safetensors`);
    Deno.writeFileSync(`${dir}/model-00002-of-00002.safetensors`, safetensorsBytes([{ name: "backbone.layers.0.mixer.extra", dtype: "F32", shape: [2], bytes: new Uint8Array(8) }], LIBRARY_SAFETENSORS));
    const weightMap = Object.fromEntries([...names.map((n) => [n, "model-00001-of-00002.safetensors"]), ["backbone.layers.0.mixer.extra", "model-00002-of-00002.safetensors"]]);
    Deno.writeTextFileSync(`${dir}/model.safetensors.index.json`, JSON.stringify({ weight_map: weightMap }));
    const r = await runDeno(["run", "-A", "engine/infer.ts", "--model", dir, "--ids", "1,2,3"]);
    assert(r.code !== 0 && r.stderr.trim().split("\n").length === 1 && /tensor 'backbone\.layers\.0\.mixer\.extra' \[2\] is not part of the model/.test(r.stderr), r.stderr);
  });
  // unknown families: one line listing the supported ones
  for (const raw of [{ model_type: "mamba3", hidden_size: 8 }, { d_model: 8, n_layer: 1, ssm_cfg: { layer: "Mamba3" } }]) {
    const err = assertThrows(() => detectFamily(raw), /is not a supported model family; supported: .*mamba2 .*mamba1 .*falcon_mamba/);
    assert(!err.message.includes("\n"));
  }
  // the names: state-spaces without ssm_cfg.layer is Mamba-1, HF model_type mamba / falcon_mamba / mamba2
  assertEquals(detectFamily(readJson(`${MAMBA1}/config.json`)).name, "mamba1");
  assertEquals(detectFamily(hfConfig).name, "mamba1");
  assertEquals(detectFamily(readJson(`${FIXTURES}falcon-mamba-tiny/config.json`)).name, "falcon_mamba");
  assertEquals(detectFamily(readJson(`${FIXTURES}mamba2-tiny-hf/config.json`)).name, "mamba2");
  // config values this engine does not implement are refused, not ignored
  assertThrows(() => parseConfig({ ...hfConfig, use_bias: true }), /"use_bias": true is not supported/);
  assertThrows(() => parseConfig({ ...hfConfig, state_size: 128 }), /d_state 128 is above the 64 the Mamba-1 scan kernel supports/);
});
