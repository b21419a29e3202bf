// Which prompts the knockout stages (03_info_flow, 04_heatmap) run: 01_construct's tables (both
// modes for Mamba, attention mode only for a Transformer) read back by row, the rows that every
// mode ran, and the filter on them. A filter decides per row from what the construct tables say; a
// filter that needs more (e.g. every model of a study) adds its facts to `FilterFacts` and its rule
// to `filterFailure`.

import { readParquet } from "./parquet.ts";
import type { UpstreamOutputs } from "./stage.ts";

/** What 01_construct says about one row in one mode. */
export interface ConstructRow {
  row: number;
  ids: number[];
  true_id: number;
  true_prob: number;
  max_prob: number;
  pred_id: number;
  hit: boolean;
}

/** The modes of 01_construct, by row: scan is null for a family without scan mode (Transformers). */
export interface ConstructTables {
  scan: Map<number, ConstructRow> | null;
  attention: Map<number, ConstructRow>;
}

/** The modes 01_construct ran: those whose table its manifest lists. */
export function constructModes(up: UpstreamOutputs): ("scan" | "attention")[] {
  return (["scan", "attention"] as const).filter((m) => `construct_${m}.parquet` in up.manifest.outputs);
}

export async function readConstruct(up: UpstreamOutputs): Promise<ConstructTables> {
  const read = async (mode: string) => {
    const t = await readParquet(up.file(`construct_${mode}.parquet`), {
      columns: ["row", "ids", "true_id", "true_prob", "max_prob", "pred_id", "hit"],
    });
    return new Map(t.rows.map((r) => {
      const x = r as unknown as ConstructRow;
      return [x.row, { ...x, ids: Array.from(x.ids as ArrayLike<number>, Number) }];
    }));
  };
  return { scan: constructModes(up).includes("scan") ? await read("scan") : null, attention: await read("attention") };
}

/** The selected rows that 01_construct ran in every mode, in selection order. */
export function constructedRows(rows: number[], c: ConstructTables): number[] {
  return rows.filter((r) => c.attention.has(r) && (!c.scan || c.scan.has(r)));
}

export const PROMPT_FILTERS = ["both-correct", "all"] as const;
export type PromptFilter = typeof PROMPT_FILTERS[number];
export const PROMPT_FILTER_DOC = "prompts: those both modes (every mode the model has) got right in 01_construct, or all";

/** What the filters decide from. */
export interface FilterFacts {
  construct: ConstructTables;
}

/** Why `row` does not pass `filter` (a phrase: "is not predicted correctly in both modes"), or null when it passes. */
export function filterFailure(filter: PromptFilter, row: number, facts: FilterFacts): string | null {
  switch (filter) {
    case "all":
      return null;
    case "both-correct": {
      const { scan, attention } = facts.construct;
      if (!scan) return attention.get(row)!.hit ? null : "is not predicted correctly";
      return scan.get(row)!.hit && attention.get(row)!.hit ? null : "is not predicted correctly in both modes";
    }
  }
}

/** The rows that pass the filter (in the order given) and those that do not, with the reason. */
export function applyFilter(
  filter: PromptFilter,
  rows: number[],
  facts: FilterFacts,
): { kept: number[]; failed: { row: number; why: string }[] } {
  const kept: number[] = [];
  const failed: { row: number; why: string }[] = [];
  for (const row of rows) {
    const why = filterFailure(filter, row, facts);
    if (why === null) kept.push(row);
    else failed.push({ row, why });
  }
  return { kept, failed };
}
