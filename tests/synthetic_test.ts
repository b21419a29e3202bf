// Synthetic checkpoints (benchmarks) have every tensor the model needs, deterministic values,
// and give finite outputs.
import { assert, assertEquals } from "./assert.ts";
import { expectModelTensors } from "../engine/checkpoint/mod.ts";
import { MAMBA2_SHAPES, SHAPES, syntheticCheckpoint, syntheticConfig } from "../engine/synthetic.ts";
import { loadBackbone } from "./helpers.ts";

Deno.test("synthetic checkpoints: complete, deterministic, finite outputs", async () => {
  for (const shape of Object.keys(MAMBA2_SHAPES)) expectModelTensors(syntheticCheckpoint(syntheticConfig(shape)));
  const cfg = syntheticConfig("mamba2-130m", { n_layer: 2, d_model: 128 });
  const a = syntheticCheckpoint(cfg, 1), b = syntheticCheckpoint(cfg, 1), c = syntheticCheckpoint(cfg, 2);
  for (const t of a.list()) {
    const [x, y] = [await a.readF32(t.name), await b.readF32(t.name)];
    assertEquals(x.length, t.shape.reduce((p, q) => p * q, 1), t.name);
    assert(x.every((v, i) => v === y[i] && Number.isFinite(v)), `${t.name}: same seed, same finite values`);
  }
  const emb1 = await a.readF32("backbone.embedding.weight"), emb2 = await c.readF32("backbone.embedding.weight");
  assert(emb1.some((v, i) => v !== emb2[i]), "another seed, other values");
  const model = await loadBackbone(a);
  const [logits] = await model.forward([[1, 2, 3, 4]], { mode: "scan" });
  assert(logits.every(Number.isFinite));
  model.destroy();
});

Deno.test("synthetic checkpoints of the other published shapes: Mamba-1, Falcon-Mamba, Codestral Mamba (8 groups, HF layout), shrunk, run in both modes", async () => {
  for (const shape of SHAPES) expectModelTensors(syntheticCheckpoint(syntheticConfig(shape)));
  const small: [string, Record<string, unknown>][] = [
    ["mamba-1.4b", { d_model: 64, n_layer: 2 }],
    ["falcon-mamba-7b", { hidden_size: 64, num_hidden_layers: 2, time_step_rank: 8, vocab_size: 1024 }],
    ["mamba-codestral-7b", { hidden_size: 64, num_hidden_layers: 2, num_heads: 8, head_dim: 16, state_size: 16, vocab_size: 1024 }],
  ];
  for (const [shape, over] of small) {
    const cfg = syntheticConfig(shape, over);
    const model = await loadBackbone(syntheticCheckpoint(cfg, 3));
    try {
      const ids = [[1, 2, 3, 4, 5, 6], [7, 8]];
      const [scan, attention] = [await model.forward(ids, { mode: "scan" }), await model.forward(ids, { mode: "attention" })];
      scan.forEach((s, i) => {
        assert(s.every(Number.isFinite), `${shape}: finite logits`);
        const max = s.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
        assert(s.every((v, j) => Math.abs(v - attention[i][j]) <= 1e-4 * max), `${shape}: scan = attention`);
      });
    } finally {
      model.destroy();
    }
  }
});
