// The report's pages and assets: one HTML shell per page (navigation, the scripts, a place for the
// content, which assets/report.js builds from the data files), the report's own script and style
// (lib/report/assets/), and Vega, Vega-Lite and vega-embed copied from their npm packages.

import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export const PAGES = ["index", "modes", "flows", "heatmaps", "prompt", "models"] as const;
export type PageName = typeof PAGES[number];

const TITLES: Record<PageName, string> = {
  index: "Overview",
  modes: "Scan vs attention",
  flows: "Information flow",
  heatmaps: "Heatmaps",
  prompt: "Prompts",
  models: "Models",
};

/** The report's own assets (lib/report/assets/), copied as they are. */
export const ASSET_FILES = ["report.js", "report.css"] as const;

const ASSETS_DIR = fileURLToPath(new URL("./assets/", import.meta.url));

export function assetText(name: string): string {
  return Deno.readTextFileSync(join(ASSETS_DIR, name));
}

/** The vendored libraries: npm package and its bundle, in the order the pages load them. */
const VENDOR: [specifier: string, file: string][] = [["vega", "vega.min.js"], ["vega-lite", "vega-lite.min.js"], ["vega-embed", "vega-embed.min.js"]];

/** The vendored libraries, in load order: [file name in assets/, text]. Source-map comments are dropped (no map is shipped). */
export function vendorScripts(): [string, string][] {
  return VENDOR.map(([specifier, file]) => {
    const dir = dirname(fileURLToPath(import.meta.resolve(specifier)));
    return [file, Deno.readTextFileSync(join(dir, file)).replace(/\n?\/\/# sourceMappingURL=\S+\s*$/, "\n")];
  });
}

const escapeHtml = (s: string) => s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[c]!));

/** A page: navigation, its scripts (vendored libraries, data, the report's script), an empty main the script fills. */
export function pageHtml(page: PageName, dataFiles: string[]): string {
  const nav = PAGES.map((p) => `<a href="${p}.html"${p === page ? ' class="current" aria-current="page"' : ""}>${TITLES[p]}</a>`).join("\n      ");
  const scripts = [...VENDOR.map(([, f]) => `assets/${f}`), ...dataFiles, "assets/report.js"]
    .map((s) => `  <script src="${escapeHtml(s)}"></script>`).join("\n");
  return `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>${escapeHtml(TITLES[page])} · mamba-explain report</title>
  <link rel="stylesheet" href="assets/report.css">
</head>
<body data-page="${page}">
  <header>
    <span class="brand">mamba-explain</span>
    <nav>
      ${nav}
    </nav>
  </header>
  <main id="main"><p class="loading">Loading…</p></main>
  <noscript>This report draws its charts with JavaScript; please allow scripts for this file.</noscript>
${scripts}
</body>
</html>
`;
}
