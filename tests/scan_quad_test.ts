// The 4-channel scan kernel (kernels/mamba2/ssd_scan_quad.wgsl, picked by Mamba2Ops.ssdScan when headdim and
// d_state are multiples of 4) against the float64 reference recurrence: several groups, padded
// prompts of different lengths, the model's d_state of 128 and the kernel's 256 maximum.
import { createGpu, readBuffer, Recorder, storageBuffer, uploadBuffer, writeBuffer } from "../engine/gpu.ts";
import { Ops } from "../engine/ops.ts";
import { Mamba2Ops, type SsdShape } from "../engine/mamba2/ops.ts";
import * as ref from "./reference/mamba2.ts";
import { assert } from "./assert.ts";
import { seeded } from "./helpers.ts";

Deno.test("ssdScan, 4-channel kernel: groups, padding, d_state up to 256", async () => {
  const gpu = await createGpu();
  const m2 = await Mamba2Ops.create(await Ops.create(gpu));
  const r = seeded(21);
  const cases: [number, number, number, number, number, number, number[]][] = [
    // batch, seq, nheads, headdim, dState, ngroups, lengths
    [2, 6, 4, 8, 8, 2, [6, 3]],
    [3, 9, 8, 4, 12, 4, [1, 9, 5]],
    [1, 12, 2, 16, 128, 1, [12]],
    [2, 5, 4, 4, 256, 2, [5, 2]],
  ];
  for (const [batch, seq, nheads, headdim, dState, ngroups, lengths] of cases) {
    const dInner = nheads * headdim, convDim = dInner + 2 * ngroups * dState;
    const s: SsdShape = { batch, seq, nheads, headdim, dState, ngroups, convDim, dInner };
    assert(Mamba2Ops.scanQuad(s), "the 4-channel kernel is picked");
    const xbc = Float32Array.from({ length: batch * seq * convDim }, () => r() * 2 - 1);
    const dt = Float32Array.from({ length: batch * seq * nheads }, () => 0.01 + 0.2 * r());
    const a = Float32Array.from({ length: nheads }, () => -(0.5 + 4 * r()));
    const d = Float32Array.from({ length: nheads }, () => r());
    const bufs = [xbc, dt, a, d].map((v) => uploadBuffer(gpu, v));
    const lens = uploadBuffer(gpu, Uint32Array.from(lengths));
    const y = storageBuffer(gpu, batch * seq * dInner * 4);
    writeBuffer(gpu, y, new Float32Array(batch * seq * dInner).fill(NaN));
    const rec = new Recorder(gpu);
    m2.ssdScan(rec, bufs[0], bufs[1], bufs[2], bufs[3], lens, y, s);
    rec.submit();
    const got = new Float32Array(await readBuffer(gpu, y, batch * seq * dInner * 4));
    const want = ref.ssdScan(xbc, dt, a, d, lengths, s);
    let scale = 0, err = 0;
    for (let b = 0; b < batch; b++) {
      for (let t = 0; t < lengths[b]; t++) {
        for (let c = 0; c < dInner; c++) {
          const i = (b * seq + t) * dInner + c;
          scale = Math.max(scale, Math.abs(want[i]));
          const e = Math.abs(got[i] - want[i]);
          err = Number.isNaN(e) ? Infinity : Math.max(err, e);
        }
      }
    }
    assert(err <= 1e-5 * scale, `${JSON.stringify(s)} lengths ${lengths}: max error ${err} of scale ${scale}`);
    [...bufs, lens, y].forEach((b) => b.destroy());
  }
});
