// Always-on wall-time counters: where a run's time goes, by part. The engine counts the time it
// waits for the device and reads results back; the workflows count model loading, the engine
// calls as a whole, and the writing of outputs. Parts nest (a forward waits for the device inside
// it) and each is counted exclusively: a part's time excludes the parts timed inside it, so the
// parts of a span add up to its wall time (run_stage.ts puts the remainder under "other").
//
// Parts:
//   load      the checkpoint read and uploaded, kernels compiled (a lost device's reload too)
//   forward   the engine's own host work in forwards and knockouts: inputs checked, masks and
//             batches built, commands recorded and submitted
//   gpu       work submitted to the device and waited for (a CPU driver such as lavapipe runs the
//             work inside the submission itself)
//   readback  results mapped and copied back to the host
//   write     outputs written: tables, figures, JSON, resume logs

export const PROFILE_PARTS = ["load", "forward", "gpu", "readback", "write"] as const;
export type ProfilePart = typeof PROFILE_PARTS[number];

interface Frame {
  part: ProfilePart;
  start: number;
  inner: number; // ms spent in parts timed inside this one
}

/** Milliseconds by part, counted exclusively of nested parts. */
export class TimeProfile {
  private readonly ms: Record<ProfilePart, number> = { load: 0, forward: 0, gpu: 0, readback: 0, write: 0 };
  private readonly stack: Frame[] = [];

  /** Run `fn`, counting its wall time (less that of parts timed inside it) under `part`. */
  async time<T>(part: ProfilePart, fn: () => Promise<T>): Promise<T> {
    const frame: Frame = { part, start: performance.now(), inner: 0 };
    this.stack.push(frame);
    try {
      return await fn();
    } finally {
      this.end(frame);
    }
  }

  /** time()'s synchronous twin (a queue submission, which a CPU driver runs before it returns). */
  timeSync<T>(part: ProfilePart, fn: () => T): T {
    const frame: Frame = { part, start: performance.now(), inner: 0 };
    this.stack.push(frame);
    try {
      return fn();
    } finally {
      this.end(frame);
    }
  }

  private end(frame: Frame) {
    const elapsed = performance.now() - frame.start;
    // frames normally end in the order they began; if concurrent work ends out of order, the frame is removed where it is
    const at = this.stack.lastIndexOf(frame);
    if (at >= 0) this.stack.splice(at, 1);
    this.ms[frame.part] += Math.max(0, elapsed - frame.inner);
    const parent = at > 0 ? this.stack[at - 1] : undefined;
    if (parent) parent.inner += elapsed;
  }

  /** The counters now (ms), to subtract from a later snapshot. */
  snapshot(): Record<ProfilePart, number> {
    return { ...this.ms };
  }
}

/** The process's counters (the engine and the workflows share them). */
export const profile = new TimeProfile();

/**
 * The profile of a span of `wallMs` between two snapshots, in seconds: each part, and "other"
 * (the rest: tokenizing, statistics, planning), so that the parts add up to the wall time.
 */
export function profileSpan(before: Record<ProfilePart, number>, after: Record<ProfilePart, number>, wallMs: number): Record<ProfilePart | "other", number> {
  const out = {} as Record<ProfilePart | "other", number>;
  let counted = 0;
  for (const p of PROFILE_PARTS) {
    const ms = Math.max(0, after[p] - before[p]);
    out[p] = ms / 1000;
    counted += ms;
  }
  out.other = Math.max(0, wallMs - counted) / 1000;
  return out;
}
