// Row selection: `--rows 0-99,4342` (inclusive ranges and single indices) and `--limit N`.

import { UserError } from "./errors.ts";

/** Parse a row spec into sorted, distinct row indices. */
export function parseRows(spec: string): number[] {
  const out = new Set<number>();
  const s = spec.trim();
  if (s === "") throw new UserError(`--rows is empty: give indices and ranges like 0-99,4342`);
  for (const partRaw of s.split(",")) {
    const part = partRaw.trim();
    const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(part);
    if (!m) throw new UserError(`--rows: cannot read "${part}"; use indices and inclusive ranges like 0-99,4342`);
    const a = Number(m[1]);
    const b = m[2] === undefined ? a : Number(m[2]);
    if (b < a) throw new UserError(`--rows: range "${part}" runs backwards; write it as ${b}-${a}`);
    if (b - a > 10_000_000) throw new UserError(`--rows: range "${part}" is too large`);
    for (let i = a; i <= b; i++) out.add(i);
  }
  return [...out].sort((x, y) => x - y);
}

/** Compact form of sorted distinct indices: [0,1,2,5] → "0-2,5". */
export function formatRows(rows: number[]): string {
  const parts: string[] = [];
  let i = 0;
  while (i < rows.length) {
    let j = i;
    while (j + 1 < rows.length && rows[j + 1] === rows[j] + 1) j++;
    parts.push(j === i ? String(rows[i]) : `${rows[i]}-${rows[j]}`);
    i = j + 1;
  }
  return parts.join(",");
}

export interface RowSelection {
  rows?: string; // spec as given
  limit?: number;
}

/** The dataset rows a run covers, in ascending order. */
export function selectRows(nRows: number, sel: RowSelection): number[] {
  let rows: number[];
  if (sel.rows !== undefined) {
    rows = parseRows(sel.rows);
    const bad = rows.find((r) => r >= nRows);
    if (bad !== undefined) {
      throw new UserError(`--rows: row ${bad} is out of range; the dataset has ${nRows} rows (0-${nRows - 1})`);
    }
  } else {
    rows = Array.from({ length: nRows }, (_, i) => i);
  }
  if (sel.limit !== undefined) rows = rows.slice(0, sel.limit);
  return rows;
}
