"""Training: model + LoRA setup, batching/packing, the run (thin use of the HF Trainer), export."""
