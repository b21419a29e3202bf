// Atomic file writes: data goes to a temporary file in the same folder, is flushed to disk, and
// is renamed over the destination. A reader (or a later run) sees either the old file or the
// complete new one, never a partial file under the final name.

import { basename, dirname, join } from "node:path";
import { profile } from "../../engine/profile.ts";

let counter = 0;

function tempName(path: string): string {
  counter++;
  return join(dirname(path), `.${basename(path)}.tmp-${Deno.pid}-${counter}`);
}

/** fsync a directory so that a rename in it survives a crash (best effort: not every OS allows it). */
export function syncDir(dir: string): void {
  try {
    const f = Deno.openSync(dir, { read: true });
    try {
      f.syncSync();
    } finally {
      f.close();
    }
  } catch {
    // directories cannot be opened or synced everywhere; the rename itself is still atomic
  }
}

export function writeFileAtomic(path: string, data: Uint8Array | string): Promise<void> {
  return profile.time("write", () => writeAtomic(path, data));
}

async function writeAtomic(path: string, data: Uint8Array | string): Promise<void> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  await Deno.mkdir(dirname(path), { recursive: true });
  const tmp = tempName(path);
  const f = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    let off = 0;
    while (off < bytes.length) off += await f.write(bytes.subarray(off));
    await f.sync();
  } catch (e) {
    f.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  f.close();
  try {
    await Deno.rename(tmp, path);
  } catch (e) {
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  syncDir(dirname(path));
}

export function writeJsonAtomic(path: string, value: unknown): Promise<void> {
  return writeFileAtomic(path, JSON.stringify(value, null, 2) + "\n");
}

/** Remove temporary files that an interrupted atomic write left in `dir` (never final names). */
export async function removeStaleTemps(dir: string): Promise<void> {
  try {
    for await (const e of Deno.readDir(dir)) {
      if (e.isFile && /^\..+\.tmp-\d+-\d+$/.test(e.name)) await Deno.remove(join(dir, e.name)).catch(() => {});
    }
  } catch {
    // folder does not exist yet
  }
}

export async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}
