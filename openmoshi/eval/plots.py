"""What the eval reports' plots share: a matplotlib figure as PNG bytes (the reports embed or write them)."""

from __future__ import annotations

import io
from typing import Any


def figure_png(fig: Any, dpi: int = 100) -> bytes:
    """`fig` (a matplotlib Figure) as PNG bytes, then closed: report plots are made once and never shown."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()
