// Token sets, flows and unit selectors (engine/flows.ts, engine/arch.ts): definitions, canonical
// text, the golden files' edge counts, and one-line errors for bad values.
import { assert, assertEquals, assertThrows } from "./assert.ts";
import { formatUnitSelector, parseUnitSelector, selectByDecay, type UnitSelector } from "../engine/arch.ts";
import { flowEdges, parseFlow, TOKEN_SETS, tokenSet } from "../engine/flows.ts";
import { FIXTURE_DIR } from "./helpers.ts";

Deno.test("token sets of a prompt", () => {
  // T = 8, subject at 2..4
  const sub = [2, 3, 4];
  const want: Record<string, number[]> = {
    first: [0],
    last: [7],
    subject: [2, 3, 4],
    relation: [0, 1, 5, 6, 7],
    relation_minus_last: [0, 1, 5, 6],
    context: [0, 1],
    all: [0, 1, 2, 3, 4, 5, 6, 7],
  };
  for (const set of TOKEN_SETS) assertEquals(tokenSet(set, 8, sub), want[set], set);
  // the subject at the start: no context; a subject that ends the prompt leaves the last out of relation
  assertEquals(tokenSet("context", 5, [0, 1]), []);
  assertEquals(tokenSet("relation", 5, [3, 4]), [0, 1, 2]);
  assertEquals(tokenSet("all", 1, [0]), [0]);
});

Deno.test("flows: target<-source blocks (t, s) with s <= t, sorted", () => {
  assertEquals(parseFlow(" last <- subject ").text, "last<-subject");
  assertEquals(flowEdges("last<-subject", 8, [2, 3, 4]), [[7, 2], [7, 3], [7, 4]]);
  // into the subject from itself: each subject token's own diagonal included, never s > t
  assertEquals(flowEdges("subject<-subject", 8, [2, 3]), [[2, 2], [3, 2], [3, 3]]);
  assertEquals(flowEdges("subject<-context", 8, [0, 1]), [], "nothing to block: no row");
  assertEquals(flowEdges("first<-last", 8, [2]), []);
  assertEquals(flowEdges("relation<-relation", 4, [1]).length, 6); // positions 0, 2, 3: 1 + 2 + 3
});

Deno.test("golden files: flow edge counts", async () => {
  const g = JSON.parse(await Deno.readTextFile(FIXTURE_DIR + "golden-flows.json"));
  let n = 0;
  for (const p of g.prompts) {
    for (const c of p.cases) {
      assertEquals(flowEdges(c.flow, p.ids.length, p.subject_tokens).length, c.edges, `row ${p.row} ${c.flow}`);
      n++;
    }
  }
  assert(n > 1000, `${n} cases`);
  assertEquals(g.flows.map((f: string) => parseFlow(f).text), g.flows);
});

Deno.test("unit selectors: parse, canonical text, round trip", () => {
  const cases: [string, UnitSelector, string][] = [
    ["all", { kind: "all" }, "all"],
    ["fast:1/3", { kind: "fast", a: 1, b: 3 }, "fast:1/3"],
    ["slow:2/4", { kind: "slow", a: 2, b: 4 }, "slow:2/4"],
    ["not-fast:1/1", { kind: "not-fast", a: 1, b: 1 }, "not-fast:1/1"],
    ["not-slow:1/3", { kind: "not-slow", a: 1, b: 3 }, "not-slow:1/3"],
    ["only:7+0-3", { kind: "only", units: [0, 1, 2, 3, 7] }, "only:0-3+7"],
    ["only:5+5+4", { kind: "only", units: [4, 5] }, "only:4-5"],
    ["only:2", { kind: "only", units: [2] }, "only:2"],
  ];
  for (const [text, sel, canonical] of cases) {
    assertEquals(parseUnitSelector(text), sel, text);
    assertEquals(formatUnitSelector(sel), canonical, text);
    assertEquals(parseUnitSelector(formatUnitSelector(sel)), sel, `${text} round trip`);
  }
});

Deno.test("unit selectors: ranked by decay (sorted), ties, complements", () => {
  const decay = [0.5, 0.1, 0.9, 0.3, 0.1, 0.5];
  const sel = (t: string) => selectByDecay(parseUnitSelector(t), decay, 6, "layer 0");
  assertEquals(sel("fast:1/3"), [1, 4]); // the two smallest, 0.1 and 0.1
  assertEquals(sel("fast:1/2"), [1, 3, 4]);
  assertEquals(sel("slow:1/3"), [0, 2]); // 0.9, then 0.5 of unit 0 before unit 5 (tie: lower index)
  assertEquals(sel("not-fast:1/3"), [0, 2, 3, 5]);
  assertEquals(sel("not-slow:1/3"), [1, 3, 4, 5]);
  assertEquals(sel("all"), [0, 1, 2, 3, 4, 5]);
  assertEquals(sel("only:5+1"), [1, 5]);
  assertEquals(sel("fast:1/1"), [0, 1, 2, 3, 4, 5]);
  assertThrows(() => sel("fast:1/7"), /picks no unit of layer 0 \(6 units\)/);
  assertThrows(() => sel("not-slow:1/1"), /picks no unit/);
  assertThrows(() => sel("only:6"), /unit 6 does not exist \(layer 0 has units 0\.\.5\)/);
  assertThrows(() => selectByDecay(parseUnitSelector("fast:1/3"), null, 6, "layer 0"), /ranks units by decay/);
  assertEquals(selectByDecay(parseUnitSelector("only:0-1"), null, 6, "layer 0"), [0, 1]);
});

Deno.test("bad flows and selectors: one line naming the value", () => {
  const bad: [() => unknown, RegExp][] = [
    [() => parseFlow("last<-subjects"), /flow "last<-subjects": unknown token set "subjects"; use first, last, subject/],
    [() => parseFlow("lastsubject"), /flow "lastsubject": expected target<-source/],
    [() => parseFlow("a<-b<-c"), /expected target<-source/],
    [() => flowEdges("nope<-last", 4, [1]), /unknown token set "nope"/],
    [() => flowEdges("last<-subject", 4, [4]), /subject token 4 is outside a 4-token prompt/],
    [() => parseUnitSelector("fastest:1/3"), /unknown unit selector "fastest:1\/3"/],
    [() => parseUnitSelector("fast:4/3"), /"fast:4\/3": the fraction 4\/3 is not in \(0, 1\]/],
    [() => parseUnitSelector("slow:0/3"), /the fraction 0\/3 is not in \(0, 1\]/],
    [() => parseUnitSelector("slow:1/0"), /the fraction 1\/0 is not in \(0, 1\]/],
    [() => parseUnitSelector("fast:0.5"), /needs a fraction a\/b/],
    [() => parseUnitSelector("fast"), /needs a fraction a\/b/],
    [() => parseUnitSelector("only:"), /only needs a list/],
    [() => parseUnitSelector("only:3-1"), /the range 3-1 runs backwards/],
    [() => parseUnitSelector("only:a"), /"a" is not a unit/],
  ];
  for (const [fn, re] of bad) {
    const err = assertThrows(fn, re);
    assertEquals(err.name, "InputError");
    assert(!err.message.includes("\n"), err.message);
  }
});
