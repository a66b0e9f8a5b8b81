"""Training: the language model and the codec (configs, steps, losses, checkpoints)."""
