// 04_heatmap through the pipeline on the fixture model: the golden heatmaps, one figure per
// prompt (tokens with the last marked *, base probability in the title), prompts chosen by text,
// by row or all, prompts that are skipped (not selected, not correct), and bad input.
import { join } from "node:path";
import { assert, assertEquals, assertThrows } from "./assert.ts";
import { FIXTURE_DIR } from "./helpers.ts";
import { describe, FIXTURE, pipeline, type RunResult, expectOneLineError } from "./pipeline_helpers.ts";
import { readParquet } from "../workflows/lib/parquet.ts";
import { parsePromptChoice, STUDY_PROMPTS, tokenLabels } from "../workflows/04_heatmap.ts";

const P_ABS = 1e-6;
const P_REL = 1e-4;

interface GoldenPrompt {
  row: number;
  prompt: string;
  ids: number[];
  base: { true_prob: number };
  heatmap?: { window_size: number; windows: number[][]; true_prob: number[][] };
}
const GOLDEN: { prompts: GoldenPrompt[] } = JSON.parse(await Deno.readTextFile(FIXTURE_DIR + "golden-experiments.json"));
const ROWS = GOLDEN.prompts.map((p) => p.row).sort((a, b) => a - b);
const STUDY_ROWS = [19230, 4342, 21326, 15396]; // the rows of the four study prompts
const HEAT_K = GOLDEN.prompts.find((p) => p.heatmap)!.heatmap!.window_size;
const ONLY = ["--only", "01_construct", "--only", "04_heatmap"];
const ALL = ["--set", "04_heatmap.filter=all", "--set", `04_heatmap.k=${HEAT_K}`];

const oneLineError = (r: RunResult, mention: RegExp) => expectOneLineError(r, mention, { ignoreProgress: true });

async function figures(dir: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of Deno.readDir(dir)) if (/^heatmap_row\d+\.png$/.test(e.name)) out.push(e.name);
  return out.sort();
}

Deno.test("heatmap prompt choice and token labels", () => {
  assertEquals(parsePromptChoice("study"), { kind: "texts", texts: [...STUDY_PROMPTS] });
  assertEquals(parsePromptChoice(" all "), { kind: "all" });
  assertEquals(parsePromptChoice("4342, 19230,0-2"), { kind: "rows", rows: [0, 1, 2, 4342, 19230] });
  assertEquals(parsePromptChoice("Edvard Grieg, playing the | BBC One, by"), { kind: "texts", texts: ["Edvard Grieg, playing the", "BBC One, by"] });
  assertThrows(() => parsePromptChoice("  "), /empty/);
  assertEquals(tokenLabels(["Com", "mer", "\n", " in"]), ["Com", "mer", "\\n", " in*"]);
});

Deno.test("04_heatmap on the fixture model", async (t) => {
  const tmp = await Deno.makeTempDir({ prefix: "heatmap_" });
  const out = join(tmp, "run");
  const dir = join(out, "04_heatmap");
  const base = ["--model", FIXTURE, "--rows", ROWS.join(","), "--out", out, ...ONLY];

  await t.step("the study's four prompts: values match the goldens, one figure each", async () => {
    const r = await pipeline([...base, ...ALL]);
    assertEquals(r.code, 0, describe(r));
    const t = await readParquet(join(dir, "heatmap.parquet"));
    for (const c of ["row", "k", "position", "window_start", "true_prob"]) assert(t.columns.includes(c), `column ${c}`);
    assertEquals([...new Set(t.rows.map((x) => x.row))].sort(), [...STUDY_ROWS].sort());
    const heat = GOLDEN.prompts.filter((p) => p.heatmap);
    assert(heat.length >= 2);
    for (const g of heat) {
      const mine = t.rows.filter((x) => x.row === g.row);
      assertEquals(mine.length, g.heatmap!.true_prob.length * g.heatmap!.windows.length);
      g.heatmap!.true_prob.forEach((perWindow, pos) =>
        perWindow.forEach((gold, w) => {
          const x = mine.find((y) => y.position === pos && y.window_start === w)!;
          const where = `row ${g.row}, position ${pos}, window ${w}`;
          assertEquals(x.k, HEAT_K, where);
          assertEquals(x.window_end, g.heatmap!.windows[w][HEAT_K - 1] + 1, where);
          const p = x.true_prob as number;
          assert(Math.abs(p - gold) <= Math.min(P_ABS, P_REL * gold), `${where}: ${p} vs ${gold}`);
        })
      );
      const svg = await Deno.readTextFile(join(dir, `heatmap_row${g.row}.svg`));
      assert(svg.includes(g.prompt), `title of row ${g.row}`);
      assert(svg.includes("without knockout = "), `base probability in the title of row ${g.row}`);
      assert(/>[^<]*\*<\/text>/.test(svg), `the last token is marked * (row ${g.row})`);
      assert(svg.includes("window start layer"), "x axis title");
    }
    assertEquals(await figures(dir), STUDY_ROWS.map((r) => `heatmap_row${r}.png`).sort());
    const m = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
    // the per-prompt figures are recorded in the manifest like the declared outputs
    for (const r of STUDY_ROWS) for (const ext of ["png", "svg", "vl.json"]) assert(m.outputs[`heatmap_row${r}.${ext}`], `manifest lists heatmap_row${r}.${ext}`);
    assertEquals(m.counts.prompts, 4);
    assertEquals(m.counts.skipped, 0);
    // a second run is a no-op, and a changed figure is noticed
    const again = await pipeline([...base, ...ALL]);
    assert(again.stdout.includes("04_heatmap: up to date"), describe(again));
    await Deno.writeTextFile(join(dir, "heatmap_row4342.svg"), "<svg/>");
    const fixed = await pipeline([...base, ...ALL]);
    assert(fixed.stdout.includes("04_heatmap: runs: output heatmap_row4342.svg was modified"), describe(fixed));
  });

  await t.step("--heatmap-prompts: rows, texts (one not in the selection), all", async () => {
    const r = await pipeline([...base, ...ALL, "--heatmap-prompts", "4342,0"]);
    assertEquals(r.code, 0, describe(r));
    // stale figures of the earlier choice are gone
    assertEquals(await figures(dir), ["heatmap_row0.png", "heatmap_row4342.png"]);

    const r2 = await pipeline([...base, ...ALL, "--heatmap-prompts", "BBC One, by|The capital of Nowhere is"]);
    assertEquals(r2.code, 0, describe(r2));
    assert(r2.stdout.includes(`skipped: "The capital of Nowhere is" is not the prompt of any selected row`), describe(r2));
    assertEquals(await figures(dir), ["heatmap_row10.png"]);
    const m = JSON.parse(await Deno.readTextFile(join(dir, "manifest.json")));
    assertEquals(m.counts.skipped, 1);

    const r3 = await pipeline([...base, ...ALL, "--heatmap-prompts", "all"]);
    assertEquals(r3.code, 0, describe(r3));
    assertEquals((await figures(dir)).length, ROWS.length);
  });

  await t.step("heads and conv: a cell equals 03_info_flow's knockout of the same edge (first → last, last → last)", async () => {
    const rows = "4342,19230";
    const sel = ["--set", "04_heatmap.heads=not-fast:1/3", "--set", "04_heatmap.conv=true", "--set", `03_info_flow.heads=not-fast:1/3`, "--set", "03_info_flow.conv=true"];
    const out2 = join(tmp, "heads");
    const r = await pipeline([
      "--model", FIXTURE, "--rows", rows, "--out", out2, ...ONLY, "--only", "03_info_flow", ...ALL, ...sel, "--heatmap-prompts", rows,
      "--set", "03_info_flow.filter=all", "--set", `03_info_flow.k=${HEAT_K}`, "--set", "03_info_flow.flows=last<-first,last<-last",
    ]);
    assertEquals(r.code, 0, describe(r));
    const heat = await readParquet(join(out2, "04_heatmap", "heatmap.parquet"));
    const flows = await readParquet(join(out2, "03_info_flow", "info_flow.parquet"));
    assert(heat.rows.every((c) => c.heads === "not-fast:1/3" && c.conv === true), "heads and conv columns");
    const plain = await readParquet(join(dir, "heatmap.parquet"));
    let compared = 0, differs = 0;
    for (const f of flows.rows) {
      const T = GOLDEN.prompts.find((p) => p.row === f.row)!.ids.length;
      const position = f.flow === "last<-first" ? 0 : T - 1;
      const cell = heat.rows.find((c) => c.row === f.row && c.position === position && c.window_start === f.window_start)!;
      // the same knockout through the same fast path, in other batches (kernels may be chosen by batch size)
      const rel = Math.abs((cell.true_prob as number) - (f.true_prob as number)) / (f.true_prob as number);
      assert(rel < 1e-6, `row ${f.row} ${f.flow} window ${f.window_start}: ${cell.true_prob} vs ${f.true_prob}`);
      compared++;
      const p0 = plain.rows.find((c) => c.row === f.row && c.position === position && c.window_start === f.window_start);
      if (p0 && p0.true_prob !== cell.true_prob) differs++;
    }
    assertEquals(compared, 2 * 2 * (6 - HEAT_K + 1));
    assert(differs > 0, "the head selector changes the cells");
    const svg = await Deno.readTextFile(join(out2, "04_heatmap", "heatmap_row4342.svg"));
    assert(svg.includes("heads not-fast:1/3, conv path cut too"), "the figure says which heads and the conv path");
  });

  await t.step("bad input: no correct prompt, nothing selected, k too large — one line each, nothing lost", async () => {
    const before = await Deno.readTextFile(join(dir, "manifest.json"));
    // the default filter: the fixture model gets none of them right
    oneLineError(await pipeline([...base, "--set", `04_heatmap.k=${HEAT_K}`]), /no prompt to run .*not predicted correctly in both modes.*filter=all/);
    oneLineError(
      await pipeline(["--model", FIXTURE, "--rows", "0-3", "--out", join(tmp, "other"), ...ONLY, ...ALL]),
      /no prompt to run \("Commerzbank, whose headquarters are in" is not the prompt of any selected row, and 3 more\)/,
    );
    oneLineError(await pipeline([...base, "--set", "04_heatmap.filter=all", "--set", "04_heatmap.k=7"]), /k=7 is larger than the model's 6 layers/);
    oneLineError(await pipeline([...base, "--dry-run", "--set", "04_heatmap.heads=slow:3/2"]), /04_heatmap\.heads: unit selector "slow:3\/2": the fraction 3\/2 is not in \(0, 1\]/);
    assertEquals(await Deno.readTextFile(join(dir, "manifest.json")), before);
  });

  await Deno.remove(tmp, { recursive: true });
});
