// Figures: a Vega-Lite spec is compiled to Vega, rendered headless to SVG by Vega's own SVG
// renderer, and rasterised to PNG by resvg (WebAssembly). resvg sees no system fonts: the text
// is set in DejaVu Sans, which comes from the npm package `dejavu-fonts-ttf`.

import * as vega from "vega";
import { compile, type TopLevelSpec } from "vega-lite";
import { initWasm, Resvg } from "@resvg/resvg-wasm";
import { join } from "node:path";
import { writeFileAtomic } from "./atomic.ts";
import { profile } from "../../engine/profile.ts";

export const FONT_FAMILY = "DejaVu Sans";

let wasmReady: Promise<void> | undefined;
let fontCache: Uint8Array[] | undefined;

async function readResolved(specifier: string): Promise<Uint8Array> {
  return await Deno.readFile(new URL(import.meta.resolve(specifier)));
}

function ensureWasm(): Promise<void> {
  wasmReady ??= (async () => {
    await initWasm(await readResolved("@resvg/resvg-wasm/index_bg.wasm"));
  })();
  return wasmReady;
}

async function fonts(): Promise<Uint8Array[]> {
  fontCache ??= [
    await readResolved("dejavu-fonts-ttf/ttf/DejaVuSans.ttf"),
    await readResolved("dejavu-fonts-ttf/ttf/DejaVuSans-Bold.ttf"),
  ];
  return fontCache;
}

/** Defaults shared by every figure of the study (fonts, sizes). */
export const BASE_CONFIG = {
  font: FONT_FAMILY,
  background: "white",
  title: { fontSize: 14, subtitleFontSize: 11, subtitleColor: "#555" },
  axis: { labelFontSize: 11, titleFontSize: 12 },
  view: { stroke: "#ddd" },
};

/** Vega-Lite → SVG text. */
export async function vegaLiteToSvg(spec: TopLevelSpec): Promise<string> {
  const withConfig = { ...spec, config: { ...BASE_CONFIG, ...(spec.config ?? {}) } } as TopLevelSpec;
  const vgSpec = compile(withConfig).spec;
  const view = new vega.View(vega.parse(vgSpec), { renderer: "none" });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** SVG text → PNG bytes, at `scale` times the SVG's size. */
export async function svgToPng(svg: string, scale = 2): Promise<Uint8Array> {
  await ensureWasm();
  const r = new Resvg(svg, {
    fitTo: { mode: "zoom", value: scale },
    background: "white",
    font: {
      fontBuffers: await fonts(),
      loadSystemFonts: false,
      defaultFontFamily: FONT_FAMILY,
      sansSerifFamily: FONT_FAMILY,
    },
  });
  try {
    const img = r.render();
    try {
      return img.asPng();
    } finally {
      img.free();
    }
  } finally {
    r.free();
  }
}

/** Render a spec and write `<base>.svg`, `<base>.png` and the spec itself `<base>.vl.json`. */
export function writeFigure(dir: string, base: string, spec: TopLevelSpec): Promise<string[]> {
  return profile.time("write", () => renderFigure(dir, base, spec));
}

async function renderFigure(dir: string, base: string, spec: TopLevelSpec): Promise<string[]> {
  const svg = await vegaLiteToSvg(spec);
  const png = await svgToPng(svg);
  const files = [`${base}.vl.json`, `${base}.svg`, `${base}.png`];
  await writeFileAtomic(join(dir, files[0]), JSON.stringify(spec, null, 1) + "\n");
  await writeFileAtomic(join(dir, files[1]), svg);
  await writeFileAtomic(join(dir, files[2]), png);
  return files;
}

/**
 * Remove the figures in `dir` whose names match `pattern` but are not in `keep`: figures of an
 * earlier run with other parameters would be taken for this run's.
 */
export async function removeStaleFigures(dir: string, pattern: RegExp, keep: Iterable<string>): Promise<void> {
  const wanted = new Set(keep);
  for await (const e of Deno.readDir(dir)) {
    if (e.isFile && pattern.test(e.name) && !wanted.has(e.name)) await Deno.remove(join(dir, e.name));
  }
}
