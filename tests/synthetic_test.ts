// Synthetic checkpoints (benchmarks) have every tensor the model needs, deterministic values,
// and give finite outputs.
import { assert, assertEquals } from "./assert.ts";
import { expectModelTensors } from "../engine/checkpoint/mod.ts";
import { MAMBA2_SHAPES, syntheticCheckpoint, syntheticConfig } from "../engine/synthetic.ts";
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
