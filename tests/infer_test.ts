// The tokenizer, --block specs, and the infer command end to end (as a user runs it).
import { assert, assertEquals, assertThrows } from "./assert.ts";
import { loadTokenizer } from "../engine/tokenizer.ts";
import { parseBlockSpec, resolveBlockSpecs } from "../engine/blockspec.ts";
import type { KnockoutSpec } from "../engine/arch.ts";
import { FIXTURE_DIR, goldenEngine, maxAbs, maxAbsDiff, runDeno } from "./helpers.ts";

Deno.test("tokenizer: the ids published for the study's prompts", async () => {
  const tok = await loadTokenizer();
  assertEquals(tok.encode("Commerzbank, whose headquarters are in"), [2115, 961, 91, 17703, 13, 3692, 17929, 403, 275]);
  assertEquals(tok.encode("Edvard Grieg, playing the"), [3996, 12299, 42765, 909, 13, 4882, 253]);
  assertEquals(tok.encode(" French"), [5112]);
  assertEquals(tok.decodeEach([2115, 961, 91, 17703, 13, 3692]), ["Com", "mer", "z", "bank", ",", " whose"]);
});

/** The edges a resolved --block list blocks in layer l (one spec per layer). */
const edgesIn = (ko: KnockoutSpec[], l: number) => ko.find((k) => k.start === l && k.end === l + 1)?.edges;

Deno.test("--block specs resolve to edges", () => {
  const ko = resolveBlockSpecs([parseBlockSpec("3-5:last>0,2"), parseBlockSpec("1,4:last>2-3")], 6, 8);
  assertEquals(ko.map((k) => [k.start, k.end]), [[1, 2], [3, 4], [4, 5], [5, 6]]);
  assertEquals(edgesIn(ko, 3), [[5, 0], [5, 2]]);
  assertEquals(edgesIn(ko, 5), [[5, 0], [5, 2]]);
  assertEquals(edgesIn(ko, 4), [[5, 0], [5, 2], [5, 3]], "repeated edges are merged");
  assertEquals(edgesIn(ko, 1), [[5, 2], [5, 3]]);
  assert(ko.every((k) => k.units === undefined && k.conv === undefined), "every head, no conv unless asked");
  assertEquals(edgesIn(resolveBlockSpecs([parseBlockSpec("0:3>1")], 6, 8), 0), [[3, 1]], "any row, not only the last");
  // `last` as a column means the prompt's last position; a row can't see later columns
  assertThrows(() => resolveBlockSpecs([parseBlockSpec("1:2>last")], 6, 8), /column 5 is after row 2/);
  const all = resolveBlockSpecs([parseBlockSpec("0-1:last>0-last")], 4, 2);
  assertEquals(edgesIn(all, 1), [[3, 0], [3, 1], [3, 2], [3, 3]]);
});

Deno.test("bad --block specs are refused with one line", () => {
  for (const [spec, re] of [
    ["3", /expected L:R>C/],
    ["a:1>0", /not a layer index/],
    ["1:x>0", /not an index or last/],
    ["1:2>", /empty list/],
    ["5-3:1>0", /runs backwards/],
    ["9:1>0", /layer 9 does not exist/],
    ["1:7>0", /row 7 does not exist/],
    ["1:2>1-2-3", /bad range/],
  ] as const) {
    const err = assertThrows(() => resolveBlockSpecs([parseBlockSpec(spec)], 6, 8), re);
    assert(!err.message.includes("\n"));
  }
});

Deno.test("infer --json prints the fixture model's logits (golden)", async () => {
  const golden = (await goldenEngine()).sequences[3];
  const r = await runDeno(["run", "-A", "engine/infer.ts", "--model", FIXTURE_DIR, "--ids", golden.ids.join(","), "--json", "--top", "3"]);
  assertEquals(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assertEquals(out.ids, golden.ids);
  assertEquals(out.tokens.length, golden.ids.length);
  assertEquals(out.last_logits.length, 50288);
  assert(maxAbsDiff(out.last_logits, golden.last_logits) <= 1e-4 * maxAbs(golden.last_logits));
  assertEquals(out.top.length, 3);
  assertEquals(out.top[0].id, golden.argmax_per_position.at(-1));
  assert(out.top[0].prob >= out.top[1].prob && out.top[1].prob >= out.top[2].prob);
});

Deno.test("infer with --block matches the golden knockout", async () => {
  const k = (await goldenEngine()).knockouts[0]; // layers 1 and 2, row 6 -> columns 0 and 3
  assertEquals(k.blocked_edges, { "1": [[6, 0], [6, 3]], "2": [[6, 0], [6, 3]] });
  const r = await runDeno(["run", "-A", "engine/infer.ts", "--model", FIXTURE_DIR, "--ids", k.ids.join(","), "--mode", "attention", "--block", "1-2:last>0,3", "--json"]);
  assertEquals(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert(maxAbsDiff(out.last_logits, k.last_logits) <= 1e-4 * maxAbs(k.last_logits));
});

Deno.test("infer --block with --heads and --conv reproduces golden-flows.json", async () => {
  const g = JSON.parse(await Deno.readTextFile(FIXTURE_DIR + "golden-flows.json"));
  const p = g.prompts[0]; // 10 tokens, subject 4..8: relation = 0..3 and the last
  assertEquals(p.subject_tokens, [4, 5, 6, 7, 8]);
  const golden = (flow: string, heads: string, conv: boolean) =>
    p.cases.find((c: { flow: string; heads: string; conv: boolean; window_start: number }) => c.flow === flow && c.heads === heads && c.conv === conv && c.window_start === 1);
  for (const [block, flow, heads, conv] of [
    ["1-3:last>4-8", "last<-subject", "not-fast:1/3", false],
    ["1-3:last>0-3,last", "last<-relation", "slow:1/3", false],
    ["1-3:last>0-3,last", "last<-relation", "all", true],
  ] as const) {
    const args = ["--model", FIXTURE_DIR, "--ids", p.ids.join(","), "--mode", "attention", "--block", block, "--json"];
    if (heads !== "all") args.push("--heads", heads);
    if (conv) args.push("--conv");
    const r = await runDeno(["run", "-A", "engine/infer.ts", ...args]);
    assertEquals(r.code, 0, r.stderr);
    const logits: number[] = JSON.parse(r.stdout).last_logits.slice(0, 50277);
    const m = Math.max(...logits);
    const prob = Math.exp(logits[p.true_id] - m) / logits.reduce((s, v) => s + Math.exp(v - m), 0);
    const want = golden(flow, heads, conv);
    assert(Math.abs(prob - want.true_prob) <= 2e-4 * want.true_prob, `${block} --heads ${heads}${conv ? " --conv" : ""}: p ${prob}, golden ${want.true_prob}`);
  }
  // text output says which heads and whether the conv path was cut
  const t = await runDeno(["run", "-A", "engine/infer.ts", "--model", FIXTURE_DIR, "--ids", p.ids.join(","), "--mode", "attention", "--block", "1:last>0", "--heads", "fast:1/2", "--conv", "--top", "1"]);
  assertEquals(t.code, 0, t.stderr);
  assert(t.stdout.includes("blocked: 1:last>0 (heads fast:1/2, with the conv taps)"), t.stdout);
});

Deno.test("infer --dtype f16: the same top token, logits close", async () => {
  const golden = (await goldenEngine()).sequences[4];
  const r = await runDeno(["run", "-A", "engine/infer.ts", "--model", FIXTURE_DIR, "--ids", golden.ids.join(","), "--json", "--dtype", "f16"]);
  assertEquals(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assertEquals(out.top[0].id, golden.argmax_per_position.at(-1));
  const err = maxAbsDiff(out.last_logits, golden.last_logits) / maxAbs(golden.last_logits);
  assert(err <= 2e-2 && err > 1e-7, `f16 weights: logits off by ${err} (within 2e-2, and not f32-exact)`);
});

Deno.test("infer text output shows tokens and top tokens", async () => {
  const r = await runDeno(["run", "-A", "engine/infer.ts", "--model", FIXTURE_DIR, "--prompt", "The mother tongue of Danielle Darrieux is", "--top", "4"]);
  assertEquals(r.code, 0, r.stderr);
  assert(r.stdout.includes('5:" Dar"') || r.stdout.includes("tokens (10)"), r.stdout);
  assertEquals(r.stdout.split("\n").filter((l) => /^\s+\d+\.\d+%/.test(l)).length, 4, r.stdout);
});

Deno.test("infer: bad input gives one line and a non-zero exit", async () => {
  const cases: [string[], RegExp][] = [
    [["--ids", "1,2", "--block", "1:last>0"], /--block needs --mode attention/],
    [["--ids", "1,2", "--mode", "attention", "--block", "1:last>5"], /column 5 does not exist|column 5/],
    [["--ids", "1,2", "--mode", "attention", "--block", "nonsense"], /expected L:R>C/],
    [["--ids", "1,99999"], /token id 99999 is out of range/],
    [["--ids", "1,x"], /not a token id/],
    [["--ids", "1", "--mode", "fast"], /--mode fast/],
    [["--ids", "1", "--dtype", "f8"], /--dtype f8: use f32 or f16/],
    [["--prompt", "a", "--ids", "1"], /exactly one of --prompt or --ids/],
    [["--ids", "1", "--bogus"], /bogus/],
    [["--ids", "1,2", "--mode", "attention", "--heads", "fast:1/3"], /--heads and --conv act on the edges of --block/],
    [["--ids", "1,2", "--mode", "attention", "--conv"], /--heads and --conv act on the edges of --block/],
    [["--ids", "1,2", "--mode", "attention", "--block", "1:last>0", "--heads", "fast:2/1"], /--heads: unit selector "fast:2\/1": the fraction 2\/1 is not in \(0, 1\]/],
    [["--ids", "1,2", "--mode", "attention", "--block", "1:last>0", "--heads", "only:8"], /unit 8 does not exist/],
  ];
  cases.push(
    [["--ids", "1", "--target", "#99999"], /--target: token id 99999 is out of range/],
    [["--ids", "1", "--target", ""], /--target "" encodes to no token/],
  );
  for (const [args, re] of cases) {
    const r = await runDeno(["run", "-A", "engine/infer.ts", "--model", FIXTURE_DIR, ...args]);
    // every one is a malformed command line: exit 2 (other errors exit 1)
    assertEquals(r.code, 2, `${args.join(" ")}: exit ${r.code}: ${r.stderr}`);
    const lines = r.stderr.trim().split("\n");
    assertEquals(lines.length, 1, `${args.join(" ")}: ${r.stderr}`);
    assert(re.test(lines[0]), `${args.join(" ")}: ${lines[0]}`);
  }
  // weights that don't fit the config are named before anything runs
  const dir = await Deno.makeTempDir();
  const cfg = JSON.parse(await Deno.readTextFile(FIXTURE_DIR + "config.json"));
  await Deno.writeTextFile(`${dir}/config.json`, JSON.stringify({ ...cfg, d_model: 96 }));
  await Deno.copyFile(FIXTURE_DIR + "model.safetensors", `${dir}/model.safetensors`);
  const misfit = await runDeno(["run", "-A", "engine/infer.ts", "--model", dir, "--ids", "1"]);
  assertEquals(misfit.code, 1, "a model that cannot load is not a usage error");
  assertEquals(misfit.stderr.trim().split("\n").length, 1, misfit.stderr);
  assert(/embedding\.weight' has shape \[50288, 64\] but config\.json implies \[50288, 96\]/.test(misfit.stderr), misfit.stderr);
  const missing = await runDeno(["run", "-A", "engine/infer.ts", "--model", "/nonexistent/model", "--ids", "1"]);
  assertEquals(missing.code, 1);
  assertEquals(missing.stderr.trim().split("\n").length, 1, missing.stderr);
});

Deno.test("infer --target: p and rank of a given token; the JSON records model, mode, blocks, heads, conv and target", async () => {
  const k = (await goldenEngine()).knockouts[0];
  const args = ["run", "-A", "engine/infer.ts", "--model", FIXTURE_DIR, "--ids", k.ids.join(","), "--mode", "attention", "--block", "1-2:last>0,3"];
  const r = await runDeno([...args, "--json", "--target", " French"]);
  assertEquals(r.code, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assertEquals([out.model, out.family, out.mode, out.dtype, out.blocks, out.heads, out.conv], [FIXTURE_DIR, "mamba2", "attention", "f32", ["1-2:last>0,3"], "all", false]);
  assert(maxAbsDiff(out.last_logits, k.last_logits) <= 1e-4 * maxAbs(k.last_logits), "last_logits kept");
  assertEquals([out.target.text, out.target.id, out.target.token], [" French", 5112, " French"]);
  // p and rank from the golden logits (softmax over the real vocabulary)
  const V = 50277;
  const g = k.last_logits.slice(0, V);
  const m = Math.max(...g);
  const lse = m + Math.log(g.reduce((s, x) => s + Math.exp(x - m), 0));
  const p = Math.exp(g[5112] - lse);
  assert(Math.abs(out.target.prob - p) <= 1e-3 * p, `p(" French") ${out.target.prob} vs ${p}`);
  assertEquals(out.target.rank, g.filter((x) => x > g[5112]).length + 1);
  // by id, and in the text output
  const byId = JSON.parse((await runDeno([...args, "--json", "--target", "#5112"])).stdout);
  assertEquals(byId.target.prob, out.target.prob);
  const text = await runDeno([...args, "--target", " French"]);
  assertEquals(text.code, 0, text.stderr);
  assert(new RegExp(`target " French": token 5112 " French", p = .*, rank ${out.target.rank} of 50277`).test(text.stdout), text.stdout);
  // without --target and --block: no target key, no blocks
  const plain = JSON.parse((await runDeno(["run", "-A", "engine/infer.ts", "--model", FIXTURE_DIR, "--ids", "1,2", "--json"])).stdout);
  assertEquals([plain.mode, plain.blocks, plain.heads, "target" in plain], ["scan", [], null, false]);
});
