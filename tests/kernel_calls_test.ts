// Kernels are called by name (engine/kernel.ts): every kernel's Params struct and bindings parse
// from its source, each binding carries a comment (its shape), and a dispatch whose parameter
// names, order or buffers disagree with the source, or whose buffer is smaller than what it
// touches, is refused before anything is recorded.
import { assert, assertEquals, assertThrows } from "./assert.ts";
import { Recorder, storageBuffer } from "../engine/gpu.ts";
import { type Kernel, kernelSource, loadKernel, parseBindings, parseParams } from "../engine/kernel.ts";
import { testGpu } from "./helpers.ts";

async function kernelFiles(dir = new URL("../kernels/", import.meta.url), prefix = ""): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) {
    if (e.isDirectory) out.push(...await kernelFiles(new URL(`${e.name}/`, dir), `${prefix}${e.name}/`));
    else if (e.name.endsWith(".wgsl")) out.push(`${prefix}${e.name.replace(/\.wgsl$/, "")}`);
  }
  return out.sort();
}

/** The weight-access includes (matmul_weights_*) are not kernels: they are prepended to matmul*.wgsl. */
const isInclude = (name: string) => name.startsWith("matmul_weights_");

Deno.test("every kernel file: a header, a Params struct, bindings 1..n each with a comment", async () => {
  const names = await kernelFiles();
  assert(names.includes("rmsnorm") && names.includes("mamba2/ssd_scan"), `kernels found: ${names.join(", ")}`);
  for (const name of names) {
    const src = await kernelSource(name);
    assert(src.startsWith("//"), `${name}: no header comment`);
    const lines = src.split("\n");
    lines.forEach((l, i) => {
      if (/@binding\(\d+\)\s*var<storage/.test(l)) assert(lines[i - 1].trim().startsWith("//"), `${name}: binding without a comment: ${l.trim()}`);
    });
    if (isInclude(name)) continue;
    const params = parseParams(src, name);
    assert(params.length > 0 && params.length % 4 === 0, `${name}: Params is not whole 16-byte rows (${params.length} fields)`);
    // matmul bodies declare their weights in the include: parse them with it
    const full = name.startsWith("matmul") ? (await kernelSource("matmul_weights_f32")) + src : src;
    const bindings = parseBindings(full, name);
    assert(bindings.length > 0, `${name}: no storage bindings`);
  }
});

Deno.test("parseParams and parseBindings read names, types and order", () => {
  const src = `// k
struct Params {
  rows: u32, // comment, with a comma
  eps: f32,
  shift: i32,
  _pad: u32,
}
@group(0) @binding(0) var<uniform> p: Params;
// y: out
@group(0) @binding(2) var<storage, read_write> y: array<f32>;
// x: in
@group(0) @binding(1) var<storage, read> x: array<f32>;
`;
  assertEquals(parseParams(src, "k"), [{ name: "rows", type: "u32" }, { name: "eps", type: "f32" }, { name: "shift", type: "i32" }, { name: "_pad", type: "u32" }]);
  assertEquals(parseBindings(src, "k"), [{ binding: 1, name: "x", access: "read" }, { binding: 2, name: "y", access: "read_write" }]);
  assertThrows(() => parseParams("struct Other { a: u32 }", "k"), /k: no struct Params/);
  assertThrows(() => parseParams("struct Params { a: vec4<f32>, }", "k"), /"a: vec4<f32>" is not a u32, i32 or f32/);
  assertThrows(() => parseBindings(src.replace("@binding(2)", "@binding(3)"), "k"), /storage bindings must be 1\.\.n without gaps/);
  assertThrows(() => parseBindings("@group(0) @binding(1) var<storage, read> x: array<f32>;", "k"), /no uniform Params at binding 0/);
});

Deno.test("a dispatch by name: wrong, missing, extra or misordered names and short buffers are refused", async () => {
  const gpu = await testGpu();
  const k: Kernel = await loadKernel(gpu, "rmsnorm"); // Params rows, dim, eps, _pad; x, weight, out
  const x = storageBuffer(gpu, 4 * 6, "x"), w = storageBuffer(gpu, 4 * 3, "w"), out = storageBuffer(gpu, 4 * 6, "out");
  const buffers = { x: [x, 24], weight: [w, 12], out: [out, 24] } as const;
  const rec = new Recorder(gpu);
  k.dispatch(rec, { rows: 2, dim: 3, eps: 1e-5 }, buffers, 2); // the right call
  assertEquals(k.pack({ rows: 2, dim: 3, eps: 0.5 }), [{ u: 2 }, { u: 3 }, { f: 0.5 }, { u: 0 }]);
  const bad: [() => void, RegExp][] = [
    [() => k.dispatch(rec, { dim: 3, rows: 2, eps: 1e-5 }, buffers, 2), /parameters \(dim, rows, eps\) do not match its Params \(rows, dim, eps\)/],
    [() => k.dispatch(rec, { rows: 2, dim: 3 }, buffers, 2), /parameters \(rows, dim\) do not match/],
    [() => k.dispatch(rec, { rows: 2, dim: 3, eps: 1e-5, extra: 1 }, buffers, 2), /do not match/],
    [() => k.dispatch(rec, { rows: 2, dim: 3, eps: 1e-5, _pad: 0 }, buffers, 2), /do not match/],
    [() => k.dispatch(rec, { rows: -1, dim: 3, eps: 1e-5 }, buffers, 2), /parameter rows = -1 is not a valid u32/],
    [() => k.dispatch(rec, { rows: 2.5, dim: 3, eps: 1e-5 }, buffers, 2), /rows = 2\.5 is not a valid u32/],
    [() => k.dispatch(rec, { rows: 2, dim: 3, eps: NaN }, buffers, 2), /eps = NaN is not a valid f32/],
    [() => k.dispatch(rec, { rows: 2, dim: 3, eps: 1e-5 }, { x: [x, 24], out: [out, 24] }, 2), /buffers \(out, x\) do not match its bindings \(out, weight, x\)/],
    [() => k.dispatch(rec, { rows: 2, dim: 3, eps: 1e-5 }, { ...buffers, y: [x, 4] }, 2), /do not match its bindings/],
    [() => k.dispatch(rec, { rows: 2, dim: 3, eps: 1e-5 }, { ...buffers, out: [out, 28] }, 2), /buffer out \(out\) holds 24 bytes, the dispatch needs 28/],
  ];
  for (const [fn, re] of bad) assertThrows(fn, re);
  rec.submit();
  await gpu.device.queue.onSubmittedWorkDone();
  [x, w, out].forEach((b) => b.destroy());
});
