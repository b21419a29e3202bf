// Command-line entry points: bad input ends in one line on stderr and a non-zero exit, never a stack trace.

export class UsageError extends Error {
  override name = "UsageError";
}

export async function runMain(main: () => Promise<void>): Promise<void> {
  try {
    await main();
  } catch (e) {
    const err = e as Error & { code?: string };
    const msg = (err?.message ?? String(e)).split("\n")[0];
    console.error(`error: ${msg}`);
    if (Deno.env.get("MAMBA_EXPLAIN_DEBUG")) console.error(err?.stack);
    // 2 for a malformed command line (node:util parseArgs codes and --block specs too), 1 for everything else
    const usage = err instanceof UsageError || err?.name === "BlockSpecError" || err?.code?.startsWith("ERR_PARSE_ARGS");
    Deno.exit(usage ? 2 : 1);
  }
}
