// The exact knockout fast path of every family (LanguageModel.knockouts).
//
// Blocking edges (t, s) with t >= t0 changes nothing at positions < t0, in any layer, and nothing
// below the window's first layer: position t only reads positions <= t (through the conv taps and
// the SSD of a Mamba, the attention of a Transformer). So per prompt one unblocked attention-mode
// base run keeps, per layer, the residual stream entering it and the activations the family's
// recompute reads from earlier positions (LayerStack.capture); then every configuration recomputes
// only its rows t0..len-1 (t0 = its smallest blocked row) from its window's first layer up. The rows
// of all configurations of a group of prompts go through the GPU together, as the rows of one
// batch; configurations are sorted by window start, so that the rows active in a layer are a
// prefix. Memory is bounded twice: the base run's capture per group of prompts, the recomputed
// rows' activations per pass.
import { formatUnitSelector, InputError, type KnockoutConfig, type UnitSelector } from "./arch.ts";
import type { Backbone, RowsIO } from "./backbone.ts";
import { Recorder, storageBuffer, uploadBuffer } from "./gpu.ts";
import { statsFromRows, type TokenStats } from "./probs.ts";
import { profile } from "./profile.ts";

/** How much memory the fast path may hold at once (tests make them small to force many groups and passes). */
export interface FastPathBudget {
  /** bytes of base-run capture of one group of prompts (default 768 MiB) */
  captureBytes: number;
  /** bytes of per-row activations of one recompute pass (default 512 MiB) */
  rowsBytes: number;
}
const DEFAULT_BUDGET: FastPathBudget = { captureBytes: 768 * 1024 * 1024, rowsBytes: 512 * 1024 * 1024 };

export async function knockoutFastPath(
  model: Backbone,
  prompts: number[][],
  baseTargets: number[],
  configs: KnockoutConfig[],
  onProgress?: (configsDone: number) => void,
  budget: FastPathBudget = DEFAULT_BUDGET,
): Promise<{ base: TokenStats[]; results: TokenStats[] }> {
  const info = model.info;
  if (baseTargets.length !== prompts.length) throw new InputError(`${baseTargets.length} targets for ${prompts.length} prompts`);
  model.checkInput(prompts, { mode: "attention", targets: baseTargets });
  configs.forEach((k, i) => {
    const len = prompts[k.prompt]?.length;
    if (len === undefined) throw new InputError(`knockout configuration ${i} names prompt ${k.prompt}, which does not exist`);
    model.checkSpec(k, len, `knockout configuration ${i}`);
    model.checkTarget(k.target, `knockout configuration ${i}: target`);
  });

  const base: TokenStats[] = new Array(prompts.length);
  const results: TokenStats[] = new Array(configs.length);
  let done = 0;
  const widths = Object.values(model.stack.capture);
  // group prompts so that one group's capture fits the budget and each captured buffer a binding
  const perPositionLayer = 4 * (info.dModel + widths.reduce((a, b) => a + b, 0));
  const widest = 4 * Math.max(info.dModel, ...widths);
  const order = prompts.map((_, i) => i).sort((x, y) => prompts[y].length - prompts[x].length);
  for (let g0 = 0; g0 < order.length;) {
    const T = prompts[order[g0]].length;
    const fit = Math.min(
      Math.floor(budget.captureBytes / (info.nLayer * T * perPositionLayer)),
      Math.floor(model.gpu.maxBinding / (T * widest)),
      model.maxBatch(T, { mode: "attention" }),
    );
    const group = order.slice(g0, g0 + Math.max(1, fit));
    g0 += group.length;
    const groupConfigs = configs.map((k, i) => ({ k, i })).filter(({ k }) => group.includes(k.prompt));
    await model.exclusive(() =>
      runGroup(model, prompts, baseTargets, group, groupConfigs, base, results, budget.rowsBytes, (n) => {
        done += n;
        onProgress?.(done);
      })
    );
  }
  return { base, results };
}

/** A configuration placed in a recompute pass: its rows are positions t0..len-1 of its prompt. */
interface Placed {
  k: KnockoutConfig;
  i: number; // index in the caller's configs
  bi: number; // index of its prompt in the group
  len: number;
  t0: number;
}

/** The base run's capture, per layer: the residual stream entering it and the family's activations, (N, ·). */
interface Capture {
  resid: GPUBuffer[];
  acts: Record<string, GPUBuffer[]>;
}

async function runGroup(
  model: Backbone,
  prompts: number[][],
  baseTargets: number[],
  group: number[],
  configs: { k: KnockoutConfig; i: number }[],
  base: TokenStats[],
  results: TokenStats[],
  rowsBudget: number,
  onProgress: (n: number) => void,
) {
  const info = model.info, gpu = model.gpu, L = info.nLayer, D = info.dModel;
  const groupPrompts = group.map((p) => prompts[p]);
  const T = Math.max(...groupPrompts.map((p) => p.length)); // padded length of the base batch
  const N = group.length * T;
  const owned: GPUBuffer[] = [];
  const buf = (bytes: number, label: string) => {
    const b = storageBuffer(gpu, bytes, label);
    owned.push(b);
    return b;
  };
  try {
    // 1. the base run, keeping per layer what recomputed rows read
    const cap: Capture = {
      resid: Array.from({ length: L }, (_, l) => buf(N * D * 4, `base_residual${l}`)),
      acts: Object.fromEntries(Object.entries(model.stack.capture).map(([name, w]) => [name, Array.from({ length: L }, (_, l) => buf(N * w * 4, `base_${name}${l}`))])),
    };
    const res = await model.runBatch(groupPrompts, [], { mode: "attention", targets: group.map((p) => baseTargets[p]) }, {
      before: (rec, l, resid) => rec.copy(resid, 0, cap.resid[l], 0, N * D * 4),
      after: (rec, l, acts) => {
        for (const [name, w] of Object.entries(model.stack.capture)) rec.copy(acts[name], 0, cap.acts[name][l], 0, N * w * 4);
      },
    });
    group.forEach((p, bi) => (base[p] = res.stats![bi]));

    // 2. the configurations, sorted by window start, in passes that fit the row budget
    const placed: Placed[] = configs.map(({ k, i }) => {
      const bi = group.indexOf(k.prompt), len = groupPrompts[bi].length;
      return { k, i, bi, len, t0: k.edges.reduce((m, [t]) => Math.min(m, t), len - 1) };
    }).sort((x, y) => x.k.start - y.k.start);
    const scratch = model.stack.rowsScratchFloats(T);
    const rowBytes = 4 * (D + 8 + T + scratch.total);
    const maxRows = Math.max(T, Math.min(Math.floor(rowsBudget / rowBytes), Math.floor(gpu.maxBinding / (4 * Math.max(D, T, scratch.largest)))));
    const maxConfigs = Math.max(1, Math.floor(gpu.maxBinding / (info.vocabPadded * 4)));
    for (let p0 = 0; p0 < placed.length;) {
      let rows = 0, p1 = p0;
      while (p1 < placed.length && p1 - p0 < maxConfigs && (p1 === p0 || rows + placed[p1].len - placed[p1].t0 <= maxRows)) {
        rows += placed[p1].len - placed[p1].t0;
        p1++;
      }
      const pass = placed.slice(p0, p1);
      const stats = await recomputeRows(model, pass, cap, T, N);
      pass.forEach((x, j) => (results[x.i] = stats[j]));
      onProgress(pass.length);
      p0 = p1;
    }
  } finally {
    await profile.time("gpu", () => gpu.device.queue.onSubmittedWorkDone());
    for (const b of owned) b.destroy();
  }
}

/** The configurations' rows t0..len-1 from each window's first layer up, then each one's last row through the head. */
async function recomputeRows(model: Backbone, pass: Placed[], cap: Capture, T: number, baseRows: number): Promise<TokenStats[]> {
  const info = model.info, gpu = model.gpu, L = info.nLayer, D = info.dModel, U = info.unitsPerLayer;
  const nc = pass.length;
  const offsets: number[] = []; // first row of each configuration
  let n = 0;
  for (const x of pass) {
    offsets.push(n);
    n += x.len - x.t0;
  }
  const mine: GPUBuffer[] = [];
  const upload = (data: Uint32Array, label: string) => {
    const b = uploadBuffer(gpu, data, label);
    mine.push(b);
    return b;
  };
  const scratch = new Map<string, GPUBuffer>();
  try {
    // per row: (t, t0, base row of position 0, start, end, selector, tap mask, 0); colmask (n, T)
    const rowsMeta = new Uint32Array(n * 8);
    const colmask = new Uint32Array(n * T);
    const selIds = new Map<string, number>();
    const sels: UnitSelector[] = [];
    const selOf = (x: Placed) => {
      const sel = x.k.units ?? { kind: "all" };
      const key = formatUnitSelector(sel);
      let id = selIds.get(key);
      if (id === undefined) {
        selIds.set(key, id = sels.length);
        sels.push(sel);
      }
      return id;
    };
    pass.forEach((x, j) => {
      const sel = selOf(x);
      for (let t = x.t0; t < x.len; t++) rowsMeta.set([t, x.t0, x.bi * T, x.k.start, x.k.end, sel, 0, 0], (offsets[j] + t - x.t0) * 8);
      for (const [t, s] of x.k.edges) {
        const row = offsets[j] + t - x.t0;
        colmask[row * T + s] = 1;
        if (x.k.conv && t - s > 0 && t - s < info.convWidth) rowsMeta[row * 8 + 6] |= 1 << (t - s);
      }
    });
    // unit_sel (L, nSel, U): the units each selector picks, in the layers of some window
    const unitSel = new Uint32Array(L * sels.length * U);
    const filled = new Set<string>();
    for (const x of pass) {
      const id = selOf(x);
      for (let l = x.k.start; l < x.k.end; l++) {
        if (filled.has(`${l}:${id}`)) continue;
        filled.add(`${l}:${id}`);
        for (const u of model.selectUnits(l, sels[id])) unitSel[(l * sels.length + id) * U + u] = 1;
      }
    }
    const resid = storageBuffer(gpu, n * D * 4, "rows_residual"); // (n, D)
    mine.push(resid);
    const io: RowsIO = {
      layer: 0,
      n: 0,
      rows: n,
      maxLen: T,
      baseRows,
      resid,
      rowsMeta: upload(rowsMeta, "rows_meta"),
      colmask: upload(colmask, "colmask"),
      unitSel: upload(unitSel, "unit_sel"),
      nSel: sels.length,
      base: {},
      scratch: (name, floats) => {
        let b = scratch.get(name);
        if (!b) scratch.set(name, b = storageBuffer(gpu, n * floats * 4, `rows_${name}`));
        return b;
      },
    };
    const rec = new Recorder(gpu);
    // each configuration starts from the base run's residual stream entering its window
    pass.forEach((x, j) => rec.copy(cap.resid[x.k.start], (x.bi * T + x.t0) * D * 4, resid, offsets[j] * D * 4, (x.len - x.t0) * D * 4));
    for (let l = pass[0].k.start, active = 0; l < L; l++) {
      while (active < nc && pass[active].k.start <= l) active++;
      io.layer = l;
      io.n = active < nc ? offsets[active] : n; // the active configurations' rows: a prefix
      io.base = Object.fromEntries(Object.entries(cap.acts).map(([name, bufs]) => [name, bufs[l]]));
      model.stack.recordRowsLayer(rec, l, io);
    }
    // each configuration's last row (its prompt's last position) through the final norm and the head
    const out = await model.head(rec, resid, n, pass.map((x, j) => offsets[j] + x.len - 1 - x.t0), pass.map((x) => x.k.target));
    return statsFromRows(out, nc);
  } finally {
    await profile.time("gpu", () => gpu.device.queue.onSubmittedWorkDone());
    for (const b of [...mine, ...scratch.values()]) b.destroy();
  }
}
