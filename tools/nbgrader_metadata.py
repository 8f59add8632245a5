"""Give the course notebooks nbgrader's cell metadata, in place (see involution_edu/nbgrader_metadata.py).

    python tools/nbgrader_metadata.py [notebooks/NN_name.ipynb ...]   (default: every course notebook)
    python tools/nbgrader_metadata.py --check                          (exit 1 if any is not converted)

Deterministic and idempotent: a second run changes nothing. Re-execute a notebook whose cells were
split (tools/execute_notebooks.py) to refresh its execution counts.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

# The module needs only nbformat: load it by its path, without importing the package (and torch).
_PATH = Path(__file__).resolve().parents[1] / "involution_edu" / "nbgrader_metadata.py"
_SPEC = importlib.util.spec_from_file_location("_involution_edu_nbgrader_metadata", _PATH)
_MODULE = importlib.util.module_from_spec(_SPEC)
sys.modules[_SPEC.name] = _MODULE  # dataclasses look their module up
_SPEC.loader.exec_module(_MODULE)

if __name__ == "__main__":
    sys.exit(_MODULE.main(sys.argv[1:]))
