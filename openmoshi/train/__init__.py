"""Training: one framework (config, run folder, optimiser and schedule, checkpoints, parallelize) and the LM
trainer (`lm_trainer.train_lm`); the codec trainer reuses the framework."""
