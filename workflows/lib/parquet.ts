// Parquet tables: read with hyparquet, written with hyparquet-writer (atomically). Columns are
// typed explicitly so that pandas/pyarrow read them back as the same types every time:
// STRING → string, INT32 → int32, INT64 → int64, DOUBLE → float64, BOOLEAN → bool,
// INT32_LIST → list<int32> (the standard 3-level LIST layout).

import { parquetMetadataAsync, parquetReadObjects } from "hyparquet";
import { parquetWriteBuffer } from "hyparquet-writer";
import { writeFileAtomic } from "./atomic.ts";
import { profile } from "../../engine/profile.ts";
import { UserError } from "./errors.ts";

export type ColumnType = "STRING" | "INT32" | "INT64" | "DOUBLE" | "BOOLEAN" | "INT32_LIST";

export interface Column {
  name: string;
  type: ColumnType;
  data: unknown[] | ArrayLike<unknown>;
  nullable?: boolean; // default: false, except STRING (nullable, like pandas writes strings)
}

// deno-lint-ignore no-explicit-any
type SchemaElement = any;

function schemaFor(col: Column): SchemaElement[] {
  const nullable = col.nullable ?? col.type === "STRING";
  const rep = nullable ? "OPTIONAL" : "REQUIRED";
  switch (col.type) {
    case "STRING":
      return [{ name: col.name, type: "BYTE_ARRAY", converted_type: "UTF8", logical_type: { type: "STRING" }, repetition_type: rep }];
    case "INT32":
    case "INT64":
    case "DOUBLE":
    case "BOOLEAN":
      return [{ name: col.name, type: col.type, repetition_type: rep }];
    case "INT32_LIST":
      return [
        { name: col.name, repetition_type: rep, converted_type: "LIST", logical_type: { type: "LIST" }, num_children: 1 },
        { name: "list", repetition_type: "REPEATED", num_children: 1 },
        { name: "element", type: "INT32", repetition_type: "REQUIRED" },
      ];
  }
}

function columnData(col: Column): unknown[] | ArrayLike<unknown> {
  switch (col.type) {
    case "INT64":
      return Array.from(col.data as ArrayLike<unknown>, (v) => v === null || v === undefined ? v : BigInt(v as number));
    case "INT32_LIST":
      return Array.from(col.data as ArrayLike<unknown>, (v) => v === null || v === undefined ? v : Array.from(v as ArrayLike<number>));
    default:
      return col.data;
  }
}

/** Encode a table; every column must have the same length. */
export function encodeParquet(columns: Column[], kvMetadata: Record<string, string> = {}): Uint8Array {
  if (columns.length === 0) throw new Error("encodeParquet: no columns");
  const n = columns[0].data.length;
  for (const c of columns) {
    if (c.data.length !== n) throw new Error(`encodeParquet: column ${c.name} has ${c.data.length} values, expected ${n}`);
  }
  const schema: SchemaElement[] = [{ name: "root", num_children: columns.length }];
  for (const c of columns) schema.push(...schemaFor(c));
  const buf = parquetWriteBuffer({
    // deno-lint-ignore no-explicit-any
    columnData: columns.map((c) => ({ name: c.name, data: columnData(c) as any })),
    schema,
    kvMetadata: Object.entries(kvMetadata).map(([key, value]) => ({ key, value })),
    createdBy: "mamba-explain workflows (hyparquet-writer)",
  });
  return new Uint8Array(buf);
}

export function writeParquet(path: string, columns: Column[], kvMetadata?: Record<string, string>): Promise<void> {
  return profile.time("write", () => writeFileAtomic(path, encodeParquet(columns, kvMetadata)));
}

/**
 * One column of a table of records: its name, type, and where its values come from (the record's
 * field of the same name unless `value` says otherwise). Columns of records are not nullable unless
 * `nullable` says so.
 */
export interface Field<T> {
  name: string;
  type: ColumnType;
  nullable?: boolean;
  value?: (record: T) => unknown;
}

/** The columns of a table with one row per record, in the order of `fields`. */
export function tableColumns<T>(fields: readonly Field<T>[], records: readonly T[]): Column[] {
  return fields.map((f) => {
    const get = f.value ?? ((r: T) => (r as Record<string, unknown>)[f.name]);
    return { name: f.name, type: f.type, nullable: f.nullable ?? false, data: records.map(get) };
  });
}

/** Write one row per record, the columns described by `fields` (atomically). */
export async function writeTable<T>(
  path: string,
  fields: readonly Field<T>[],
  records: readonly T[],
  kvMetadata?: Record<string, string>,
): Promise<void> {
  await writeParquet(path, tableColumns(fields, records), kvMetadata);
}

export interface Table {
  numRows: number;
  columns: string[]; // names in file order
  /** parquet type of each top-level column as a ColumnType, or undefined for types this library does not write */
  types: Record<string, ColumnType | undefined>;
  rows: Record<string, unknown>[];
}

// deno-lint-ignore no-explicit-any
function columnTypeOf(schema: any[], idx: number): ColumnType | undefined {
  const el = schema[idx];
  if (!el.num_children) {
    if (el.type === "BYTE_ARRAY" && (el.converted_type === "UTF8" || el.logical_type?.type === "STRING")) return "STRING";
    if (el.type === "INT32" && !el.converted_type) return "INT32";
    if (el.type === "INT64" && !el.converted_type) return "INT64";
    if (el.type === "DOUBLE" || el.type === "FLOAT") return "DOUBLE";
    if (el.type === "BOOLEAN") return "BOOLEAN";
    return undefined;
  }
  if (el.converted_type === "LIST" || el.logical_type?.type === "LIST") {
    const list = schema[idx + 1];
    const leaf = schema[idx + 2];
    if (list?.num_children === 1 && !leaf?.num_children && leaf?.type === "INT32") return "INT32_LIST";
  }
  return undefined;
}

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  return bytes.byteOffset === 0 && bytes.byteLength === bytes.buffer.byteLength
    ? bytes.buffer as ArrayBuffer
    : bytes.slice().buffer as ArrayBuffer;
}

/** Read a whole table (or a row range of it) as row objects; INT64 values come back as numbers. */
export async function readParquet(path: string, opts: { rowStart?: number; rowEnd?: number; columns?: string[] } = {}): Promise<Table> {
  let bytes: Uint8Array;
  try {
    // a FIFO or a device would block or never end: only regular files are tables
    if (!(await Deno.stat(path)).isFile) throw new UserError(`${path} is not a regular file; point it at the parquet file itself`);
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof UserError) throw e;
    if (e instanceof Deno.errors.NotFound) throw new UserError(`${path} does not exist; check the path (or the "dataset" setting)`);
    throw new UserError(`cannot read ${path}: ${(e as Error).message}`);
  }
  const file = toArrayBuffer(bytes);
  // deno-lint-ignore no-explicit-any
  let meta: any;
  try {
    meta = await parquetMetadataAsync(file);
  } catch (e) {
    throw new UserError(`${path} is not a readable parquet file (${(e as Error).message})`);
  }
  // top-level column names: children of the root, skipping nested elements
  const names: string[] = [];
  const types: Record<string, ColumnType | undefined> = {};
  const schema = meta.schema as { name: string; num_children?: number }[];
  let i = 1;
  const skip = (idx: number): number => {
    const el = schema[idx];
    let next = idx + 1;
    for (let c = 0; c < (el.num_children ?? 0); c++) next = skip(next);
    return next;
  };
  while (i < schema.length) {
    names.push(schema[i].name);
    types[schema[i].name] = columnTypeOf(schema, i);
    i = skip(i);
  }
  // two columns of one name would silently become one (the last wins): refuse the table
  const twice = names.find((n, k) => names.indexOf(n) !== k);
  if (twice !== undefined) throw new UserError(`${path} has two columns named "${twice}"; give every column its own name`);
  const missing = (opts.columns ?? []).filter((c) => !names.includes(c));
  if (missing.length) throw new UserError(`${path} has no column ${missing.map((c) => `"${c}"`).join(", ")}; it has ${names.join(", ")}`);
  let rows: Record<string, unknown>[];
  try {
    rows = (await parquetReadObjects({
      file,
      metadata: meta,
      rowStart: opts.rowStart,
      rowEnd: opts.rowEnd,
      columns: opts.columns,
    })) as Record<string, unknown>[];
  } catch (e) {
    // the footer was fine but a data page is not (hyparquet says e.g. "thrift unhandled type: 13")
    const cause = (e instanceof Error ? e.message : String(e)).split("\n")[0];
    throw new UserError(`${path}: a data page cannot be read (${cause}); the parquet file is damaged, get a fresh copy`);
  }
  for (const r of rows) {
    for (const k of Object.keys(r)) if (typeof r[k] === "bigint") r[k] = Number(r[k]);
  }
  return { numRows: Number(meta.num_rows), columns: opts.columns ?? names, types, rows };
}
