// The one table `deno task bench` prints: every section's rows, measured in the same run.
// A section is a module exporting `async function bench...(...): Promise<BenchRow[]>`; rows
// without a section get the runner's name for the module.

export interface BenchRow {
  /** which part of the bench measured it (ceilings, matmul, prefill, construct, knockout, ...) */
  section?: string;
  name: string;
  value: number;
  unit: string;
  /** value as a fraction of a ceiling measured in the same run (0.42 = 42 %) */
  ratio?: number;
  /** which ceiling `ratio` refers to */
  of?: string;
  note?: string;
}

function fmtValue(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  const a = Math.abs(v);
  if (a >= 100) return v.toFixed(0);
  if (a >= 10) return v.toFixed(1);
  if (a >= 1) return v.toFixed(2);
  return v.toPrecision(3);
}

const cell = (s: string) => s.replaceAll("|", "\\|");

/** A markdown table of the rows, in order. */
export function markdownTable(rows: BenchRow[]): string {
  const head = "| section | benchmark | value | unit | of ceiling | note |\n|---|---|--:|---|--:|---|";
  const body = rows.map((r) => {
    const ratio = r.ratio === undefined ? "" : `${(r.ratio * 100).toFixed(0)} %${r.of ? ` of ${r.of}` : ""}`;
    return `| ${cell(r.section ?? "")} | ${cell(r.name)} | ${fmtValue(r.value)} | ${cell(r.unit)} | ${cell(ratio)} | ${cell(r.note ?? "")} |`;
  });
  return [head, ...body].join("\n");
}
