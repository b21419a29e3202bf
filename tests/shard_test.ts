// Sharded runs on one machine (the Slurm recipe has its own test): shards listed when missing, with
// the commands that make them; a killed shard resumes; the merge equals a one-process run byte for
// byte; shards of other parameters are not used; a shard in use is locked; bad --shard values.
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { describe, expectOneLineError, FIXTURE, pipeline } from "./pipeline_helpers.ts";

const ROOT = new URL("..", import.meta.url).pathname;
const ARGS = ["--model", FIXTURE, "--rows", "0-11", "--only", "01_construct", "--only", "02_compare", "--set", "01_construct.batchSize=1"];
const OUTPUTS = ["construct_scan.parquet", "construct_attention.parquet"];

async function exists(p: string): Promise<boolean> {
  return await Deno.stat(p).then(() => true, () => false);
}

async function sameBytes(a: string, b: string): Promise<boolean> {
  const x = await Deno.readFile(a), y = await Deno.readFile(b);
  return x.length === y.length && x.every((v, i) => v === y[i]);
}

/** The one shard folder of 01_construct for `i`-of-3 (the key's folder is the only one). */
async function shardFolder(out: string, i: number): Promise<string> {
  const root = join(out, "01_construct", "shards");
  const keys: string[] = [];
  for await (const e of Deno.readDir(root)) keys.push(e.name);
  assertEquals(keys.length, 1, `one key folder under ${root}`);
  return join(root, keys[0], `${i}-of-3`);
}

/** Start shard 1/3 and SIGKILL it once `min` scan-mode records are saved. */
async function killedShard(out: string, min: number): Promise<number> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "workflows/pipeline.ts", ...ARGS, "--out", out, "--shard", "1/3"],
    cwd: ROOT,
    env: { XDG_RUNTIME_DIR: "/tmp", NO_COLOR: "1" },
    stdout: "null",
    stderr: "null",
  }).spawn();
  const deadline = Date.now() + 120_000;
  let saved = 0;
  while (Date.now() < deadline) {
    const log = await shardFolder(out, 1).then((d) => Deno.readTextFile(join(d, "scan.jsonl"))).catch(() => "");
    saved = Math.max(0, log.split("\n").length - 2); // the header line, and the empty string after the last newline
    if (saved >= min) break;
    await new Promise((r) => setTimeout(r, 5));
  }
  child.kill("SIGKILL");
  await child.status;
  return saved;
}

Deno.test("sharded 01_construct: missing shards listed with their commands, a killed shard resumes, the merge is byte-identical", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "shard_test_" });
  const out = join(tmp, "sharded"), whole = join(tmp, "whole");

  await t.step("bad --shard values: one line each, before anything runs", async () => {
    expectOneLineError(await pipeline([...ARGS, "--out", out, "--shard", "3/3"]), /--shard 3\/3: the shard index must be below 3 \(shards are numbered 0\.\.2\)/);
    expectOneLineError(await pipeline([...ARGS, "--out", out, "--shard", "0/0"]), /--shard 0\/0: the number of shards must be in 1\.\.100000/);
    expectOneLineError(await pipeline([...ARGS, "--out", out, "--shard", "two"]), /--shard "two": write it as I\/N/);
    expectOneLineError(await pipeline([...ARGS, "--out", out, "--shard", "0/2", "--merge"]), /use either --shard or --merge, not both/);
    assert(!(await exists(out)), "nothing was written");
  });

  await t.step("shards 0 and 2 of 3: no outputs; --merge and a plain run list shard 1 with its command and stop", async () => {
    for (const i of [0, 2]) {
      const r = await pipeline([...ARGS, "--out", out, "--shard", `${i}/3`]);
      assertEquals(r.code, 0, describe(r));
      assert(r.stdout.includes(`01_construct: shard ${i}/3 done`), describe(r));
      assert(r.stdout.includes("02_compare: not sharded; the merge runs it"), describe(r));
      assert(r.stdout.includes(`next, once all 3 shards are complete: deno task pipeline ${ARGS.join(" ")} --out ${out} --merge`), describe(r));
    }
    for (const f of [...OUTPUTS, "manifest.json"]) assert(!(await exists(join(out, "01_construct", f))), `a shard wrote ${f}`);
    const m = JSON.parse(await Deno.readTextFile(join(await shardFolder(out, 0), "shard.json")));
    assertEquals([m.shard, m.logs["scan.jsonl"].records, m.logs["attention.jsonl"].records], ["0/3", 4, 4]);

    const again = await pipeline([...ARGS, "--out", out, "--shard", "2/3"]);
    assert(again.stdout.includes("01_construct: shard 2/3 is complete already, kept"), describe(again));

    const dry = await pipeline([...ARGS, "--out", out, "--merge", "--dry-run"]);
    assertEquals(dry.code, 0, describe(dry));
    assert(dry.stdout.includes("01_construct: shards 2 of 3 complete (missing 1)"), describe(dry));

    for (const mode of [["--merge"], []]) {
      const r = await pipeline([...ARGS, "--out", out, ...mode]);
      expectOneLineError(r, /01_construct: shards 1 of 3 are missing; make them \(commands above\) and merge again, or remove .*shards to compute the stage in one process/);
      assert(r.stdout.includes("  shard 1/3: not started"), describe(r));
      assert(r.stdout.includes(`  deno task pipeline ${ARGS.join(" ")} --out ${out} --shard 1/3`), describe(r));
      assert(!(await exists(join(out, "01_construct", "manifest.json"))), "nothing merged");
    }
  });

  await t.step("shard 1 killed in the middle: said as stopped, and the same command resumes it", async () => {
    const saved = await killedShard(out, 1);
    assert(saved >= 1 && saved < 4, `saved ${saved} of 4`);
    const r = await pipeline([...ARGS, "--out", out, "--merge"]);
    assert(r.code !== 0 && r.stdout.includes("shard 1/3: stopped before the end (the same command resumes it)"), describe(r));
    const s = await pipeline([...ARGS, "--out", out, "--shard", "1/3"]);
    assertEquals(s.code, 0, describe(s));
    assert(s.stdout.includes(`scan mode: resuming, ${saved} of 4 prompts already done`), describe(s));
  });

  await t.step("shards of other parameters are not used", async () => {
    const other = [...ARGS, "--dtype", "f16"]; // another cache key (batchSize is throughput only: not in the key)
    const r = await pipeline([...other, "--out", out, "--merge"]);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("01_construct: no shards yet (nothing is computed by --merge)"), describe(r));
    assert(r.stdout.includes("02_compare: waits for 01_construct"), describe(r));
    assert(!(await exists(join(out, "01_construct", "manifest.json"))), "nothing merged");
    assert(await exists(join(await shardFolder(out, 1), "shard.json")), "the other key's shards are kept");
  });

  await t.step("a shard in use is locked, also by a process on another host", async () => {
    const lock = join(await shardFolder(out, 1), ".lock");
    await Deno.writeTextFile(lock, `${Deno.pid} ${Deno.hostname()}\n`); // this test process: alive
    expectOneLineError(await pipeline([...ARGS, "--out", out, "--shard", "1/3", "--force"]), /shard 1\/3 of 01_construct is being computed by pid \d+ in /);
    await Deno.writeTextFile(lock, `12345 some-other-node\n`);
    expectOneLineError(await pipeline([...ARGS, "--out", out, "--shard", "1/3", "--force"]), /shard 1\/3 of 01_construct is being computed by pid 12345 on host some-other-node/);
    await Deno.remove(lock);
  });

  await t.step("the merge: the bytes of a one-process run, the shards recorded in the manifest and removed", async () => {
    const r = await pipeline([...ARGS, "--out", out, "--merge"]);
    assertEquals(r.code, 0, describe(r));
    assert(r.stdout.includes("01_construct: merging shards 0..2 of 3"), describe(r));
    assert(r.stdout.includes("02_compare: done"), describe(r));
    const w = await pipeline([...ARGS, "--out", whole]);
    assertEquals(w.code, 0, describe(w));
    for (const stage of ["01_construct", "02_compare"]) {
      for await (const e of Deno.readDir(join(whole, stage))) {
        if (e.name === "manifest.json") continue;
        assert(await sameBytes(join(out, stage, e.name), join(whole, stage, e.name)), `${stage}/${e.name} differs from the one-process run`);
      }
    }
    const m = JSON.parse(await Deno.readTextFile(join(out, "01_construct", "manifest.json")));
    const mw = JSON.parse(await Deno.readTextFile(join(whole, "01_construct", "manifest.json")));
    assertEquals(m.cacheKey, mw.cacheKey);
    assertEquals(m.info.shards.count, 3);
    assertEquals(m.info.shards.shards.map((s: { records: number }) => s.records), [4, 4, 4]);
    assertEquals(m.info.resumedPrompts, 0, "a merge resumes nothing");
    assert(!(await exists(join(out, "01_construct", ".work"))), "the merge's work logs are removed");
    // the merged key's shards are gone; the other key's (batchSize=2) never existed, so shards/ is gone too
    assert(!(await exists(join(out, "01_construct", "shards"))), "the merged shards are removed");
    const up = await pipeline([...ARGS, "--out", out]);
    assert(up.stdout.includes("nothing to do"), describe(up));
  });

  await Deno.remove(tmp, { recursive: true });
});
