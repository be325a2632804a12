"""Small inline SVG charts for the service's pages (no JavaScript, no plotting
library in the request path).
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from seglab.infer.overlay import hex_colour


def chart_svg(kind: str, values: Sequence[float] | dict[str, int], *, title: str,
              xlabel: str = "", value_range: tuple[float, float] = (0.0, 1.0),
              bins: int = 20) -> bytes:
    """A small SVG chart for web pages (``kind`` is ``"bars"`` or ``"hist"``).

    Rendered on the server with matplotlib's object API (no pyplot state, so it is
    safe in the service's worker threads) and needs nothing from the internet.
    """
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.2, 2.8))
    ax = fig.add_subplot()
    empty = not (values if isinstance(values, dict) else len(list(values)))
    if empty:  # axes over no data say nothing: the chart says so instead
        ax.set_axis_off()
        ax.text(0.5, 0.5, "no data yet", ha="center", va="center", transform=ax.transAxes,
                fontsize=12, color="#777777")
    elif kind == "bars":
        assert isinstance(values, dict)
        names = list(values)
        ax.bar(names, [values[n] for n in names],
               color=[hex_colour(i) for i in range(len(names))])
        ax.set_ylabel("images")
    else:
        data = np.asarray(list(values), dtype=float)
        ax.hist(data, bins=bins, range=value_range, color="#3c78c8")
        ax.set_ylabel("images")
    ax.set_title(title, fontsize=10)
    if not empty:
        ax.set_xlabel(xlabel)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="svg")
    return buf.getvalue()

