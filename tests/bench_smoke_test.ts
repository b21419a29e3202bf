// `deno task bench --quick` runs every section on tiny sizes and prints one markdown table, so
// that the bench code cannot rot. The numbers of a quick run mean little; only their presence
// and sanity are checked.
import { assert, assertEquals } from "./assert.ts";
import { runDeno } from "./helpers.ts";

Deno.test("deno task bench --quick: every section, one table of finite numbers", async () => {
  const t0 = performance.now();
  const { code, stdout, stderr } = await runDeno(["task", "bench", "--quick"]);
  assertEquals(code, 0, `exit ${code}\n${stderr}`);
  const lines = stdout.split("\n").filter((l) => l.startsWith("| "));
  assert(lines[0].startsWith("| section | benchmark | value | unit |"), `no table header in:\n${stdout}`);
  const rows = lines.slice(1).map((l) => l.split(" | ").map((c) => c.trim()));
  const sections = new Set(rows.map((r) => r[0].replace(/^\| /, "")));
  for (const s of ["ceilings", "matmul", "prefill", "construct", "knockout", "load", "transformer", "original"]) assert(sections.has(s), `no ${s} rows:\n${stdout}`);
  // this project's side of the comparison with the original code is always measured; the original's where python3-torch is
  assert(rows.some((r) => r[0].endsWith("original") && r[1].startsWith("01_construct (scan + attention), this project")), "our 01_construct per prompt");
  for (const r of rows) {
    const v = Number(r[2]);
    assert(Number.isFinite(v) && v > 0, `not a positive number: ${r.join(" | ")}`);
  }
  // the yardsticks and the rows measured against them
  assert(rows.some((r) => r[1].startsWith("peak arithmetic") && r[3] === "GFLOP/s"), "peak arithmetic row");
  assert(rows.some((r) => r[1].startsWith("buffer copy") && r[3] === "GB/s"), "copy row");
  assert(rows.some((r) => / 1 row, f16$/.test(r[1]) && /x f32/.test(r[5] ?? "")), "f16 one-row rows give their speed-up");
  assert(rows.filter((r) => r[4]?.includes("% of")).length >= 6, "fractions of the ceilings");
  console.log(`  quick bench: ${rows.length} rows in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
});

Deno.test("deno task bench --only: one section; a bad name is one clear error", async () => {
  const ok = await runDeno(["task", "bench", "--quick", "--only", "ceilings"]);
  assertEquals(ok.code, 0, ok.stderr);
  const rows = ok.stdout.split("\n").filter((l) => l.startsWith("| ") && !l.startsWith("| section"));
  assert(rows.length >= 2 && rows.every((l) => l.startsWith("| ceilings |")), ok.stdout);
  const bad = await runDeno(["task", "bench", "--only", "nonsense"]);
  assertEquals(bad.code, 2);
  assert(/--only nonsense: no such section/.test(bad.stderr), bad.stderr);
  assert(!bad.stderr.includes("    at "), "no stack trace");
});
