// One pipeline at a time per run folder: a lock file holding the writer's process id.

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

/** One pipeline at a time per run folder; a lock left by a process that is gone is taken over. */
export async function lockRunDir(runDir: string): Promise<() => void> {
  const path = join(runDir, ".lock");
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const f = await Deno.open(path, { write: true, createNew: true });
      await f.write(new TextEncoder().encode(`${Deno.pid}\n`));
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
      const pid = Number((await Deno.readTextFile(path).catch(() => "")).trim());
      if (Number.isInteger(pid) && pid > 0 && pid !== Deno.pid && processAlive(pid)) {
        throw new UserError(
          `another pipeline run (pid ${pid}) is writing to ${relOrAbs(runDir)}; wait for it, or pass --out DIR for a separate run folder (remove ${relOrAbs(path)} if no run is going on)`,
        );
      }
      await Deno.remove(path).catch(() => {}); // its process is gone
    }
  }
  throw new UserError(`cannot lock ${relOrAbs(runDir)}; remove ${relOrAbs(path)} if no pipeline run is going on`);
}

