"""Datasets for training the language model (docs/data.md).

- `manifest`: the JSONL manifest, alignment sidecars, audio headers and channels, text files;
- `check`: validation listing every problem (`openmoshi data check`);
- `text_grid`: the inner monologue, words laid on the 12.5 Hz grid with PAD and EPAD;
- `shards`: the prepared format (per-chunk .npy arrays and a JSON index);
- `encode`: a model's Mimi and tokenizer, their identity, batched long-file Mimi encoding;
- `prepare`: Mimi codes and text streams computed once, resumable, split by rank (`openmoshi data prepare`);
- `loader`: batches `LMBatch(codes [B, K, T])` for training, deterministic and resumable.
`synth/` (synthetic conversations) belongs to the synthesis side (`openmoshi data synth`).
"""
