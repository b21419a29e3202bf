// Geva et al.'s attention knockout on the four Transformer fixtures: every flow × window case of
// golden-experiments.json (p(true) within 2e-4 relative of the float64 golden, the same hit) both by
// the full forward and by the backbone's exact fast path (engine/fastpath.ts, with the Transformer's
// KV cache), and the fast path equal to the full recompute, also where the goldens pin nothing:
// several prompts and windows per call, per-head selections, flows whose blocked rows start early
// (many recomputed rows), a sliding-window model, and an adapter and memory budget so small that
// prompts, passes and the LM head are all split.
import { assert, assertEquals, assertRejects } from "./assert.ts";
import type { KnockoutConfig, LanguageModel } from "../engine/arch.ts";
import type { Backbone } from "../engine/backbone.ts";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { flowEdges } from "../engine/flows.ts";
import type { Gpu } from "../engine/gpu.ts";
import type { TokenStats } from "../engine/probs.ts";
import type { TransformerStack } from "../engine/transformer/model.ts";
import { loadBackbone } from "./helpers.ts";
import { fixtureDir, fixtureModel, FIXTURES, goldenExperiments, realVocab } from "./transformer_helpers.ts";

const P_REL = 2e-4; // p(true) relative to the golden (the bound)
const FAST_VS_FULL = 1e-5; // relative: the fast path is exact, f32 rounding apart

async function fullRecompute(m: LanguageModel, prompts: number[][], configs: KnockoutConfig[]): Promise<TokenStats[]> {
  return await m.forwardStats(configs.map((k) => prompts[k.prompt]), configs.map((k) => k.target), {
    mode: "attention",
    knockouts: configs.map((k) => [k]),
  });
}

function assertFastIsFull(fast: TokenStats[], full: TokenStats[], what: (i: number) => string) {
  assertEquals(fast.length, full.length);
  fast.forEach((r, i) => {
    assert(Math.abs(r.trueProb - full[i].trueProb) <= FAST_VS_FULL * full[i].trueProb, `${what(i)}: fast ${r.trueProb} vs full ${full[i].trueProb}`);
    assertEquals(r.predId, full[i].predId, `${what(i)}: argmax`);
  });
}

for (const f of FIXTURES) {
  Deno.test(`${f}: every flow × window of golden-experiments.json, full forward and fast path`, async () => {
    const m = await fixtureModel(f);
    const g = await goldenExperiments(f);
    const prompts = g.prompts.map((p) => p.ids);
    const configs: KnockoutConfig[] = [];
    const golden: { row: number; c: (typeof g.prompts)[0]["cases"][0]; trueId: number }[] = [];
    let skipped = 0;
    g.prompts.forEach((p, pi) => {
      for (const c of p.cases) {
        assertEquals(c.heads, "all");
        const edges = flowEdges(c.flow, p.ids.length, p.subject_tokens);
        assertEquals(edges.length, c.edges, `row ${p.row} ${c.flow}: edge count`);
        if (edges.length === 0) { // no edge for this prompt: no result (the golden gives none)
          skipped++;
          continue;
        }
        configs.push({ prompt: pi, target: p.true_id, start: c.window_start, end: c.window_start + g.window_size, edges });
        golden.push({ row: p.row, c, trueId: p.true_id });
      }
    });
    assert(skipped > 0 && configs.length > 150, `${configs.length} cases, ${skipped} without edges`);
    let progress = 0;
    const fast = await m.knockouts(prompts, g.prompts.map((p) => p.true_id), configs, (n) => (progress = n));
    assertEquals(progress, configs.length);
    const full = await fullRecompute(m, prompts, configs);
    const where = (i: number) => `${f} row ${golden[i].row}, ${golden[i].c.flow}, window ${golden[i].c.window_start}`;
    let worst = 0;
    configs.forEach((_, i) => {
      const { c, trueId } = golden[i];
      for (const [path, r] of [["fast", fast.results[i]], ["full", full[i]]] as const) {
        const e = Math.abs(r.trueProb - c.true_prob) / c.true_prob;
        worst = Math.max(worst, e);
        assert(e <= P_REL, `${where(i)} (${path}): p ${r.trueProb} vs golden ${c.true_prob}`);
        assertEquals(r.predId === trueId, c.hit, `${where(i)} (${path}): hit`);
      }
    });
    assertFastIsFull(fast.results, full, where);
    g.prompts.forEach((p, pi) => {
      assert(Math.abs(fast.base[pi].trueProb - p.base.true_prob) <= P_REL * p.base.true_prob, `${f} row ${p.row}: base p`);
      assertEquals(fast.base[pi].predId === p.true_id, p.base.hit);
    });
    console.log(`  ${f}: ${configs.length} cases, worst relative |p − golden| ${worst.toExponential(2)}`);
  });
}

/** Knockouts the goldens do not pin: every flow, windows of 1..4 layers, per-head selections, one call. */
function variedConfigs(nLayer: number, prompts: { ids: number[]; subject: number[]; target: number }[]): KnockoutConfig[] {
  const flows = ["last<-subject", "subject<-subject", "relation<-context", "all<-first", "last<-all", "relation_minus_last<-subject"];
  const out: KnockoutConfig[] = [];
  prompts.forEach((p, pi) => {
    flows.forEach((flow, fi) => {
      const edges = flowEdges(flow, p.ids.length, p.subject);
      if (edges.length === 0) return;
      for (let k = 1; k <= nLayer; k++) {
        for (let start = 0; start + k <= nLayer; start += 1 + ((fi + k) % 2)) {
          const units = (start + fi) % 3 === 0 ? { kind: "only" as const, units: [fi % 4, (fi + 2) % 4] } : { kind: "all" as const };
          out.push({ prompt: pi, target: p.target, start, end: start + k, edges, units });
        }
      }
    });
  });
  return out;
}

Deno.test("fast path = full recompute: several prompts, all flows, windows of 1..4 layers, per-head selections", async () => {
  for (const f of FIXTURES) {
    const m = await fixtureModel(f);
    const g = await goldenExperiments(f);
    const some = g.prompts.slice(0, 5).map((p) => ({ ids: p.ids, subject: p.subject_tokens, target: p.true_id }));
    const configs = variedConfigs(m.info.nLayer, some);
    const prompts = some.map((p) => p.ids);
    const fast = await m.knockouts(prompts, some.map((p) => p.target), configs);
    const full = await fullRecompute(m, prompts, configs);
    assertFastIsFull(fast.results, full, (i) => `${f} configuration ${i} (${configs[i].start}-${configs[i].end})`);
  }
});

Deno.test("fast path: a configuration without edges gives the base; errors are one line", async () => {
  const m = await fixtureModel("qwen2");
  const g = await goldenExperiments("qwen2");
  const p = g.prompts[0];
  const res = await m.knockouts([p.ids], [p.true_id], [{ prompt: 0, target: p.true_id, start: 1, end: 3, edges: [] }]);
  assert(Math.abs(res.results[0].trueProb - res.base[0].trueProb) <= 1e-6 * res.base[0].trueProb, "no edges = base");
  const one = async (k: Partial<KnockoutConfig>, re: RegExp) => {
    const e = await assertRejects(() => m.knockouts([p.ids], [p.true_id], [{ prompt: 0, target: 1, start: 0, end: 1, edges: [[1, 0]], ...k }]), re);
    assert(!e.message.includes("\n"), e.message);
  };
  await one({ prompt: 3 }, /names prompt 3/);
  await one({ conv: true }, /need a conv path, which qwen2 models do not have/);
  await one({ units: { kind: "slow", a: 1, b: 2 } }, /ranks units by decay, which layer 0 does not have: use all or only/);
  await one({ edges: [[0, 1]] }, /edge \(0,1\) is invalid/);
  await one({ target: -1 }, /target id -1/);
  await assertRejects(() => m.knockouts([p.ids], [], []), /0 targets for 1 prompts/);
});

/** The same device with a 256 KiB largest binding: one row of logits per head block, the embedding in chunks. */
const TINY_BINDING = 256 * 1024;
function tinyAdapter(gpu: Gpu): Gpu {
  return { ...gpu, maxBinding: TINY_BINDING };
}

Deno.test("fast path on a tiny adapter with a tiny memory budget: groups, passes and the LM head split, same results", async () => {
  const small = await loadBackbone(fixtureDir("pythia"), { gpu: tinyAdapter(await fixtureModel("pythia").then((m) => m.gpu)), vocabSize: await realVocab() });
  try {
    const normal = await fixtureModel("pythia");
    const g = await goldenExperiments("pythia");
    const some = g.prompts.slice(0, 6).map((p) => ({ ids: p.ids, subject: p.subject_tokens, target: p.true_id }));
    const configs = variedConfigs(4, some);
    const prompts = some.map((p) => p.ids);
    const targets = some.map((p) => p.target);
    const stack = small.stack as TransformerStack, D = small.info.dModel, L = small.info.nLayer;
    const longest = Math.max(...prompts.map((p) => p.length));
    // a group's capture (the residual stream and the keys and values of every layer) holds one prompt; a pass about 3 rows
    const captureBytes = L * longest * 4 * (D + stack.stride);
    const rowsBytes = 3 * 4 * (D + 8 + longest + stack.rowsScratchFloats(longest).total);
    assert(Math.floor(TINY_BINDING / (4 * small.info.vocabPadded)) === 1, "one row of logits per head block");
    let calls = 0;
    const a = await small.knockouts(prompts, targets, configs, () => calls++, { captureBytes, rowsBytes });
    assert(calls >= configs.length / 4, `${calls} progress calls for ${configs.length} configurations: the budget did not split the work`);
    const b = await normal.knockouts(prompts, targets, configs);
    assertFastIsFull(a.results, b.results, (i) => `tiny adapter, configuration ${i}`);
    assertFastIsFull(a.base, b.base, (i) => `tiny adapter, base ${i}`);
  } finally {
    small.destroy();
  }
});

Deno.test("sliding-window attention (Mistral config on the Llama fixture's weights): GPU = reference, fast path = full", async () => {
  const { referenceForward } = await import("./reference/transformer.ts");
  const { referenceTensors } = await import("./transformer_helpers.ts");
  const dir = await Deno.makeTempDir({ prefix: "mistral-window-" });
  try {
    const cfg = JSON.parse(await Deno.readTextFile(fixtureDir("llama") + "config.json"));
    const mistral = { ...cfg, architectures: ["MistralForCausalLM"], model_type: "mistral", sliding_window: 3, rope_scaling: null, rope_theta: 10000 };
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify(mistral));
    await Deno.symlink(fixtureDir("llama") + "model.safetensors", `${dir}/model.safetensors`);
    const ckpt = await openCheckpoint(dir);
    const m: Backbone = await loadBackbone(ckpt, { vocabSize: await realVocab() });
    try {
      assertEquals(m.info.family, "mistral");
      const g = await goldenExperiments("llama");
      const p = g.prompts[1];
      const T = p.ids.length;
      const t = referenceTensors(ckpt);
      const edges: [number, number][] = flowEdges("last<-subject", T, p.subject_tokens);
      const want = await referenceForward(mistral, t.get, t.has, p.ids, [{ start: 1, end: 3, edges }]);
      const got = await m.forward([p.ids], { mode: "attention", knockouts: [[{ start: 1, end: 3, edges }]] });
      const V = want.vocabRows;
      let e = 0, mx = 0;
      for (let v = 0; v < V; v++) {
        e = Math.max(e, Math.abs(got[0][v] - want.logits[(T - 1) * V + v]));
        mx = Math.max(mx, Math.abs(want.logits[(T - 1) * V + v]));
      }
      assert(e / mx < 1e-5, `mistral window: ${e / mx}`);
      const plainLlama = await (await fixtureModel("llama")).forward([p.ids], { mode: "attention" });
      assert(Math.abs(plainLlama[0][0] - got[0][0]) > 1e-6, "the window changed the result");
      const some = g.prompts.slice(0, 4).map((q) => ({ ids: q.ids, subject: q.subject_tokens, target: q.true_id }));
      const configs = variedConfigs(4, some);
      const prompts = some.map((q) => q.ids);
      const fast = await m.knockouts(prompts, some.map((q) => q.target), configs);
      assertFastIsFull(fast.results, await fullRecompute(m, prompts, configs), (i) => `mistral window, configuration ${i}`);
    } finally {
      m.destroy();
      ckpt.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
