// The stage-level profile (engine/profile.ts): parts nested inside others are counted exclusively,
// so the parts of a span add up to its wall time; every stage's manifest carries the profile of its
// run (load, forward, gpu, readback, write, other) adding up to wallTimeS, and the pipeline says it.
import { join } from "node:path";
import { PROFILE_PARTS, profileSpan, TimeProfile } from "../engine/profile.ts";
import { assert, assertEquals } from "./assert.ts";
import { describe, FIXTURE, pipeline } from "./pipeline_helpers.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const busy = (ms: number) => {
  const t = performance.now();
  while (performance.now() - t < ms) { /* a submission a CPU driver runs before returning */ }
};

Deno.test("profile: nested parts counted exclusively, the parts of a span add up to its wall time", async () => {
  const p = new TimeProfile();
  const before = p.snapshot();
  // the wall time of each call, taken around it here (timers run late on a loaded machine: compare with these)
  const timed = async (fn: () => Promise<unknown> | unknown) => {
    const t = performance.now();
    await fn();
    return performance.now() - t;
  };
  const t0 = performance.now();
  let gpu = 0, readbackAll = 0, innerWrite = 0;
  const forwardAll = await timed(() =>
    p.time("forward", async () => {
      await sleep(30);
      gpu += await timed(() => p.time("gpu", () => sleep(40)));
      gpu += await timed(() => p.timeSync("gpu", () => busy(20)));
      readbackAll = await timed(() =>
        p.time("readback", async () => {
          await sleep(10);
          innerWrite = await timed(() => p.time("write", () => sleep(15))); // nested two deep
        })
      );
    })
  );
  const outerWrite = await timed(() => p.time("write", () => sleep(20)));
  await sleep(25); // unaccounted: "other"
  const wall = performance.now() - t0;
  const span = profileSpan(before, p.snapshot(), wall);
  const near = (got: number, want: number, what: string) => assert(Math.abs(got * 1000 - want) < 3, `${what}: ${got * 1000} ms, want ${want}`);
  near(span.gpu, gpu, "gpu");
  near(span.forward, forwardAll - gpu - readbackAll, "forward excludes the gpu and readback inside it");
  near(span.readback, readbackAll - innerWrite, "readback excludes the write inside it");
  near(span.write, innerWrite + outerWrite, "write, nested or not");
  assert(span.forward * 1000 >= 29 && span.gpu * 1000 >= 59 && span.other * 1000 >= 24, JSON.stringify(span));
  assertEquals(span.load, 0);
  const sum = Object.values(span).reduce((a, b) => a + b, 0);
  assert(Math.abs(sum - wall / 1000) < 1e-9, `parts ${sum} s, wall ${wall / 1000} s`);
  // an error inside a part still counts its time and leaves the stack clean
  const b2 = p.snapshot();
  let thrown = false;
  try {
    await p.time("load", async () => {
      await sleep(10);
      throw new Error("boom");
    });
  } catch {
    thrown = true;
  }
  assert(thrown);
  const after = p.snapshot();
  assert(after.load - b2.load >= 8, "the failed load counted");
  const w = await (async () => {
    const s0 = p.snapshot();
    const t = performance.now();
    await p.time("write", () => sleep(5));
    return { counted: p.snapshot().write - s0.write, wall: performance.now() - t, loadAfter: p.snapshot().load - s0.load };
  })();
  assertEquals(w.loadAfter, 0, "a later part is not nested in the failed one");
  assert(Math.abs(w.counted - w.wall) < 3, "and counts its own time");
});

Deno.test("pipeline: each stage's manifest has its profile, adding up to its wall time; the run says where time went", async () => {
  const out = await Deno.makeTempDir();
  try {
    const r = await pipeline(["--model", FIXTURE, "--rows", "0-9", "--only", "01_construct", "--only", "02_compare", "--out", out]);
    assertEquals(r.code, 0, describe(r));
    for (const [stage, model] of [["01_construct", true], ["02_compare", false]] as const) {
      const m = JSON.parse(await Deno.readTextFile(join(out, stage, "manifest.json")));
      const prof: Record<string, number> = m.profile;
      assertEquals(Object.keys(prof).sort(), [...PROFILE_PARTS, "other"].sort(), `${stage} profile parts`);
      for (const [k, v] of Object.entries(prof)) assert(typeof v === "number" && v >= 0, `${stage} ${k} = ${v}`);
      const sum = Object.values(prof).reduce((a, b) => a + b, 0);
      // each part rounded to the millisecond
      assert(Math.abs(sum - m.wallTimeS) <= 0.004, `${stage}: parts add up to ${sum} s, wallTimeS ${m.wallTimeS}`);
      assert(prof.write > 0, `${stage} wrote its outputs`);
      if (model) {
        assert(prof.load > 0, "01_construct loaded the model");
        assert(prof.forward + prof.gpu > 0, "01_construct ran forwards");
      } else {
        assertEquals(prof.load + prof.forward + prof.gpu + prof.readback, 0, "02_compare touches no model");
      }
      assert(new RegExp(`^${stage}: time [a-z]+ \\d+\\.\\d s`, "m").test(r.stdout), `the run's log says ${stage}'s time\n${r.stdout}`);
    }
  } finally {
    await Deno.remove(out, { recursive: true });
  }
});
