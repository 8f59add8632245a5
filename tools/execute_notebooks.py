"""Re-execute course notebooks top to bottom, in place, the way they are committed.

    python tools/execute_notebooks.py [notebooks/NN_name.ipynb ...]   (default: every notebook)

Each notebook runs in a fresh `python3` kernel from its own folder; per-cell run timestamps
are not stored (they change on every run), and the time each notebook took is printed.
A notebook whose cell raises is left unchanged and the command exits non-zero.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"


def execute_in_place(path: Path, timeout: int = 600) -> float:
    """Execute ``path`` in a fresh kernel, write it back without timestamps; return seconds taken."""
    nb = nbformat.read(path, as_version=4)
    start = time.perf_counter()
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}).execute()
    seconds = time.perf_counter() - start
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return seconds


def main(argv: list[str]) -> int:
    paths = [Path(arg) for arg in argv] or sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
    failed = 0
    total = 0.0
    for path in paths:
        try:
            seconds = execute_in_place(path)
        except CellExecutionError as error:
            failed += 1
            print(f"{path.name:40} FAILED: {str(error).strip().splitlines()[-1]}")
            continue
        total += seconds
        print(f"{path.name:40} {seconds:6.1f} s")
    print(f"{'total':40} {total:6.1f} s" + (f", {failed} failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
