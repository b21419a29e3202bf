// Metadata files that are not what they claim (issue 11, items 10 and 11): a FIFO or /dev/zero
// where config.json, a weight file, a shard index, tokenizer.json, the dataset, refs/main or the
// identity cache should be; a config of megabytes; a tokenizer that is not JSON; a parquet file
// whose data pages are corrupt. Each ends in one line naming the file and the cause. Opening a
// FIFO blocks forever, so those cases run in a child process that is killed if it hangs.

import assert from "node:assert/strict";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { encodeParquet, readParquet } from "../workflows/lib/parquet.ts";
import { FIXTURE, isolatedTest, modelDir, rejects, REPO_ROOT, withTempDir } from "./hardening_fixtures.ts";
import { childEnv } from "./helpers.ts";

async function mkfifo(path: string): Promise<void> {
  const r = await new Deno.Command("mkfifo", { args: [path] }).output();
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
}

type Case = [kind: "checkpoint" | "tokenizer" | "parquet", path: string];

/** Run each case in a child (killed after 60 s); each result is "<ErrorName>: <message>" or "ok". */
async function inChild(cases: Case[], env: Record<string, string>): Promise<string[]> {
  const url = (p: string) => JSON.stringify(new URL(p, `file://${REPO_ROOT}`).href);
  const script = await Deno.makeTempFile({ prefix: "hardening-child-", suffix: ".ts" });
  await Deno.writeTextFile(
    script,
    `import { openCheckpoint } from ${url("engine/checkpoint/mod.ts")};
import { loadTokenizer } from ${url("engine/tokenizer.ts")};
import { readParquet } from ${url("workflows/lib/parquet.ts")};
const out = [];
for (const [kind, path] of JSON.parse(Deno.args[0])) {
  try {
    if (kind === "checkpoint") (await openCheckpoint(path)).close();
    else if (kind === "tokenizer") await loadTokenizer(path);
    else await readParquet(path);
    out.push("ok");
  } catch (e) {
    out.push(e.name + ": " + e.message);
  }
}
console.log(JSON.stringify(out));
`,
  );
  try {
    const r = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--no-check", "--config", `${REPO_ROOT}deno.json`, script, JSON.stringify(cases)],
      cwd: REPO_ROOT,
      env,
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(60_000),
    }).output();
    assert.equal(r.code, 0, `the child failed or hung (killed): ${new TextDecoder().decode(r.stderr)}`);
    return JSON.parse(new TextDecoder().decode(r.stdout));
  } finally {
    await Deno.remove(script);
  }
}

isolatedTest("FIFOs and devices where metadata or weights should be: refused at once, one line each", async (home) => {
  await withTempDir(async (root) => {
    const dir = (name: string) => {
      Deno.mkdirSync(`${root}/${name}`);
      return `${root}/${name}`;
    };
    const weights = Deno.readFileSync(`${FIXTURE}/model.safetensors`);
    const fifoConfig = dir("fifo-config");
    await mkfifo(`${fifoConfig}/config.json`);
    await Deno.writeFile(`${fifoConfig}/model.safetensors`, weights);
    const zeroConfig = dir("zero-config");
    await Deno.symlink("/dev/zero", `${zeroConfig}/config.json`);
    await Deno.writeFile(`${zeroConfig}/model.safetensors`, weights);
    const fifoWeights = await modelDir(dir("fifo-weights"), {});
    await mkfifo(`${fifoWeights}/model.safetensors`);
    const fifoBin = await modelDir(dir("fifo-bin"), {});
    await mkfifo(`${fifoBin}/pytorch_model.bin`);
    const fifoIndex = await modelDir(dir("fifo-index"), {});
    await mkfifo(`${fifoIndex}/model.safetensors.index.json`);
    await mkfifo(`${root}/tokenizer.json`);
    await mkfifo(`${root}/data.parquet`);
    // a cache whose refs/main and the identity cache are FIFOs: both are skipped, the model opens
    const cache = `${root}/hub`;
    const snapshot = `${cache}/models--test-org--fifo/snapshots/${"1".repeat(40)}`;
    await Deno.mkdir(snapshot, { recursive: true });
    await Deno.mkdir(`${cache}/models--test-org--fifo/refs`);
    await mkfifo(`${cache}/models--test-org--fifo/refs/main`);
    await Deno.copyFile(`${FIXTURE}/config.json`, `${snapshot}/config.json`);
    await Deno.writeFile(`${snapshot}/model.safetensors`, weights);
    await Deno.mkdir(`${home}/.cache/mamba-explain`, { recursive: true });
    await mkfifo(`${home}/.cache/mamba-explain/identity.json`);

    const out = await inChild([
      ["checkpoint", fifoConfig],
      ["checkpoint", zeroConfig],
      ["checkpoint", fifoWeights],
      ["checkpoint", fifoBin],
      ["checkpoint", fifoIndex],
      ["tokenizer", `${root}/tokenizer.json`],
      ["tokenizer", "/dev/zero"],
      ["parquet", `${root}/data.parquet`],
      ["checkpoint", "test-org/fifo"],
    ], childEnv({ HOME: home, HF_HUB_CACHE: cache, HF_HUB_OFFLINE: "1" }));
    const fifo = "is a FIFO \\(named pipe\\), not a regular file; point it at the real file";
    const expected = [
      new RegExp(`^CheckpointError: .*/fifo-config/config\\.json ${fifo}$`),
      /^CheckpointError: .*\/zero-config\/config\.json is a character device, not a regular file/,
      new RegExp(`^CheckpointError: .*/fifo-weights/model\\.safetensors ${fifo}$`),
      new RegExp(`^CheckpointError: .*/fifo-bin/pytorch_model\\.bin ${fifo}$`),
      new RegExp(`^CheckpointError: .*/fifo-index/model\\.safetensors\\.index\\.json ${fifo}$`),
      new RegExp(`^TokenizerError: tokenizer .*/tokenizer\\.json ${fifo}$`),
      /^TokenizerError: tokenizer \/dev\/zero is a character device, not a regular file/,
      /^UserError: .*\/data\.parquet is not a regular file; point it at the parquet file itself$/,
      /^ok$/,
    ];
    assert.equal(out.length, expected.length);
    out.forEach((line, i) => assert.match(line, expected[i]));
  });
});

isolatedTest("a config.json of megabytes is refused without being parsed", async () => {
  await withTempDir(async (dir) => {
    await modelDir(dir, { "model.safetensors": Deno.readFileSync(`${FIXTURE}/model.safetensors`) });
    await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ d_model: 64, pad: "x".repeat(2 << 20) }));
    await rejects(
      openCheckpoint(dir),
      "CheckpointError",
      /config\.json is larger than 1\.0 MiB, more than any model config needs; it is not a model config$/,
    );
  });
});

isolatedTest("a tokenizer that is not JSON, or not a tokenizer, is one line naming the file", async () => {
  await withTempDir(async (dir) => {
    await Deno.writeTextFile(`${dir}/bad.json`, '{"version": "1.0", "model": {');
    await rejects(
      loadTokenizer(`${dir}/bad.json`),
      "TokenizerError",
      /^tokenizer .*\/bad\.json is not valid JSON \(.+\); it is not a tokenizer\.json$/,
    );
    await Deno.writeTextFile(`${dir}/other.json`, JSON.stringify({ model: { type: "BPE" } }));
    await rejects(
      loadTokenizer(`${dir}/other.json`),
      "TokenizerError",
      /^tokenizer .*\/other\.json is not a usable tokenizer\.json \(Tokenizer must contain a "decoder" property\); pass the model's tokenizer\.json$/,
    );
    await rejects(loadTokenizer(`${dir}/missing.json`), "TokenizerError", /^tokenizer .*\/missing\.json: cannot open \(/);
  });
  // the real one still loads
  const tok = await loadTokenizer();
  assert.deepEqual(tok.encode("Hello"), [12092]);
});

isolatedTest("a parquet file with corrupt data pages names the file and the cause", async () => {
  await withTempDir(async (dir) => {
    const bytes = encodeParquet([
      { name: "row", type: "INT32", data: Array.from({ length: 100 }, (_, i) => i) },
      { name: "prompt", type: "STRING", data: Array.from({ length: 100 }, (_, i) => `prompt ${i}`) },
    ]);
    await Deno.writeFile(`${dir}/good.parquet`, bytes);
    assert.equal((await readParquet(`${dir}/good.parquet`)).rows.length, 100);
    // the first page header sits right after the 4-byte magic; the footer is intact
    const corrupt = bytes.slice();
    corrupt.fill(0xdd, 4, 8);
    await Deno.writeFile(`${dir}/corrupt.parquet`, corrupt);
    await rejects(
      readParquet(`${dir}/corrupt.parquet`),
      "UserError",
      /^.*\/corrupt\.parquet: a data page cannot be read \(thrift unhandled type: 13\); the parquet file is damaged, get a fresh copy$/,
    );
    await rejects(
      readParquet(`${dir}/good.parquet`, { columns: ["row", "subject"] }),
      "UserError",
      /good\.parquet has no column "subject"; it has row, prompt$/,
    );
  });
});
