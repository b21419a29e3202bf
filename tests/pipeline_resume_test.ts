// A run killed in the middle of 01_construct (a real signal to the child process) resumes without
// redoing finished prompts, and its parquet files are byte-for-byte those of an uninterrupted run.
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { describe, FIXTURE, interruptedRun, pipeline } from "./pipeline_helpers.ts";
const ARGS = ["--model", FIXTURE, "--rows", "0-9", "--only", "01_construct", "--set", "01_construct.batchSize=1"];
const OUTPUTS = ["construct_scan.parquet", "construct_attention.parquet"];

async function countLines(path: string): Promise<number> {
  try {
    return (await Deno.readTextFile(path)).split("\n").length - 1;
  } catch {
    return 0;
  }
}

/** Start a run and send `signal` once `minRecords` scan-mode prompts are saved. */
function interrupted(out: string, signal: Deno.Signal, minRecords: number) {
  return interruptedRun([...ARGS, "--out", out], join(out, "01_construct", ".work", "scan.jsonl"), minRecords, signal);
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  const x = await Deno.readFile(a), y = await Deno.readFile(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

Deno.test("01_construct resumes after a kill and after Ctrl-C, and matches an uninterrupted run", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "pipeline_resume_" });
  const whole = join(tmp, "whole");

  await t.step("uninterrupted reference run", async () => {
    const r = await pipeline([...ARGS, "--out", whole]);
    assertEquals(r.code, 0, describe(r));
  });

  for (const signal of ["SIGKILL", "SIGINT"] as const) {
    await t.step(`${signal} in the middle, then resume`, async () => {
      const out = join(tmp, signal);
      const k = await interrupted(out, signal, 2);
      assert(k.code !== 0, `the run was not interrupted (exit ${k.code})`);
      const dir = join(out, "01_construct");
      // nothing that looks finished
      for (const f of [...OUTPUTS, "manifest.json"]) {
        assert(!(await Deno.stat(join(dir, f)).then(() => true, () => false)), `${f} exists after the interruption`);
      }
      if (signal === "SIGINT") {
        // a clean stop: one line that says how to go on
        assertEquals(k.code, 130, k.stderr);
        const lines = k.stderr.split("\n").filter((l) => l.startsWith("error:"));
        assertEquals(lines.length, 1, k.stderr);
        assert(lines[0].includes("interrupted during 01_construct") && lines[0].includes("resume"), k.stderr);
      }
      const saved = (await countLines(join(dir, ".work", "scan.jsonl"))) - 1;
      assert(saved >= 2 && saved < 10, `saved ${saved} of 10 before the interruption`);

      const r = await pipeline([...ARGS, "--out", out]);
      assertEquals(r.code, 0, describe(r));
      assert(r.stdout.includes(`scan mode: resuming, ${saved} of 10 prompts already done`), describe(r));
      const m = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
      assertEquals(m.info.resumedPrompts, saved);
      for (const f of OUTPUTS) assert(await sameBytes(join(dir, f), join(whole, "01_construct", f)), `${f} differs from the uninterrupted run`);
    });
  }
  await Deno.remove(tmp, { recursive: true });
});
