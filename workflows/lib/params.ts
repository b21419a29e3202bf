// List-valued stage parameters (`k=9,15`, `flows=last<-subject,last<-relation`, `heads=all,fast:1/3`):
// comma-separated items, each parsed on its own; an empty list, a bad item or an item given twice
// is an error of one line that names the parameter and the value.

import { UserError } from "./errors.ts";

/**
 * Parse `spec` as a comma-separated list. `parseItem` returns the item and its canonical text (two
 * spellings of the same item are duplicates) or throws; its message is put after `what: `.
 */
export function parseList<T>(spec: string, what: string, example: string, parseItem: (text: string) => { value: T; text: string }): T[] {
  const parts = spec.split(",").map((s) => s.trim()).filter((s) => s !== "");
  if (parts.length === 0) throw new UserError(`${what} is empty; give a list like ${example}`);
  const seen = new Map<string, string>();
  const out: T[] = [];
  for (const p of parts) {
    let item: { value: T; text: string };
    try {
      item = parseItem(p);
    } catch (e) {
      throw new UserError(`${what}: ${(e as Error).message.split("\n")[0]}`);
    }
    const before = seen.get(item.text);
    if (before !== undefined) {
      throw new UserError(`${what}: "${p}" is given twice${before !== p ? ` (as "${before}" and "${p}")` : ""}; give each value once`);
    }
    seen.set(item.text, p);
    out.push(item.value);
  }
  return out;
}

/** `true`/`false` items, e.g. `conv=false,true`. */
export function parseBooleanList(spec: string, what: string): boolean[] {
  return parseList(spec, what, "false,true", (t) => {
    if (t !== "true" && t !== "false") throw new Error(`"${t}" is not true or false`);
    return { value: t === "true", text: t };
  });
}
