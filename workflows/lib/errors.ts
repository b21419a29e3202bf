// Errors meant for the person at the terminal: one line that names the problem and what to do.
// Anything thrown by the pipeline or a stage is reported through `errorLine`, never as a stack
// trace (set MAMBA_EXPLAIN_DEBUG=1 to see the stack as well).

export class UserError extends Error {
  override name = "UserError";
}

/**
 * A malformed command line or configuration: an unknown flag, stage or parameter, a bad value, a
 * bad row spec. Exit code 2 (the convention of command-line tools); every other error exits 1.
 */
export class UsageError extends UserError {
  override name = "UsageError";
}

/** Exit code of a usage error (engine/cli.ts uses the same for `infer`). */
export const USAGE_EXIT = 2;

/** Errors from the engine whose messages are already written for users. */
const USER_FACING = new Set([
  "UserError",
  "UsageError",
  "CheckpointError",
  "ConfigError",
  "GpuError",
  "TokenizerError",
  "InputError",
  "NumericError",
]);

export function isUserFacing(e: unknown): boolean {
  return e instanceof Error && USER_FACING.has(e.name);
}

/** The first line of an error's message, prefixed with nothing: callers add "error: ". */
export function errorLine(e: unknown): string {
  const msg = e instanceof Error ? e.message : String(e);
  const first = msg.split("\n").map((s) => s.trim()).find((s) => s.length > 0) ?? "unknown error";
  if (e instanceof Error && !isUserFacing(e) && e.name && e.name !== "Error") return `${e.name}: ${first}`;
  return first;
}

/** Run a CLI entry point: exit code from its return value, one `error:` line on failure. */
export async function runMain(main: () => Promise<number | void>): Promise<never> {
  let code = 0;
  try {
    code = (await main()) ?? 0;
  } catch (e) {
    console.error(`error: ${errorLine(e)}`);
    if (Deno.env.get("MAMBA_EXPLAIN_DEBUG")) console.error(e);
    code = e instanceof InterruptedError ? 130 : e instanceof UsageError ? USAGE_EXIT : 1;
  }
  Deno.exit(code);
}

/** Thrown when the run is stopped (Ctrl-C); finished work is kept and the next run resumes. */
export class InterruptedError extends UserError {}

/**
 * An engine error about the prompts of one batch (InputError: a prompt too long for the mode, a bad
 * id; NumericError: logits not finite) as a UserError naming their dataset rows, so that the user
 * can leave them out (--rows) or look at them. Any other error is returned as it is.
 */
export function aboutRows(e: unknown, batch: { row: number; ids: number[] }[], where: string): unknown {
  if (!(e instanceof Error) || (e.name !== "InputError" && e.name !== "NumericError")) return e;
  const msg = errorLine(e);
  let rows = batch;
  const long = /a prompt of (\d+) tokens is too long/.exec(msg);
  const indexed = /^prompt (\d+)\b/.exec(msg);
  if (long) rows = batch.filter((b) => b.ids.length === Number(long[1]));
  else if (indexed && batch[Number(indexed[1])]) rows = [batch[Number(indexed[1])]];
  if (rows.length === 0) rows = batch;
  const shown = rows.map((b) => b.row).sort((x, y) => x - y).slice(0, 8).join(", ") + (rows.length > 8 ? `, … (${rows.length} rows)` : "");
  const fix = long ? "; leave it out with --rows, or run it on an adapter with larger buffers" : "";
  return new UserError(`${where}, dataset row${rows.length > 1 ? "s" : ""} ${shown}: ${msg}${fix}`);
}
