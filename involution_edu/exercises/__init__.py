"""Exercise checkers, one module per notebook; the shared machinery is in :mod:`.framework`.

In a notebook, call the checker in the cell after the exercise, e.g.::

    from involution_edu.exercises import check_involution_loops
    check_involution_loops(involution_loops)
"""

from .framework import Case, compare, run_cases

__all__ = ["Case", "compare", "run_cases"]
