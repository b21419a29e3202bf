// The family registry (engine/families.ts) and the generic backbone (engine/backbone.ts):
// config.json names the family (state-spaces ssm_cfg.layer, Hugging Face model_type) and an unknown
// one is one line listing the supported; a checkpoint is checked against its family's tensor list
// (missing, misshapen and unexpected tensors named); the generic pieces (read-back of logits and of
// statistics, the knockout masks' union over specs, the workspace, the queue of forwards) do what
// they say; and Mamba-2 with ngroups = 2 reproduces its float64 goldens in both modes, with the
// fast path equal to the full recompute.
import { assert, assertEquals, assertRejects, assertThrows } from "./assert.ts";
import { type KnockoutConfig, type KnockoutSpec, parseUnitSelector } from "../engine/arch.ts";
import { type Checkpoint, expectModelTensors, openCheckpoint } from "../engine/checkpoint/mod.ts";
import { parseConfig } from "../engine/config.ts";
import { detectFamily, expectedTensors, families, familyOf } from "../engine/families.ts";
import { flowEdges } from "../engine/flows.ts";
import { argmax, logSumExp } from "../engine/probs.ts";
import { assertGoldenKnockouts, assertGoldenSequences, FIXTURE_DIR, goldenEngine, loadBackbone, maxAbs, maxAbsDiff } from "./helpers.ts";

const GROUPS_DIR = new URL("./fixtures/mamba2-groups/", import.meta.url).pathname;
const LOGIT_TOL = 1e-4; // relative to max |logit|, as tests/engine_test.ts

const fixtureConfig = (): Record<string, unknown> => JSON.parse(Deno.readTextFileSync(FIXTURE_DIR + "config.json"));

Deno.test("config.json names the family; an unknown one is one line listing the supported", () => {
  assertEquals(detectFamily(fixtureConfig()).name, "mamba2");
  assertEquals(parseConfig(fixtureConfig()).family, "mamba2");
  for (const f of ["mamba2", "mamba1", "falcon_mamba"]) assert(families().some((x) => x.name === f), f);
  // no ssm_cfg.layer: Mamba-1, as mamba_ssm reads it (tests/mamba1_test.ts, tests/layouts_test.ts)
  assertEquals(parseConfig({ ...fixtureConfig(), ssm_cfg: {} }).family, "mamba1");
  const bad: [unknown, RegExp][] = [
    [{ ...fixtureConfig(), ssm_cfg: { layer: "Mamba3" } }, /ssm_cfg\.layer "Mamba3" \(state-spaces layout; absent means Mamba1\) is not a supported model family; supported: mamba2 \(state-spaces config\.json with ssm_cfg\.layer "Mamba2", or model_type "mamba2"\); mamba1 /],
    [{ model_type: "mamba3", hidden_size: 32 }, /model_type "mamba3" is not a supported model family; supported: mamba2/],
    [{ model_type: "bert", hidden_size: 32 }, /model_type "bert" is not a supported model family; supported: mamba2 .*; gpt_neox \(Hugging Face config\.json with model_type "gpt_neox"\); gpt2 .*; mistral /],
    [{ model_type: "llama", hidden_size: 32 }, /missing "num_attention_heads"/],
    [{ hidden_size: 32 }, /names no architecture \(no model_type, no d_model\/ssm_cfg\); supported: mamba2/],
    [[1, 2], /not a JSON object/],
    [{ ...fixtureConfig(), d_model: 0 }, /"d_model" must be a positive integer, got 0/],
    [{ ...fixtureConfig(), ssm_cfg: { layer: "Mamba2", headdim: 7 } }, /d_inner 128 is not a multiple of headdim 7/],
    [{ ...fixtureConfig(), ssm_cfg: { layer: "Mamba2", d_state: "x" } }, /config\.json ssm_cfg: "d_state" must be a positive integer, got "x"/],
    [{ ...fixtureConfig(), attn_layer_idx: [1] }, /hybrid models with attention layers/],
  ];
  for (const [raw, re] of bad) {
    const err = assertThrows(() => parseConfig(raw), re);
    assertEquals(err.name, "ConfigError");
    assert(!err.message.includes("\n"));
  }
});

Deno.test("the tensor list: what the checkpoint check, the loader and synthetic checkpoints read", async () => {
  const ckpt = await openCheckpoint(FIXTURE_DIR);
  try {
    const specs = expectedTensors(ckpt.config);
    assertEquals(specs.length, 2 + 6 * 9 + 1); // embedding, 9 per layer, norm_f, and the tied lm_head (optional)
    assertEquals(specs.filter((t) => t.optional).map((t) => t.name), ["lm_head.weight"]);
    for (const t of ckpt.list()) assertEquals(specs.find((s) => s.name === t.name)?.shape, t.shape, t.name);
    expectModelTensors(ckpt);
  } finally {
    ckpt.close();
  }
});

/** The fixture's weights under another config.json. */
async function withConfig(config: Record<string, unknown>, fn: (c: Checkpoint) => void | Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(config));
    await Deno.symlink(FIXTURE_DIR + "model.safetensors", `${dir}/model.safetensors`);
    const ckpt = await openCheckpoint(dir);
    try {
      await fn(ckpt);
    } finally {
      ckpt.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("a checkpoint whose tensors disagree with config.json is refused, naming the tensor", async () => {
  await withConfig({ ...fixtureConfig(), n_layer: 5 }, async (ckpt) => {
    // fewer layers in the config than in the weights: layer 5's tensors are not part of the model
    assertThrows(() => expectModelTensors(ckpt), /tensor 'backbone\.layers\.5\.mixer\.A_log' \[8\] is not part of the model config\.json describes/);
    await assertRejects(() => loadBackbone(ckpt), /backbone\.layers\.5\.mixer\.A_log/);
  });
  await withConfig({ ...fixtureConfig(), n_layer: 7 }, (ckpt) => {
    assertThrows(() => expectModelTensors(ckpt), /tensor 'backbone\.layers\.6\.norm\.weight' \(expected shape \[64\]\) is missing/);
  });
  await withConfig({ ...fixtureConfig(), ssm_cfg: { layer: "Mamba2", d_state: 16, headdim: 32 } }, (ckpt) => {
    assertThrows(() => expectModelTensors(ckpt), /'backbone\.layers\.0\.mixer\.in_proj\.weight' has shape \[296, 64\] but config\.json implies \[292, 64\]/);
  });
});

Deno.test("Mamba-2 with ngroups = 2: golden logits in scan and attention mode, golden knockouts", async () => {
  const model = await loadBackbone(GROUPS_DIR);
  try {
    assertEquals(model.info.config.ngroups, 2);
    assertEquals(model.info.unitsPerLayer, 8);
    const golden = await goldenEngine(GROUPS_DIR);
    for (const mode of ["scan", "attention"] as const) {
      const logits = await model.forward(golden.sequences.map((s) => s.ids), { mode, allPositions: true });
      assertGoldenSequences(logits, golden, model.info, LOGIT_TOL, `ngroups 2, ${mode}`);
    }
    await assertGoldenKnockouts(model, golden, LOGIT_TOL, "ngroups 2");
  } finally {
    model.destroy();
  }
});

Deno.test("Mamba-2 with ngroups = 2: the fast path equals the full recompute (flows, selectors, conv)", async () => {
  const model = await loadBackbone(GROUPS_DIR);
  try {
    const golden = await goldenEngine(GROUPS_DIR);
    const prompts = golden.sequences.filter((s) => s.ids.length > 2).map((s) => s.ids);
    const configs: KnockoutConfig[] = [];
    prompts.forEach((ids, p) => {
      const subject = [1, 2];
      for (const flow of ["last<-subject", "relation<-relation", "subject<-context"]) {
        const edges = flowEdges(flow, ids.length, subject);
        for (const heads of ["all", "fast:1/2", "not-slow:1/4"]) {
          for (const conv of [false, true]) configs.push({ prompt: p, start: 1, end: 3, edges, units: parseUnitSelector(heads), conv, target: 7 });
        }
      }
    });
    const fast = await model.knockouts(prompts, prompts.map(() => 7), configs);
    const full = await model.forwardStats(configs.map((c) => prompts[c.prompt]), configs.map((c) => c.target), {
      mode: "attention",
      knockouts: configs.map(({ prompt: _p, target: _t, ...spec }) => [spec]),
    });
    configs.forEach((_, i) => {
      assert(Math.abs(fast.results[i].trueProb - full[i].trueProb) <= 1e-4 * full[i].trueProb, `configuration ${i}: ${fast.results[i].trueProb} vs ${full[i].trueProb}`);
      assertEquals(fast.results[i].predId, full[i].predId);
    });
  } finally {
    model.destroy();
  }
});

Deno.test("backbone: statistics on the GPU equal those of the logits read back; positions and padding", async () => {
  const model = await loadBackbone(FIXTURE_DIR);
  try {
    const V = model.info.vocabPadded, vocab = model.info.vocabSize;
    const prompts = [[5, 6, 7, 8, 9, 10, 11], [12], [13, 14, 15]];
    const targets = [3, 50276, 0];
    const all = await model.forward(prompts, { mode: "scan", allPositions: true });
    const last = await model.forward(prompts, { mode: "scan" });
    const stats = await model.forwardStats(prompts, targets, { mode: "scan" });
    prompts.forEach((p, i) => {
      assertEquals(all[i].length, p.length * V);
      assertEquals(last[i].length, V);
      assert(maxAbsDiff(all[i].subarray((p.length - 1) * V), last[i]) <= 1e-6 * maxAbs(last[i]), `prompt ${i}: the last of all positions`);
      const lse = logSumExp(last[i], vocab);
      assert(Math.abs(stats[i].trueProb - Math.exp(last[i][targets[i]] - lse)) <= 1e-5 * stats[i].trueProb, `prompt ${i}: p(target)`);
      assertEquals(stats[i].predId, argmax(last[i], vocab));
      assert(Math.abs(stats[i].maxProb - Math.exp(last[i][stats[i].predId] - lse)) <= 1e-5, `prompt ${i}: p(max)`);
    });
    // a prompt's outputs do not depend on the others padded beside it
    const [alone] = await model.forward([prompts[1]], { mode: "scan" });
    assert(maxAbsDiff(alone, last[1]) <= 1e-6 * maxAbs(alone));
  } finally {
    model.destroy();
  }
});

Deno.test("backbone: the knockout masks are the union of every spec on an edge; the workspace and the queue of forwards", async () => {
  const model = await loadBackbone(FIXTURE_DIR);
  try {
    const ids = [100, 200, 300, 400, 500, 600];
    const edges = flowEdges("last<-all", ids.length, [2, 3]);
    const spec = (units: string, extra: Partial<KnockoutSpec> = {}): KnockoutSpec => ({ start: 1, end: 4, edges, units: parseUnitSelector(units), ...extra });
    // fast:1/4 and slow:1/4 of layer 1..3 on the same edges = one spec with the union of their heads, per layer
    const fast = [1, 2, 3].map((l) => model.selectUnits(l, parseUnitSelector("fast:1/4")));
    const slow = [1, 2, 3].map((l) => model.selectUnits(l, parseUnitSelector("slow:1/4")));
    const union = [1, 2, 3].map((l, i): KnockoutSpec => ({ start: l, end: l + 1, edges, units: { kind: "only", units: [...new Set([...fast[i], ...slow[i]])] } }));
    const [two, one, neither] = await model.forward([ids, ids, ids], { mode: "attention", knockouts: [[spec("fast:1/4"), spec("slow:1/4")], union, undefined] });
    assert(maxAbsDiff(two, one) <= 1e-6 * maxAbs(one), "two specs on an edge block the union of their heads");
    assert(maxAbsDiff(two, neither) > 1e-4 * maxAbs(neither), "and they block something");
    // conv taps: one spec with conv, one without, on the same edges = the conv one alone
    const [mixed, convOnly] = await model.forward([ids, ids], { mode: "attention", knockouts: [[spec("all"), spec("all", { conv: true })], [spec("all", { conv: true })]] });
    assert(maxAbsDiff(mixed, convOnly) <= 1e-6 * maxAbs(convOnly));
    // the workspace is made again after release; concurrent forwards queue and give their own results
    model.releaseWorkspace();
    const [a, b] = await Promise.all([model.forward([ids], { mode: "scan" }), model.forward([[7, 8, 9]], { mode: "attention" })]);
    const [a2] = await model.forward([ids], { mode: "scan" });
    const [b2] = await model.forward([[7, 8, 9]], { mode: "attention" });
    assert(maxAbsDiff(a[0], a2) === 0 && maxAbsDiff(b[0], b2) === 0, "concurrent forwards equal sequential ones");
    // maxBatch: rows of a pass bounded, a prompt too long for a binding refused in one line
    assertEquals(model.maxBatch(10, { mode: "scan" }), 819);
    assertThrows(() => model.maxBatch(1e6, { mode: "attention" }), /a prompt of 1000000 tokens is too long for attention mode on this adapter/);
  } finally {
    model.destroy();
  }
});

Deno.test("what knockouts act on, from config.json alone, is what the loaded model says (the checks before a run)", async () => {
  const dir = (name: string) => new URL(`./fixtures/${name}/`, import.meta.url).pathname;
  const cases: [string, { unitName: string; unitsPerLayer: number; convWidth: number; rankedByDecay: boolean }][] = [
    ["mamba2-tiny", { unitName: "head", unitsPerLayer: 8, convWidth: 4, rankedByDecay: true }],
    ["mamba1-tiny", { unitName: "channel", unitsPerLayer: 64, convWidth: 4, rankedByDecay: true }],
    ["pythia-tiny", { unitName: "head", unitsPerLayer: 4, convWidth: 0, rankedByDecay: false }],
  ];
  for (const [name, expected] of cases) {
    const ckpt = await openCheckpoint(dir(name));
    const units = familyOf(ckpt.config).units(ckpt.config);
    const model = await loadBackbone(ckpt);
    try {
      const { unitName, unitsPerLayer, convWidth, rankedByDecay } = units;
      assertEquals({ unitName, unitsPerLayer, convWidth, rankedByDecay }, expected, name);
      assertEquals(model.info.modes, units.modes, name);
      assertEquals(model.info.unitsPerLayer, units.unitsPerLayer, name);
      assertEquals(model.info.convWidth, units.convWidth, name);
      assertEquals(model.decay(0) !== null, units.rankedByDecay, `${name}: a decay per unit exactly when selectors may rank by it`);
      if (model.decay(0)) assertEquals(model.decay(0)!.length, units.unitsPerLayer, name);
    } finally {
      model.destroy();
      ckpt.close();
    }
  }
});
