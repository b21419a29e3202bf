// Row selection: `--rows 0-99,4342` (inclusive ranges and single indices) and `--limit N`.

import { UsageError } from "./errors.ts";

/**
 * Parse a row spec into sorted, distinct row indices. With `nRows` (the dataset's size) every index
 * is checked while it is read, before any range is expanded, so that no spec can loop for long or
 * build a huge list (an index of 2^53 and more is not even an exact number); without it, indices
 * are bounded by MAX_ROW. `what` names the setting in errors.
 */
export function parseRows(spec: string, nRows?: number, what = "--rows"): number[] {
  const ranges: [number, number][] = [];
  const s = spec.trim();
  if (s === "") throw new UsageError(`${what} is empty: give indices and ranges like 0-99,4342`);
  const limit = nRows ?? MAX_ROW + 1;
  const index = (digits: string): number => {
    // digits beyond 15 are out of every range (and past 2^53 not exact): compare the text first
    const n = digits.replace(/^0+(?=\d)/, "").length > 15 ? Infinity : Number(digits);
    if (n >= limit) {
      throw new UsageError(
        nRows !== undefined
          ? `${what}: row ${digits} is out of range; the dataset has ${nRows} rows (0-${nRows - 1})`
          : `${what}: row ${digits} is larger than any dataset row (at most ${MAX_ROW})`,
      );
    }
    return n;
  };
  for (const partRaw of s.split(",")) {
    const part = partRaw.trim();
    const m = /^(\d+)(?:\s*-\s*(\d+))?$/.exec(part);
    if (!m) throw new UsageError(`${what}: cannot read "${part}"; use indices and inclusive ranges like 0-99,4342`);
    if (m[2] !== undefined && Number(m[2]) < Number(m[1])) throw new UsageError(`${what}: range "${part}" runs backwards; write it as ${m[2]}-${m[1]}`);
    const a = index(m[1]);
    const b = m[2] === undefined ? a : index(m[2]);
    ranges.push([a, b]);
  }
  // merged before they are expanded: at most `limit` rows come out, however often the spec repeats a range
  ranges.sort((x, y) => x[0] - y[0]);
  const out: number[] = [];
  let next = 0; // the first row not yet in `out`
  for (const [a, b] of ranges) {
    for (let i = Math.max(a, next); i <= b; i++) out.push(i);
    next = Math.max(next, b + 1);
  }
  return out;
}

/** The largest row index accepted where the dataset's size is not known (04_heatmap's prompt rows). */
export const MAX_ROW = 10_000_000;

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
  if (sel.rows !== undefined) rows = parseRows(sel.rows, nRows);
  else rows = Array.from({ length: nRows }, (_, i) => i);
  if (sel.limit !== undefined) rows = rows.slice(0, sel.limit);
  return rows;
}
