"""Training: one framework (config, run folder, optimiser and schedule, checkpoints, parallelize), the LM
trainer (`lm_trainer.train_lm`) and the codec trainer (`codec_trainer.train_codec`, its losses and step)."""
