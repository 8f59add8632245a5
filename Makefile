# involution_edu: `make lab` opens the course, `make test` runs every test.
# Both create .venv on first use (with the test and triton extras: the Triton kernels are tested
# on the CPU with Triton's interpreter). Override TORCH_SPEC (and PIP_EXTRA) to choose a torch build,
# e.g. on a machine without a GPU elsewhere:
#   make lab PIP_EXTRA="--index-url https://download.pytorch.org/whl/cpu" TORCH_SPEC=torch
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PIP_EXTRA ?=

.PHONY: setup lab test student answer-key notebooks site bench bench-suite clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(PIP_EXTRA) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test,triton,site,instructor]"
	touch $@

setup: $(VENV)/.installed

# JupyterLab refuses to run as root unless told; containers often run as root.
LAB_FLAGS ?= $(if $(filter 0,$(shell id -u)),--allow-root,)

lab: setup
	$(BIN)/jupyter lab $(LAB_FLAGS) notebooks/

test: setup
	$(BIN)/python -m pytest

student: setup
	$(BIN)/python -m involution_edu.student notebooks student_notebooks

# Student copies plus one Markdown answer key per notebook (solutions, hints, answers) for instructors.
answer-key: setup
	$(BIN)/python -m involution_edu.student notebooks student_notebooks --answer-key answer_key

# Re-execute every notebook in place (after editing one), printing how long each took.
notebooks: setup
	$(BIN)/python tools/execute_notebooks.py

# The course website: a static HTML book of the notebooks from their stored outputs (no re-execution),
# exercises and questions shown as stubs, into _build/site/html (open index.html).
site: setup
	$(BIN)/python tools/build_site.py

bench: setup
	$(BIN)/python -m involution_edu.bench

bench-suite: setup
	$(BIN)/python -m pip install --quiet -e ".[bench]"
	$(BIN)/python -m pytest benchmarks/ --benchmark-group-by=group --benchmark-columns=min,median,max,rounds

clean-venv:
	rm -rf $(VENV)
