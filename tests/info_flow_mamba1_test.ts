// 03_info_flow through the pipeline (01_construct then 03_info_flow, as a user runs them) on the
// Mamba-1 and Falcon-Mamba fixtures reproduces every case of their golden-experiments.json: the
// reference study's flows and the channel selectors (ranked by sum_n exp(A[c, n])), windows of 2
// layers; the subject tokens, true ids and p_base come from the real tokenizer (GPT-NeoX-20B's: the
// fixtures have no tokenizer.json of their own), p(true) within 2e-4 relative, the same hit, the same
// number of blocked edges, and no row where a flow blocks nothing.
import { join } from "node:path";
import { assert, assertEquals } from "./assert.ts";
import { assertGoldenFlowCases, describe, type GoldenFlows, pipeline } from "./pipeline_helpers.ts";
import { readParquet } from "../workflows/lib/parquet.ts";

for (const name of ["mamba1-tiny", "falcon-mamba-tiny"]) {
  Deno.test(`03_info_flow on ${name} reproduces every case of its golden-experiments.json (flows, channel selectors)`, async () => {
    const fixture = `tests/fixtures/${name}`;
    const g: GoldenFlows = JSON.parse(await Deno.readTextFile(`${fixture}/golden-experiments.json`));
    const tmp = await Deno.makeTempDir({ prefix: `info_flow_${name}_` });
    try {
      const rows = g.prompts.map((p) => p.row).sort((a, b) => a - b).join(",");
      assert(g.prompts.every((p) => p.cases.every((c) => !c.conv)), "the Mamba-1 goldens have no conv cases");
      const out = join(tmp, "run");
      // two runs into one folder (the second reuses 01_construct): every flow in every channel, and
      // the selectors on the flows the golden has them for
      const selectorFlows = [...new Set(g.prompts.flatMap((p) => p.cases.filter((c) => c.heads !== "all").map((c) => c.flow)))];
      const t = { rows: [] as Record<string, unknown>[] };
      for (const [flows, heads] of [[g.flows, ["all"]], [selectorFlows, g.selectors]]) {
        const r = await pipeline([
          "--model", fixture, "--rows", rows, "--only", "01_construct", "--only", "03_info_flow", "--out", out,
          "--set", "03_info_flow.filter=all", "--set", `03_info_flow.k=${g.window_size}`, "--set", "03_info_flow.bootstrap=20",
          "--set", `03_info_flow.flows=${flows.join(",")}`, "--set", `03_info_flow.heads=${heads.join(",")}`, "--set", "03_info_flow.conv=false",
        ]);
        assertEquals(r.code, 0, describe(r));
        t.rows.push(...(await readParquet(join(out, "03_info_flow", "info_flow.parquet"))).rows);
      }
      // 01_construct: the golden ids' true token and its probability (attention mode, the real vocabulary)
      const construct = await readParquet(join(out, "01_construct", "construct_attention.parquet"));
      for (const p of g.prompts) {
        const x = construct.rows.find((c) => c.row === p.row)!;
        assertEquals([...(x.ids as number[])], p.ids, `row ${p.row}: ids`);
        assertEquals(x.true_id, p.true_id, `row ${p.row}: true id`);
        assert(Math.abs((x.true_prob as number) - p.base.true_prob) <= 2e-4 * p.base.true_prob, `row ${p.row}: p_base ${x.true_prob} vs ${p.base.true_prob}`);
      }
      const { checked, absent, worst } = assertGoldenFlowCases(g.prompts, t.rows, "channels");
      const total = g.prompts.reduce((n, p) => n + p.cases.length, 0);
      assertEquals(checked + absent, total);
      assert(checked > 500, `${checked} cases checked`);
      console.log(`  ${name}: ${checked} golden cases reproduced (worst relative error of p(true) ${worst.toExponential(1)}), ${absent} without edges have no row`);
    } finally {
      await Deno.remove(tmp, { recursive: true });
    }
  });
}

Deno.test("the model's own tokenizer.json: used by 01_construct, its path and sha256 in the manifest and the cache key; changing it reruns", async () => {
  const tmp = await Deno.makeTempDir({ prefix: "own_tokenizer_" });
  try {
    const model = join(tmp, "model");
    await Deno.mkdir(model);
    for (const f of ["config.json", "model.safetensors"]) await Deno.symlink(new URL(`./fixtures/mamba1-tiny/${f}`, import.meta.url).pathname, join(model, f));
    // GPT-NeoX-20B's tokenizer with one more token (50278 <= the 50280 head rows): its own file, its own hash
    const neox = JSON.parse(await Deno.readTextFile(new URL("../data/gpt-neox-20b-tokenizer.json", import.meta.url)));
    neox.added_tokens.push({ id: 50277, content: "<|own|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    await Deno.writeTextFile(join(model, "tokenizer.json"), JSON.stringify(neox));
    const out = join(tmp, "run");
    const args = ["--model", model, "--rows", "0-2", "--only", "01_construct", "--out", out];
    const r = await pipeline(args);
    assertEquals(r.code, 0, describe(r));
    const manifest = JSON.parse(await Deno.readTextFile(join(out, "01_construct", "manifest.json")));
    assertEquals(manifest.inputs.tokenizer.path, join(model, "tokenizer.json"));
    const { hashFile } = await import("../workflows/lib/hash.ts");
    assertEquals(manifest.inputs.tokenizer.sha256, await hashFile(join(model, "tokenizer.json")));
    // the same run again is up to date; another tokenizer.json beside the model reruns 01_construct
    assert(/up to date/.test((await pipeline(args)).stdout));
    neox.added_tokens.push({ id: 50278, content: "<|own2|>", single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    await Deno.writeTextFile(join(model, "tokenizer.json"), JSON.stringify(neox));
    const again = await pipeline(args);
    assertEquals(again.code, 0, describe(again));
    assert(/01_construct: runs: .*tokenizer changed/.test(again.stdout), again.stdout);
  } finally {
    await Deno.remove(tmp, { recursive: true });
  }
});
