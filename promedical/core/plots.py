"""Plotly figures: GRPO training curves, live in a notebook and saved as HTML in the workspace."""
from __future__ import annotations

from pathlib import Path

from promedical.core.files import atomic_write_text


def write_html(fig, path: str | Path) -> Path:
    """Self-contained HTML (plotly.js inlined: the report opens offline), written atomically."""
    return atomic_write_text(path, fig.to_html(include_plotlyjs=True, full_html=True))


def in_notebook() -> bool:
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and type(shell).__name__ == "ZMQInteractiveShell"
