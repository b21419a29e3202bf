// bench/transformer_bench.ts --quick runs (so that the bench code cannot rot; `deno task bench
// --quick` runs it too, tests/bench_smoke_test.ts), its numbers are sane, the fast path agrees with
// the full recomputes, and its FLOP arithmetic agrees with a count done by hand for pythia-160m.
import { assert, assertEquals } from "./assert.ts";
import { runDeno } from "./helpers.ts";
import { fastKnockoutFlops, fullForwardFlops, sweepFlops, tokenRowFlops } from "../bench/transformer_bench.ts";
import type { TransformerConfig } from "../engine/transformer/config.ts";
import { syntheticPythiaConfig } from "../engine/transformer/synthetic.ts";

Deno.test("bench/transformer_bench.ts --quick: three rows of finite numbers, the fast path exact", async () => {
  const { code, stdout, stderr } = await runDeno(["run", "-A", "bench/transformer_bench.ts", "--quick"]);
  assertEquals(code, 0, `exit ${code}\n${stderr}`);
  const lines = stdout.split("\n").filter((l) => l.startsWith("transformer knockout sweep"));
  assertEquals(lines.length, 3, stdout);
  for (const l of lines) {
    const v = Number(/: ([0-9.]+) (s\/prompt|x)/.exec(l)?.[1]);
    assert(Number.isFinite(v) && v > 0, `not a positive number: ${l}`);
  }
  const diff = Number(/max \|Δp\| fast vs full ([0-9.e+-]+)/.exec(stdout)?.[1]);
  assert(diff <= 1e-6, `fast path vs full recomputes: ${diff}`);
  assert(/FLOP ratio [0-9.]+x/.test(stdout), stdout);
});

Deno.test("bench arithmetic: FLOPs of a forward and of a fast-path knockout", () => {
  const c = syntheticPythiaConfig("pythia-160m") as TransformerConfig;
  const D = 768, F = 3072, V = 50304, H = 12, hd = 64, L = 12, T = 10;
  // the matrices dominate: qkv, out, up and down per token and layer
  const matrices = 2 * D * 3 * D + 2 * D * D + 2 * D * F + 2 * F * D;
  assert(tokenRowFlops(c) >= matrices && tokenRowFlops(c) < 1.01 * matrices, `${tokenRowFlops(c)} vs ${matrices}`);
  const entry = H * (4 * hd + 5), head = 2 * D * V + 8 * D + 3 * V;
  assertEquals(fullForwardFlops(c, T), L * (T * tokenRowFlops(c) + 55 * entry) + head);
  // the last row from layer 3 up: 9 layers of one row attending to 10 keys
  assertEquals(fastKnockoutFlops(c, T, 3, T - 1), 9 * (tokenRowFlops(c) + 10 * entry) + head);
  // rows 6..9 from layer 0: 4 rows attending to 7+8+9+10 keys
  assertEquals(fastKnockoutFlops(c, T, 0, 6), L * (4 * tokenRowFlops(c) + 34 * entry) + head);
  const s = sweepFlops(c, T, [{ start: 0, t0: 9 }, { start: 3, t0: 9 }]);
  assertEquals(s.full, 2 * fullForwardFlops(c, T));
  assertEquals(s.fast, fullForwardFlops(c, T) + fastKnockoutFlops(c, T, 0, 9) + fastKnockoutFlops(c, T, 3, 9));
});
