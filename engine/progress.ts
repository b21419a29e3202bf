// Progress reporting for long work: a redrawn bar with rate and ETA on a terminal,
// plain periodic lines otherwise (logs, CI, pipes), always on stderr so stdout stays clean.

function fmtDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h > 0 ? `${h}h${String(m).padStart(2, "0")}m` : m > 0 ? `${m}m${String(r).padStart(2, "0")}s` : `${r}s`;
}

export interface ProgressOptions {
  unit?: string; // what is counted ("prompts", "B")
  bytes?: boolean; // format counts as bytes
  intervalMs?: number; // plain mode: at most one line per interval
  stream?: { writeSync(p: Uint8Array): number; isTerminal(): boolean };
}

function fmtCount(n: number, bytes: boolean): string {
  if (!bytes) return String(n);
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0, v = n;
  while (v >= 1000 && i < units.length - 1) (v /= 1000, i++);
  return `${v.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export class Progress {
  private done: number;
  private readonly start = performance.now();
  private readonly startDone: number;
  private lastDraw = 0;
  private readonly tty: boolean;
  private readonly enc = new TextEncoder();
  private readonly stream;
  private finished = false;

  constructor(readonly label: string, readonly total: number, initial = 0, private readonly opts: ProgressOptions = {}) {
    this.done = initial;
    this.startDone = initial;
    this.stream = opts.stream ?? Deno.stderr;
    this.tty = this.stream.isTerminal();
  }

  /** Advance by n (default 1) and redraw when due. */
  tick(n = 1): void {
    this.done += n;
    this.draw(false);
  }

  set(done: number): void {
    this.done = done;
    this.draw(false);
  }

  finish(): void {
    if (this.finished) return;
    this.finished = true;
    this.draw(true);
    if (this.tty) this.write("\n");
  }

  private write(s: string) {
    this.stream.writeSync(this.enc.encode(s));
  }

  private line(): string {
    const elapsed = (performance.now() - this.start) / 1000;
    const rate = elapsed > 0 ? (this.done - this.startDone) / elapsed : 0;
    const eta = rate > 0 ? (this.total - this.done) / rate : NaN;
    const unit = this.opts.unit ?? "";
    const b = this.opts.bytes ?? false;
    const pct = this.total > 0 ? (100 * this.done) / this.total : 100;
    const rateStr = b ? `${fmtCount(rate, true)}/s` : `${rate.toFixed(rate < 10 ? 2 : 1)} ${unit}/s`;
    return `${this.label} ${fmtCount(this.done, b)}/${fmtCount(this.total, b)}${b ? "" : " " + unit} ` +
      `(${pct.toFixed(1)}%) ${rateStr} elapsed ${fmtDuration(elapsed)} ETA ${fmtDuration(eta)}`;
  }

  private lastDrawnDone = -1;

  private draw(force: boolean) {
    const now = performance.now();
    if (!this.tty && force && this.lastDrawnDone === this.done) return; // that line is already out
    if (this.tty) {
      if (!force && now - this.lastDraw < 100) return;
      this.lastDraw = now;
      const width = 24;
      const frac = this.total > 0 ? Math.min(1, this.done / this.total) : 1;
      const fill = Math.round(frac * width);
      this.write(`\r\x1b[2K[${"#".repeat(fill)}${".".repeat(width - fill)}] ${this.line()}`);
    } else {
      const interval = this.opts.intervalMs ?? 10_000;
      if (!force && now - this.lastDraw < interval) return;
      this.lastDraw = now;
      this.lastDrawnDone = this.done;
      this.write(this.line() + "\n");
    }
  }
}
