"""Helpers shared by the tests (tests/) and the benchmarks (bench/): random weights, tiny models and tokenizers.

Nothing here imports Kyutai's `moshi` package (the rule: `moshi` is imported only by tests/ and bench/, where it
is the test-only oracle); helpers that work on a reference model take it, or its class, as an argument.
- `mimi_init`: the FACTS.md random init of Mimi, in Kyutai's naming (from `mimi_state_dict.txt`) or ours;
- `spm`: a tiny SentencePiece model with Moshi's special ids, trained on the fly;
- `kyutai`: Kyutai's LM kwargs for one of our configs, random reference weights, the published file naming, and
  tiny models written in the layout of Kyutai's repos (config.json and the three files).
- `server_model`: a moshi-free tiny model with Kyutai's 80 ms frames (the server's tests, bench/serve.py).
"""
