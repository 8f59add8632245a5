"""Plotting helpers for the course notebooks (matplotlib only, small PNG figures).

Each helper draws on a given or new ``Axes``, sets a title and axis labels, and returns the
``Axes``; the notebook ends the cell with ``plt.show()`` so no figure repr is stored.
"""

from __future__ import annotations

import matplotlib.pyplot as plt

__all__ = ["use_course_style"]


def use_course_style(dpi: int = 72) -> None:
    """Small, readable figures: modest dpi, a tidy grid, PNG output."""
    plt.rcParams.update(
        {
            "figure.dpi": dpi,
            "savefig.dpi": dpi,
            "figure.figsize": (6.0, 3.5),
            "axes.grid": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "font.size": 9,
        }
    )
