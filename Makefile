# Every target creates .venv if missing; nothing needs installing by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# A CPU wheel of this torch lies on the project machines; GPU users override it,
# e.g. `make test TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126"`.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install test test-nojit bench-reference demo clean docs corpus

$(BIN)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

test: install
	$(BIN)/python -m pytest -q

# The reference's pure-Python path (Numba JIT off): a cheap subset, so it stays correct.
test-nojit: install
	NUMBA_DISABLE_JIT=1 $(BIN)/python -m pytest -q -m reference_subset tests/test_reference_properties.py tests/test_reference_equivalence.py

bench-reference: install
	$(BIN)/python -m dfpir.bench reference

demo: install
	$(BIN)/python -m dfpir.demo

# The documentation site into site/ (strict: any warning, broken link or missing object fails). A
# tutorial without an executed copy in build/notebooks/ (left by make test) is run once first.
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

# The training corpus (data/corpus) and the held-out photos (data/heldout) from the package
# registries: Debian packages (apt, as root) and scikit-learn's two sample photos (docs/guide/corpus.md).
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
corpus: install
	$(SUDO) apt-get install -y --no-install-recommends lomiri-wallpapers-16.04 lomiri-wallpapers-20.04 plasma-workspace-wallpapers mate-backgrounds
	$(BIN)/python -m pip install --quiet scikit-learn
	$(BIN)/python -m dfpir.data corpus -o data/corpus
	$(BIN)/python -m dfpir.data heldout -o data/heldout

clean:
	rm -rf $(VENV) build *.egg-info
