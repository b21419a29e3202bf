// Errors meant for the person at the terminal: one line that names the problem and what to do.
// Anything thrown by the pipeline or a stage is reported through `errorLine`, never as a stack
// trace (set MAMBA_EXPLAIN_DEBUG=1 to see the stack as well).

export class UserError extends Error {
  override name = "UserError";
}

/** Errors from the engine whose messages are already written for users. */
const USER_FACING = new Set(["UserError", "CheckpointError", "ConfigError", "GpuError", "TokenizerError", "InputError"]);

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
    code = e instanceof InterruptedError ? 130 : 1;
  }
  Deno.exit(code);
}

/** Thrown when the run is stopped (Ctrl-C); finished work is kept and the next run resumes. */
export class InterruptedError extends UserError {}
