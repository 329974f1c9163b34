"""fedrank vehicle agent: energy meters, UCB-DUAL, local LoRA training, the edge daemon."""
