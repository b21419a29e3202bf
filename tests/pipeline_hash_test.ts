// A stage's code hash covers the workflow modules it imports, so editing a shared workflows/lib
// file reruns the stages that use it, and only those.
import { assert, assertEquals } from "./assert.ts";
import { hashModuleTree } from "../workflows/lib/hash.ts";

Deno.test("stage code hash follows local imports, within the root only", async () => {
  const root = await Deno.makeTempDir();
  await Deno.mkdir(`${root}/lib`);
  await Deno.mkdir(`${root}/outside`);
  await Deno.writeTextFile(`${root}/01_a.ts`, `import { b } from "./lib/b.ts";\nimport type { X } from "./lib/types.ts";\nexport const a = b;`);
  await Deno.writeTextFile(`${root}/02_other.ts`, `export const other = 1;`);
  await Deno.writeTextFile(`${root}/lib/b.ts`, `export { c as b } from "./c.ts";`);
  await Deno.writeTextFile(`${root}/lib/c.ts`, `export const c = await import("./d.ts");`);
  await Deno.writeTextFile(`${root}/lib/d.ts`, `export const d = 1;`);
  await Deno.writeTextFile(`${root}/lib/types.ts`, `export type X = number;`);
  const h = () => hashModuleTree(`${root}/01_a.ts`, `${root}/`);
  const h0 = await h();
  assertEquals(await h(), h0, "deterministic");
  await Deno.writeTextFile(`${root}/02_other.ts`, `export const other = 2;`);
  assertEquals(await h(), h0, "an unrelated stage does not count");
  for (const f of ["lib/b.ts", "lib/c.ts", "lib/d.ts", "lib/types.ts", "01_a.ts"]) {
    const before = await h();
    await Deno.writeTextFile(`${root}/${f}`, (await Deno.readTextFile(`${root}/${f}`)) + "\n// edit");
    assert((await h()) !== before, `editing ${f} changes the hash`);
  }
});
