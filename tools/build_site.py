"""Build the course website: a static HTML book of the ten notebooks, from their stored outputs.

    python tools/build_site.py [--out _build/site] [--mathjax local|cdn]

What a reader sees is what a learner meets, without installing anything:

* every **teaching cell** with its stored output (figures, tables, checks against the loop
  reference); nothing is re-executed, so the build takes seconds and needs no kernel;
* every **exercise and question as the learner meets it**: the stub (``# YOUR CODE HERE``), never
  the solution or the answer. The solution regions are removed by the same function that writes
  the student copies (:func:`involution_edu.student.make_student_notebook`). Outputs that could
  give a solution away are dropped: the output of every solution, answer and checker cell, and of
  every cell that uses a name a solution cell defines (the learner's function, ``answer_q1``);
* the hints folded in their ``<details>`` blocks, the math typeset by MathJax, and the course
  map (from the README) as the front page, with a link to each notebook's student copy.

The answer key is never published. The book is built with Jupyter Book 1 (Sphinx, MyST-NB and the
Sphinx Book Theme), which builds offline; with ``--mathjax local`` (the default) MathJax 3 is
copied into the site from npm's package once and cached, so the pages typeset math offline too.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Set

import nbformat

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = REPO / "notebooks"
DEFAULT_OUT = REPO / "_build" / "site"
MATHJAX_VERSION = "3.2.2"
MATHJAX_CACHE = Path.home() / ".cache" / "involution_edu" / f"mathjax-{MATHJAX_VERSION}"
CHECKER_CALL = re.compile(r"\bcheck_[a-z0-9_]+\s*\(")
TITLE = "Involution, from loops to RedNet"

sys.path.insert(0, str(REPO))
from involution_edu.student import make_student_notebook  # noqa: E402  (the repository's own package)


# ------------------------------------------------------------------------------------ the pages
def _source(cell) -> str:
    return cell.source if isinstance(cell.source, str) else "".join(cell.source)


def _names_defined(source: str) -> Set[str]:
    """Top-level names a solution cell defines (functions, classes, assigned variables)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for leaf in ast.walk(target):
                    if isinstance(leaf, ast.Name):
                        names.add(leaf.id)
    return names


_BEGIN = re.compile(r"BEGIN (SOLUTION|ANSWER)", re.I)
_END = re.compile(r"END (SOLUTION|ANSWER)", re.I)


def solution_lines(notebook: nbformat.NotebookNode) -> Set[str]:
    """The lines of a notebook's solution and answer regions that its other text does not contain.

    Stripped, at least 8 characters, not comments: what would give a solution away if a page showed it.
    """
    inside, outside = set(), []
    for cell in notebook.cells:
        active = False
        for line in _source(cell).splitlines():
            if _BEGIN.search(line):
                active = True
            elif _END.search(line):
                active = False
            elif active:
                inside.add(line.strip())
            else:
                outside.append(line)
    rest = "\n".join(outside)
    return {line for line in inside if len(line) >= 8 and not line.startswith("#") and line not in rest}


def _output_text(cell) -> str:
    texts = []
    for output in cell.get("outputs", []):
        text = output.get("text") if output.get("output_type") == "stream" else output.get("data", {}).get("text/plain")
        if text:
            texts.append(text if isinstance(text, str) else "".join(text))
    return "\n".join(texts)


def _uses(source: str, names: Set[str]) -> bool:
    return any(re.search(rf"(?<![\w.]){re.escape(name)}\b", source) for name in names)


def web_notebook(notebook: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """The page of one notebook: the student copy, with the instructor's outputs on teaching cells only."""
    student, _ = make_student_notebook(copy.deepcopy(notebook), name)
    by_id = {cell.get("id"): cell for cell in notebook.cells if cell.get("id")}
    solution_names: Set[str] = set()
    secret_lines = solution_lines(notebook)
    for original in notebook.cells:  # names the solution cells define (the learner's function, answer_q1, ...)
        if original.cell_type == "code" and _BEGIN.search(_source(original)):
            solution_names |= _names_defined(_source(original))
    for page in student.cells:
        # a cell the student copy split or made has no original; it is shown without outputs
        original = by_id.get(page.get("id"))
        page.metadata.pop("nbgrader", None)
        if original is None:
            continue
        if original.cell_type != "code":
            continue
        source, shown = _source(original), _source(page)
        is_solution = source != shown
        printed = _output_text(original)
        gives_away = (is_solution or CHECKER_CALL.search(source) or _uses(source, solution_names)
                      or any(line in printed for line in secret_lines))
        if not gives_away:
            page.outputs = copy.deepcopy(original.get("outputs", []))
            page.execution_count = original.get("execution_count")
    return student


def _front_page(readme: str, pages: List[str]) -> str:
    """index.md: the README's opening paragraphs and its course map, links pointing at the pages."""
    intro = readme.split("\n## ", 1)[0]
    intro = re.sub(r"!\[[^\]]*\]\([^)]*\)\n?", "", intro)  # the JupyterLab screenshot belongs to the README
    intro = intro.replace("# involution_edu", f"# {TITLE}", 1)
    match = re.search(r"\n## Course map\n(.*?)(?=\n## )", readme, re.S)
    course_map = match.group(1).strip() if match else ""
    for page in pages:
        course_map = course_map.replace(f"(notebooks/{page}.ipynb)", f"({page}.ipynb)")
    return (f"{intro.rstrip()}\n\n## Course map\n\n{course_map}\n\n"
            "Each page shows the notebook as a learner meets it, with the outputs of its teaching cells; "
            "the exercises and questions show their stubs. Download a page's notebook (the ⬇ button) and "
            "run it in JupyterLab to work through it: `make lab` in a clone of the repository sets "
            "everything up.\n")


def _download_line(page: str) -> str:
    return (f"*This page is notebook `notebooks/{page}.ipynb` as a learner meets it. "
            f"{{download}}`Download the student notebook <downloads/{page}.ipynb>` to work through it.*")


# ------------------------------------------------------------------------------------ MathJax
def _mathjax_dir() -> Optional[Path]:
    """MathJax 3's ``es5`` folder, from the cache or from npm's package (``npm pack``); None when neither works."""
    es5 = MATHJAX_CACHE / "es5"
    if (es5 / "tex-mml-chtml.js").is_file():
        return es5
    npm = shutil.which("npm")
    if npm is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        result = subprocess.run([npm, "pack", f"mathjax@{MATHJAX_VERSION}", "--silent"], cwd=tmp,
                                capture_output=True, text=True, timeout=300)
        tarballs = list(Path(tmp).glob("mathjax-*.tgz"))
        if result.returncode != 0 or not tarballs:
            return None
        with tarfile.open(tarballs[0]) as archive:
            members = [m for m in archive.getmembers() if m.name.startswith("package/es5/")
                       and (m.isdir() or m.isfile())]
            archive.extractall(tmp, members=members, filter="data")
        MATHJAX_CACHE.mkdir(parents=True, exist_ok=True)
        if es5.exists():
            shutil.rmtree(es5)
        shutil.copytree(Path(tmp) / "package" / "es5", es5)
    return es5 if (es5 / "tex-mml-chtml.js").is_file() else None


# ------------------------------------------------------------------------------------ the book
def _config(mathjax_path: Optional[str]) -> str:
    sphinx_config: Dict[str, object] = {
        "html_show_copyright": False,
        "html_show_sphinx": False,
        "nb_merge_streams": True,
        "html_theme_options": {"use_download_button": True, "home_page_in_toc": True,
                               "show_navbar_depth": 1, "use_sidenotes": False},
    }
    if mathjax_path:
        sphinx_config["mathjax_path"] = mathjax_path
        sphinx_config["html_static_path"] = ["mathjax_static"]
    config = {
        "title": TITLE,
        "author": "the involution_edu authors",
        "only_build_toc_files": True,
        "execute": {"execute_notebooks": "off"},
        "parse": {"myst_enable_extensions": ["dollarmath", "amsmath", "html_image", "colon_fence"]},
        "html": {"home_page_in_navbar": True, "use_repository_button": False, "use_issues_button": False},
        "latex": {"latex_documents": {"targetname": "book.tex"}},
        "sphinx": {"config": sphinx_config},
    }
    return json.dumps(config, indent=2)  # JSON is YAML


def prepare(src: Path, notebook_dir: Path = NOTEBOOK_DIR, mathjax: str = "local") -> Dict[str, object]:
    """Write the book's sources into ``src``: pages, downloads, front page, table of contents, config."""
    if src.exists():
        shutil.rmtree(src)
    (src / "downloads").mkdir(parents=True)
    notebooks = sorted(notebook_dir.glob("[0-9][0-9]_*.ipynb"))
    if not notebooks:
        raise FileNotFoundError(f"no course notebooks in {notebook_dir}")
    pages = []
    for path in notebooks:
        notebook = nbformat.read(path, as_version=4)
        page = web_notebook(notebook, path.name)
        student, _ = make_student_notebook(copy.deepcopy(notebook), path.name)
        nbformat.write(student, src / "downloads" / path.name)
        download = nbformat.v4.new_markdown_cell(_download_line(path.stem))
        page.cells.insert(1, download)
        nbformat.write(page, src / path.name)
        pages.append(path.stem)
    (src / "index.md").write_text(_front_page((REPO / "README.md").read_text(encoding="utf-8"), pages),
                                  encoding="utf-8")
    toc = {"format": "jb-book", "root": "index", "chapters": [{"file": page} for page in pages]}
    (src / "_toc.yml").write_text(json.dumps(toc, indent=2), encoding="utf-8")
    mathjax_path = None
    if mathjax == "local":
        es5 = _mathjax_dir()
        if es5 is None:
            print("note: npm is not available, so the site loads MathJax from its CDN", file=sys.stderr)
        else:
            # not under _static/: Jupyter Book would add every .js file there to every page
            shutil.copytree(es5, src / "mathjax_static" / "mathjax")
            mathjax_path = "mathjax/tex-mml-chtml.js"
    (src / "_config.yml").write_text(_config(mathjax_path), encoding="utf-8")
    return {"pages": pages, "mathjax": mathjax_path or "cdn"}


def build(out: Path = DEFAULT_OUT, notebook_dir: Path = NOTEBOOK_DIR, mathjax: str = "local") -> Dict[str, object]:
    """Prepare the sources in ``out/src`` and build the HTML book into ``out/html``; returns a summary."""
    start = time.perf_counter()
    src = out / "src"
    info = prepare(src, notebook_dir, mathjax)
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    command = [str(jupyter_book) if jupyter_book.exists() else "jupyter-book", "build", str(src),
               "--path-output", str(out), "--builder", "html", "--keep-going"]
    result = subprocess.run(command, capture_output=True, text=True)
    log = result.stdout + result.stderr
    (out / "build.log").write_text(log, encoding="utf-8")
    html = out / "_build" / "html"
    if result.returncode != 0 or not (html / "index.html").is_file():
        raise RuntimeError(f"jupyter-book build failed (exit {result.returncode}); see {out / 'build.log'}:\n"
                           + "\n".join(log.splitlines()[-30:]))
    if (out / "html").exists():
        shutil.rmtree(out / "html")
    shutil.move(str(html), str(out / "html"))
    warnings = [line for line in log.splitlines() if "WARNING" in line]
    info.update(html=out / "html", seconds=time.perf_counter() - start, warnings=warnings,
                page_count=len(list((out / "html").glob("*.html"))))
    return info


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output folder (default: _build/site)")
    parser.add_argument("--mathjax", choices=["local", "cdn"], default="local",
                        help="copy MathJax into the site (works offline) or load it from its CDN")
    args = parser.parse_args(argv)
    info = build(args.out.resolve(), mathjax=args.mathjax)
    print(f"built {len(info['pages'])} notebook pages ({info['page_count']} HTML pages) in {info['seconds']:.1f} s "
          f"with {len(info['warnings'])} warnings; MathJax: {info['mathjax']}")
    for line in info["warnings"][:20]:
        print("  " + line)
    print(f"open {info['html'] / 'index.html'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
