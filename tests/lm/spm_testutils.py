"""A tiny SentencePiece model with Moshi's special ids (shared with bench/, see openmoshi.testing.spm)."""

from openmoshi.testing.spm import CORPUS, train_tiny_spm  # noqa: F401  (re-exported for the tests)
