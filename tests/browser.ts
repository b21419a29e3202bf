// Headless Chromium for the report's tests (puppeteer-core against the system's browser: Debian's
// `chromium`, or CHROMIUM=/path): a fresh profile per launch, nothing reached beyond the file system,
// and per page the console errors, page errors and refused or failed requests it caused.
import puppeteer, { type Browser, type Page } from "puppeteer-core";

export const CHROMIUM = Deno.env.get("CHROMIUM") ?? "/usr/bin/chromium";

export interface BrowserSession {
  browser: Browser;
  profile: string;
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<BrowserSession> {
  const profile = await Deno.makeTempDir({ prefix: "report-chromium-" });
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
      `--user-data-dir=${profile}`,
    ],
  });
  return {
    browser,
    profile,
    close: async () => {
      await browser.close();
      await Deno.remove(profile, { recursive: true }).catch(() => {});
    },
  };
}

/** What went wrong on a page: console errors, uncaught errors, requests off the file system or that failed. */
export interface PageProblems {
  console: string[];
  errors: string[];
  network: string[];
}

/** A page at 1366×768 that records its problems; requests to anything but file: are refused (and recorded). */
export async function openPage(b: BrowserSession): Promise<{ page: Page; problems: PageProblems }> {
  const page = await b.browser.newPage();
  await page.setViewport({ width: 1366, height: 768 });
  const problems: PageProblems = { console: [], errors: [], network: [] };
  page.on("console", (m) => {
    if (m.type() === "error" || m.type() === "warn") problems.console.push(`${m.type()}: ${m.text()}`);
  });
  page.on("pageerror", (e) => problems.errors.push(String((e as Error).message ?? e)));
  page.on("requestfailed", (r) => problems.network.push(`failed: ${r.url()} (${r.failure()?.errorText})`));
  await page.setRequestInterception(true);
  page.on("request", (r) => {
    const url = r.url();
    if (url.startsWith("file:") || url.startsWith("data:") || url.startsWith("blob:")) r.continue();
    else {
      problems.network.push(`off the file system: ${url}`);
      r.abort();
    }
  });
  return { page, problems };
}

/** Wait until the report's script has built the page and drawn every chart (window.MR). */
export async function waitDrawn(page: Page, timeoutMs = 60000): Promise<void> {
  await page.waitForFunction(() => {
    // deno-lint-ignore no-explicit-any
    const mr = (globalThis as any).MR;
    return mr && mr.ready && mr.pending === 0;
  }, { timeout: timeoutMs, polling: 100 });
}

/** Per chart on the page: how many mark groups its SVG has and how many drawn items (paths with data, rects, texts) they hold. */
export async function chartStats(page: Page): Promise<{ charts: number; marks: number[]; items: number[]; errors: string[] }> {
  // the DOM as much as this function uses of it (the test code is type-checked without the DOM library)
  interface Node {
    querySelector(s: string): Node | null;
    querySelectorAll(s: string): Iterable<Node>;
    getAttribute(name: string): string | null;
    tagName: string;
  }
  return await page.evaluate(() => {
    // deno-lint-ignore no-explicit-any
    const doc = (globalThis as any).document;
    const charts: Node[] = [...doc.querySelectorAll(".chart")];
    const marks: number[] = [];
    const items: number[] = [];
    for (const c of charts) {
      const svg = c.querySelector("svg");
      const groups = svg ? [...svg.querySelectorAll("g.role-mark")] : [];
      marks.push(groups.length);
      let n = 0;
      for (const g of groups) {
        for (const e of g.querySelectorAll("path, rect, line, text, circle")) {
          const d = e.getAttribute("d");
          if (e.tagName === "path" ? d !== null && d !== "" && d !== "M0,0" : true) n++;
        }
      }
      items.push(n);
    }
    // deno-lint-ignore no-explicit-any
    return { charts: charts.length, marks, items, errors: (globalThis as any).MR?.errors ?? [] };
  });
}
