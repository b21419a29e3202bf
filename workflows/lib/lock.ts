// Lock files: one pipeline at a time per run folder (lockRunDir), one process per shard of a
// stage (lib/shard.ts). A lock file holds the writer's process id and host name; on a shared
// filesystem a lock of another host cannot be checked, so it is never taken over silently.

import { join } from "node:path";
import { relOrAbs } from "./config.ts";
import { UserError } from "./errors.ts";

function processAlive(pid: number): boolean {
  if (Deno.build.os !== "linux") return true; // no cheap check elsewhere: the message says how to clear the lock
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch {
    return false;
  }
}

/** The holder a lock file names: `pid` (this host) or `pid host`. */
function readHolder(text: string): { pid: number; host: string } | null {
  const [p, host] = text.trim().split(/\s+/);
  const pid = Number(p);
  return Number.isInteger(pid) && pid > 0 ? { pid, host: host ?? Deno.hostname() } : null;
}

/** Who holds the lock file `path` ("pid N", or "pid N on host H" for another host), or "" when nobody does (none, or its process is gone). */
export async function lockHolder(path: string): Promise<string> {
  const h = readHolder(await Deno.readTextFile(path).catch(() => ""));
  if (!h) return "";
  if (h.host !== Deno.hostname()) return `pid ${h.pid} on host ${h.host}`;
  return processAlive(h.pid) ? `pid ${h.pid}` : "";
}

/**
 * Take the lock file `path`, or throw a UserError made by `busy(holder)` when a live process (or
 * one on another host, which cannot be checked) holds it; a lock whose process is gone is taken over.
 */
export async function lockPath(path: string, busy: (holder: string) => string): Promise<() => void> {
  const host = Deno.hostname();
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const f = await Deno.open(path, { write: true, createNew: true });
      await f.write(new TextEncoder().encode(`${Deno.pid} ${host}\n`));
      f.close();
      return () => {
        try {
          Deno.removeSync(path);
        } catch {
          // already gone
        }
      };
    } catch (e) {
      if (!(e instanceof Deno.errors.AlreadyExists)) throw e;
      const h = readHolder(await Deno.readTextFile(path).catch(() => ""));
      if (h && h.host !== host) throw new UserError(busy(`pid ${h.pid} on host ${h.host}`));
      if (h && h.pid !== Deno.pid && processAlive(h.pid)) throw new UserError(busy(`pid ${h.pid}`));
      await Deno.remove(path).catch(() => {}); // its process is gone
    }
  }
  throw new UserError(`cannot lock ${relOrAbs(path)}; remove it if no other process is using it`);
}

/** One pipeline at a time per run folder; a lock left by a process that is gone is taken over. */
export function lockRunDir(runDir: string): Promise<() => void> {
  const path = join(runDir, ".lock");
  return lockPath(
    path,
    (holder) =>
      `another pipeline run (${holder}) is writing to ${relOrAbs(runDir)}; wait for it, or pass --out DIR for a separate run folder (remove ${
        relOrAbs(path)
      } if no run is going on)`,
  );
}
