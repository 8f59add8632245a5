"""Hygiene of the committed course notebooks: valid, clean, run top to bottom, built to the course's anatomy.

What nbval cannot see: a notebook that was run out of order, that stores an error or a warning,
that leaks a personal path, that carries a figure repr, that grew large, or that lacks the parts
every lesson has (learning goals, exercises with checkers, a summary).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator, List

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
ALL_NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
NAME_PATTERN = re.compile(r"^(\d{2})_[a-z0-9]+(?:_[a-z0-9]+)*\.ipynb$")
PERSONAL_PATHS = ("/root", "/home/", "/Users/", "C:\\")
MAX_BYTES = 2 * 1024 * 1024
MIN_EXERCISES = 2
FIGURE_REPR = re.compile(r"^(<Figure size|<matplotlib\.|\[<matplotlib\.|Text\(|<AxesSubplot|<Axes)")
BEGIN_MARKER = "### BEGIN SOLUTION"

NAMES = [path.name for path in ALL_NOTEBOOKS] or ["<no notebooks>"]


def load(name: str) -> nbformat.NotebookNode:
    path = NOTEBOOK_DIR / name
    assert path.is_file(), f"no course notebooks found in {NOTEBOOK_DIR}"
    return nbformat.read(path, as_version=nbformat.NO_CONVERT)


def code_cells(nb: nbformat.NotebookNode) -> List[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def strings_in(value: object) -> Iterator[str]:
    """Every string inside a JSON-like value (keys too)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield str(key)
            yield from strings_in(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from strings_in(item)


def test_names_are_numbered_consecutively_from_01():
    assert ALL_NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
    bad = [path.name for path in ALL_NOTEBOOKS if not NAME_PATTERN.match(path.name)]
    assert not bad, f"notebook names must look like NN_lower_case_name.ipynb: {bad}"
    numbers = [int(NAME_PATTERN.match(path.name).group(1)) for path in ALL_NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1)), f"notebook numbers must be 01, 02, ... without gaps or repeats, got {numbers}"


@pytest.mark.parametrize("name", NAMES)
def test_valid_nbformat_and_python3_kernel(name):
    nb = load(name)
    nbformat.validate(nb)
    assert nb.nbformat == 4
    assert nb.metadata.get("kernelspec", {}).get("name") == "python3", nb.metadata.get("kernelspec")


@pytest.mark.parametrize("name", NAMES)
def test_file_is_small(name):
    size = (NOTEBOOK_DIR / name).stat().st_size if (NOTEBOOK_DIR / name).is_file() else None
    assert size is not None and size < MAX_BYTES, f"{name}: {size} bytes, limit {MAX_BYTES}"


@pytest.mark.parametrize("name", NAMES)
def test_no_personal_paths_in_metadata_or_outputs(name):
    nb = load(name)
    places = [("notebook metadata", nb.metadata)]
    for index, cell in enumerate(nb.cells):
        places.append((f"cell {index} metadata", cell.metadata))
        if cell.cell_type == "code":
            places.append((f"cell {index} outputs", cell.outputs))
    found = [
        (where, marker)
        for where, value in places
        for text in strings_in(value)
        for marker in PERSONAL_PATHS
        if marker in text
    ]
    assert not found, f"{name}: personal paths stored: {found[:5]}"


@pytest.mark.parametrize("name", NAMES)
def test_no_run_timestamps_in_cell_metadata(name):
    """nbconvert/JupyterLab may record per-cell run times; they change on every run and bloat diffs."""
    nb = load(name)
    stamped = [index for index, cell in enumerate(nb.cells) if "execution" in cell.metadata]
    assert not stamped, f"{name}: cells {stamped[:10]} store 'execution' timestamps in their metadata; strip them"


@pytest.mark.parametrize("name", NAMES)
def test_ran_top_to_bottom_in_one_go(name):
    nb = load(name)
    counts = []
    for index, cell in enumerate(code_cells(nb)):
        if not cell.source.strip():
            continue
        assert cell.execution_count is not None, (
            f"{name}: code cell #{index} ({cell.source.strip().splitlines()[0][:50]!r}) never ran; "
            "re-execute the whole notebook with jupyter nbconvert --execute --inplace"
        )
        counts.append(cell.execution_count)
    assert counts == list(range(1, len(counts) + 1)), f"{name}: execution counts {counts} are not 1..{len(counts)} in order"


@pytest.mark.parametrize("name", NAMES)
def test_no_errors_or_warnings_stored(name):
    nb = load(name)
    for index, cell in enumerate(nb.cells):
        for output in cell.get("outputs", []):
            assert output.output_type != "error", f"{name} cell {index} stores an error: {output.get('ename')}: {output.get('evalue')}"
            if output.output_type == "stream" and output.name == "stderr":
                assert "Warning" not in output.text, f"{name} cell {index} stores a warning on stderr: {output.text[:200]!r}"


@pytest.mark.parametrize("name", NAMES)
def test_figure_cells_store_no_figure_repr(name):
    nb = load(name)
    for index, cell in enumerate(code_cells(nb)):
        for output in cell.outputs:
            if output.output_type == "execute_result":
                text = str(output.get("data", {}).get("text/plain", ""))
                assert not FIGURE_REPR.match(text), (
                    f"{name}: cell {cell.get('id', index)} ends with a plot object's repr {text[:60]!r}; end it with plt.show()"
                )


@pytest.mark.parametrize("name", NAMES)
def test_learning_goals_near_the_top_and_a_summary(name):
    nb = load(name)
    markdown = [cell.source for cell in nb.cells if cell.cell_type == "markdown"]
    top = "\n".join(markdown[:3]).lower()
    assert "you will learn" in top or "learning goals" in top, f"{name}: no 'You will learn' in the first markdown cells"
    headings = [line for source in markdown for line in source.splitlines() if line.lstrip().startswith("#")]
    assert any("summary" in line.lower() for line in headings), f"{name}: no Summary section heading"


@pytest.mark.parametrize("name", NAMES)
def test_exercises_have_solution_markers_and_a_checker_after_each(name):
    nb = load(name)
    cells = nb.cells
    exercises = 0
    for index, cell in enumerate(cells):
        if cell.cell_type != "code" or BEGIN_MARKER not in cell.source:
            continue
        exercises += 1
        following = next((later for later in cells[index + 1 :] if later.cell_type == "code"), None)
        assert following is not None and re.search(r"\bcheck_\w+\(", following.source), (
            f"{name}: the exercise in cell {index} is not followed by a cell calling a check_ function"
        )
    assert exercises >= MIN_EXERCISES, f"{name}: {exercises} exercise(s) with {BEGIN_MARKER!r}, need at least {MIN_EXERCISES}"


def test_no_widget_output_or_state_stored():
    assert ALL_NOTEBOOKS, f"no notebooks in {NOTEBOOK_DIR}"
    for path in ALL_NOTEBOOKS:
        raw = path.read_text(encoding="utf-8")
        assert "application/vnd.jupyter.widget-view+json" not in raw, f"{path.name}: stores widget output (tqdm.notebook?)"
        assert "widgets" not in json.loads(raw).get("metadata", {}), f"{path.name}: stores widget state in metadata"


# ----------------------------------------------------------------------------- machine independence
# A stored output must hold on every machine (nbval compares it): no timings, and no exact figure
# that depends on floating-point rounding after many steps (training metrics). Such a cell either
# asserts honest bounds and prints what cannot flip, or is marked NBVAL_IGNORE_OUTPUT with the reason
# on the next line. Markdown never states a machine-dependent number (a time, a speed ratio).
IGNORE_MARKER = re.compile(r"^[ \t]*#[ \t]*NBVAL_IGNORE_OUTPUT[ \t]*$", re.M)  # nbval's rule: the marker alone on its line
REASON_AFTER_MARKER = re.compile(r"^[ \t]*#[ \t]*NBVAL_IGNORE_OUTPUT[ \t]*\n[ \t]*#[ \t]*(?P<reason>\S.*)$", re.M)
TRAINING_WORDS = re.compile(r"accuracy[^\n]*%|loss|grad(?:ient)? norm", re.I)
EXACT_DECIMAL = re.compile(r"\d\.\d{2,}")

SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n\s*\n|\n\s*[-*+]\s|\n\s*\|")
LITERAL_TIMING = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)?(?:\s?(?:ms|µs|μs|us|ns)|\s(?:s|sec|secs|seconds?))\b(?!-)")
TIMES_FASTER = re.compile(
    r"\b(?:\d+(?:\.\d+)?|two|three|four|five|six|seven|eight|nine|ten|twenty|thirty|forty|fifty|hundreds?|tens|a few|several)"
    r"(?:\s+(?:to|or|–|-)\s+\w+)?\s+(?:of\s+)?times\s+(?:faster|slower|quicker|as fast|as slow|longer|shorter)",
    re.I,
)
RATIO = re.compile(r"(?<![\d×x.\\])\d+(?:\.\d+)?(?:\s?[–-]\s?\d+(?:\.\d+)?)?\s?[×x](?![\d$\\{])")
SPEED_WORDS = re.compile(r"\b(?:fast\w*|slow\w*|speed\w*|time|timings?|throughput|latency|runs? at|quick\w*|wall-clock)\b", re.I)


def machine_dependent_numbers(markdown: str) -> List[str]:
    """The literal timings and speed ratios stated in ``markdown`` ("12 ms", "0.3× depthwise",
    "3 times faster"): numbers that change with the machine, so prose must not fix them.

    A bare ratio ("49×") counts only in a sentence about speed: "49× the memory of the map" is
    arithmetic, "runs at 0.3× depthwise" is a measurement. Dimensions ("7×7", "224×224") never count.
    """
    found: List[str] = []
    for sentence in SENTENCE_BREAK.split(markdown):
        found += [m.group(0) for m in LITERAL_TIMING.finditer(sentence)]
        found += [m.group(0) for m in TIMES_FASTER.finditer(sentence)]
        if SPEED_WORDS.search(sentence):
            found += [m.group(0) for m in RATIO.finditer(sentence)]
    return found


@pytest.mark.parametrize(
    "text",
    [
        "One forward pass takes 12 ms here.",
        "It took about 3 s to compile.",
        "Forward plus backward runs at 0.15–0.2× depthwise.",
        "The fused op is 0.3× as fast as depthwise convolution.",
        "The vectorized versions are tens of times faster than the loops.",
        "It runs five to six\ntimes slower per step.",
        "Unfold is 3 times faster here.",
        "About 250 µs per call.",
    ],
)
def test_timing_detector_flags_machine_dependent_numbers(text):
    assert machine_dependent_numbers(text), f"not flagged: {text!r}"


@pytest.mark.parametrize(
    "text",
    [
        "A $7\\times 7$ kernel, a 1×1 conv and 224×224 images.",
        "unfold materialises 49× the feature map.",
        "about 3× the input with the paper's defaults",
        "Which is faster depends on the machine; the cell above measures it.",
        "some 1s, 7s and 9s differ by one or two pixels",
        "stride $s$ and $H' = \\lceil H / s \\rceil$; rows 0, 2s, ...",
        "Estimated time: 45–60 minutes.",
    ],
)
def test_timing_detector_leaves_arithmetic_alone(text):
    assert not machine_dependent_numbers(text), machine_dependent_numbers(text)


@pytest.mark.parametrize("name", NAMES)
def test_markdown_states_no_timing_or_speed_ratio(name):
    """Times and speed ratios depend on the machine: compute and assert them in code, and say in
    prose only what holds everywhere (or that the direction depends on the machine)."""
    nb = load(name)
    found = [
        (index, hit)
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "markdown"
        for hit in machine_dependent_numbers(cell.source)
    ]
    assert not found, f"{name}: markdown states machine-dependent numbers (cell, text): {found}"


def stores_exact_training_figures(cell: nbformat.NotebookNode) -> bool:
    """True when a compared (not output-ignored) cell prints training figures to 2+ decimals:
    losses, gradient norms, accuracies in %, which round differently on another CPU."""
    if cell.cell_type != "code" or IGNORE_MARKER.search(cell.source):
        return False
    for output in cell.get("outputs", []):
        text = output.get("text", "") if output.get("output_type") == "stream" else ""
        if TRAINING_WORDS.search(text) and EXACT_DECIMAL.search(text):
            return True
    return False


def test_exact_figure_detector_both_ways():
    printed = nbformat.v4.new_code_cell("print(history)")
    printed.outputs = [nbformat.v4.new_output("stream", name="stdout", text="seed 0: test accuracy 98.89 %\n")]
    assert stores_exact_training_figures(printed)
    printed.source = "# NBVAL_IGNORE_OUTPUT\n# exact figures round differently on another CPU\nprint(history)"
    assert not stores_exact_training_figures(printed)
    printed.source = "# NBVAL_IGNORE_OUTPUT: not alone on its line, so nbval does not see it\nprint(history)"
    assert stores_exact_training_figures(printed)
    robust = nbformat.v4.new_code_cell("print(...)")
    robust.outputs = [nbformat.v4.new_output("stream", name="stdout", text="all three seeds above 94 %: True\n")]
    assert not stores_exact_training_figures(robust)


@pytest.mark.parametrize("name", NAMES)
def test_no_exact_training_figures_in_compared_outputs(name):
    """nbval compares stored outputs exactly; a training run's figures differ in the last digits
    on another CPU or library build, so they must be bounded by asserts and printed coarsely,
    or shown in a cell marked NBVAL_IGNORE_OUTPUT that says why."""
    nb = load(name)
    bad = [index for index, cell in enumerate(nb.cells) if stores_exact_training_figures(cell)]
    assert not bad, (
        f"{name}: cells {bad} store exact training figures that another machine rounds differently; "
        "assert bounds and print what cannot flip, or mark the cell # NBVAL_IGNORE_OUTPUT with the reason"
    )


@pytest.mark.parametrize("name", NAMES)
def test_ignored_outputs_state_their_reason(name):
    """An output left out of the comparison says why, in a comment on the line after the marker
    (e.g. ``# timings depend on the machine``), so no output is dropped silently."""
    nb = load(name)
    silent = [
        index
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        and IGNORE_MARKER.search(cell.source)
        and not any(len(m.group("reason").split()) >= 3 for m in REASON_AFTER_MARKER.finditer(cell.source))
    ]
    assert not silent, (
        f"{name}: cells {silent} are marked # NBVAL_IGNORE_OUTPUT without a reason; "
        "put a comment of a few words on the next line saying why the output differs between runs or machines"
    )


NBVAL_MARKERS = ("NBVAL_IGNORE_OUTPUT", "NBVAL_CHECK_OUTPUT", "NBVAL_RAISES_EXCEPTION", "NBVAL_SKIP")
MARKER_LIKE = re.compile(r"^[ \t]*#[ \t]*(NBVAL_\w+)(.*)$", re.M)


@pytest.mark.parametrize("name", NAMES)
def test_nbval_markers_are_alone_on_their_line(name):
    """nbval only sees a marker that is the whole comment (``# NBVAL_IGNORE_OUTPUT``); with text after
    it (``# NBVAL_IGNORE_OUTPUT: reason``) the marker is silently ignored and the output compared."""
    nb = load(name)
    bad = [
        (index, match.group(0).strip())
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for match in MARKER_LIKE.finditer(cell.source)
        if match.group(1) not in NBVAL_MARKERS or match.group(2).strip()
    ]
    assert not bad, (
        f"{name}: nbval does not recognise these markers (cell, line): {bad}; write the marker alone on its "
        "line and the reason as a comment on the next line"
    )


@pytest.mark.parametrize("name", NAMES)
def test_markdown_cells_hold_at_most_300_words(name):
    """One idea a cell: a markdown cell over 300 words (hints in <details> included) is split."""
    long = [(index, len(re.findall(r"\w+", "".join(cell.source))))
            for index, cell in enumerate(load(name).cells) if cell.cell_type == "markdown"]
    assert [(i, n) for i, n in long if n > 300] == [], f"{name}: markdown cells over 300 words (cell, words)"


def test_cited_lines_of_the_native_kernel_hold_what_the_text_names():
    """Where a notebook cites ``involution.cpp`` by line ("`gather` and `scatter`, `involution.cpp`
    lines 477 and 482"), those lines call the functions it names: an edit of the kernel that moves
    them must update the text."""
    source = (REPO / "involution_edu" / "csrc" / "involution.cpp").read_text(encoding="utf-8").splitlines()
    pattern = re.compile(r"`(\w+)` and `(\w+)`, `involution\.cpp` lines (\d+)\s+and (\d+)")
    cited = 0
    for path in sorted((REPO / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            text = re.sub(r"\s+", " ", "".join(cell["source"]))
            for first, second, line_a, line_b in pattern.findall(text):
                cited += 1
                for name, line in ((first, int(line_a)), (second, int(line_b))):
                    assert f"{name}(" in source[line - 1], f"{path.name}: involution.cpp line {line} is {source[line - 1]!r}, not {name}"
    assert cited >= 1
