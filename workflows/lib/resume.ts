// Resumable per-row progress: an append-only JSONL file of finished records, each batch written
// with one write and fsync'd before the run moves on. The first line names the cache key of the
// work it belongs to; a file for other work is discarded. A torn last line (a crash in the middle
// of a write) is cut off when the file is opened again, so a resumed run never redoes a record
// that was saved and never trusts one that was not.

import { dirname } from "node:path";
import { syncDir } from "./atomic.ts";
import { profile } from "../../engine/profile.ts";

export interface RowRecord {
  row: number;
}

export class RowLog<T extends RowRecord> {
  private constructor(
    readonly path: string,
    private file: Deno.FsFile,
    readonly done: Map<number, T>,
    readonly resumed: number,
  ) {}

  /** Open (or start) the log at `path` for the work identified by `key`. */
  static async open<T extends RowRecord>(path: string, key: string): Promise<RowLog<T>> {
    await Deno.mkdir(dirname(path), { recursive: true });
    const done = new Map<number, T>();
    let keep = 0; // bytes of the file that hold complete, valid lines
    let valid = false;
    let text = "";
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    if (text.length > 0) {
      const enc = new TextEncoder();
      let pos = 0;
      let first = true;
      while (pos < text.length) {
        const nl = text.indexOf("\n", pos);
        if (nl < 0) break; // torn last line
        const line = text.slice(pos, nl);
        let rec: unknown;
        try {
          rec = JSON.parse(line);
        } catch {
          break;
        }
        if (first) {
          first = false;
          if ((rec as { key?: string })?.key !== key) break;
          valid = true;
        } else {
          const r = rec as T;
          if (typeof r?.row !== "number") break;
          done.set(r.row, r);
        }
        pos = nl + 1;
        keep += enc.encode(line).length + 1;
      }
    }
    let file: Deno.FsFile;
    if (!valid) {
      done.clear();
      file = await Deno.open(path, { write: true, create: true, truncate: true });
      await file.write(new TextEncoder().encode(JSON.stringify({ key }) + "\n"));
      await file.sync();
      syncDir(dirname(path));
    } else {
      file = await Deno.open(path, { write: true });
      await file.truncate(keep);
      await file.seek(keep, Deno.SeekMode.Start);
    }
    return new RowLog<T>(path, file, done, done.size);
  }

  has(row: number): boolean {
    return this.done.has(row);
  }

  /** Save finished records durably (one write, then fsync). */
  append(records: T[]): Promise<void> {
    return profile.time("write", () => this.write(records));
  }

  private async write(records: T[]): Promise<void> {
    if (records.length === 0) return;
    const text = records.map((r) => JSON.stringify(r)).join("\n") + "\n";
    const bytes = new TextEncoder().encode(text);
    let off = 0;
    while (off < bytes.length) off += await this.file.write(bytes.subarray(off));
    await this.file.sync();
    for (const r of records) this.done.set(r.row, r);
  }

  close(): void {
    try {
      this.file.close();
    } catch {
      // already closed
    }
  }
}

/**
 * Whether `workDir` holds saved work of an interrupted run for the work identified by `key` (a
 * RowLog whose first line names it): the plan says "resumes" rather than "no earlier output".
 */
export async function hasSavedWork(workDir: string, key: string): Promise<boolean> {
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(workDir));
  } catch {
    return false;
  }
  for (const e of entries) {
    if (!e.isFile || !e.name.endsWith(".jsonl")) continue;
    let file: Deno.FsFile | undefined;
    try {
      file = await Deno.open(`${workDir}/${e.name}`, { read: true });
      const buf = new Uint8Array(256); // {"key":"<64 hex>"} and a newline fit
      const n = (await file.read(buf)) ?? 0;
      const text = new TextDecoder().decode(buf.subarray(0, n));
      const nl = text.indexOf("\n");
      if (nl > 0 && (JSON.parse(text.slice(0, nl)) as { key?: string })?.key === key && n > nl + 1) return true;
    } catch {
      // unreadable: not resumable work
    } finally {
      file?.close();
    }
  }
  return false;
}
