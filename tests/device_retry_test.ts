// A lost GPU device during a stage's work: the run's inputs make a new device and reload the model,
// and the same piece of work runs again (withDevice, used by 01_construct and the knockout stages).
// The device is really lost (destroyed in the middle of the work), nothing is simulated.
import { assert, assertEquals, assertRejects } from "./assert.ts";
import { FIXTURE_DIR } from "./helpers.ts";
import { loadConfig } from "../workflows/lib/config.ts";
import { MAX_DEVICE_RETRIES, withDevice } from "../workflows/lib/engine.ts";
import { RunInputs } from "../workflows/lib/inputs.ts";
import { loadStages } from "../workflows/registry.ts";

Deno.test("a device lost in the middle of the work: new device, model reloaded, the same work again", async () => {
  const cfg = await loadConfig(await loadStages(), undefined, { model: FIXTURE_DIR });
  const inputs = new RunInputs(cfg, false);
  const said: string[] = [];
  const model = () => inputs.model((m) => said.push(m));
  try {
    const ids = [[510, 3101, 14018, 273]], targets = [5112];
    const want = (await (await model()).model.forwardStats(ids, targets, { mode: "attention" }))[0];
    let attempts = 0;
    const got = await withDevice(model, async (loaded) => {
      attempts++;
      if (attempts === 1) loaded.gpu.device.destroy(); // the device is gone before the work reads back
      return await loaded.model.forwardStats(ids, targets, { mode: "attention" });
    });
    assertEquals(attempts, 2);
    assertEquals(got[0].trueProb, want.trueProb, "the same result on the new device");
    assertEquals(said, ["the GPU device was lost; creating a new device and reloading the model"]);

    // an error that is not a lost device is not retried
    let calls = 0;
    await assertRejects(() => withDevice(model, () => Promise.reject(new Error(`bad input ${++calls}`))), /bad input 1/);
    assertEquals(calls, 1);

    // a device that keeps getting lost: given up after MAX_DEVICE_RETRIES new devices
    let tries = 0;
    await assertRejects(() =>
      withDevice(model, async (loaded) => {
        tries++;
        loaded.gpu.device.destroy();
        return await loaded.model.forwardStats(ids, targets, { mode: "attention" });
      })
    );
    assertEquals(tries, MAX_DEVICE_RETRIES + 1);
    assert(said.length === 1 + MAX_DEVICE_RETRIES, `reloads said: ${said.length}`);
  } finally {
    inputs.close();
  }
});
