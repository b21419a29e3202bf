// The Mamba-2 family (engine/families.ts): state-spaces checkpoints whose config.json has
// ssm_cfg.layer "Mamba2", and Hugging Face model_type "mamba2" (Mamba2ForCausalLM).
import type { Family } from "../families.ts";
import type { ModelConfig } from "../config.ts";
import { type Mamba2Config, mamba2Units, parseMamba2Config } from "./config.ts";
import { loadMamba2 } from "./model.ts";
import { mamba2TensorList } from "./tensors.ts";

export const MAMBA2: Family = {
  name: "mamba2",
  names: { stateSpacesLayer: ["Mamba2"], modelType: ["mamba2"] },
  describe: 'state-spaces config.json with ssm_cfg.layer "Mamba2", or model_type "mamba2"',
  parseConfig: parseMamba2Config,
  tensors: (config: ModelConfig) => mamba2TensorList(config as Mamba2Config),
  units: (config: ModelConfig) => mamba2Units(config as Mamba2Config),
  load: loadMamba2,
};
