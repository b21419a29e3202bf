// Which prompts the knockout stages (03_info_flow, 04_heatmap) run: 01_construct's tables (both
// modes for Mamba, attention mode only for a Transformer) read back by row, the rows that every
// mode ran, and the filter on them. A filter decides per row from what the construct tables say; a
// filter that needs more (e.g. every model of a study) adds its facts to `FilterFacts` and its rule
// to `filterFailure` (all-models-correct reads every model's 01_construct: `filterStudyInputs` names
// it, so that the stage's key has their keys).

import { readParquet } from "./parquet.ts";
import type { ModelOutputs, UpstreamOutputs } from "./stage.ts";

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

export const PROMPT_FILTERS = ["both-correct", "all-models-correct", "all"] as const;
export type PromptFilter = typeof PROMPT_FILTERS[number];
export const PROMPT_FILTER_DOC =
  "prompts: those every mode of the model (both for Mamba) got right in 01_construct, those every model of the study got right (in every mode it has), or all";

/** What the filters decide from. */
export interface FilterFacts {
  construct: ConstructTables;
  /** every model of the study's 01_construct (this one's included), for all-models-correct */
  study?: { model: string; construct: ConstructTables }[];
}

/** The stages of the other models a filter reads (their keys go into the stage's key). */
export function filterStudyInputs(filter: string): string[] {
  return filter === "all-models-correct" ? ["01_construct"] : [];
}

/** The facts `filter` needs: this model's construct tables, and for all-models-correct every model's. */
export async function filterFacts(filter: string, construct: ConstructTables, models: ModelOutputs[]): Promise<FilterFacts> {
  if (filter !== "all-models-correct") return { construct };
  const study = [];
  for (const m of models) study.push({ model: m.model, construct: m.self ? construct : await readConstruct(m.upstream("01_construct")) });
  return { construct, study };
}

/** The tables of the modes a model ran in 01_construct (a one-mode family has no scan table). */
function modeTables(c: ConstructTables): Map<number, ConstructRow>[] {
  return [c.scan, c.attention].filter((m): m is Map<number, ConstructRow> => m !== null && m.size > 0);
}

/** Whether every mode the model ran got `row` right (false when a mode did not run it). */
function correctInEveryMode(c: ConstructTables, row: number): boolean {
  const modes = modeTables(c);
  return modes.length > 0 && modes.every((m) => m.get(row)?.hit === true);
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
    case "all-models-correct": {
      const study = facts.study ?? [{ model: "this model", construct: facts.construct }];
      const wrong = study.filter((m) => !correctInEveryMode(m.construct, row)).map((m) => m.model);
      return wrong.length === 0 ? null : `is not predicted correctly by ${wrong.join(", ")}`;
    }
  }
}

/** What a filter asks for, for messages: "predicted correctly in both modes" (a one-mode family: "predicted correctly"). */
export function filterWords(filter: PromptFilter, bothModes = true): string {
  return filter === "both-correct"
    ? bothModes ? "predicted correctly in both modes" : "predicted correctly"
    : filter === "all-models-correct"
    ? "predicted correctly by every model of the study"
    : "selected";
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
