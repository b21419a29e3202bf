// The tensors of a Mamba-1 / Falcon-Mamba model, written once: the checkpoint's shape check, the
// loader and synthetic checkpoints all read this list. Both layouts name them alike but for the
// embedding (state-spaces `backbone.embedding.weight`, Hugging Face `backbone.embeddings.weight`).
import type { TensorSpec } from "../tensors.ts";
import type { Mamba1Config } from "./config.ts";

export interface Mamba1LayerTensors {
  norm: TensorSpec; // (D) RMSNorm before the mixer
  inProj: TensorSpec; // (2 d_inner, D): x | z
  convWeight: TensorSpec; // (d_inner, 1, d_conv)
  convBias: TensorSpec; // (d_inner)
  xProj: TensorSpec; // (dt_rank + 2 d_state, d_inner): dt_r | B | C
  dtProjWeight: TensorSpec; // (d_inner, dt_rank)
  dtProjBias: TensorSpec; // (d_inner)
  aLog: TensorSpec; // (d_inner, d_state) A = -exp(A_log)
  d: TensorSpec; // (d_inner) the skip D
  outProj: TensorSpec; // (D, d_inner)
}

export interface Mamba1Tensors {
  embedding: TensorSpec; // (vocab_padded, D)
  lmHead: TensorSpec; // (vocab_padded, D); optional when tied
  layers: Mamba1LayerTensors[];
  normF: TensorSpec; // (D)
}

export function mamba1Tensors(c: Mamba1Config): Mamba1Tensors {
  const D = c.dModel, I = c.dInner;
  const s = 1 / Math.sqrt(D), si = 1 / Math.sqrt(I), sr = 1 / Math.sqrt(c.dtRank);
  return {
    embedding: { name: c.layout === "hf" ? "backbone.embeddings.weight" : "backbone.embedding.weight", shape: [c.vocabPadded, D], init: { kind: "uniform", lo: -0.05, hi: 0.05 } },
    lmHead: { name: "lm_head.weight", shape: [c.vocabPadded, D], init: { kind: "uniform", lo: -0.05, hi: 0.05 }, optional: c.tieEmbeddings },
    layers: Array.from({ length: c.nLayer }, (_, i) => {
      const p = `backbone.layers.${i}`;
      return {
        norm: { name: `${p}.norm.weight`, shape: [D], init: { kind: "ones" } },
        inProj: { name: `${p}.mixer.in_proj.weight`, shape: [2 * I, D], init: { kind: "uniform", lo: -s, hi: s } },
        convWeight: { name: `${p}.mixer.conv1d.weight`, shape: [I, 1, c.dConv], init: { kind: "uniform", lo: -0.5, hi: 0.5 } },
        convBias: { name: `${p}.mixer.conv1d.bias`, shape: [I], init: { kind: "uniform", lo: -0.1, hi: 0.1 } },
        xProj: { name: `${p}.mixer.x_proj.weight`, shape: [c.dtRank + 2 * c.dState, I], init: { kind: "uniform", lo: -si, hi: si } },
        dtProjWeight: { name: `${p}.mixer.dt_proj.weight`, shape: [I, c.dtRank], init: { kind: "uniform", lo: -sr, hi: sr } },
        dtProjBias: { name: `${p}.mixer.dt_proj.bias`, shape: [I], init: { kind: "dt_bias" } },
        aLog: { name: `${p}.mixer.A_log`, shape: [I, c.dState], init: { kind: "log_decay" } },
        d: { name: `${p}.mixer.D`, shape: [I], init: { kind: "ones" } },
        outProj: { name: `${p}.mixer.out_proj.weight`, shape: [D, I], init: { kind: "uniform", lo: -si, hi: si } },
      };
    }),
    normF: { name: "backbone.norm_f.weight", shape: [D], init: { kind: "ones" } },
  };
}

/** Every tensor, in checkpoint order. */
export function mamba1TensorList(c: Mamba1Config): TensorSpec[] {
  const t = mamba1Tensors(c);
  return [t.embedding, ...t.layers.flatMap((l) => Object.values(l)), t.normF, t.lmHead];
}
