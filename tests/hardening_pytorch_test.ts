// pytorch_model.bin from a hostile source: zip bombs (issue 11, item 1) and pickles built to exhaust
// the reader (item 8). Every file is made here at run time; the bombs inflate to 1 GiB of zeros
// from ~1 MB. A bomb's memory is measured in a child process (peak RSS from /proc), so the other
// test files running alongside do not blur it.

import assert from "node:assert/strict";
import { openCheckpoint } from "../engine/checkpoint/mod.ts";
import { MAX_PICKLE_BYTES } from "../engine/checkpoint/pytorch.ts";
import {
  deflate,
  f32Bytes,
  isolatedTest,
  modelDir,
  PickleWriter,
  rejects,
  REPO_ROOT,
  stateDictPickle,
  torchZip,
  withTempDir,
  zeroBomb,
} from "./hardening_fixtures.ts";
import { childEnv } from "./helpers.ts";

const GIB_MIB = 1024;

async function binDir(dir: string, bin: Uint8Array): Promise<string> {
  return await modelDir(dir, { "pytorch_model.bin": bin });
}

isolatedTest("builders: a deflated torch zip made here loads and reads back (so the refusals below are real)", async () => {
  await withTempDir(async (dir) => {
    const values = [1.5, -2, 0.25, 3];
    const pkl = stateDictPickle("w", 4);
    await binDir(dir, torchZip({ name: "", data: deflate(pkl), method: 8, size: pkl.length }, [
      { name: "0", data: deflate(f32Bytes(values)), method: 8, size: 16 },
    ]));
    const ckpt = await openCheckpoint(dir);
    try {
      assert.deepEqual(ckpt.info("w"), { name: "w", dtype: "F32", shape: [4] });
      assert.deepEqual([...await ckpt.readF32("w")], values);
    } finally {
      ckpt.close();
    }
  });
});

isolatedTest("zip bomb: a data.pkl declaring more than a pickle can need is refused before inflating", async () => {
  await withTempDir(async (dir) => {
    await binDir(dir, torchZip({ name: "", data: zeroBomb(GIB_MIB), method: 8, size: GIB_MIB << 20 }));
    const message = await rejects(openCheckpoint(dir), "CheckpointError", /data\.pkl declares 1\.0 GiB, more than the 64\.0 MiB a state dict's pickle can need/);
    assert.ok(message.startsWith(`${await Deno.realPath(dir)}/pytorch_model.bin: `), message);
    assert.equal(MAX_PICKLE_BYTES, 64 << 20);
  });
});

isolatedTest("zip bomb: a declared size that deflate cannot reach is refused when the directory is read", async () => {
  await withTempDir(async (dir) => {
    const pkl = stateDictPickle("w", 4);
    await binDir(dir, torchZip(pkl, [{ name: "0", data: deflate(new Uint8Array(16)), method: 8, size: 1 << 30 }]));
    await rejects(
      openCheckpoint(dir),
      "CheckpointError",
      /zip entry 'archive\/data\/0' declares 1\.0 GiB from \d+ bytes of deflate data, more than deflate can expand to/,
    );
  });
});

isolatedTest("zip: a stored entry whose two sizes disagree is refused", async () => {
  await withTempDir(async (dir) => {
    const pkl = stateDictPickle("w", 4);
    await binDir(dir, torchZip(pkl, [{ name: "0", data: new Uint8Array(16), method: 0, size: 1 << 30 }]));
    await rejects(openCheckpoint(dir), "CheckpointError", /'archive\/data\/0' is stored uncompressed but declares 1073741824 bytes in 16/);
  });
});

/** Open each folder (reading `tensor` when given) in a child process; its messages and peak RSS. */
async function inChild(cases: { dir: string; tensor?: string }[], home: string) {
  const script = `${home}/open_child.ts`;
  await Deno.writeTextFile(
    script,
    `import { openCheckpoint } from ${JSON.stringify(new URL("engine/checkpoint/mod.ts", `file://${REPO_ROOT}`).href)};
const out = [];
for (const [dir, tensor] of JSON.parse(Deno.args[0])) {
  try {
    const c = await openCheckpoint(dir);
    const x = tensor ? await c.readF32(tensor) : undefined;
    c.close();
    out.push("loaded " + (x ? x.length : ""));
  } catch (e) {
    out.push(e.name + ": " + e.message);
  }
}
const peak = Number(/VmHWM:\\s+(\\d+) kB/.exec(Deno.readTextFileSync("/proc/self/status"))[1]) * 1024;
console.log(JSON.stringify({ out, peak }));
`,
  );
  const r = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--no-check", script, JSON.stringify(cases.map((c) => [c.dir, c.tensor ?? ""]))],
    env: childEnv({ HOME: home }),
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(r.stdout);
  assert.equal(r.code, 0, new TextDecoder().decode(r.stderr));
  return JSON.parse(stdout) as { out: string[]; peak: number };
}

isolatedTest("zip bomb: entries inflating past their declared size stop there, memory stays small", async (home) => {
  await withTempDir(async (root) => {
    const dirs = ["pickle", "storage", "oversized"].map((n) => `${root}/${n}`);
    for (const d of dirs) await Deno.mkdir(d);
    // data.pkl declares 300 bytes (a real pickle's size) and inflates to 1 GiB
    await binDir(dirs[0], torchZip({ name: "", data: zeroBomb(GIB_MIB), method: 8, size: 300 }));
    // a storage of 4 floats declares its 16 bytes and inflates to 1 GiB
    const pkl = stateDictPickle("w", 4);
    await binDir(dirs[1], torchZip(pkl, [{ name: "0", data: zeroBomb(GIB_MIB), method: 8, size: 16 }]));
    // a storage that honestly holds 256 MiB of which the pickle needs 16 bytes: only those are kept
    await binDir(dirs[2], torchZip(pkl, [{ name: "0", data: zeroBomb(256), method: 8, size: 256 << 20 }]));
    const { out, peak } = await inChild([{ dir: dirs[0] }, { dir: dirs[1], tensor: "w" }, { dir: dirs[2], tensor: "w" }], home);
    assert.match(out[0], /^CheckpointError: .*pytorch_model\.bin: zip entry 'archive\/data\.pkl' inflates past its declared 300 bytes; the file is corrupt or a zip bomb, refused$/);
    assert.match(out[1], /^CheckpointError: .*zip entry 'archive\/data\/0' inflates past its declared 16 bytes/);
    assert.equal(out[2], "loaded 4");
    // Inflating either bomb whole would take over 1 GiB; the child's peak includes Deno itself (~100 MB).
    assert.ok(peak < 400 << 20, `peak RSS ${(peak / 2 ** 20).toFixed(0)} MiB`);
  });
});

// ---------------------------------------------------------------------------------------------
// Pickles built to exhaust a recursive reader

isolatedTest("pickle: a state dict that contains itself is one line naming the file", async () => {
  await withTempDir(async (dir) => {
    // d = {}; d["model"] = d
    const p = new PickleWriter().emptyDict().put(0).str("model").get(0).setItem();
    await binDir(dir, torchZip(p.stop()));
    const message = await rejects(openCheckpoint(dir), "CheckpointError", /state dict contains itself \(a self-referencing pickle\)/);
    assert.ok(message.includes("pytorch_model.bin"), message);
  });
});

isolatedTest("pickle: 200k nested wrapper dicts are one line, not a stack overflow", async () => {
  await withTempDir(async (dir) => {
    // d0, "model", d1, "model", d2, ... then SETITEM closes them from the inside out
    const n = 200_000;
    const p = new PickleWriter().emptyDict();
    for (let i = 0; i < n; i++) p.str("model").emptyDict();
    for (let i = 0; i < n; i++) p.setItem();
    await binDir(dir, torchZip(p.stop()));
    await rejects(openCheckpoint(dir), "CheckpointError", /pytorch_model\.bin: the state dict is wrapped in more than 16 dicts/);
  });
});

isolatedTest("pickle: 100k nested _rebuild_from_type_v2 calls are one line, not a stack overflow", async () => {
  await withTempDir(async (dir) => {
    const n = 100_000;
    const p = new PickleWriter().emptyDict().str("w").global("torch._tensor", "_rebuild_from_type_v2");
    // innermost: (_rebuild_tensor_v2, Parameter, (storage, 0, (4,), (1,), False, OrderedDict()))
    p.global("torch._utils", "_rebuild_tensor_v2").global("torch.nn.parameter", "Parameter").tensorArgs("0", 4).tuple3();
    // each level: (_rebuild_from_type_v2, Parameter, inner)
    for (let i = 0; i < n; i++) {
      p.put(i).pop().global("torch._tensor", "_rebuild_from_type_v2").global("torch.nn.parameter", "Parameter").get(i).tuple3();
    }
    p.reduce().setItem();
    await binDir(dir, torchZip(p.stop(), [{ name: "0", data: new Uint8Array(16), method: 0 }]));
    await rejects(openCheckpoint(dir), "CheckpointError", /tensors are rebuilt through more than 16 nested calls/);
  });
});

isolatedTest("pickle: one APPENDS of 500k items is read without overflowing the stack", async () => {
  await withTempDir(async (dir) => {
    const p = new PickleWriter().emptyList().mark();
    for (let i = 0; i < 500_000; i++) p.op(0x4b, i & 0xff); // BININT1
    p.op(0x65); // APPENDS
    await binDir(dir, torchZip(p.stop()));
    await rejects(openCheckpoint(dir), "CheckpointError", /pytorch_model\.bin: the pickle holds no state dict/);
  });
});
