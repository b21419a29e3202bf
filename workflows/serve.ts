// deno task serve [--dir REPORT_DIR] [--port N] [--host H] [the pipeline's --config/--model(s)/--rows/--limit/--out]:
// serves a study's report folder (06_report) on localhost with Deno's built-in server, for those who
// prefer a URL to opening index.html from disk. Without --dir the folder is the one the same pipeline
// flags write (outputs/<study>/report).

import { extname, join, normalize, resolve } from "node:path";
import { parseArgs } from "node:util";
import { relOrAbs, loadConfig } from "./lib/config.ts";
import { runMain, UserError } from "./lib/errors.ts";
import { RunInputs } from "./lib/inputs.ts";
import { studyFolders } from "./lib/pipeline.ts";
import { loadStages } from "./registry.ts";

const HELP = `usage: deno task serve [--dir DIR] [--port N] [--host H] [--config FILE] [--model M | --models A,B] [--rows SPEC] [--limit N] [--out DIR]
Serves the study's report (outputs/<study>/report, or DIR) at http://H:N/ (default 127.0.0.1:8000; --port 0 picks a free port).`;

const TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".md": "text/markdown; charset=utf-8",
  ".png": "image/png",
  ".svg": "image/svg+xml",
  ".parquet": "application/vnd.apache.parquet",
};

/** The file a request path names inside `root`, or null when it would leave it. */
export function fileFor(root: string, urlPath: string): string | null {
  let path: string;
  try {
    path = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (path.includes("\0") || path.split(/[\\/]/).includes("..")) return null;
  const rel = normalize(path).replace(/^\/+/, "");
  const full = join(root, rel);
  return full === root || full.startsWith(root + "/") ? full : null;
}

/** A handler serving the regular files under `root` (a folder's index.html for the folder). */
export function reportHandler(root: string): (req: Request) => Promise<Response> {
  return async (req) => {
    if (req.method !== "GET" && req.method !== "HEAD") return new Response("method not allowed\n", { status: 405 });
    let file = fileFor(root, new URL(req.url).pathname);
    if (!file) return new Response("not found\n", { status: 404 });
    try {
      let st = await Deno.stat(file);
      if (st.isDirectory) {
        file = join(file, "index.html");
        st = await Deno.stat(file);
      }
      if (!st.isFile) return new Response("not found\n", { status: 404 });
      const body = req.method === "HEAD" ? null : await Deno.readFile(file);
      return new Response(body, { headers: { "content-type": TYPES[extname(file)] ?? "application/octet-stream", "cache-control": "no-cache" } });
    } catch {
      return new Response("not found\n", { status: 404 });
    }
  };
}

async function main(args: string[]): Promise<number> {
  let v;
  try {
    v = parseArgs({
      args,
      strict: true,
      options: {
        dir: { type: "string" },
        port: { type: "string", default: "8000" },
        host: { type: "string", default: "127.0.0.1" },
        config: { type: "string" },
        model: { type: "string" },
        models: { type: "string" },
        dataset: { type: "string" },
        rows: { type: "string" },
        limit: { type: "string" },
        out: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    }).values;
  } catch (e) {
    throw new UserError(`${(e as Error).message.split("\n")[0]}; see --help`);
  }
  if (v.help) {
    console.log(HELP);
    return 0;
  }
  const port = Number(v.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new UserError(`--port ${v.port}: give a port number 0..65535`);
  let root: string;
  if (v.dir) root = resolve(v.dir);
  else {
    const cfg = await loadConfig(await loadStages(), v.config, { model: v.model, models: v.models, dataset: v.dataset, rows: v.rows, limit: v.limit });
    const inputs = new RunInputs(cfg, true);
    try {
      root = join((await studyFolders(cfg, inputs, v.out)).studyDir, "report");
    } finally {
      inputs.close();
    }
  }
  const index = join(root, "index.html");
  if (!(await Deno.stat(index).then((s) => s.isFile, () => false))) {
    throw new UserError(`no report in ${relOrAbs(root)}; write it first with deno task pipeline (or deno task report), or pass --dir DIR`);
  }
  const server = Deno.serve({
    hostname: v.host,
    port,
    onListen: ({ hostname, port }) => console.log(`serving ${relOrAbs(root)} at http://${hostname}:${port}/ (Ctrl-C to stop)`),
  }, reportHandler(root));
  await server.finished;
  return 0;
}

if (import.meta.main) await runMain(() => main(Deno.args));
