// Loading Transformer checkpoints through the registry: the families' detection and config parsing
// (RoPE shares and scaling, sliding windows, defaults) and its one-line refusals; F32 and BF16
// weights and sharded safetensors (written here from the F16 fixtures), GPT-2's unprefixed tensor
// names, the attention buffers older exports carry, and the real vocabulary.
import { assert, assertEquals, assertRejects, assertThrows } from "./assert.ts";
import { float32ToHalf } from "../engine/checkpoint/dtype.ts";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { detectFamily, families, type LoadOptions } from "../engine/families.ts";
import { loadTokenizer, tokenizerPathFor } from "../engine/tokenizer.ts";
import { GPT_NEOX } from "../engine/gpt_neox/family.ts";
import { LLAMA } from "../engine/llama/family.ts";
import { QWEN2 } from "../engine/qwen2/family.ts";
import { MISTRAL } from "../engine/mistral/family.ts";
import { GPT2 } from "../engine/gpt2/family.ts";
import { LIBRARY_SAFETENSORS, safetensorsBytes } from "./hardening_fixtures.ts";
import { loadBackbone } from "./helpers.ts";
import { llama3InvFreq, referenceForward, ropeInvFreq } from "./reference/transformer.ts";
import { type Fixture, fixtureDir, fixtureModel, realVocab, referenceTensors, relErr, TOKENIZER } from "./transformer_helpers.ts";

const [gptNeox, gpt2, llama, qwen2, mistral] = [GPT_NEOX.def, GPT2.def, LLAMA.def, QWEN2.def, MISTRAL.def];
const rawConfig = async (f: Fixture) => JSON.parse(await Deno.readTextFile(fixtureDir(f) + "config.json"));

Deno.test("config parsing: each fixture's shapes, RoPE dims and scaling, residual style, biases, windows", async () => {
  const p = gptNeox.parse(await rawConfig("pythia"));
  assertEquals([p.headDim, p.rotaryDims, p.parallelResidual, p.mlp, p.norm, p.tieEmbeddings, p.vocabPadded], [8, 2, true, "gelu", "layernorm", false, 50304]);
  const g = gpt2.parse(await rawConfig("gpt2"));
  assertEquals([g.rotaryDims, g.learnedPositions, g.mlp, g.tieEmbeddings, g.dFF], [0, 64, "gelu_tanh", true, 128]);
  const l = llama.parse(await rawConfig("llama"));
  assertEquals([l.nHead, l.nKvHead, l.rotaryDims, l.ropeScaling, l.qkvBias, l.tieEmbeddings], [4, 2, 8, "llama3", false, true]);
  const want = llama3InvFreq(ropeInvFreq(8, 500000), { factor: 32, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 8192 });
  l.invFreq.forEach((f, i) => assert(Math.abs(f - want[i]) <= 1e-15 * want[i], `llama3 frequency ${i}: ${f} vs ${want[i]}`));
  assert(l.invFreq[3] < ropeInvFreq(8, 500000)[3] / 2, "the lowest frequency is scaled down");
  const q = qwen2.parse(await rawConfig("qwen2"));
  assertEquals([q.qkvBias, q.outBias, q.normEps, q.ropeScaling, q.slidingWindow], [true, false, 1e-6, "none", [0, 0, 0, 0]]);
  // Qwen2's sliding window: only with use_sliding_window, from max_window_layers up, or as layer_types say
  const qRaw = await rawConfig("qwen2");
  assertEquals(qwen2.parse({ ...qRaw, use_sliding_window: true, sliding_window: 5, max_window_layers: 2 }).slidingWindow, [0, 0, 5, 5]);
  assertEquals(
    qwen2.parse({ ...qRaw, use_sliding_window: true, sliding_window: 5, layer_types: ["sliding_attention", "full_attention", "sliding_attention", "full_attention"] }).slidingWindow,
    [5, 0, 5, 0],
  );
  // Mistral: the window everywhere; MistralConfig's 4096 when absent, none when null
  const base = { ...(await rawConfig("llama")), model_type: "mistral", rope_scaling: null };
  assertEquals(mistral.parse({ ...base, sliding_window: 7 }).slidingWindow, [7, 7, 7, 7]);
  assertEquals(mistral.parse({ ...base, sliding_window: null }).slidingWindow, [0, 0, 0, 0]);
  assertEquals(mistral.parse(base).slidingWindow, [4096, 4096, 4096, 4096]);
  // linear scaling divides every frequency
  const lin = llama.parse({ ...(await rawConfig("llama")), rope_scaling: { type: "linear", factor: 4 } });
  ropeInvFreq(8, 500000).forEach((f, i) => assert(Math.abs(lin.invFreq[i] - f / 4) <= 1e-15 * f, "linear scaling"));
  // the registry finds each by model_type, after the Mamba families
  const names = families().map((f) => f.name);
  for (const n of ["gpt_neox", "gpt2", "llama", "qwen2", "mistral"]) assert(names.indexOf(n) > names.indexOf("mamba2"), `${n} registered after mamba2`);
  const familyOf: Record<Fixture, string> = { pythia: "gpt_neox", gpt2: "gpt2", llama: "llama", qwen2: "qwen2" };
  for (const f of ["pythia", "gpt2", "llama", "qwen2"] as Fixture[]) assertEquals(detectFamily(await rawConfig(f)).name, familyOf[f]);
  assertEquals(detectFamily({ ...(await rawConfig("llama")), model_type: "mistral" }).name, "mistral");
});

Deno.test("config parsing: unsupported settings are refused in one line naming the key", async () => {
  const l = await rawConfig("llama"), p = await rawConfig("pythia"), g = await rawConfig("gpt2");
  const cases: [() => unknown, RegExp][] = [
    [() => llama.parse({ ...l, rope_scaling: { rope_type: "yarn", factor: 4 } }), /rope_scaling type "yarn" is not supported/],
    [() => llama.parse({ ...l, hidden_act: "gelu" }), /"hidden_act" "gelu" is not supported/],
    [() => llama.parse({ ...l, num_key_value_heads: 3 }), /4 attention heads are not a multiple of 3/],
    [() => llama.parse({ ...l, hidden_size: undefined }), /missing "hidden_size"/],
    [() => gptNeox.parse({ ...p, hidden_act: "relu" }), /"hidden_act" "relu" is not supported/],
    [() => gptNeox.parse({ ...p, rotary_pct: 1.5 }), /"rotary_pct" must be in \(0, 1\]/],
    [() => gptNeox.parse({ ...p, num_attention_heads: 5 }), /not a multiple of num_attention_heads 5/],
    [() => gpt2.parse({ ...g, scale_attn_by_inverse_layer_idx: true }), /scale_attn_by_inverse_layer_idx/],
    [() => gpt2.parse({ ...g, n_layer: 2.5 }), /"n_layer" must be a positive integer/],
  ];
  for (const [fn, re] of cases) assert(!assertThrows(fn, re).message.includes("\n"), String(re));
});

// ------------------------------------------------------------------ writing checkpoints

type Tensor = { dtype: "F32" | "F16" | "BF16"; shape: number[]; bytes: Uint8Array };

/** The tensors in one safetensors file, as the safetensors library writes it. */
const safetensors = (tensors: Map<string, Tensor>) => safetensorsBytes([...tensors].map(([name, t]) => ({ name, ...t })), LIBRARY_SAFETENSORS);

/** Round f32 values to bfloat16 bits (nearest, ties to even). */
function toBf16(x: Float32Array): Uint16Array {
  const bits = new Uint32Array(x.buffer, x.byteOffset, x.length);
  return Uint16Array.from(bits, (b) => (b + 0x7fff + ((b >>> 16) & 1)) >>> 16);
}

/** The fixture's tensors converted to `dtype`, renamed by `rename`. */
async function convertedTensors(f: Fixture, dtype: Tensor["dtype"], rename = (n: string) => n): Promise<Map<string, Tensor>> {
  const ckpt = await openCheckpoint(fixtureDir(f));
  try {
    const out = new Map<string, Tensor>();
    for (const t of ckpt.list()) {
      const v = await ckpt.readF32(t.name);
      const data = dtype === "F32" ? v : dtype === "BF16" ? toBf16(v) : float32ToHalf(v);
      out.set(rename(t.name), { dtype, shape: t.shape, bytes: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) });
    }
    return out;
  } finally {
    ckpt.close();
  }
}

async function withDir<T>(fn: (dir: string) => Promise<T>): Promise<T> {
  const dir = await Deno.makeTempDir({ prefix: "transformer-ckpt-" });
  try {
    return await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

async function lastLogits(dir: string, ids: number[], opts: LoadOptions = { vocabSize: 50277 }) {
  const ckpt = await openCheckpoint(dir);
  const m = await loadBackbone(ckpt, opts);
  try {
    return { logits: (await m.forward([ids], { mode: "attention" }))[0], info: m.info, ckpt };
  } finally {
    m.destroy();
    ckpt.close();
  }
}

const IDS = [510, 3101, 14018, 273, 10213, 282, 11128];

Deno.test("F32 and sharded F32 safetensors: the same logits as the F16 fixture", async () => {
  const f16 = (await (await fixtureModel("qwen2")).forward([IDS], { mode: "attention" }))[0];
  const tensors = await convertedTensors("qwen2", "F32");
  await withDir(async (dir) => {
    await Deno.copyFile(fixtureDir("qwen2") + "config.json", `${dir}/config.json`);
    await Deno.writeFile(`${dir}/model.safetensors`, safetensors(tensors));
    const a = await lastLogits(dir, IDS);
    assert(relErr(a.logits, f16) < 1e-6, "F32 single file");
    assertEquals(a.ckpt.format, "safetensors");
  });
  await withDir(async (dir) => {
    await Deno.copyFile(fixtureDir("qwen2") + "config.json", `${dir}/config.json`);
    const names = [...tensors.keys()], half = Math.ceil(names.length / 2);
    const shards = [names.slice(0, half), names.slice(half)];
    const weightMap: Record<string, string> = {};
    for (const [i, part] of shards.entries()) {
      const file = `model-0000${i + 1}-of-00002.safetensors`;
      await Deno.writeFile(`${dir}/${file}`, safetensors(new Map(part.map((n) => [n, tensors.get(n)!]))));
      for (const n of part) weightMap[n] = file;
    }
    await Deno.writeTextFile(`${dir}/model.safetensors.index.json`, JSON.stringify({ metadata: {}, weight_map: weightMap }));
    assert(relErr((await lastLogits(dir, IDS)).logits, f16) < 1e-6, "F32 sharded");
  });
});

Deno.test("BF16 weights: the GPU forward = the float64 reference on the same BF16 values", async () => {
  const f16 = (await (await fixtureModel("pythia")).forward([IDS], { mode: "attention" }))[0];
  await withDir(async (dir) => {
    await Deno.copyFile(fixtureDir("pythia") + "config.json", `${dir}/config.json`);
    await Deno.writeFile(`${dir}/model.safetensors`, safetensors(await convertedTensors("pythia", "BF16")));
    const got = (await lastLogits(dir, IDS)).logits;
    const ckpt = await openCheckpoint(dir);
    try {
      const t = referenceTensors(ckpt);
      const want = await referenceForward(ckpt.config.raw, t.get, t.has, IDS);
      const V = want.vocabRows, T = IDS.length;
      assert(relErr(got, want.logits.subarray((T - 1) * V, T * V)) < 1e-5, "BF16 vs reference");
    } finally {
      ckpt.close();
    }
    assert(relErr(got, f16) > 1e-4, "BF16 rounding shows: the BF16 values were used");
  });
});

Deno.test("GPT-2 checkpoints without the transformer. prefix (OpenAI's own) load the same", async () => {
  const want = (await (await fixtureModel("gpt2")).forward([IDS], { mode: "attention" }))[0];
  await withDir(async (dir) => {
    await Deno.copyFile(fixtureDir("gpt2") + "config.json", `${dir}/config.json`);
    await Deno.writeFile(`${dir}/model.safetensors`, safetensors(await convertedTensors("gpt2", "F16", (n) => n.replace(/^transformer\./, ""))));
    assert(relErr((await lastLogits(dir, IDS)).logits, want) < 1e-7, "unprefixed GPT-2");
  });
});

Deno.test("the real vocabulary (the one rule of every family): the tokenizer's tokens, else every head row; refusals", async () => {
  assertEquals((await loadTokenizer(TOKENIZER)).vocabSize, 50277);
  assertEquals(await realVocab(), 50277);
  await withDir(async (dir) => {
    await Deno.copyFile(fixtureDir("pythia") + "config.json", `${dir}/config.json`);
    await Deno.symlink(fixtureDir("pythia") + "model.safetensors", `${dir}/model.safetensors`);
    // no tokenizer: every one of the head's 50304 rows is a token (the Hugging Face layouts' vocab_size)
    const all = await lastLogits(dir, IDS, {});
    assertEquals([all.info.vocabSize, all.info.vocabPadded], [50304, 50304]);
    // the tokenizer beside the weights is the model's (what the pipeline and infer read)
    await Deno.copyFile(TOKENIZER, `${dir}/tokenizer.json`);
    const own = await tokenizerPathFor(dir);
    assertEquals(own.source, "model");
    const real = await lastLogits(dir, IDS, { vocabSize: (await loadTokenizer(own.path)).vocabSize });
    assertEquals([real.info.vocabSize, real.info.vocabPadded], [50277, 50304]);
    const e = await assertRejects(() => lastLogits(dir, IDS, { vocabSize: 60000 }), /the tokenizer has 60000 tokens but the model's LM head only 50304 rows: it is not this model's tokenizer/);
    assert(!e.message.includes("\n"), e.message);
  });
});

Deno.test("checkpoint refusals: unknown model_type, weights that do not fit the config", async () => {
  await withDir(async (dir) => {
    await Deno.symlink(fixtureDir("pythia") + "model.safetensors", `${dir}/model.safetensors`);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ model_type: "bert" }));
    const e1 = await assertRejects(() => lastLogits(dir, IDS), /model_type "bert" is not a supported model family; supported: mamba2 .*gpt_neox .*gpt2 .*llama .*qwen2 .*mistral /);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...(await rawConfig("pythia")), intermediate_size: 64 }));
    const e2 = await assertRejects(() => lastLogits(dir, IDS), /'gpt_neox\.layers\.0\.mlp\.dense_h_to_4h\.weight' has shape \[128, 32\] but config\.json implies \[64, 32\]/);
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...(await rawConfig("pythia")), tie_word_embeddings: false, rotary_pct: 0 }));
    const e3 = await assertRejects(() => lastLogits(dir, IDS), /config\.json: "rotary_pct" must be in \(0, 1\]/);
    for (const e of [e1, e2, e3]) assert(!e.message.includes("\n"), e.message);
  });
});

Deno.test("older exports' attention buffers (masked_bias, rotary inv_freq) load; a stray tensor is refused", async () => {
  const want = (await (await fixtureModel("pythia")).forward([IDS], { mode: "attention" }))[0];
  const tensors = await convertedTensors("pythia", "F16");
  const f32 = (v: number[]) => new Uint8Array(Float32Array.from(v).buffer);
  for (let l = 0; l < 4; l++) {
    tensors.set(`gpt_neox.layers.${l}.attention.masked_bias`, { dtype: "F32", shape: [], bytes: f32([-1e9]) });
    tensors.set(`gpt_neox.layers.${l}.attention.rotary_emb.inv_freq`, { dtype: "F32", shape: [1], bytes: f32([1]) });
  }
  await withDir(async (dir) => {
    await Deno.copyFile(fixtureDir("pythia") + "config.json", `${dir}/config.json`);
    await Deno.writeFile(`${dir}/model.safetensors`, safetensors(tensors));
    assert(relErr((await lastLogits(dir, IDS)).logits, want) < 1e-7, "with the buffers");
    tensors.set("gpt_neox.layers.0.attention.rotary_emb.inv_freq", { dtype: "F32", shape: [3], bytes: f32([1, 2, 3]) });
    await Deno.writeFile(`${dir}/model.safetensors`, safetensors(tensors));
    await assertRejects(() => lastLogits(dir, IDS), /'gpt_neox\.layers\.0\.attention\.rotary_emb\.inv_freq' has shape \[3\] but config\.json implies \[1\]/);
    tensors.delete("gpt_neox.layers.0.attention.rotary_emb.inv_freq");
    tensors.set("gpt_neox.layers.4.attention.dense.weight", { dtype: "F32", shape: [1], bytes: f32([0]) });
    await Deno.writeFile(`${dir}/model.safetensors`, safetensors(tensors));
    await assertRejects(() => lastLogits(dir, IDS), /'gpt_neox\.layers\.4\.attention\.dense\.weight' \[1\] is not part of the model config\.json describes/);
  });
});
