// Matmul plans tuned per adapter (engine/matmul_tune.ts): measured once, cached under the adapter's
// key, read back without measuring, a damaged cache measured again; the plans chosen compute the
// product (against the float64 reference); CPU adapters keep matmulPlan's unless tuning is forced.
import { join } from "node:path";
import { createGpu, readBuffer, Recorder, uploadBuffer } from "../engine/gpu.ts";
import { describePlan, destroyWeight, matmulPlan, shapeKey, uploadWeight } from "../engine/matmul.ts";
import { bucketOf, candidatePlans, lookup, ROW_BUCKETS, tuningEnabled } from "../engine/matmul_tune.ts";
import { Ops } from "../engine/ops.ts";
import * as ref from "./reference/shared.ts";
import { assert, assertEquals } from "./assert.ts";
import { seeded } from "./helpers.ts";

Deno.test("row buckets and lookup: the smallest bucket at or above m, else the largest measured below", () => {
  assertEquals([1, 2, 3, 4, 5, 16, 17, 300].map(bucketOf), [1, 2, 4, 4, 8, 16, 64, 256]);
  const a = { kind: "tiled", R: 1, NC: 1, WG: 64 } as const, b = { kind: "splitk", R: 4, NC: 1, WG: 64 } as const;
  assertEquals(lookup({ "1": a, "4": b }, 1), a);
  assertEquals(lookup({ "1": a, "4": b }, 3), b);
  assertEquals(lookup({ "1": a, "4": b }, 1000), b); // beyond the largest bucket measured
  assertEquals(lookup(undefined, 5), undefined);
  for (const m of ROW_BUCKETS) {
    const fallback = matmulPlan(m, 3352, 768);
    const c = candidatePlans(m, fallback);
    assertEquals(c[0], fallback);
    assertEquals(new Set(c.map((p) => JSON.stringify(p))).size, c.length, "no candidate twice");
    assert(c.some((p) => p.kind === "splitk"), "split-k among the candidates");
  }
});

Deno.test("tuning: measured once and cached per adapter, read back, a damaged cache measured again", async () => {
  const gpu = await createGpu();
  const dir = await Deno.makeTempDir();
  const cachePath = join(dir, "matmul-plans.json");
  try {
    const ops = await Ops.create(gpu);
    // a CPU adapter keeps matmulPlan's unless forced (MAMBA_EXPLAIN_TUNE unset in the tests)
    if (gpu.cpu && Deno.env.get("MAMBA_EXPLAIN_TUNE") === undefined) assertEquals(tuningEnabled(gpu), false);
    const r = seeded(5);
    const n = 40, k = 16;
    const wData = Float32Array.from({ length: n * k }, () => 2 * r() - 1);
    const w = uploadWeight(gpu, wData, n, k, "w");
    const lines: string[] = [];
    const first = await ops.mm.tune([w], { force: true, cachePath, log: (l) => lines.push(l) });
    assertEquals(first, { measured: 1, cached: 0 });
    assert(lines.length === 1 && lines[0].includes(shapeKey("f32", n, k)), lines.join("\n"));
    const file = JSON.parse(await Deno.readTextFile(cachePath));
    const plans = file.adapters[gpu.adapterKey].plans[shapeKey("f32", n, k)];
    assertEquals(Object.keys(plans).map(Number), ROW_BUCKETS.filter((b) => b <= 256));
    for (const [m, p] of Object.entries(plans)) {
      assert(candidatePlans(Number(m), matmulPlan(Number(m), n, k)).some((c) => JSON.stringify(c) === JSON.stringify(p)), `bucket ${m}: ${describePlan(p as never)} is a candidate`);
    }
    assertEquals(ops.mm.tunedFor(w), plans);

    // the tuned plans compute the product, at every bucket's row count and between them
    for (const m of [1, 3, 16, 70]) {
      const x = Float32Array.from({ length: m * k }, () => 2 * r() - 1);
      const xb = uploadBuffer(gpu, x, "x"), yb = uploadBuffer(gpu, new Float32Array(m * n).fill(NaN), "y");
      const rec = new Recorder(gpu);
      ops.mm.record(rec, xb, w, yb, m);
      rec.submit();
      const got = new Float32Array(await readBuffer(gpu, yb, m * n * 4));
      const want = ref.matmul(x, wData, m, n, k);
      got.forEach((v, i) => assert(Math.abs(v - want[i]) <= 1e-5 * Math.max(1, Math.abs(want[i])), `m=${m}: y[${i}] = ${v}, want ${want[i]}`));
      xb.destroy();
      yb.destroy();
    }

    // a new engine on the same adapter reads the cache instead of measuring
    const again = await Ops.create(gpu);
    assertEquals(await again.mm.tune([w], { force: true, cachePath }), { measured: 0, cached: 1 });
    assertEquals(again.mm.tunedFor(w), plans);

    // a damaged cache is measured again, not an error
    await Deno.writeTextFile(cachePath, "{ not json");
    const third = await Ops.create(gpu);
    assertEquals(await third.mm.tune([w], { force: true, cachePath }), { measured: 1, cached: 0 });
    assert(JSON.parse(await Deno.readTextFile(cachePath)).adapters[gpu.adapterKey], "cache rewritten");
    destroyWeight(w);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
