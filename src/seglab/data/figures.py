"""Figures written as PNGs, atomically: every matplotlib picture seglab draws (model
cards, gate reports, review plots) goes through here, so nothing else in ``data``
loads matplotlib."""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib

from seglab.data.files import write_bytes_atomic

matplotlib.use("Agg")


def write_figure(fig: matplotlib.figure.Figure, path: Path) -> Path:
    """A matplotlib figure as a PNG, written atomically, then closed (pyplot keeps every
    open figure alive otherwise)."""
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    write_bytes_atomic(path, buf.getvalue())
    return path
