// `--block L:R>C` specs: knock out edges (R, C) of the attention matrix in layers L.
//   L: layers, `3`, `3-5`, `1,4,7` (ranges inclusive)
//   R: one row index or `last`
//   C: columns, same list/range syntax, `last` allowed
// Resolved against a prompt length and a layer count into knockouts, one KnockoutSpec per layer.
import type { Edge, KnockoutSpec, UnitSelector } from "./arch.ts";

export class BlockSpecError extends Error {
  override name = "BlockSpecError";
}

type Index = number | "last";
interface Item {
  from: Index;
  to: Index;
}
export interface BlockSpec {
  text: string;
  layers: Item[];
  row: Index;
  cols: Item[];
}

const USAGE = "expected L:R>C, e.g. 3-5:last>0,2 (layers 3..5, row last, columns 0 and 2)";

function parseIndex(s: string, allowLast: boolean, spec: string): Index {
  if (allowLast && s === "last") return "last";
  if (!/^\d+$/.test(s)) throw new BlockSpecError(`--block ${spec}: "${s}" is not ${allowLast ? "an index or last" : "a layer index"}; ${USAGE}`);
  return Number(s);
}

function parseList(s: string, allowLast: boolean, spec: string): Item[] {
  if (s === "") throw new BlockSpecError(`--block ${spec}: empty list; ${USAGE}`);
  return s.split(",").map((part) => {
    const m = part.split("-");
    if (m.length === 1) {
      const i = parseIndex(m[0], allowLast, spec);
      return { from: i, to: i };
    }
    if (m.length === 2) return { from: parseIndex(m[0], allowLast, spec), to: parseIndex(m[1], allowLast, spec) };
    throw new BlockSpecError(`--block ${spec}: bad range "${part}"; ${USAGE}`);
  });
}

export function parseBlockSpec(spec: string): BlockSpec {
  const m = /^([^:>]*):([^:>]*)>([^:>]*)$/.exec(spec.trim());
  if (!m) throw new BlockSpecError(`--block ${spec}: ${USAGE}`);
  const [, l, r, c] = m;
  return { text: spec, layers: parseList(l, false, spec), row: parseIndex(r, true, spec), cols: parseList(c, true, spec) };
}

function expand(items: Item[], last: number, what: string, limit: number, spec: string): number[] {
  const out: number[] = [];
  for (const { from, to } of items) {
    const a = from === "last" ? last : from, b = to === "last" ? last : to;
    if (a > b) throw new BlockSpecError(`--block ${spec}: range ${a}-${b} of ${what} runs backwards`);
    if (b > limit) throw new BlockSpecError(`--block ${spec}: ${what} ${b} does not exist (0..${limit})`);
    for (let i = a; i <= b; i++) out.push(i);
  }
  return out;
}

/**
 * Merge specs into the knockouts of a prompt of `length` tokens on a model of `nLayer` layers: one
 * KnockoutSpec per blocked layer (ascending), its edges in the order given, repeats merged; `units`
 * and `conv` apply to every one (--heads, --conv).
 */
export function resolveBlockSpecs(
  specs: BlockSpec[],
  length: number,
  nLayer: number,
  opts: { units?: UnitSelector; conv?: boolean } = {},
): KnockoutSpec[] {
  const byLayer = new Map<number, Edge[]>();
  const last = length - 1;
  for (const s of specs) {
    const layers = expand(s.layers, nLayer - 1, "layer", nLayer - 1, s.text);
    const row = s.row === "last" ? last : s.row;
    if (row > last) throw new BlockSpecError(`--block ${s.text}: row ${row} does not exist in a ${length}-token prompt (0..${last})`);
    const cols = expand(s.cols, last, "column", last, s.text);
    for (const col of cols) {
      if (col > row) throw new BlockSpecError(`--block ${s.text}: column ${col} is after row ${row}; a position only sees columns <= its row`);
    }
    for (const l of layers) {
      const edges = byLayer.get(l) ?? [];
      for (const col of cols) if (!edges.some(([r, c]) => r === row && c === col)) edges.push([row, col]);
      byLayer.set(l, edges);
    }
  }
  return [...byLayer.keys()].sort((a, b) => a - b).map((l) => ({
    start: l,
    end: l + 1,
    edges: byLayer.get(l)!,
    ...(opts.units ? { units: opts.units } : {}),
    ...(opts.conv ? { conv: true } : {}),
  }));
}
