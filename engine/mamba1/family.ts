// The Mamba-1 and Falcon-Mamba families (engine/families.ts): state-spaces checkpoints whose
// config.json has no ssm_cfg.layer (or "Mamba1"), and Hugging Face model_type "mamba" /
// "falcon_mamba". One implementation; Falcon-Mamba adds the weightless RMSNorm of B, C and the
// dt-rank input (engine/mamba1/config.ts).
import type { Family } from "../families.ts";
import type { ModelConfig } from "../config.ts";
import { type Mamba1Config, mamba1Units, parseMamba1Config } from "./config.ts";
import { loadMamba1 } from "./model.ts";
import { mamba1TensorList } from "./tensors.ts";

const tensors = (config: ModelConfig) => mamba1TensorList(config as Mamba1Config);
const units = (config: ModelConfig) => mamba1Units(config as Mamba1Config);

export const MAMBA1: Family = {
  name: "mamba1",
  names: { stateSpacesLayer: ["Mamba1"], modelType: ["mamba"] },
  describe: 'state-spaces config.json without ssm_cfg.layer (or "Mamba1"), or model_type "mamba"',
  parseConfig: parseMamba1Config,
  tensors,
  units,
  load: loadMamba1,
};

export const FALCON_MAMBA: Family = {
  name: "falcon_mamba",
  names: { modelType: ["falcon_mamba"] },
  describe: 'model_type "falcon_mamba"',
  parseConfig: parseMamba1Config,
  tensors,
  units,
  load: loadMamba1,
};
