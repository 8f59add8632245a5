"""Give the course notebooks nbgrader's cell metadata, in place (see involution_edu/nbgrader_metadata.py).

    python tools/nbgrader_metadata.py [notebooks/NN_name.ipynb ...]   (default: every course notebook)
    python tools/nbgrader_metadata.py --check                          (exit 1 if any is not converted)

Deterministic and idempotent: a second run changes nothing. Re-execute a notebook whose cells were
split (tools/execute_notebooks.py) to refresh its execution counts.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from involution_edu.nbgrader_metadata import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
