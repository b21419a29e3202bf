// The checkpoint identity trusts path + size + mtime (issue 11, item 12): a weight file rewritten in
// place with its mtime put back keeps its old identity. `verify` (the pipeline's --verify) hashes
// every file in full: the edit is seen, the remembered hash is replaced, and a Hugging Face cache
// blob that no longer matches its sha256 name is refused.

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { FIXTURE, isolatedTest, rejects, withTempDir } from "./hardening_fixtures.ts";
import { runDeno } from "./helpers.ts";
import { describe } from "./pipeline_helpers.ts";

async function identity(dir: string, verify?: boolean): Promise<string> {
  const ckpt = await openCheckpoint(dir, { verify });
  ckpt.close();
  return ckpt.identity;
}

/** Overwrite the file's last 4 bytes (the last tensor's last float) with 0.5, keeping size and mtime. */
async function editInPlaceKeepingMtime(path: string): Promise<void> {
  const before = await Deno.stat(path);
  const file = await Deno.open(path, { read: true, write: true });
  await file.seek(-4, Deno.SeekMode.End);
  await file.write(new Uint8Array(new Float32Array([0.5]).buffer));
  file.close();
  await Deno.utime(path, before.atime!, before.mtime!);
  const after = await Deno.stat(path);
  assert.equal(after.size, before.size);
  assert.equal(after.mtime!.getTime(), before.mtime!.getTime());
}

async function copyOfFixture(dir: string): Promise<string> {
  await Deno.copyFile(`${FIXTURE}/config.json`, `${dir}/config.json`);
  await Deno.copyFile(`${FIXTURE}/model.safetensors`, `${dir}/model.safetensors`);
  return dir;
}

isolatedTest("identity: an in-place edit with the mtime restored passes the fast check; verify sees it", async () => {
  await withTempDir(async (dir) => {
    await copyOfFixture(dir);
    const original = await identity(dir);
    assert.equal(await identity(dir, true), original, "verify agrees when nothing changed");
    await editInPlaceKeepingMtime(`${dir}/model.safetensors`);
    assert.equal(await identity(dir), original, "the fast check trusts path + size + mtime (the documented trade-off)");
    const verified = await identity(dir, true);
    assert.notEqual(verified, original);
    // verify replaced the remembered hash: the fast check now agrees with the content
    assert.equal(await identity(dir), verified);
  });
});

isolatedTest("identity: verify refuses a Hugging Face cache blob that no longer matches its sha256 name", async () => {
  await withTempDir(async (cache) => {
    const bytes = await Deno.readFile(`${FIXTURE}/model.safetensors`);
    const sha = createHash("sha256").update(bytes).digest("hex");
    const repo = `${cache}/models--test-org--blob`;
    const snapshot = `${repo}/snapshots/${"2".repeat(40)}`;
    await Deno.mkdir(`${repo}/blobs`, { recursive: true });
    await Deno.mkdir(snapshot, { recursive: true });
    await Deno.writeFile(`${repo}/blobs/${sha}`, bytes);
    await Deno.copyFile(`${FIXTURE}/config.json`, `${repo}/blobs/${"c".repeat(40)}`);
    await Deno.symlink(`../../blobs/${sha}`, `${snapshot}/model.safetensors`);
    await Deno.symlink(`../../blobs/${"c".repeat(40)}`, `${snapshot}/config.json`);
    const original = await identity(snapshot, true);
    await editInPlaceKeepingMtime(`${repo}/blobs/${sha}`);
    assert.equal(await identity(snapshot), original, "blobs are identified by name");
    await rejects(
      identity(snapshot, true),
      "CheckpointError",
      new RegExp(`blobs/${sha}: the Hugging Face cache blob has sha256 [0-9a-f]{64}, not the ${sha} it is named by; it was changed after download`),
    );
  });
});

isolatedTest("pipeline --verify: a weight edited in place is noticed and its stage reruns", async (home) => {
  await withTempDir(async (tmp) => {
    const model = await copyOfFixture(await Deno.makeTempDir({ dir: tmp, prefix: "model-" }));
    const out = join(tmp, "run");
    const args = ["--model", model, "--rows", "0-1", "--out", out, "--only", "01_construct"];
    // the child's identity cache lives in this test's HOME (runDeno keeps the machine's Deno cache)
    const run = (extra: string[]) => runDeno(["run", "-A", "workflows/pipeline.ts", ...args, ...extra], { env: { HOME: home } });
    const first = await run([]);
    assert.equal(first.code, 0, describe(first));
    await editInPlaceKeepingMtime(`${model}/model.safetensors`);
    const fast = await run(["--dry-run"]);
    assert.equal(fast.code, 0, describe(fast));
    assert.match(fast.stdout, /01_construct: up to date, skipped/, describe(fast));
    const verified = await run(["--dry-run", "--verify"]);
    assert.equal(verified.code, 0, describe(verified));
    assert.match(verified.stdout, /01_construct: would run: model weights changed/, describe(verified));
  });
});
