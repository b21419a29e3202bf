// Downloads from a hostile endpoint (issue 11, item 2): a local server (HF_ENDPOINT, Deno.serve on
// 127.0.0.1) answers like the Hub but puts path tricks in X-Repo-Commit, ETag, X-Linked-Etag and
// the shard index. Every such name is refused before any file is written, nothing appears outside
// the cache's models--org--name/ folder, and refs/main never points anywhere else.

import assert from "node:assert/strict";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { FIXTURE, type HubTamper, isolatedTest, rejects, type ServedFile, standInHub, withTempDir } from "./hardening_fixtures.ts";

/** Every path under `dir`, relative, sorted (links listed, not followed). */
async function tree(dir: string, rel = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(`${dir}/${rel}`)) {
    const p = rel ? `${rel}/${e.name}` : e.name;
    out.push(p);
    if (e.isDirectory) out.push(...await tree(dir, p));
  }
  return out.sort();
}

const config = () => Deno.readFileSync(`${FIXTURE}/config.json`);
const weights = () => Deno.readFileSync(`${FIXTURE}/model.safetensors`);

/**
 * Open test-org/hostile through the server; the cache lives in <root>/cache and <root>/ must end
 * up holding nothing but the cache, and the cache nothing but models--test-org--hostile/.
 */
async function openThroughHub(files: Record<string, ServedFile>, tamper: HubTamper, mention: RegExp) {
  const hub = standInHub(files, { tamper });
  try {
    return await withTempDir(async (root) => {
      const cache = `${root}/cache`;
      Deno.env.set("HF_HUB_CACHE", cache);
      Deno.env.set("HF_ENDPOINT", hub.endpoint);
      const message = await rejects(openCheckpoint("test-org/hostile"), "CheckpointError", mention);
      const outside = (await tree(root)).filter((p) => p !== "cache" && !p.startsWith("cache/"));
      assert.deepEqual(outside, [], "files appeared outside the cache");
      const inCache: string[] = await tree(cache).catch(() => []);
      assert.ok(inCache.every((p) => p.startsWith("models--test-org--hostile")), inCache.join(", "));
      assert.ok(!inCache.includes("models--test-org--hostile/refs/main"), "refs/main was written");
      for (const p of inCache) {
        const full = `${cache}/${p}`;
        if ((await Deno.lstat(full)).isSymlink) {
          assert.ok((await Deno.realPath(full)).startsWith(`${cache}/models--test-org--hostile/`), `${p} leads outside`);
        }
      }
      return { message, requested: hub.requested, inCache };
    });
  } finally {
    await hub.server.shutdown();
  }
}

isolatedTest("hub: a commit id that is a path (X-Repo-Commit) is refused before anything is written", async () => {
  for (const commit of ["../../../../escaped", "main/../../x", "E".repeat(40), "a".repeat(39)]) {
    const { inCache } = await openThroughHub(
      { "config.json": { bytes: config(), lfs: false }, "model.safetensors": { bytes: weights(), lfs: true } },
      { commit },
      /the server's X-Repo-Commit ".*" is not a commit id \(40 hex digits\); refusing to use it as a cache folder name/,
    );
    assert.deepEqual(inCache, []);
  }
});

isolatedTest("hub: an ETag or X-Linked-Etag that is a path is refused before anything is written", async () => {
  const files = () => ({
    "config.json": { bytes: config(), lfs: false },
    "model.safetensors": { bytes: weights(), lfs: true },
  });
  // on a plain file (ETag)
  let r = await openThroughHub(
    files(),
    { etag: (name) => (name === "config.json" ? "../../../../escaped-config" : undefined) },
    /the server's ETag "\.\.\/\.\.\/\.\.\/\.\.\/escaped-config" is not a git or sha256 hash/,
  );
  assert.deepEqual(r.inCache, []);
  // on an LFS file (X-Linked-Etag): config.json is in place by then, the weights never are
  r = await openThroughHub(
    files(),
    { etag: (name) => (name === "model.safetensors" ? `../${"a".repeat(64)}` : undefined) },
    /the server's X-Linked-Etag "\.\.\/a{64}" is not a git or sha256 hash/,
  );
  assert.ok(!r.requested.some((q) => q.startsWith("GET /cdn/model.safetensors")), r.requested.join("\n"));
});

isolatedTest("hub: shard names in the index that are paths are refused before any shard is fetched", async () => {
  for (const shard of ["../../../../escaped.safetensors", "/tmp/abs.safetensors", "config.json"]) {
    const index = new TextEncoder().encode(JSON.stringify({ weight_map: { "backbone.embedding.weight": shard } }));
    const r = await openThroughHub(
      {
        "config.json": { bytes: config(), lfs: false },
        "model.safetensors.index.json": { bytes: index, lfs: false },
        [shard]: { bytes: weights(), lfs: true },
      },
      {},
      /model\.safetensors\.index\.json: weight_map entry for 'backbone\.embedding\.weight' is ".*", not a plain \*\.safetensors file name/,
    );
    // the index was the last thing asked for: no request for the shard
    assert.match(r.requested.at(-1)!, /^GET .*\/model\.safetensors\.index\.json$/, r.requested.join("\n"));
  }
});

isolatedTest("hub: a cached refs/main that is not a commit id is ignored, never followed", async () => {
  await withTempDir(async (root) => {
    const cache = `${root}/cache`;
    Deno.env.set("HF_HUB_CACHE", cache);
    Deno.env.set("HF_HUB_OFFLINE", "1");
    // a complete checkpoint outside the cache that a hostile ref points at
    await Deno.mkdir(`${root}/elsewhere`);
    await Deno.copyFile(`${FIXTURE}/config.json`, `${root}/elsewhere/config.json`);
    await Deno.copyFile(`${FIXTURE}/model.safetensors`, `${root}/elsewhere/model.safetensors`);
    const repo = `${cache}/models--test-org--ref`;
    await Deno.mkdir(`${repo}/refs`, { recursive: true });
    await Deno.mkdir(`${repo}/snapshots`); // so that snapshots/../../../elsewhere resolves
    await Deno.writeTextFile(`${repo}/refs/main`, "../../../elsewhere");
    await rejects(openCheckpoint("test-org/ref"), "CheckpointError", /not in the Hugging Face cache and cannot be downloaded \(offline\)/);
  });
});

isolatedTest("hub: with honest answers the same server still downloads a loadable checkpoint", async () => {
  const hub = standInHub({ "config.json": { bytes: config(), lfs: false }, "model.safetensors": { bytes: weights(), lfs: true } });
  try {
    await withTempDir(async (root) => {
      Deno.env.set("HF_HUB_CACHE", `${root}/cache`);
      Deno.env.set("HF_ENDPOINT", hub.endpoint);
      const ckpt = await openCheckpoint("test-org/hostile");
      ckpt.close();
      assert.equal(ckpt.dir, `${root}/cache/models--test-org--hostile/snapshots/${"e".repeat(40)}`);
      assert.equal(await Deno.readTextFile(`${root}/cache/models--test-org--hostile/refs/main`), "e".repeat(40));
    });
  } finally {
    await hub.server.shutdown();
  }
});
