# Two commands: `make demo` (set up + run the nightly pipeline on built-in data) and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test clean

install: $(STAMP)

# Constraints pin the CPU build of torch on this kind of machine and versions known to work together;
# pyproject.toml keeps open ranges for users elsewhere.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[test,pretrained]"
	touch $(STAMP)

demo: install
	$(BIN)/aigc nightly --config configs/demo.yaml

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs .pytest_cache
