// The tensors of a Mamba-2 model, written once: the checkpoint's shape check, the loader and
// synthetic checkpoints all read this list. Both layouts name them alike but for the embedding
// (state-spaces `backbone.embedding.weight`, Hugging Face `backbone.embeddings.weight`).
import type { TensorSpec } from "../tensors.ts";
import type { Mamba2Config } from "./config.ts";

export interface Mamba2LayerTensors {
  norm: TensorSpec; // (D) RMSNorm before the mixer
  inProj: TensorSpec; // (d_in_proj, D): z | xBC | dt
  convWeight: TensorSpec; // (conv_dim, 1, d_conv)
  convBias: TensorSpec; // (conv_dim)
  dtBias: TensorSpec; // (H)
  aLog: TensorSpec; // (H) A = -exp(A_log)
  d: TensorSpec; // (H) the skip D
  gatedNorm: TensorSpec; // (d_inner) the gated RMSNorm's weight
  outProj: TensorSpec; // (D, d_inner)
}

export interface Mamba2Tensors {
  embedding: TensorSpec; // (vocab_padded, D)
  lmHead: TensorSpec; // (vocab_padded, D); optional when tied
  layers: Mamba2LayerTensors[];
  normF: TensorSpec; // (D)
}

export function mamba2Tensors(c: Mamba2Config): Mamba2Tensors {
  const D = c.dModel;
  return {
    embedding: { name: c.layout === "hf" ? "backbone.embeddings.weight" : "backbone.embedding.weight", shape: [c.vocabPadded, D], init: { kind: "uniform", lo: -0.05, hi: 0.05 } },
    lmHead: { name: "lm_head.weight", shape: [c.vocabPadded, D], init: { kind: "uniform", lo: -0.05, hi: 0.05 }, optional: c.tieEmbeddings },
    layers: Array.from({ length: c.nLayer }, (_, i) => {
      const p = `backbone.layers.${i}`;
      const s = 1 / Math.sqrt(D), si = 1 / Math.sqrt(c.dInner);
      return {
        norm: { name: `${p}.norm.weight`, shape: [D], init: { kind: "ones" } },
        inProj: { name: `${p}.mixer.in_proj.weight`, shape: [c.dInProj, D], init: { kind: "uniform", lo: -s, hi: s } },
        convWeight: { name: `${p}.mixer.conv1d.weight`, shape: [c.convDim, 1, c.dConv], init: { kind: "uniform", lo: -0.5, hi: 0.5 } },
        convBias: { name: `${p}.mixer.conv1d.bias`, shape: [c.convDim], init: { kind: "uniform", lo: -0.1, hi: 0.1 } },
        dtBias: { name: `${p}.mixer.dt_bias`, shape: [c.nheads], init: { kind: "dt_bias" } },
        aLog: { name: `${p}.mixer.A_log`, shape: [c.nheads], init: { kind: "log_decay" } },
        d: { name: `${p}.mixer.D`, shape: [c.nheads], init: { kind: "ones" } },
        gatedNorm: { name: `${p}.mixer.norm.weight`, shape: [c.dInner], init: { kind: "ones" } },
        outProj: { name: `${p}.mixer.out_proj.weight`, shape: [D, c.dInner], init: { kind: "uniform", lo: -si, hi: si } },
      };
    }),
    normF: { name: "backbone.norm_f.weight", shape: [D], init: { kind: "ones" } },
  };
}

/** Every tensor, in checkpoint order. */
export function mamba2TensorList(c: Mamba2Config): TensorSpec[] {
  const t = mamba2Tensors(c);
  return [t.embedding, ...t.layers.flatMap((l) => Object.values(l)), t.normF, t.lmHead];
}
