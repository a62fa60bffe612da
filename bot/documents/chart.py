"""A bar chart of pledge completion by child unit, as PNG bytes (matplotlib, Agg, no screen).

Pure and thread-safe: it builds its own Figure (no pyplot state), so handlers run it with
`asyncio.to_thread`. DejaVu Sans, bundled with matplotlib, has every Vietnamese letter.
"""

from __future__ import annotations

import io
import textwrap

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

MAX_BARS = 60  # the units furthest behind; a chart taller than this is not read anyway
LABEL_CHARS = 40


def _short(label: str) -> str:
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


def completion_png(title: str, xlabel: str, bars: list[tuple[str, float]]) -> bytes:
    """Horizontal bars of each unit's pledged share (0..1), furthest behind on top."""
    rows = sorted(bars, key=lambda bar: bar[1])[:MAX_BARS]
    height = 1.9 + 0.38 * max(len(rows), 1)
    figure = Figure(figsize=(8, height), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    labels = [_short(name) for name, _ in reversed(rows)]
    shares = [share * 100 for _, share in reversed(rows)]
    colors = ["#c0392b" if s < 50 else "#e67e22" if s < 80 else "#27ae60" for s in shares]
    bars_drawn = axes.barh(range(len(rows)), shares, color=colors, height=0.6)
    axes.set_yticks(range(len(rows)), labels, fontfamily="DejaVu Sans", fontsize=9)
    axes.set_xlim(0, 105)
    axes.set_xlabel(xlabel, fontfamily="DejaVu Sans")
    wrapped = "\n".join(textwrap.wrap(title, 70))
    figure.suptitle(wrapped, fontfamily="DejaVu Sans", fontsize=11, x=0.02, ha="left")
    axes.bar_label(bars_drawn, labels=[f"{s:.0f}%" for s in shares], padding=3, fontsize=8)
    for side in ("top", "right"):
        axes.spines[side].set_visible(False)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()
