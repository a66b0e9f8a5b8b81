"""Test helpers for the codec: the FACTS.md random init of Mimi (shared with bench/, see openmoshi.testing)."""

from __future__ import annotations

import os

os.environ.setdefault("NO_TORCH_COMPILE", "1")

from openmoshi.testing.mimi_init import (  # noqa: E402,F401  (re-exported for the tests)
    STATE_DICT_TXT,
    random_like,
    random_state,
    random_tensor,
    randomize_model,
    reference_shapes,
    to_published_naming,
)
