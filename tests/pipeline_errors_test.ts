// Bad input ends in one clear line on stderr and a non-zero exit, and leaves the outputs of
// earlier runs exactly as they were.
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { describe, FIXTURE, ONLY_01_02, pipeline, type RunResult, snapshot, stage, expectOneLineError } from "./pipeline_helpers.ts";

Deno.test("bad input: one line, exit code, earlier outputs untouched", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "pipeline_errors_" });
  const out = join(tmp, "run");
  const base = ["--model", FIXTURE, "--rows", "0-1", "--out", out];
  const both = [...base, ...ONLY_01_02];
  const first = await pipeline(both);
  assertEquals(first.code, 0, describe(first));
  const before = await snapshot(out);

  const badConfig = join(tmp, "bad.config.json");
  await Deno.writeTextFile(badConfig, JSON.stringify({ model: "m", dataset: "d", batch_size: 3 }));
  const garbageModel = join(tmp, "garbage-model");
  await Deno.mkdir(garbageModel);
  await Deno.copyFile(join(FIXTURE, "config.json"), join(garbageModel, "config.json"));
  await Deno.writeTextFile(join(garbageModel, "model.safetensors"), "this is not a safetensors file");
  const wrongShape = join(tmp, "wrong-shape-model");
  await Deno.mkdir(wrongShape);
  const cfg = JSON.parse(await Deno.readTextFile(join(FIXTURE, "config.json")));
  await Deno.writeTextFile(join(wrongShape, "config.json"), JSON.stringify({ ...cfg, n_layer: cfg.n_layer + 1 }));
  await Deno.copyFile(join(FIXTURE, "model.safetensors"), join(wrongShape, "model.safetensors"));

  const cases: [string, () => Promise<RunResult>, RegExp][] = [
    ["missing dataset", () => pipeline([...both, "--dataset", join(tmp, "nope.parquet")]), /dataset .*nope\.parquet does not exist/],
    ["a config key that does not exist", () => pipeline([...both, "--config", badConfig]), /unknown key "batch_size"/],
    ["a stage parameter that does not exist", () => pipeline([...both, "--set", "01_construct.batch=4"]), /has no parameter "batch"/],
    ["an unknown stage name (--only)", () => pipeline([...both, "--only", "07_nope"]), /unknown stage "07_nope"; stages are 01_construct, 02_compare/],
    ["an unknown stage name (stage task)", () => stage(["07_nope", ...base]), /unknown stage "07_nope"/],
    ["a model folder that does not exist", () => pipeline([...both, "--model", join(tmp, "no-such-model")]), /cannot open model/],
    ["an unreadable model file", () => pipeline([...both, "--model", garbageModel]), /cannot open model.*garbage-model/],
    ["weights that do not fit the config", () => pipeline([...both, "--model", wrongShape]), /model/],
    ["bad rows", () => pipeline([...both, "--rows", "5-2"]), /--rows: range "5-2" runs backwards/],
    ["rows out of range", () => pipeline([...both, "--rows", "0,99999"]), /row 99999 is out of range/],
    ["an unknown flag", () => pipeline([...both, "--bogus"]), /--bogus/],
    // list parameters are checked when the configuration is loaded, before anything runs (a dry run too)
    ["a window size given twice", () => pipeline([...both, "--dry-run", "--set", "03_info_flow.k=3,2,3"]), /03_info_flow\.k: "3" is given twice/],
    ["a window size that is not a number", () => pipeline([...both, "--set", "03_info_flow.k=3,x"]), /03_info_flow\.k: "x" is not a positive integer/],
    ["an unknown token set", () => pipeline([...both, "--set", "03_info_flow.flows=last<-subject,last<-verb"]), /03_info_flow\.flows: flow "last<-verb": unknown token set "verb"/],
    ["a flow given twice", () => pipeline([...both, "--set", "03_info_flow.flows=last<-subject,last<-subject"]), /03_info_flow\.flows: "last<-subject" is given twice/],
    ["a malformed selector", () => pipeline([...both, "--set", "03_info_flow.heads=all,fast"]), /03_info_flow\.heads: unit selector "fast": fast needs a fraction/],
    ["a/b outside (0, 1]", () => pipeline([...both, "--set", "03_info_flow.heads=not-fast:0/3"]), /03_info_flow\.heads: unit selector "not-fast:0\/3": the fraction 0\/3 is not in \(0, 1\]/],
    ["a conv value that is not a boolean", () => pipeline([...both, "--set", "03_info_flow.conv=no"]), /03_info_flow\.conv: "no" is not true or false/],
  ];
  for (const [what, run, mention] of cases) {
    await t.step(what, async () => {
      expectOneLineError(await run(), mention);
      assertEquals(await snapshot(out), before);
    });
  }
  await t.step("a run folder in use by another live run", async () => {
    const lock = join(out, ".lock");
    await Deno.writeTextFile(lock, `${Deno.pid}\n`); // this test process: alive, and not the child
    expectOneLineError(await pipeline([...both, "--force"]), /another pipeline run \(pid \d+\) is writing to/);
    await Deno.remove(lock);
    assertEquals(await snapshot(out), before);
    // a lock whose process is gone (a killed run) is taken over
    await Deno.writeTextFile(lock, "2147483646\n");
    const r = await pipeline([...base, "--only", "02_compare", "--force"]);
    assertEquals(r.code, 0, describe(r));
    assert(!(await Deno.stat(lock).then(() => true, () => false)), "the lock is released");
  });

  await Deno.remove(tmp, { recursive: true });
});
