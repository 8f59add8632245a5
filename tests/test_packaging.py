"""Packaging and entry points: pyproject.toml and environment.yml agree, the README's two
commands exist in the Makefile, CI runs `make test`, the licence is there, the version is one,
and the optional Triton extra is pinned, installed by `make test` and by environment.yml."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement

import involution_edu

ROOT = Path(__file__).resolve().parent.parent
CONDA_TO_PIP = {"pytorch": "torch"}  # conda-forge name -> PyPI name
NOT_PACKAGES = {"python", "pip"}  # environment.yml entries that are not project dependencies
REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9_.\-]+)\s*(.*?)\s*$")


def _split(requirement: str) -> tuple[str, str]:
    """``"torch >=2.1, <3"`` -> ``("torch", "<3,>=2.1")``: normalised name and sorted bounds."""
    match = REQUIREMENT.match(requirement)
    assert match, f"cannot parse requirement {requirement!r}"
    name = re.sub(r"[-_.]+", "-", match.group(1)).lower()
    bounds = ",".join(sorted(part.replace(" ", "") for part in match.group(2).split(",") if part.strip()))
    return name, bounds


def _pyproject() -> dict:
    with open(ROOT / "pyproject.toml", "rb") as file:
        return tomllib.load(file)


def _pyproject_requirements() -> dict[str, str]:
    project = _pyproject()["project"]
    requirements = list(project["dependencies"]) + list(project["optional-dependencies"]["test"])
    pairs = [_split(r) for r in requirements]
    assert len({name for name, _ in pairs}) == len(pairs), "a package is listed twice in pyproject.toml"
    return dict(pairs)


def parse_conda_dependencies(text: str) -> list[str]:
    """The conda entries of an environment.yml's top-level ``dependencies:`` list.

    A small line parser (no YAML library needed): items are the lines ``  - spec`` directly
    under ``dependencies:``; the nested ``- pip:`` block (more indented) is skipped.
    """
    entries: list[str] = []
    in_dependencies = False
    item_indent = None
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent == 0:
            in_dependencies = line.strip() == "dependencies:"
            continue
        if not in_dependencies:
            continue
        stripped = line.strip()
        if not stripped.startswith("- "):
            continue
        if item_indent is None:
            item_indent = indent
        if indent != item_indent:
            continue  # nested (the pip: block)
        entry = stripped[2:].strip()
        if entry.endswith(":"):
            continue  # "- pip:" opens the nested block
        entries.append(entry)
    return entries


def _conda_requirements() -> dict[str, str]:
    pairs = [_split(entry) for entry in parse_conda_dependencies((ROOT / "environment.yml").read_text())]
    requirements = {}
    for name, bounds in pairs:
        if name in NOT_PACKAGES:
            continue
        name = CONDA_TO_PIP.get(name, name)
        assert name not in requirements, f"{name} is listed twice in environment.yml"
        requirements[name] = bounds
    return requirements


def test_conda_parser_on_a_known_file():
    text = "name: demo\nchannels:\n  - conda-forge\ndependencies:\n  - python>=3.10\n  - pytorch>=2.1,<3  # torch\n  - pip\n  - pip:\n      - -e .\n  - numpy\nfoo: 1\n"
    assert parse_conda_dependencies(text) == ["python>=3.10", "pytorch>=2.1,<3", "pip", "numpy"]


def test_environment_yml_matches_pyproject():
    conda, pip = _conda_requirements(), _pyproject_requirements()
    assert set(conda) == set(pip), f"only in environment.yml: {set(conda) - set(pip)}; only in pyproject: {set(pip) - set(conda)}"
    for name in pip:
        assert conda[name] == pip[name], f"{name}: environment.yml has {conda[name]!r}, pyproject.toml has {pip[name]!r}"


def test_environment_yml_python_matches_requires_python():
    conda = dict(_split(entry) for entry in parse_conda_dependencies((ROOT / "environment.yml").read_text()))
    assert conda["python"] == _pyproject()["project"]["requires-python"].replace(" ", "")


EDITABLE = re.compile(r"""-e\s+["']?\.(?:\[([\w,\s-]*)\])?["']?""")


def _editable_extras(text: str) -> set[str] | None:
    """The extras of the first ``-e .[a,b]`` install in ``text`` (``set()`` for a bare ``-e .``)."""
    match = EDITABLE.search(text)
    if match is None:
        return None
    return {extra.strip() for extra in (match.group(1) or "").split(",") if extra.strip()}


def test_editable_extras_parser():
    assert _editable_extras('pip install --quiet -e ".[test,triton]"') == {"test", "triton"}
    assert _editable_extras("      - -e .[triton]  # comment") == {"triton"}
    assert _editable_extras("      - -e .\n") == set()
    assert _editable_extras("pip install numpy") is None


def _makefile_setup_extras() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    recipe = re.search(r"^\$\(VENV\)/\.installed:.*\n((?:\t.*\n?)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile's setup rule ($(VENV)/.installed) is missing"
    extras = _editable_extras(recipe.group(1))
    assert extras is not None, "the setup rule does not install the package itself (-e .)"
    return extras


def test_environment_yml_installs_the_package_itself():
    pip_block = (ROOT / "environment.yml").read_text().split("- pip:", 1)
    assert len(pip_block) == 2, "environment.yml has no pip: block"
    assert _editable_extras(pip_block[1]) is not None, "environment.yml's pip: block does not install -e ."


def test_make_test_installs_the_test_and_triton_extras():
    extras = _makefile_setup_extras()
    assert {"test", "triton"} <= extras
    assert extras <= set(_pyproject()["project"]["optional-dependencies"]), "the Makefile names an unknown extra"


def test_environment_yml_covers_every_extra_make_test_installs():
    """An extra is covered either by the pip block's ``-e .[extra]`` or by conda entries for all its packages."""
    pip_extras = _editable_extras((ROOT / "environment.yml").read_text().split("- pip:", 1)[1])
    conda = _conda_requirements()
    optional = _pyproject()["project"]["optional-dependencies"]
    for extra in _makefile_setup_extras():
        if extra in pip_extras:
            continue
        missing = [_split(r)[0] for r in optional[extra] if _split(r)[0] not in conda]
        assert not missing, f"environment.yml installs neither .[{extra}] nor {missing}"


def _triton_requirement() -> Requirement:
    requirements = [Requirement(r) for r in _pyproject()["project"]["optional-dependencies"]["triton"]]
    assert [r.name for r in requirements] == ["triton"]
    return requirements[0]


def test_triton_extra_is_one_exact_pin():
    specifiers = list(_triton_requirement().specifier)
    assert len(specifiers) == 1 and specifiers[0].operator == "==", specifiers


def test_triton_extra_only_where_triton_publishes_wheels():
    """On macOS or Windows the extra installs nothing (so `make test` still installs there)."""
    marker = _triton_requirement().marker
    assert marker is not None
    base = {"python_version": "3.11", "platform_machine": "x86_64"}
    assert marker.evaluate({**base, "platform_system": "Linux"})
    assert marker.evaluate({**base, "platform_system": "Linux", "platform_machine": "aarch64"})
    assert not marker.evaluate({**base, "platform_system": "Darwin", "platform_machine": "arm64"})
    assert not marker.evaluate({**base, "platform_system": "Windows", "platform_machine": "AMD64"})


def test_installed_triton_is_the_pinned_one():
    """Where the extra applies, `make test` installed exactly the pinned release."""
    requirement = _triton_requirement()
    if not requirement.marker.evaluate():
        assert platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64")
        return
    installed = importlib.metadata.version("triton")
    assert installed in requirement.specifier, f"triton {installed} is installed, pyproject.toml pins {requirement.specifier}"


def test_version_is_pyprojects():
    assert involution_edu.__version__ == _pyproject()["project"]["version"]


def test_public_api_imports():
    for name in involution_edu.__all__:
        assert hasattr(involution_edu, name), name


def test_license_exists():
    license_file = ROOT / "LICENSE"
    assert license_file.is_file()
    assert "MIT License" in license_file.read_text()
    assert _pyproject()["project"]["license"] == "MIT"


def test_readme_gives_the_two_commands():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"^make lab$", readme, re.MULTILINE)
    assert re.search(r"^make test$", readme, re.MULTILINE)


def test_makefile_has_lab_and_test_targets():
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z_][\w.\-]*)\s*:(?!=)", makefile, re.MULTILINE))
    assert {"lab", "test"} <= targets
    phony = re.search(r"^\.PHONY:(.*)$", makefile, re.MULTILINE)
    assert phony and {"lab", "test"} <= set(phony.group(1).split())
    test_recipe = re.search(r"^test:.*\n((?:\t.*\n?)+)", makefile, re.MULTILINE)
    assert test_recipe and "pytest" in test_recipe.group(1)


def test_ci_runs_make_test():
    ci = ROOT / ".ci" / "run"
    assert ci.is_file() and os.access(ci, os.X_OK), ".ci/run must exist and be executable"
    commands = [line.split("#", 1)[0].strip() for line in ci.read_text().splitlines()]
    assert "make test" in commands
