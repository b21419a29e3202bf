// Token sets of a prompt and flows between them (pure functions, shared by the workflows, `infer`
// and the tests).
//
// Sets of a T-token prompt whose subject covers the token positions `subject` (Geva et al.'s token
// range): `first` {0}, `last` {T-1}, `subject`, `relation` (every position not in the subject; the
// last one included unless it is in the subject), `relation_minus_last` (relation without T-1),
// `context` (the positions before the subject's first token), `all`.
// A flow `target<-source` blocks every edge (t, s) with t in target, s in source and s <= t.
import { type Edge, InputError } from "./arch.ts";

export const TOKEN_SETS = ["first", "last", "subject", "relation", "relation_minus_last", "context", "all"] as const;
export type TokenSet = typeof TOKEN_SETS[number];

export interface Flow {
  target: TokenSet;
  source: TokenSet;
  /** canonical text, `target<-source` */
  text: string;
}

function asSet(name: string, flow: string): TokenSet {
  if ((TOKEN_SETS as readonly string[]).includes(name)) return name as TokenSet;
  throw new InputError(`flow "${flow}": unknown token set "${name}"; use ${TOKEN_SETS.join(", ")}`);
}

/** Parses `target<-source`, e.g. `last<-subject`; InputError (one line) naming a bad value. */
export function parseFlow(text: string): Flow {
  const parts = text.split("<-");
  if (parts.length !== 2) throw new InputError(`flow "${text}": expected target<-source, e.g. last<-subject`);
  const target = asSet(parts[0].trim(), text), source = asSet(parts[1].trim(), text);
  return { target, source, text: `${target}<-${source}` };
}

/** The positions of a token set in a T-token prompt, ascending. */
export function tokenSet(set: TokenSet, T: number, subjectTokens: readonly number[]): number[] {
  if (!Number.isInteger(T) || T < 1) throw new InputError(`a prompt of ${T} tokens has no token sets`);
  for (const s of subjectTokens) {
    if (!Number.isInteger(s) || s < 0 || s >= T) throw new InputError(`subject token ${s} is outside a ${T}-token prompt`);
  }
  const all = Array.from({ length: T }, (_, i) => i);
  const inSubject = new Set(subjectTokens);
  switch (set) {
    case "first":
      return [0];
    case "last":
      return [T - 1];
    case "subject":
      return all.filter((i) => inSubject.has(i));
    case "relation":
      return all.filter((i) => !inSubject.has(i));
    case "relation_minus_last":
      return all.filter((i) => !inSubject.has(i) && i !== T - 1);
    case "context": {
      const first = subjectTokens.length ? Math.min(...subjectTokens) : 0;
      return all.filter((i) => i < first);
    }
    case "all":
      return all;
  }
}

/**
 * Every edge (t, s) a flow blocks in a T-token prompt: t in target, s in source, s <= t; sorted by
 * t, then s. Empty when the flow blocks nothing for this prompt (e.g. `subject<-context` with the
 * subject at position 0).
 */
export function flowEdges(flow: Flow | string, T: number, subjectTokens: readonly number[]): Edge[] {
  const f = typeof flow === "string" ? parseFlow(flow) : flow;
  const sources = tokenSet(f.source, T, subjectTokens);
  const edges: Edge[] = [];
  for (const t of tokenSet(f.target, T, subjectTokens)) {
    for (const s of sources) if (s <= t) edges.push([t, s]);
  }
  return edges;
}
