// Work cut into fixed groups of prompts (a batch of 01_construct, a fast-path call of 03/04): the
// groups depend only on the prompts and the group size, never on what is already done, so a
// resumed run recomputes exactly the groups an uninterrupted run would have.

/** Prompts sorted by length (then row) and cut every `size`. */
export function fixedGroups<T extends { row: number; ids: number[] }>(items: readonly T[], size: number): T[][] {
  const sorted = [...items].sort((a, b) => a.ids.length - b.ids.length || a.row - b.row);
  const out: T[][] = [];
  for (let i = 0; i < sorted.length; i += size) out.push(sorted.slice(i, i + size));
  return out;
}
